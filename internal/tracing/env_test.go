package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
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
