package ingest

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/enrich"
	"github.com/gotrack/gotrack/internal/enrich/enrichtest"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
)

// TestEnrichedPixel checks, through the handler, that a pixel's event
// carries ua, bot and campaign, and a geo looked up on the full address
// although IP_MODE truncates the stored one.
func TestEnrichedPixel(t *testing.T) {
	db := filepath.Join(t.TempDir(), "city.mmdb")
	enrichtest.WriteDB(t, db, "GeoLite2-City", map[string]mmdbtype.Map{
		"198.51.100.0/24": enrichtest.City("", "", "Berlin"), "198.51.100.77/32": enrichtest.City("", "", "Paris")})
	x, err := enrich.New(enrich.Options{UA: true, Bot: true, Campaign: true, GeoIPDB: db}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, event.Policy{IPMode: event.IPTruncate}, Options{Enricher: x})
	r := httptest.NewRequest("GET", "/px.gif?url="+strings.ReplaceAll("https://shop.example/?utm_source=news&gclid=G1", "&", "%26"), nil)
	r.RemoteAddr = "198.51.100.77:5000"
	r.Header.Set("User-Agent", "curl/8.5.0")
	f.h.ServeHTTP(httptest.NewRecorder(), r)
	if len(f.pipe.events) != 1 {
		t.Fatalf("%d events", len(f.pipe.events))
	}
	got := string(f.pipe.events[0].JSON())
	for _, want := range []string{`"ip":"198.51.100.0"`, `"geo":{"city":"Paris"}`, `"ua":{"device":"bot","browser":"curl"`,
		`"bot":{"is_bot":true,"reasons":["automation"]}`, `"campaign":{"utm_source":"news","gclid":"G1"}`} {
		if !strings.Contains(got, want) {
			t.Errorf("event lacks %s:\n%s", want, got)
		}
	}
}

// TestBotPolicyDrop checks that BOT_POLICY=drop drops a bot's pixel (the
// GIF is still served) and its /collect events, counted with reason bot,
// and keeps a person's.
func TestBotPolicyDrop(t *testing.T) {
	x, err := enrich.New(enrich.Options{Bot: true, BotPolicy: enrich.BotDrop}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, event.Policy{}, Options{Enricher: x})
	r := httptest.NewRequest("GET", "/px.gif", nil)
	r.Header.Set("User-Agent", "python-requests/2.32.3")
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "image/gif" {
		t.Fatalf("pixel: %d", w.Code)
	}
	r = httptest.NewRequest("POST", "/collect", strings.NewReader(`[{"type":"a"},{"type":"b"}]`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "HeadlessChrome")
	w = httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusAccepted || !strings.Contains(w.Body.String(), `"dropped":2`) {
		t.Fatalf("collect: %d %s", w.Code, w.Body)
	}
	if got := f.pipe.dropped[pipeline.DropBot]; got != 3 || len(f.pipe.events) != 0 {
		t.Fatalf("bot drops %d, events %d; want 3 and 0", got, len(f.pipe.events))
	}
	r = httptest.NewRequest("GET", "/px.gif", nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0")
	r.Header.Set("Accept-Language", "en")
	r.Header.Set("Accept-Encoding", "gzip")
	f.h.ServeHTTP(httptest.NewRecorder(), r)
	if len(f.pipe.events) != 1 {
		t.Fatal("a person's pixel was dropped")
	}
}
