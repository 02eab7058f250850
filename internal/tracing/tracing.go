// Package tracing sets up OpenTelemetry tracing for GoTrack: an OTLP
// exporter over HTTP/protobuf configured by the standard OTEL_* variables
// (parsed and checked by internal/config), the sampler, and a slog.Handler
// that adds the active span's ids to log lines.
//
// Tracing is off unless an OTLP endpoint is set. Off, Setup returns a nil
// *Provider and the instrumented code takes no span, allocates nothing and
// extracts no traceparent.
package tracing

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope name of GoTrack's spans.
const Scope = "github.com/gotrack/gotrack"

// Defaults of the settings GoTrack documents.
const (
	DefaultServiceName = "gotrack"
	DefaultSampler     = "parentbased_traceidratio"
	// DefaultSamplerArg samples one trace in a thousand: at 50k requests/s
	// that is 50 traces/s, enough for an exemplar in every histogram bucket
	// of every scrape and for finding slow requests, at a small, steady
	// cost to GoTrack and to the tracing backend.
	DefaultSamplerArg = "0.001"
	Protocol          = "http/protobuf"
	// ExportRequestTimeout bounds one OTLP/HTTP request (the SDK's
	// default); OTEL_BSP_EXPORT_TIMEOUT bounds an export with its retries.
	ExportRequestTimeout = 10 * time.Second
)

// Options are the OTEL_* settings, parsed.
type Options struct {
	Disabled bool // OTEL_SDK_DISABLED
	// Endpoint is OTEL_EXPORTER_OTLP_ENDPOINT, the base URL to which
	// /v1/traces is appended; TracesEndpoint,
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, is used as it is and wins.
	Endpoint, TracesEndpoint string
	// MetricsEndpoint, OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, is where
	// `gotrack replay` posts its job metrics, used as it is.
	MetricsEndpoint string
	Headers         map[string]string // OTEL_EXPORTER_OTLP_HEADERS
	// CA, ClientCert, ClientKey are PEM files (OTEL_EXPORTER_OTLP_CERTIFICATE,
	// _CLIENT_CERTIFICATE, _CLIENT_KEY).
	CA, ClientCert, ClientKey string
	ServiceName               string               // OTEL_SERVICE_NAME
	Resource                  []attribute.KeyValue // OTEL_RESOURCE_ATTRIBUTES
	Sampler                   string               // OTEL_TRACES_SAMPLER
	SamplerArg                float64              // OTEL_TRACES_SAMPLER_ARG
	// LinkClientTraces (TRACE_CLIENT_PARENT=link) starts each ingest
	// request's span in a trace of its own, linked to the span of the
	// client's traceparent rather than its child: the client's sampled
	// flag and trace id no longer decide whether GoTrack traces it.
	LinkClientTraces bool
	// Batch span processor (OTEL_BSP_*); zero leaves the SDK's default.
	BatchDelay, ExportTimeout time.Duration
	MaxQueue, MaxExportBatch  int
}

// Enabled reports whether traces are exported: an endpoint is set and the
// SDK is not disabled.
func (o Options) Enabled() bool {
	return !o.Disabled && o.TracesURL() != ""
}

// TracesURL is the URL spans are posted to, or "" when no endpoint is set.
func (o Options) TracesURL() string {
	if o.TracesEndpoint != "" {
		return o.TracesEndpoint
	}
	if o.Endpoint != "" {
		return strings.TrimSuffix(o.Endpoint, "/") + "/v1/traces"
	}
	return ""
}

