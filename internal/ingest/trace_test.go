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
