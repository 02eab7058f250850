package ingest

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/event"
)

type nopPipeline struct{}

func (nopPipeline) Submit([]*event.Event) error  { return nil }
func (nopPipeline) SubmitEach(*event.Event) bool { return true }
func (nopPipeline) CountDropped(string, int)     {}
func (nopPipeline) Ready() (bool, []string)      { return true, nil }

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func benchHandler(b *testing.B) http.Handler {
	n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, RespectDNT: true, SanitizeParams: event.DefaultSanitizeParams})
	h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500}, n, nopPipeline{}, prometheus.NewRegistry(),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// BenchmarkPixel is the whole pixel request inside GoTrack: routing,
// metrics, parsing, privacy, encoding, and the GIF.
func BenchmarkPixel(b *testing.B) {
	h := benchHandler(b)
	req := httptest.NewRequest("GET", "/px.gif?e=pageview&url=https%3A%2F%2Fshop.example%2Fp%2F42%3Futm_source%3Dnews&ref=https%3A%2F%2Fwww.example.org%2F"+
		"&title=Blue%20Widget&uid=v1234567&sid=s7654321&p.plan=pro&cb=1732270000", nil)
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0")
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkCollect20 is one /collect request carrying 20 events.
func BenchmarkCollect20(b *testing.B) {
	h := benchHandler(b)
	item := `{"type":"add_to_cart","url":"https://shop.example/p/42","visitor_id":"v1234567","props":{"sku":"W-42","qty":2}}`
	body := "[" + strings.Repeat(item+",", 19) + item + "]"
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req := httptest.NewRequest("POST", "/collect", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}