// Validate reports every problem of the options that the parsers of the
// single values cannot see.
func (o Options) Validate() []error {
	var errs []error
	if (o.ClientCert == "") != (o.ClientKey == "") {
		errs = append(errs, errors.New("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together; want both or neither"))
	}
	if o.MaxQueue > 0 && o.MaxExportBatch > o.MaxQueue {
		errs = append(errs, fmt.Errorf("OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%d is larger than OTEL_BSP_MAX_QUEUE_SIZE=%d", o.MaxExportBatch, o.MaxQueue))
	}
	// The exporter refuses a TLS configuration for an http:// endpoint.
	if o.CA != "" || o.ClientCert != "" {
		for _, u := range []string{o.TracesURL(), o.MetricsURL()} {
			if u != "" && !isHTTPS(u) {
				errs = append(errs, fmt.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE or _CLIENT_CERTIFICATE is set, but the endpoint %s is not https://; want an https:// endpoint, or no certificate", u))
				break
			}
		}
	}
	if _, err := NewSampler(o.Sampler, o.SamplerArg); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// ParseEndpoint checks an OTLP endpoint: an http or https URL with a host.
func ParseEndpoint(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("is not a URL with a host; want http:// or https://HOST[:PORT][/PATH]")
	}
	return v, nil
}

// ParseKeyValues parses the key=value,key=value lists of
// OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES; values are
// percent-decoded.
func ParseKeyValues(v string) (map[string]string, error) {
	m := map[string]string{}
	for item := range strings.SplitSeq(v, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, val, ok := strings.Cut(item, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, errors.New("is not a comma list of key=value pairs; want such as key1=value1,key2=value2")
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, errors.New("has a value that is not percent-encoded correctly; want %XX escapes only")
		}
		m[k] = dec
	}
	return m, nil
}

// Samplers GoTrack accepts in OTEL_TRACES_SAMPLER.
var Samplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// NewSampler returns the sampler OTEL_TRACES_SAMPLER names; arg is the
// ratio of the *traceidratio samplers, from 0 to 1.
func NewSampler(name string, arg float64) (sdktrace.Sampler, error) {
	if strings.HasSuffix(name, "traceidratio") && !(arg >= 0 && arg <= 1) { // NaN too
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%v is not a ratio from 0 to 1", arg)
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(arg), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "parentbased_traceidratio", "":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(arg)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q is not one of %s", name, strings.Join(Samplers, ", "))
}

// ParseRatio parses OTEL_TRACES_SAMPLER_ARG.
func ParseRatio(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	// Written so that NaN, which ParseFloat accepts and which compares
	// false with everything, is refused too.
	if err != nil || !(f >= 0 && f <= 1) {
		return 0, errors.New("is not a ratio; want 0 to 1")
	}
	return f, nil
}

// Provider is the tracer provider while tracing is on.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// Propagator reads and writes W3C traceparent and tracestate only: baggage
// is not propagated, as it may carry personal data.
var Propagator = propagation.TraceContext{}

// Setup starts the exporter when o.Enabled, and returns nil otherwise.
func Setup(o Options, version string) (*Provider, error) {
	if !o.Enabled() {
		return nil, nil
	}
	sampler, err := NewSampler(o.Sampler, o.SamplerArg)
	if err != nil {
		return nil, err
	}
	if o.Sampler != "always_off" {
		sampler = jobSampler{sampler}
	}
	// The exporter reads the process environment too (per-signal headers,
	// certificates, compression, timeout): every option is set here, so
	// that it follows only the variables GoTrack lists and checks, as
	// config.Typos tells the operator of any other.
	tc, err := tlsConfig(o, o.TracesURL())
	if err != nil {
		return nil, err
	}
	eopts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(o.TracesURL()), otlptracehttp.WithHeaders(o.Headers),
		otlptracehttp.WithTLSClientConfig(tc), otlptracehttp.WithCompression(otlptracehttp.NoCompression),
		otlptracehttp.WithTimeout(ExportRequestTimeout)}
	exp, err := otlptracehttp.New(context.Background(), eopts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, o.resourceAttrs(version)...)
	var bopts []sdktrace.BatchSpanProcessorOption
	if o.BatchDelay > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(o.BatchDelay))
	}
	if o.ExportTimeout > 0 {
		bopts = append(bopts, sdktrace.WithExportTimeout(o.ExportTimeout))
	}
	if o.MaxQueue > 0 {
		bopts = append(bopts, sdktrace.WithMaxQueueSize(o.MaxQueue))
	}
	if o.MaxExportBatch > 0 {
		bopts = append(bopts, sdktrace.WithMaxExportBatchSize(o.MaxExportBatch))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sampler),
		// The SDK's defaults, set so that it does not take OTEL_SPAN_*
		// limits from the environment, which GoTrack does not list.
		sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{
			AttributeValueLengthLimit:   sdktrace.DefaultAttributeValueLengthLimit,
			AttributeValueDepthLimit:    sdktrace.DefaultAttributeValueDepthLimit,
			AttributeCountLimit:         sdktrace.DefaultAttributeCountLimit,
			EventCountLimit:             sdktrace.DefaultEventCountLimit,
			LinkCountLimit:              sdktrace.DefaultLinkCountLimit,
			AttributePerEventCountLimit: sdktrace.DefaultAttributePerEventCountLimit,
			AttributePerLinkCountLimit:  sdktrace.DefaultAttributePerLinkCountLimit,
		}),
		sdktrace.WithResource(res),
		sdktrace.WithBatcher(exp, bopts...),
	)
	return &Provider{tp: tp}, nil
}

// tlsConfig is the TLS configuration of an export to url: nil for an
// http:// URL (which the exporter requires), else the certificates set.
func tlsConfig(o Options, url string) (*tls.Config, error) {
	if !isHTTPS(url) {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CA != "" {
		pem, err := os.ReadFile(o.CA)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("OTEL_EXPORTER_OTLP_CERTIFICATE holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if o.ClientCert != "" {
		c, err := tls.LoadX509KeyPair(o.ClientCert, o.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/_CLIENT_KEY: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// resourceAttrs are the resource attributes of GoTrack's spans and job
// metrics: OTEL_RESOURCE_ATTRIBUTES, service.name and service.version.
// service.name is OTEL_SERVICE_NAME, else that of OTEL_RESOURCE_ATTRIBUTES,
// else gotrack, as the OpenTelemetry specification orders them; the
// configuration gives the default when OTEL_SERVICE_NAME is unset, so the
// default does not win over OTEL_RESOURCE_ATTRIBUTES.
func (o Options) resourceAttrs(version string) []attribute.KeyValue {
	name := o.ServiceName
	attrs := make([]attribute.KeyValue, 0, len(o.Resource)+2)
	for _, kv := range o.Resource {
		if kv.Key == semconv.ServiceNameKey {
			if name == "" || name == DefaultServiceName {
				name = kv.Value.AsString()
			}
			continue
		}
		attrs = append(attrs, kv)
	}
	if name == "" {
		name = DefaultServiceName
	}
	return append(attrs, semconv.ServiceName(name), semconv.ServiceVersion(version))
}

func isHTTPS(url string) bool { return strings.HasPrefix(strings.ToLower(url), "https://") }

// Tracer returns GoTrack's tracer, or nil when p is nil (tracing off).
func (p *Provider) Tracer() trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tp.Tracer(Scope)
}

// Shutdown exports the spans still buffered, by ctx's deadline.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}
