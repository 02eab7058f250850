package enrich

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/enrich/enrichtest"
	"github.com/gotrack/gotrack/internal/event"
)

// Real user agents, as these clients sent them in 2024-2025.
const (
	chromeWindows  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	chromeAndroid  = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
	safariIOS      = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
	safariIPad     = "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
	safariMac      = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"
	firefox        = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
	googlebot      = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	googlebotSmart = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	bingbot        = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
	curl           = "curl/8.5.0"
	headlessChrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"
	pythonRequests = "python-requests/2.32.3"
	goClient       = "Go-http-client/1.1"
)

func newEnricher(t *testing.T, opts Options) (*Enricher, *prometheus.Registry, *bytes.Buffer) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	var log bytes.Buffer
	x, err := New(opts, reg, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return x, reg, &log
}

// browserRequest is a request with the headers a browser always sends.
func browserRequest(ua string) *http.Request {
	r := httptest.NewRequest("GET", "/px.gif", nil)
	if ua != "" {
		r.Header.Set("User-Agent", ua)
	}
	r.Header.Set("Accept-Language", "en-GB,en;q=0.9")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br")
	return r
}

func TestUserAgents(t *testing.T) {
	x, _, _ := newEnricher(t, Options{UA: true, Bot: true})
	for _, c := range []struct {
		ua                       string
		browser, os, device      string
		versionPrefix, osVersion string
		reasons                  []string
	}{
		{chromeWindows, "Chrome", "Windows", "desktop", "131.", "10.0", nil},
		{chromeAndroid, "Chrome", "Android", "mobile", "131.", "10", nil},
		{safariIOS, "Safari", "iOS", "mobile", "18.1", "18.1", nil},
		{safariIPad, "Safari", "iOS", "tablet", "17.6", "17.6", nil},
		{safariMac, "Safari", "macOS", "desktop", "18.1", "10.15.7", nil},
		{firefox, "Firefox", "Windows", "desktop", "133.0", "10.0", nil},
		{googlebot, "Googlebot", "", "bot", "2.1", "", []string{ReasonCrawler}},
		{googlebotSmart, "Googlebot", "Android", "bot", "2.1", "6.0.1", []string{ReasonCrawler}},
		{bingbot, "Bingbot", "", "bot", "2.0", "", []string{ReasonCrawler}},
		{curl, "curl", "", "bot", "8.5.0", "", []string{ReasonAutomation}},
		{headlessChrome, "Headless Chrome", "Linux", "desktop", "131.", "x86_64", []string{ReasonHeadless}},
		{pythonRequests, "python-requests", "", "bot", "2.32.3", "", []string{ReasonAutomation}},
		{goClient, "Go-http-client", "", "bot", "1.1", "", []string{ReasonAutomation}},
		{"", "", "", "unknown", "", "", []string{ReasonNoUserAgent}},
	} {
		t.Run(c.browser+"/"+c.ua, func(t *testing.T) {
			en := x.Request(browserRequest(c.ua), netip.Addr{}, false)
			u := en.UA
			if u.Browser != c.browser || u.OS != c.os || u.Device != c.device || !strings.HasPrefix(u.Version, c.versionPrefix) || u.OSVersion != c.osVersion {
				t.Errorf("ua %+v, want %s %s* on %s %s, %s", *u, c.browser, c.versionPrefix, c.os, c.osVersion, c.device)
			}
			if en.Bot.IsBot != (len(c.reasons) > 0) || !slices.Equal(en.Bot.Reasons, c.reasons) && len(c.reasons)+len(en.Bot.Reasons) > 0 {
				t.Errorf("bot %+v, want reasons %v", *en.Bot, c.reasons)
			}
		})
	}
}

// TestMissingHeaders flags a browser UA without the headers browsers
// always send, and leaves a tool alone (its reason is automation).
func TestMissingHeaders(t *testing.T) {
	x, _, _ := newEnricher(t, Options{Bot: true})
	r := httptest.NewRequest("GET", "/px.gif", nil)
	r.Header.Set("User-Agent", chromeWindows)
	r.Header.Set("Accept-Encoding", "gzip")
	en := x.Request(r, netip.Addr{}, false)
	if !en.Bot.IsBot || !slices.Equal(en.Bot.Reasons, []string{ReasonMissingHeaders}) {
		t.Errorf("Chrome without Accept-Language: %+v", *en.Bot)
	}
	if en := x.Request(browserRequest(chromeWindows), netip.Addr{}, false); en.Bot.IsBot {
		t.Errorf("a complete Chrome request flagged: %+v", *en.Bot)
	}
	// The cached entry's reasons are not changed by a request's own.
	r.Header.Set("User-Agent", curl)
	x.Request(r, netip.Addr{}, false)
	if en := x.Request(browserRequest(curl), netip.Addr{}, false); !slices.Equal(en.Bot.Reasons, []string{ReasonAutomation}) {
		t.Errorf("curl: %v", en.Bot.Reasons)
	}
}

