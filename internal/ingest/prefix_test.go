package ingest

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
)

func TestRoutePrefix(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{RoutePrefix: "/a7x"})
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/a7x/px.gif", "", 200},
		{"POST", "/a7x/collect", `{"type":"a"}`, 202},
		{"POST", "/a7x/v1/track", `{"event":"x","userId":"u"}`, 200},
		{"GET", "/a7x/gotrack.js", "", 200},
		{"GET", "/a7x/healthz", "", 200},
		{"GET", "/healthz", "", 200}, // probes keep working
		{"GET", "/readyz", "", 200},
		{"GET", "/px.gif", "", 404}, // outside the prefix
		{"POST", "/collect", `{"type":"a"}`, 404},
		{"POST", "/v1/track", `{"event":"x","userId":"u"}`, 404},
		{"GET", "/gotrack.js", "", 404},
		{"GET", "/a7xpx.gif", "", 404},
	} {
		r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		r.Header.Set("Content-Type", "application/json")
		if w := f.do(r); w.Code != c.want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, w.Code, c.want, w.Body)
		}
	}
	if n := len(f.pipe.events); n != 3 {
		t.Errorf("%d events stored, want 3", n)
	}
	// Routes are labelled without the prefix.
	if v := testutil.ToFloat64(mustCounter(t, f.reg, "gotrack_http_requests_total", "/collect", "POST", "202")); v != 1 {
		t.Errorf("POST /a7x/collect counted %v times under endpoint=/collect", v)
	}
	if v := testutil.ToFloat64(mustCounter(t, f.reg, "gotrack_http_requests_total", "/v1/track", "POST", "200")); v != 1 {
		t.Errorf("POST /a7x/v1/track counted %v times under endpoint=/v1/track", v)
	}
}

func TestValidRoutePrefix(t *testing.T) {
	for p, want := range map[string]bool{
		"": true, "/a7x": true, "/t/v2": true, "/a-b_c.d~e": true,
		"a7x": false, "/a7x/": false, "/": false, "//x": false, "/a b": false, "/a/../b": false, "/a?x": false, "/..": false,
	} {
		if got := ValidRoutePrefix(p); got != want {
			t.Errorf("ValidRoutePrefix(%q) = %v", p, got)
		}
	}
}
