package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gotrack/gotrack/internal/segment"
	"github.com/gotrack/gotrack/internal/testkit"
)

// appPage is a site page with the gotrack.js snippet: the calls before the
// script loads are queued and replayed.
var appPage = template.Must(template.New("app").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>App {{.Scenario}}</title>
<script>
window.gotrack=window.gotrack||function(){(gotrack.q=gotrack.q||[]).push(arguments)};
{{if .Prefixed}}gotrack('init',{writeKey:'wk_browser'});{{else}}gotrack('init',{endpoint:'{{.Endpoint}}',writeKey:'wk_browser',persist:{{.Persist}}});{{end}}
gotrack('pageview');
{{if .Queued}}gotrack('track','queued',{from:'snippet'});{{end}}
</script>
<script async src="{{.GoTrack}}/gotrack.js"></script>
{{if .Twice}}<script async src="{{.GoTrack}}/gotrack.js?again"></script>{{end}}
</head><body>{{.Scenario}}</body></html>`))

// ajsPage loads Segment's analytics-next, from the local node_modules,
// with GoTrack as its API host.
var ajsPage = template.Must(template.New("ajs").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>AJS {{.Scenario}}</title>
<script src="/lib/analytics-next.js"></script>
<script>
const seg = {apiKey: 'wk_ajs', apiHost: '{{.Host}}/v1', protocol: 'http'};
if (location.search.includes('batching=1')) seg.deliveryStrategy = {strategy: 'batching', config: {size: 10, timeout: 500}};
try {
  window.ajs = AnalyticsNext.AnalyticsBrowser.load({writeKey: 'wk_ajs', cdnSettings: {integrations: {'Segment.io': seg}, metrics: {sampleRate: 0}}});
  window.ajs.then(() => { window.ajsReady = true; }, (e) => { window.ajsError = String(e); });
  if (location.pathname.endsWith('/page.html')) {
    Promise.all([ajs.page('Test Page', {kind: 'ajs'}), ajs.track('Clicked', {n: 1})])
      .then(() => { window.ajsDone = true; }, (e) => { window.ajsError = String(e); });
  }
} catch (e) { window.ajsError = String(e); }
</script>
</head><body>ajs</body></html>`))

