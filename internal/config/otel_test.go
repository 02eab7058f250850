package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/testpki"
)

func TestTracingDefaultsOff(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	o := c.Tracing
	if o.Enabled() {
		t.Error("tracing is on without an endpoint")
	}
	if o.ServiceName != "gotrack" || o.Sampler != "parentbased_traceidratio" || o.SamplerArg != 0.001 {
		t.Errorf("tracing defaults: %+v", o)
	}
	c, err = Load(env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing.MetricsURL() != "http://127.0.0.1:4318/v1/metrics" {
		t.Errorf("metrics URL %q", c.Tracing.MetricsURL())
	}
	if !c.Tracing.Enabled() || c.Tracing.TracesURL() != "http://127.0.0.1:4318/v1/traces" {
		t.Errorf("endpoint: enabled=%v url=%q", c.Tracing.Enabled(), c.Tracing.TracesURL())
	}
	c, err = Load(env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://b/x",
		"OTEL_BSP_SCHEDULE_DELAY", "250", "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,team=a%20b",
		"OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Tracing; got.TracesURL() != "https://b/x" || got.BatchDelay != 250*time.Millisecond ||
		len(got.Resource) != 2 || got.Resource[1].Value.AsString() != "a b" || got.Headers["api-key"] != "s3cret" {
		t.Errorf("parsed: %+v", got)
	}
	c, err = Load(env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318", "OTEL_SDK_DISABLED", "true"))
	if err != nil || c.Tracing.Enabled() {
		t.Errorf("OTEL_SDK_DISABLED=true: err=%v enabled=%v", err, c.Tracing.Enabled())
	}
}

// TestTracingProblemsListed checks that every bad OTEL_* value is a startup
// error, listed with the other problems, and that headers stay secret.
func TestTracingProblemsListed(t *testing.T) {
	_, err := Load(env(
		"QUEUE_SIZE", "ten",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
		"OTEL_EXPORTER_OTLP_HEADERS", "api-key",
		"OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem",
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/nonexistent/c.pem",
		"OTEL_RESOURCE_ATTRIBUTES", "=x",
		"OTEL_TRACES_SAMPLER", "sometimes",
		"OTEL_TRACES_SAMPLER_ARG", "1.5",
		"OTEL_BSP_SCHEDULE_DELAY", "5s",
		"OTEL_BSP_MAX_QUEUE_SIZE", "10",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20",
		"OTEL_SDK_DISABLED", "yes please",
	))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load = %v, want a *config.Error", err)
	}
	msg := err.Error()
	for _, want := range []string{"QUEUE_SIZE", "OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=",
		"OTEL_EXPORTER_OTLP_PROTOCOL=", "OTEL_EXPORTER_OTLP_HEADERS=\"(secret)\"", "OTEL_EXPORTER_OTLP_CERTIFICATE:",
		"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together",
		"OTEL_RESOURCE_ATTRIBUTES=", "OTEL_TRACES_SAMPLER=", "OTEL_TRACES_SAMPLER_ARG=", "OTEL_BSP_SCHEDULE_DELAY=",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE=20 is larger than OTEL_BSP_MAX_QUEUE_SIZE=10", "OTEL_SDK_DISABLED="} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "api-key") {
		t.Errorf("error shows the headers, which may hold a key:\n%s", msg)
	}
}

// TestTracingSamplerArgNotANumber: strconv.ParseFloat accepts "NaN", which
// compares neither below 0 nor above 1; a NaN ratio makes the SDK's
// threshold undefined (uint64(NaN)), so it must be refused at start.
func TestTracingSamplerArgNotANumber(t *testing.T) {
	for _, v := range []string{"NaN", "nan", "-NaN", "+Inf", "-inf"} {
		_, err := Load(env("OTEL_TRACES_SAMPLER_ARG", v))
		if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER_ARG=") {
			t.Errorf("OTEL_TRACES_SAMPLER_ARG=%s: Load = %v, want a startup error naming it", v, err)
		}
	}
}

// TestTracingCertificateNeedsHTTPS: the OTLP exporter refuses a TLS
// configuration for an http:// endpoint, so a CA or client certificate
// with one must be a configuration problem listed with the others, not an
// error of its own after the configuration was accepted.
func TestTracingCertificateNeedsHTTPS(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	testpki.WriteFile(t, ca, testpki.NewCA(t, "otlp").CertPEM)
	_, err := Load(env("QUEUE_SIZE", "ten", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_CERTIFICATE", ca))
	if err == nil || !strings.Contains(err.Error(), "QUEUE_SIZE") || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_CERTIFICATE") {
		t.Errorf("CA with an http:// endpoint: Load = %v, want both problems listed", err)
	}
	if _, err := Load(env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_CERTIFICATE", ca)); err != nil {
		t.Errorf("CA with an https:// endpoint: %v", err)
	}
}

// TestTracingHeadersValid: a header the HTTP client would refuse (a name
// with a space, a value with a line break, once percent-decoded) would
// fail every export while GoTrack runs; it must be refused at start, and
// the error must not show the value, which may be a key.
func TestTracingHeadersValid(t *testing.T) {
	for _, v := range []string{"api-key=s3cret%0D%0AX-Injected: 1", "api key=s3cret", "api-key=s3cret%00"} {
		_, err := Load(env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS", v))
		if err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_HEADERS") {
			t.Errorf("OTEL_EXPORTER_OTLP_HEADERS=%q: Load = %v, want a startup error naming it", v, err)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error shows the header's value: %v", err)
		}
	}
	if _, err := Load(env("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,Authorization=Basic%20eDp5")); err != nil {
		t.Errorf("valid headers refused: %v", err)
	}
}

// TestTraceClientParent: TRACE_CLIENT_PARENT is follow (the default, also
// when empty) or link, spelled exactly; any other value is a problem listed
// with the others.
func TestTraceClientParent(t *testing.T) {
	for v, want := range map[string]bool{"": false, "follow": false, "link": true} {
		c, err := Load(env("TRACE_CLIENT_PARENT", v))
		if err != nil {
			t.Fatalf("TRACE_CLIENT_PARENT=%q: %v", v, err)
		}
		if c.Tracing.LinkClientTraces != want {
			t.Errorf("TRACE_CLIENT_PARENT=%q: LinkClientTraces=%v, want %v", v, c.Tracing.LinkClientTraces, want)
		}
	}
	for _, v := range []string{"LINK", " link", "link ", "links", "true"} {
		_, err := Load(env("TRACE_CLIENT_PARENT", v, "QUEUE_SIZE", "ten"))
		var ce *Error
		if !errors.As(err, &ce) || len(ce.Problems) != 2 {
			t.Errorf("TRACE_CLIENT_PARENT=%q with a bad QUEUE_SIZE: %v, want both problems", v, err)
			continue
		}
		if want := `TRACE_CLIENT_PARENT="` + v + `" (environment): want follow or link`; !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
