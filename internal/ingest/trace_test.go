package ingest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/tracing"
)

// TestUnsampledRequestLogs checks that a request the sampler leaves out,
// whose span records nothing, still has its span's ids on its log lines:
// the client's trace when it sent a traceparent, else a new one.
func TestUnsampledRequestLogs(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())), sdktrace.WithSpanProcessor(rec))
	var logs bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, SanitizeParams: event.DefaultSanitizeParams})
	h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Tracer: tp.Tracer("test")}, n, nopPipeline{},
		prometheus.NewRegistry(), log)
	if err != nil {
		t.Fatal(err)
	}
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, c := range []struct{ traceparent, wantTrace string }{
		{"00-" + clientTrace + "-00f067aa0ba902b7-00", clientTrace}, // the client did not sample it either
		{"", ""}, // a new trace
	} {
		logs.Reset()
		req := httptest.NewRequest("GET", "/px.gif?e=%zz", nil)
		if c.traceparent != "" {
			req.Header.Set("Traceparent", c.traceparent)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
		var l struct{ TraceID, SpanID string }
		var raw map[string]any
		for line := range strings.Lines(logs.String()) {
			if json.Unmarshal([]byte(line), &raw) == nil && raw["msg"] == "pixel event invalid" {
				l.TraceID, _ = raw["trace_id"].(string)
				l.SpanID, _ = raw["span_id"].(string)
			}
		}
		if len(l.TraceID) != 32 || len(l.SpanID) != 16 || l.SpanID == "0000000000000000" || (c.wantTrace != "" && l.TraceID != c.wantTrace) {
			t.Errorf("traceparent %q: log line ids %q/%q, want a span of trace %q:\n%s", c.traceparent, l.TraceID, l.SpanID, c.wantTrace, logs.String())
		}
	}
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans recorded, want none", n)
	}
}

// TestLinkClientTraces checks TRACE_CLIENT_PARENT: by default a client's
// sampled traceparent makes a parent-based sampler trace its request, in
// the client's trace; with LinkClientTraces the request gets a trace of its
// own, which the sampler alone decides on, linked to the client's span.
func TestLinkClientTraces(t *testing.T) {
	const (
		clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		clientSpan  = "00f067aa0ba902b7"
	)
	serve := func(t *testing.T, link bool, sampler sdktrace.Sampler) []sdktrace.ReadOnlySpan {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(rec))
		n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, SanitizeParams: event.DefaultSanitizeParams})
		h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Tracer: tp.Tracer("test"), LinkClientTraces: link},
			n, nopPipeline{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/px.gif?e=pageview", nil)
		req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientSpan+"-01") // sampled
		req.Header.Set("Tracestate", "vendor=1")
		h.ServeHTTP(httptest.NewRecorder(), req)
		return rec.Ended()
	}
	never := sdktrace.ParentBased(sdktrace.NeverSample())

	// Following, the client's sampled flag wins over the sampler.
	spans := serve(t, false, never)
	if len(spans) != 1 || spans[0].SpanContext().TraceID().String() != clientTrace || spans[0].Parent().SpanID().String() != clientSpan {
		t.Fatalf("follow: %d spans, want one, child of the client's span", len(spans))
	}
	// Linking, the sampler decides alone.
	if spans := serve(t, true, never); len(spans) != 0 {
		t.Errorf("link: %d spans recorded, want none: the client's flag decided", len(spans))
	}
	spans = serve(t, true, sdktrace.AlwaysSample())
	if len(spans) != 1 {
		t.Fatalf("link, always sampled: %d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanContext().TraceID().String() == clientTrace || s.Parent().IsValid() {
		t.Errorf("link: span in trace %s with parent %v, want a new root trace", s.SpanContext().TraceID(), s.Parent())
	}
	if l := s.Links(); len(l) != 1 || l[0].SpanContext.TraceID().String() != clientTrace ||
		l[0].SpanContext.SpanID().String() != clientSpan || l[0].SpanContext.TraceState().String() != "vendor=1" {
		t.Errorf("link: links %+v, want one to the client's span, with its tracestate", l)
	}
}
