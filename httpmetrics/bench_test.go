package httpmetrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func BenchmarkMiddleware(b *testing.B) {
	m, err := New(prometheus.NewRegistry(), Opts{
		Namespace:      "bench",
		RequestsLabels: []Label{Endpoint, Method, Status},
		DurationLabels: []Label{Endpoint, Method},
		Routes:         []Route{{Pattern: "GET /px.gif", Statuses: []int{200}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /px.gif", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	h := m.Wrap(mux)
	req := httptest.NewRequest("GET", "/px.gif?e=x", nil)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
