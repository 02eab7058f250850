package ingest

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/event"
)

// BenchmarkPixelTraced is BenchmarkPixel's request with tracing off, and
// on at the sampling ratios given, spans recorded in memory instead of
// exported: "unsampled" is the cost of tracing on for a request the
// sampler leaves out, "all" that of a request it traces.
func BenchmarkPixelTraced(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ratio float64 // < 0: tracing off
	}{{"off", -1}, {"unsampled", 0}, {"1pct", 0.01}, {"all", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			var tracer trace.Tracer
			if bc.ratio >= 0 {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(bc.ratio))),
					sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
				tracer = tp.Tracer("bench")
			}
			n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, RespectDNT: true, SanitizeParams: event.DefaultSanitizeParams})
			h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Tracer: tracer}, n, nopPipeline{},
				prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/px.gif?e=pageview&url=https%3A%2F%2Fshop.example%2Fp%2F42%3Futm_source%3Dnews&ref=https%3A%2F%2Fwww.example.org%2F"+
				"&title=Blue%20Widget&uid=v1234567&sid=s7654321&p.plan=pro&cb=1732270000", nil)
			req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0")
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}