// TestMissingHeadersShared: the requests of one browser UA that lack its
// headers share one enrichment, built once, as complete requests do, and
// the entry's own reasons stay as they were.
func TestMissingHeadersShared(t *testing.T) {
	x, _, _ := newEnricher(t, Options{UA: true, Bot: true})
	r := httptest.NewRequest("GET", "/px.gif", nil)
	r.Header.Set("User-Agent", chromeWindows)
	first := x.Request(r, netip.Addr{}, false)
	if allocs := testing.AllocsPerRun(100, func() {
		if en := x.Request(r, netip.Addr{}, false); en != first {
			t.Fatalf("another request of the same UA and headers: %p, not the first's %p", en, first)
		}
	}); allocs != 0 {
		t.Errorf("a request without Accept-Language allocates %v times", allocs)
	}
	if !first.Bot.IsBot || !slices.Equal(first.Bot.Reasons, []string{ReasonMissingHeaders}) || first.UA == nil || first.UA.Browser != "Chrome" {
		t.Errorf("Chrome without Accept-Language: %+v, %+v", *first.Bot, first.UA)
	}
	if en := x.Request(browserRequest(chromeWindows), netip.Addr{}, false); en.Bot.IsBot || len(en.Bot.Reasons) != 0 {
		t.Errorf("a complete Chrome request after the others: %+v", *en.Bot)
	}
}

// TestUACacheBound parses more distinct user agents than the cache holds.
func TestUACacheBound(t *testing.T) {
	c := newUACache(UACacheSize)
	for i := range 3 * UACacheSize {
		c.get(chromeWindows + strings.Repeat("x", i%300) + string(rune('a'+i%26)) + strings.Repeat("y", i/300))
		if n := c.len(); n > UACacheSize {
			t.Fatalf("%d entries, more than %d", n, UACacheSize)
		}
	}
	a, b := c.get(safariIOS), c.get(safariIOS)
	if a != b {
		t.Error("a repeated user agent is parsed again")
	}
}

// TestGeoIP looks addresses up in small City and ASN databases built with
// mmdbwriter, IPv4 and IPv6, flags a datacenter network, and reloads: a
// good file replaces the database, a bad one keeps it.
func TestGeoIP(t *testing.T) {
	dir := t.TempDir()
	geoPath, asnPath := filepath.Join(dir, "city.mmdb"), filepath.Join(dir, "asn.mmdb")
	enrichtest.WriteDB(t, geoPath, "GeoLite2-City", map[string]mmdbtype.Map{
		"198.51.100.0/24":  enrichtest.City("DE", "BE", "Berlin"),
		"198.51.100.77/32": enrichtest.City("FR", "IDF", "Paris"), // inside the /24: found only on the full address
		"2001:db8::/32":    enrichtest.City("JP", "13", "Tokyo"),
	})
	enrichtest.WriteDB(t, asnPath, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"198.51.100.0/24": enrichtest.ASN(3320, "Deutsche Telekom AG"),
		"203.0.113.0/24":  enrichtest.ASN(16509, "AMAZON-02"),
	})
	x, reg, log := newEnricher(t, Options{Bot: true, GeoIPDB: geoPath, GeoIPASNDB: asnPath})
	look := func(ip string) *event.Enrichment {
		return x.Request(browserRequest(chromeWindows), netip.MustParseAddr(ip), true)
	}
	for ip, want := range map[string]event.Geo{
		"198.51.100.9":  {Country: "DE", Region: "BE", City: "Berlin"},
		"198.51.100.77": {Country: "FR", Region: "IDF", City: "Paris"},
		"2001:db8::1":   {Country: "JP", Region: "13", City: "Tokyo"},
	} {
		if en := look(ip); en.Geo == nil || *en.Geo != want {
			t.Errorf("geo of %s = %+v, want %+v", ip, en.Geo, want)
		}
	}
	if en := look("192.0.2.1"); en.Geo != nil || en.ASN != nil {
		t.Errorf("an address in no network: %+v %+v", en.Geo, en.ASN)
	}
	en := look("198.51.100.9")
	if en.ASN == nil || *en.ASN != (event.ASN{Number: 3320, Org: "Deutsche Telekom AG"}) || en.Bot.IsBot {
		t.Errorf("asn %+v bot %+v", en.ASN, en.Bot)
	}
	en = look("203.0.113.5")
	if en.ASN == nil || en.ASN.Number != 16509 || !slices.Equal(en.Bot.Reasons, []string{ReasonDatacenter}) {
		t.Errorf("a datacenter address: asn %+v bot %+v", en.ASN, en.Bot)
	}

	enrichtest.WriteDB(t, geoPath, "GeoLite2-City", map[string]mmdbtype.Map{"198.51.100.0/24": enrichtest.City("NL", "NH", "Amsterdam")})
	if err := x.Reload(); err != nil {
		t.Fatal(err)
	}
	if en := look("198.51.100.9"); en.Geo == nil || en.Geo.City != "Amsterdam" {
		t.Errorf("after a good reload: %+v", en.Geo)
	}
	os.WriteFile(geoPath, []byte("not a database"), 0o600)
	if err := x.Reload(); err == nil {
		t.Fatal("a bad database reloaded")
	}
	if en := look("198.51.100.9"); en.Geo == nil || en.Geo.City != "Amsterdam" {
		t.Errorf("a bad reload lost the database: %+v", en.Geo)
	}
	if !strings.Contains(log.String(), "geoip reload failed") {
		t.Errorf("the failed reload is not logged:\n%s", log)
	}
	if got := testutil.ToFloat64(x.reloads.WithLabelValues("geo", "failure")); got != 1 {
		t.Errorf("geo reload failures %v, want 1", got)
	}
	_ = reg
	if _, err := New(Options{GeoIPDB: geoPath}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("New opened a file that is not a database")
	}
}

