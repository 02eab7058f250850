package event

import (
	"testing"
	"time"
)

const benchQuery = "e=pageview&url=https%3A%2F%2Fshop.example%2Fproducts%2F42%3Futm_source%3Dnews%26token%3Dx&ref=https%3A%2F%2Fwww.example.org%2F" +
	"&title=Blue%20Widget%20%E2%80%93%20Shop&uid=v1234567&sid=s7654321&p.plan=pro&p.ab=b&cb=1732270000"

func benchNormalizer(b *testing.B) *Normalizer {
	n, err := NewNormalizer(Policy{IPMode: IPTruncate, RespectDNT: true, SanitizeParams: DefaultSanitizeParams})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func BenchmarkFromQuery(b *testing.B) {
	n := benchNormalizer(b)
	m := Meta{Now: time.Now(), IP: "203.0.113.0", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.FromQuery(benchQuery, m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromJSON(b *testing.B) {
	n := benchNormalizer(b)
	body := []byte(`{"type":"add_to_cart","url":"https://shop.example/p/42","visitor_id":"v1234567","session_id":"s7654321",` +
		`"sent_at":"2026-11-22T10:00:00Z","props":{"sku":"W-42","qty":2,"price":19.99}}`)
	m := Meta{Now: time.Now(), IP: "203.0.113.0", UserAgent: "Mozilla/5.0"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.FromJSON(body, m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClientIP(b *testing.B) {
	n := benchNormalizer(b)
	b.ReportAllocs()
	for b.Loop() {
		n.ClientIP("203.0.113.77:51234", nil)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	n := benchNormalizer(b)
	e, err := n.FromQuery(benchQuery, Meta{Now: time.Now(), IP: "203.0.113.0", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0"})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(e.JSON())))
	for b.Loop() {
		buf = e.AppendJSON(buf[:0])
	}
}
