package config

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/gotrack/gotrack/internal/tracing"
)

// otelHelp marks the standard OpenTelemetry variables in -h and the README.
const otelHelp = " (standard OpenTelemetry variable)"

// otelSettings are the OTEL_* variables GoTrack honours. GoTrack parses and
// checks them itself, so that a bad value is a startup error listed with
// the others, and hands the parsed values to the SDK.
func otelSettings(o *tracing.Options) []setting {
	var s []setting
	add := func(name, def, help string, set func(string) error) {
		s = append(s, setting{name: name, def: def, help: help + otelHelp, set: set})
	}
	endpoint := func(p *string) func(string) error {
		return func(v string) (err error) { *p, err = tracing.ParseEndpoint(v); return err }
	}
	millis := func(p *time.Duration) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 3_600_000 {
				return errors.New("is not a whole number of milliseconds; want 1 to 3600000")
			}
			*p = time.Duration(n) * time.Millisecond
			return nil
		}
	}
	count := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1_000_000 {
				return errors.New("is not a whole number; want 1 to 1000000")
			}
			*p = n
			return nil
		}
	}
	file := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }

	add("OTEL_EXPORTER_OTLP_ENDPOINT", "", "OTLP/HTTP base URL (such as http://127.0.0.1:4318); /v1/traces is appended; tracing is off unless this or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set", endpoint(&o.Endpoint))
	add("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "OTLP/HTTP URL spans are posted to, used as it is; wins over OTEL_EXPORTER_OTLP_ENDPOINT", endpoint(&o.TracesEndpoint))
	add("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "", "OTLP/HTTP URL gotrack replay posts its job metrics to, used as it is; else OTEL_EXPORTER_OTLP_ENDPOINT with /v1/metrics", endpoint(&o.MetricsEndpoint))
	add("OTEL_EXPORTER_OTLP_PROTOCOL", tracing.Protocol, "OTLP transport; only http/protobuf is supported", func(v string) error {
		if v != tracing.Protocol {
			return errors.New("is not a protocol GoTrack speaks; want http/protobuf")
		}
		return nil
	})
	s = append(s, setting{name: "OTEL_EXPORTER_OTLP_HEADERS", help: "comma list of key=value headers sent with every export, such as an API key" + otelHelp, secret: true,
		set: func(v string) (err error) {
			if o.Headers, err = tracing.ParseKeyValues(v); err != nil {
				return err
			}
			for k, val := range o.Headers {
				// What net/http would refuse at every export.
				if !validHeaderName(k) || strings.ContainsFunc(val, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
					return errors.New("has a header name that is not an HTTP token, or a value with a control character (once percent-decoded); want such as api-key=VALUE")
				}
			}
			return nil
		}})
	add("OTEL_EXPORTER_OTLP_CERTIFICATE", "", "PEM CA bundle to verify the OTLP endpoint's certificate", file(&o.CA))
	add("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "", "PEM client certificate for the OTLP endpoint (mTLS)", file(&o.ClientCert))
	add("OTEL_EXPORTER_OTLP_CLIENT_KEY", "", "PEM key of OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", file(&o.ClientKey))
	add("OTEL_SERVICE_NAME", tracing.DefaultServiceName, "service.name of GoTrack's spans and job metrics; unset, the service.name of OTEL_RESOURCE_ATTRIBUTES if it has one", func(v string) error { o.ServiceName = v; return nil })
	add("OTEL_RESOURCE_ATTRIBUTES", "", "comma list of key=value resource attributes, such as deployment.environment.name=prod", func(v string) error {
		m, err := tracing.ParseKeyValues(v)
		if err != nil {
			return err
		}
		o.Resource = nil
		for _, k := range slices.Sorted(maps.Keys(m)) {
			o.Resource = append(o.Resource, attribute.String(k, m[k]))
		}
		return nil
	})
	add("OTEL_TRACES_SAMPLER", tracing.DefaultSampler, "sampler: parentbased_traceidratio (a client's sampled traceparent is followed unless TRACE_CLIENT_PARENT=link, other traces are sampled at OTEL_TRACES_SAMPLER_ARG), traceidratio, always_on, always_off, parentbased_always_on, parentbased_always_off", func(v string) error {
		if !slices.Contains(tracing.Samplers, v) {
			return errors.New("is not a sampler GoTrack knows; want one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio")
		}
		o.Sampler = v
		return nil
	})
	add("OTEL_TRACES_SAMPLER_ARG", tracing.DefaultSamplerArg, "ratio of traces sampled by the *traceidratio samplers; 0.001 is 50 traces/s at 50k requests/s", func(v string) (err error) {
		o.SamplerArg, err = tracing.ParseRatio(v)
		return err
	})
	add("OTEL_BSP_SCHEDULE_DELAY", "5000", "milliseconds between span exports", millis(&o.BatchDelay))
	add("OTEL_BSP_EXPORT_TIMEOUT", "30000", "milliseconds one span export may take", millis(&o.ExportTimeout))
	add("OTEL_BSP_MAX_QUEUE_SIZE", "2048", "spans buffered for export; beyond it new spans are dropped, never the requests", count(&o.MaxQueue))
	add("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512", "most spans in one export", count(&o.MaxExportBatch))
	add("OTEL_SDK_DISABLED", "false", "true turns tracing off even with an endpoint set", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("is not a boolean; want true or false")
		}
		o.Disabled = b
		return nil
	})
	return s
}

// validHeaderName reports whether k is an HTTP header name: a token of
// RFC 9110's tchar.
func validHeaderName(k string) bool {
	for _, c := range []byte(k) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return k != ""
}
