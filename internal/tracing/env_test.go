package tracing

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/gotrack/gotrack/internal/tracing/otlptest"
)

// TestExporterIgnoresUnlistedEnv: GoTrack honours the OTEL_* variables it
// lists (gotrack -h) and warns that any other OTEL_EXPORTER_OTLP_* variable
// "is not a GoTrack setting and is ignored". The OTLP exporters read the
// process environment themselves, though, so without care they would
// honour, unchecked, variables GoTrack says it ignores: a per-signal header
// (sent to the collector), compression, a CA file, a timeout.
func TestExporterIgnoresUnlistedEnv(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []http.Header
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-from-env=1")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-from-env=1")
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")

	// Once with OTEL_EXPORTER_OTLP_HEADERS set, once without.
	for _, headers := range []map[string]string{{"x-listed": "1"}, nil} {
		o := Options{Endpoint: srv.URL, Sampler: "always_on", Headers: headers}
		p, err := Setup(o, "test")
		if err != nil {
			t.Fatal(err)
		}
		_, span := p.Tracer().Start(context.Background(), "x")
		span.End()
		if err := p.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := PushJobMetrics(t.Context(), o, "test", []Gauge{{Name: "g", Value: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("%d exports received, want 4 (spans, metrics, twice)", len(seen))
	}
	for i, h := range seen {
		if h.Get("X-From-Env") != "" || h.Get("Content-Encoding") != "" {
			t.Errorf("an export followed variables GoTrack says it ignores: %v", h)
		}
		if i < 2 && h.Get("X-Listed") != "1" {
			t.Errorf("an export lacks OTEL_EXPORTER_OTLP_HEADERS: %v", h)
		}
	}
}

// TestSpanLimitsIgnoreEnv: the SDK reads its span limits from the process
// environment too (OTEL_SPAN_LINK_COUNT_LIMIT and so on), which GoTrack
// does not list and reports as ignored; a sink span's links must stay
// bounded by pipeline.MaxLinks (32) as README says, not by such a variable.
func TestSpanLimitsIgnoreEnv(t *testing.T) {
	t.Setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "2")
	t.Setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
	rc := otlptest.New(t)
	p, err := Setup(Options{Endpoint: rc.URL, Sampler: "always_on"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	var links []trace.Link
	for i := range 5 {
		links = append(links, trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, byte(i)}, SpanID: trace.SpanID{1, byte(i)}, TraceFlags: trace.FlagsSampled})})
	}
	_, span := p.Tracer().Start(context.Background(), "write log", trace.WithLinks(links...))
	span.AddEvent("retry")
	span.AddEvent("bisect")
	span.End()
	if err := p.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := rc.WaitSpan(t, "write log", func(s *tracepb.Span) bool { return s.Name == "write log" })
	if len(s.Links) != 5 || len(s.Events) != 2 {
		t.Errorf("span kept %d links and %d events, want 5 and 2: the environment's span limits were applied", len(s.Links), len(s.Events))
	}
}

// TestServiceNameFromResourceAttributes: as the OpenTelemetry
// specification has it, service.name comes from OTEL_SERVICE_NAME, else
// from service.name in OTEL_RESOURCE_ATTRIBUTES, else the default
// (gotrack). The default used to win over OTEL_RESOURCE_ATTRIBUTES.
func TestServiceNameFromResourceAttributes(t *testing.T) {
	var (
		mu    sync.Mutex
		names []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req colltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Error(err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.Resource.Attributes {
				if kv.Key == "service.name" {
					names = append(names, kv.Value.GetStringValue())
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(srv.Close)
	edge := []attribute.KeyValue{attribute.String("service.name", "edge-collector")}
	for _, o := range []Options{
		{ServiceName: "", Resource: edge},
		{ServiceName: DefaultServiceName, Resource: edge}, // OTEL_SERVICE_NAME unset: config gives the default
		{ServiceName: "named", Resource: edge},
		{ServiceName: ""},
	} {
		o.Endpoint, o.Sampler = srv.URL, "always_on"
		p, err := Setup(o, "test")
		if err != nil {
			t.Fatal(err)
		}
		_, span := p.Tracer().Start(context.Background(), "x")
		span.End()
		if err := p.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"edge-collector", "edge-collector", "named", "gotrack"}; !slices.Equal(names, want) {
		t.Errorf("service.name %q, want %q", names, want)
	}
}