// TestBotPolicy counts flagged events by reason, and under drop, dropped
// ones, and says to drop them.
func TestBotPolicy(t *testing.T) {
	for _, policy := range []BotPolicy{BotFlag, BotDrop} {
		x, _, _ := newEnricher(t, Options{Bot: true, BotPolicy: policy})
		en := x.Request(browserRequest(curl), netip.Addr{}, false)
		if drop := x.Count(en, 3); drop != (policy == BotDrop) {
			t.Errorf("%s: Count says drop=%v", policy, drop)
		}
		if drop := x.Count(x.Request(browserRequest(firefox), netip.Addr{}, false), 1); drop {
			t.Errorf("%s: a person's event is dropped", policy)
		}
		c := x.flagged
		if policy == BotDrop {
			c = x.dropped
		}
		if got := testutil.ToFloat64(c.WithLabelValues(ReasonAutomation)); got != 3 {
			t.Errorf("%s: counted %v events of reason automation, want 3", policy, got)
		}
	}
}

// TestCountByPolicy: a bot's events are counted under their policy's
// metric only, once per reason, without allocating.
func TestCountByPolicy(t *testing.T) {
	for _, policy := range []BotPolicy{BotFlag, BotDrop} {
		x, _, _ := newEnricher(t, Options{Bot: true, BotPolicy: policy})
		r := httptest.NewRequest("GET", "/px.gif", nil)
		r.Header.Set("User-Agent", headlessChrome) // headless, and missing headers
		en := x.Request(r, netip.Addr{}, false)
		if allocs := testing.AllocsPerRun(10, func() { x.Count(en, 2) }); allocs != 0 {
			t.Errorf("%s: Count allocates %v times", policy, allocs)
		}
		counted, other := x.flagged, x.dropped
		if policy == BotDrop {
			counted, other = other, counted
		}
		for _, reason := range Reasons {
			want := 0.0
			if slices.Contains(en.Bot.Reasons, reason) {
				want = 2 * 11 // AllocsPerRun runs it once more
			}
			if got := testutil.ToFloat64(counted.WithLabelValues(reason)); got != want {
				t.Errorf("%s: %s counted %v, want %v", policy, reason, got, want)
			}
			if got := testutil.ToFloat64(other.WithLabelValues(reason)); got != 0 {
				t.Errorf("%s: %s counted %v under the other policy's metric", policy, reason, got)
			}
		}
	}
}

// BenchmarkCount is the bot counting of a request with two reasons.
func BenchmarkCount(b *testing.B) {
	x, err := New(Options{Bot: true}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/px.gif", nil)
	r.Header.Set("User-Agent", headlessChrome)
	en := x.Request(r, netip.Addr{}, false)
	b.ReportAllocs()
	for b.Loop() {
		x.Count(en, 1)
	}
}

// TestBrowsersNamedLikeBots checks that a real browser whose device name
// merely contains "bot" (Cubot phones) is not flagged as a crawler: under
// BOT_POLICY=drop that would silently lose every event of its users.
func TestBrowsersNamedLikeBots(t *testing.T) {
	x, _, _ := newEnricher(t, Options{UA: true, Bot: true})
	for _, ua := range []string{
		"Mozilla/5.0 (Linux; Android 11; CUBOT X50) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Linux; Android 10; KINGKONG 5 Pro Build/QP1A.190711.020; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 CUBOT",
	} {
		en := x.Request(browserRequest(ua), netip.Addr{}, false)
		if en.Bot.IsBot {
			t.Errorf("%s: bot %+v, want a browser", ua, *en.Bot)
		}
	}
}
