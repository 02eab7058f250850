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

	"github.com/gotrack/gotrack/internal/event"
)

// BenchmarkPixelTraced is BenchmarkPixel with tracing on at the sampling
// ratio given, spans recorded in memory instead of exported.
func BenchmarkPixelTraced(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ratio float64
	}{{"1pct", 0.01}, {"all", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(bc.ratio))),
				sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
			n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, RespectDNT: true, SanitizeParams: event.DefaultSanitizeParams})
			h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Tracer: tp.Tracer("bench")}, n, nopPipeline{},
				prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/px.gif?e=pageview&url=https%3A%2F%2Fshop.example%2Fp%2F42&uid=v1234567", nil)
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}
