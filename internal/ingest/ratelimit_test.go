package ingest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/ratelimit"
)

// TestSourceRateLimit sends a burst for a source of rate 1/s, burst 3, at
// one instant of an injected clock: exactly three /collect requests pass,
// the fourth gets 429 with Retry-After and a JSON error, a pixel then
// still answers the GIF and counts a rate_limited drop, and a second later
// one more request passes.
func TestSourceRateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	auth := newAuth(t, "sources:\n  - id: shop\n    write_keys: [wk_shop_1]\n    origins: [\"https://shop.example\"]\n    rate: 1/s\n    burst: 3\n",
		func() time.Time { return now }, nil)
	f := newFixture(t, event.Policy{}, Options{Auth: auth})
	post := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/collect", strings.NewReader(`{"type":"x"}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Write-Key", "wk_shop_1")
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w
	}
	for i := range 3 {
		if w := post(); w.Code != http.StatusAccepted {
			t.Fatalf("request %d of the burst: %d", i+1, w.Code)
		}
	}
	w := post()
	var eb errorBody
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" || json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Error == "" {
		t.Fatalf("4th request: %d Retry-After=%q %s; want 429, 1, a JSON error", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	r := httptest.NewRequest("GET", "/px.gif?k=wk_shop_1", nil)
	r.Header.Set("Referer", "https://shop.example/")
	pw := httptest.NewRecorder()
	f.h.ServeHTTP(pw, r)
	if pw.Code != http.StatusOK || pw.Header().Get("Content-Type") != "image/gif" || f.pipe.dropped[pipeline.DropRateLimited] != 1 {
		t.Fatalf("pixel over the limit: %d %s, drops %v", pw.Code, pw.Header(), f.pipe.dropped)
	}
	now = now.Add(time.Second)
	if w := post(); w.Code != http.StatusAccepted {
		t.Fatalf("a second later: %d", w.Code)
	}
	if w := post(); w.Code != http.StatusTooManyRequests {
		t.Fatalf("a second later, the second request: %d", w.Code)
	}
}

// TestIPRateLimit checks that RATE_LIMIT_PER_IP applies to the address
// TRUST_PROXY chose: without it a forged X-Forwarded-For does not buy a new
// bucket; behind a trusted proxy each forwarded client has its own.
func TestIPRateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	send := func(f *fixture, xff string) int {
		r := httptest.NewRequest("POST", "/collect", strings.NewReader(`{"type":"x"}`))
		r.RemoteAddr = "198.51.100.7:4000"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Forwarded-For", xff)
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w.Code
	}
	b := ratelimit.Bucket{Rate: 1, Burst: 2}

	direct := newFixture(t, event.Policy{}, Options{RateLimitPerIP: ratelimit.NewKeyed[netip.Addr](b, 100, clock)})
	codes := []int{send(direct, "203.0.113.1"), send(direct, "203.0.113.2"), send(direct, "203.0.113.3")}
	if codes[0] != 202 || codes[1] != 202 || codes[2] != 429 {
		t.Errorf("forged X-Forwarded-For without TRUST_PROXY: %v, want 202 202 429", codes)
	}

	proxied := newFixture(t, event.Policy{TrustProxy: true}, Options{RateLimitPerIP: ratelimit.NewKeyed[netip.Addr](b, 100, clock)})
	codes = []int{send(proxied, "203.0.113.1"), send(proxied, "203.0.113.1"), send(proxied, "203.0.113.1"), send(proxied, "203.0.113.2")}
	if codes[0] != 202 || codes[1] != 202 || codes[2] != 429 || codes[3] != 202 {
		t.Errorf("behind a trusted proxy: %v, want 202 202 429 202", codes)
	}
}

// TestIPRateLimitIPv6 checks that an IPv6 client cannot leave its bucket by
// changing the low bits of its address: a host is usually given a whole
// /64, so RATE_LIMIT_PER_IP keys IPv6 clients by their /64.
func TestIPRateLimitIPv6(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	f := newFixture(t, event.Policy{}, Options{RateLimitPerIP: ratelimit.NewKeyed[netip.Addr](ratelimit.Bucket{Rate: 1, Burst: 2}, 100, clock)})
	send := func(remote string) int {
		r := httptest.NewRequest("POST", "/collect", strings.NewReader(`{"type":"x"}`))
		r.RemoteAddr = remote
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w.Code
	}
	codes := []int{send("[2001:db8:1:2::1]:4000"), send("[2001:db8:1:2::2]:4000"), send("[2001:db8:1:2:ffff::3]:4000"), send("[2001:db8:1:3::1]:4000")}
	if codes[0] != 202 || codes[1] != 202 || codes[2] != 429 || codes[3] != 202 {
		t.Errorf("three addresses of one /64, then another /64: %v, want 202 202 429 202", codes)
	}
}
