package ingest

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/enrich"
	"github.com/gotrack/gotrack/internal/event"
)

// BenchmarkPixelKeyEnriched is BenchmarkPixel with AUTH_MODE=key (a pixel
// key checked against its source's origins) and ENRICH=ua,bot,campaign.
func BenchmarkPixelKeyEnriched(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	auth := newAuth(b, "sources:\n  - id: shop-web\n    write_keys: [wk_shop_1]\n    origins: [\"https://shop.example\"]\n", nil, reg)
	x, err := enrich.New(enrich.Options{UA: true, Bot: true, Campaign: true, BotPolicy: enrich.BotFlag}, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, RespectDNT: true, SanitizeParams: event.DefaultSanitizeParams})
	h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Auth: auth, Enricher: x}, n, nopPipeline{}, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/px.gif?k=wk_shop_1&e=pageview&url=https%3A%2F%2Fshop.example%2Fp%2F42%3Futm_source%3Dnews&ref=https%3A%2F%2Fwww.example.org%2F"+
		"&title=Blue%20Widget&uid=v1234567&sid=s7654321&p.plan=pro&cb=1732270000", nil)
	req.Header.Set("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")
	req.Header.Set("Referer", "https://shop.example/p/42")
	req.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	w := &nopWriter{h: http.Header{}}
	h.ServeHTTP(w, req)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}