// startSite serves the test pages from another origin than GoTrack's.
// Pages of the scenario "prefix" load the script from prefixed, a GoTrack
// under ROUTE_PREFIX, and let it send to where it came from.
func startSite(t *testing.T, gotrack, prefixed string) string {
	t.Helper()
	lib, err := os.ReadFile(filepath.Join(jsDir, "node_modules/@segment/analytics-next/dist/umd/index.js"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /s/{scenario}/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		gt, pre := "http://"+gotrack, r.PathValue("scenario") == "prefix"
		if pre {
			gt = "http://" + prefixed
		}
		endpoint := gt
		if r.PathValue("scenario") == "down" {
			endpoint = "http://" + r.Host + "/flaky" // GoTrack behind a switch that answers 503
		}
		appPage.Execute(w, map[string]any{
			"Scenario": r.PathValue("scenario"), "GoTrack": gt, "Endpoint": endpoint, "Prefixed": pre,
			"Persist": r.URL.Query().Get("persist") == "1", "Queued": r.URL.Query().Get("track") == "queued",
			"Twice": r.PathValue("scenario") == "track", // a page that includes the script twice
		})
	})
	mux.HandleFunc("GET /ajs/{scenario}/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		ajsPage.Execute(w, map[string]any{"Scenario": r.PathValue("scenario"), "Host": gotrack})
	})
	mux.HandleFunc("GET /lib/analytics-next.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write(lib)
	})
	// /flaky/ passes requests to GoTrack, or answers 503 while /flaky-down
	// was the last switch called (until /flaky-up): GoTrack failing while
	// the page is online.
	var down atomic.Bool
	target, _ := url.Parse("http://" + gotrack)
	proxy := httputil.NewSingleHostReverseProxy(target)
	mux.Handle("/flaky/", http.StripPrefix("/flaky", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /flaky-down", func(w http.ResponseWriter, r *http.Request) { down.Store(true) })
	mux.HandleFunc("GET /flaky-up", func(w http.ResponseWriter, r *http.Request) { down.Store(false) })
	mux.HandleFunc("GET /blank.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>blank</title>")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

type browserReport struct {
	Errors []string       `json:"errors"`
	Checks map[string]any `json:"checks"`
}

// TestBrowser runs gotrack.js and Segment's analytics-next in headless
// chromium against the built binary: a pageview on load, track calls, SPA
// navigation, a flush on page hide, an offline period with recovery,
// GoTrack answering 503 to an online page then recovering, the
// retry queue's bounds, ROUTE_PREFIX, the pixel fallback, DNT and GPC,
// and analytics-next's page() and track(), one of them sent as the page
// unloads. Every expected event must be stored exactly once.
func TestBrowser(t *testing.T) {
	chromium := requireTool(t, "chromium")
	node := requireNodeModules(t, "puppeteer-core", "@segment/analytics-next")
	// The server honours no DNT here: what is tested is that the script does.
	p := startGotrack(t, "DNT_RESPECT=false")
	pp := startGotrack(t, "DNT_RESPECT=false", "ROUTE_PREFIX=/a7x")
	site := startSite(t, p.ingest, pp.ingest+"/a7x")

	cmd := exec.Command(node, "browser.mjs", chromium, site, "http://"+p.ingest, t.TempDir())
	cmd.Dir = jsDir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("browser.mjs: %v", err)
	}
	var r browserReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("browser.mjs report: %v: %.500s", err, out)
	}
	if len(r.Errors) > 0 {
		t.Fatalf("browser errors:\n%s", strings.Join(r.Errors, "\n"))
	}
	t.Logf("browser checks: %v", r.Checks)

	type want struct {
		url, call, name string
		n               int
	}
	wants := []want{
		{"/s/load/app.html?track=queued", "page", "", 1},
		{"/s/load/", "track", "queued", 1},
		{"/s/track/", "page", "", 1},
		{"/s/track/", "track", "signup", 3},
		{"/s/spa/app.html", "page", "", 1},
		{"/s/spa/first", "page", "", 2}, // pushed, then back to it
		{"/s/spa/second", "page", "", 1},
		{"/s/hide/", "page", "", 1},
		{"/s/hide/", "track", "leaving", 1},
		{"/s/offline/", "page", "", 1},
		{"/s/offline/", "track", "offline_call", 5},
		{"/s/down/", "page", "", 1},
		{"/s/down/", "track", "down_call", 5},
		{"/s/bound/", "page", "", 1},
		{"/s/bound/", "track", "bound_call", 0}, // the queue was replaced before going online
		{"/s/bound/", "track", "fresh", 1},
		{"/s/bound/", "track", "stale", 0}, // older than 24 hours
		{"/s/dnt/", "", "", 0},
		{"/s/gpc/", "", "", 0},
		{"/s/pixel/", "", "", 2},  // a pageview and px_call, through the pixel: see below
		{"/s/prefix/", "", "", 0}, // sent to the other GoTrack
		{"/ajs/std/", "page", "Test Page", 1},
		{"/ajs/std/", "track", "Clicked", 1},
		{"/ajs/unload/", "page", "Test Page", 1},
		{"/ajs/unload/", "track", "Clicked", 1},
		{"/ajs/unload/", "track", "Unloading", 1},
	}
	count := func(events []map[string]any, w want) int {
		n := 0
		for _, e := range events {
			url, _ := e["url"].(string)
			if strings.Contains(url, w.url) && (w.call == "" || e["call"] == w.call) && (w.name == "" || e["name"] == w.name) {
				n++
			}
		}
		return n
	}
	var events []map[string]any
	testkit.Eventually(t, "the browser's events", func() bool {
		events = readAll(t, p.path("events.ndjson"))
		for _, w := range wants {
			if count(events, w) < w.n {
				return false
			}
		}
		return true
	})
	p.stop(t)
	ids := readEvents(t, p.path("events.ndjson")) // schema, and ids
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s stored %d times", id, n)
		}
	}
	events = readAll(t, p.path("events.ndjson"))
	for _, w := range wants {
		if got := count(events, w); got != w.n {
			t.Errorf("%s call=%q name=%q: %d events, want %d", w.url, w.call, w.name, got, w.n)
		}
	}
	if total := 0; true {
		for _, w := range wants {
			total += w.n
		}
		if len(events) != total {
			t.Errorf("%d events stored, want %d", len(events), total)
		}
	}
	// ROUTE_PREFIX: the script came from under the prefix and sent there.
	var prefixed []map[string]any
	testkit.Eventually(t, "the events sent under ROUTE_PREFIX", func() bool {
		prefixed = readAll(t, pp.path("events.ndjson"))
		return len(prefixed) >= 2
	})
	pp.stop(t)
	if prefixed = readAll(t, pp.path("events.ndjson")); len(prefixed) != 2 || prefixed[0]["call"] != "page" ||
		prefixed[1]["name"] != "prefixed" || !strings.Contains(prefixed[1]["url"].(string), "/s/prefix/") {
		t.Errorf("events under ROUTE_PREFIX: %v", prefixed)
	}

	pixel := map[string]bool{}
	for _, e := range events {
		if strings.Contains(e["url"].(string), "/s/pixel/") {
			if id := e["event_id"].(string); e["source"] != "pixel" || e["visitor_id"] == nil || id[14] != '4' { // the browser's UUIDv4
				t.Errorf("pixel fallback stored %v", e)
			}
			pixel[e["type"].(string)] = true
			if e["type"] == "px_call" && e["props"].(map[string]any)["color"] != "blue" {
				t.Errorf("pixel fallback lost the props: %v", e)
			}
		}
	}
	if !pixel["pageview"] || !pixel["px_call"] {
		t.Errorf("pixel fallback events: %v", pixel)
	}

	offline := map[float64]int{}
	for _, e := range events {
		if e["name"] == "offline_call" {
			offline[e["props"].(map[string]any)["i"].(float64)]++
		}
		if strings.Contains(e["url"].(string), "/s/") && e["source"] == "segment" && e["source_id"] != segment.SourceID("wk_browser") {
			t.Errorf("gotrack.js event with source_id %v", e["source_id"])
		}
	}
	down := map[float64]int{}
	for _, e := range events {
		if e["name"] == "down_call" {
			down[e["props"].(map[string]any)["i"].(float64)]++
		}
	}
	if len(down) != 5 {
		t.Errorf("calls made while GoTrack answered 503, stored: %v", down)
	}
	if len(offline) != 5 {
		t.Errorf("offline calls stored: %v", offline)
	}
	for k, want := range map[string]any{
		"loadCookies": 0.0, "loadVisitorStored": nil, // no cookie; no stored visitor id unless asked
		"offlineOnLine": false, "offlineQueued": 5.0, "offlineQueuedAfter": 0.0, "offlineVisitorStored": true,
		"downOnLine": true, "downQueued": 5.0, "downQueuedAfter": 0.0,
		"boundQueued": 100.0, "boundOldest": 20.0, // the 20 oldest of 120 made room
		"dntNavigator": "1", "dntStorage": 0.0, "gpcStorage": 0.0,
		"ajsStdError": nil, "ajsUnloadError": nil,
	} {
		if got := r.Checks[k]; got != want {
			t.Errorf("browser check %s = %v, want %v", k, got, want)
		}
	}
}

// readAll reads every event of an NDJSON file as a map.
func readAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []map[string]any
	for line := range strings.Lines(string(b)) {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}
