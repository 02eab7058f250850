package ingest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// TestSegmentAuth checks that AUTH_MODE=key holds on the Segment API too:
// no key and an unknown key get 401, a good key (Basic, or the body's
// writeKey, batch or single message) stores its source's id, a signing source is refused, and the
// source's rate gives 429.
func TestSegmentAuth(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	auth := newAuth(t, "sources:\n  - id: app\n    write_keys: [wk_app_123]\n    rate: 1/s\n    burst: 4\n"+
		"  - id: signer\n    write_keys: [wk_signer_1]\n    signing_secret_file: "+secretFile(t)+"\n", func() time.Time { return now }, nil)
	f := newFixture(t, event.Policy{}, Options{Auth: auth})
	send := func(path, body, user string) int {
		r := httptest.NewRequest("POST", path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if user != "" {
			r.SetBasicAuth(user, "")
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w.Code
	}
	track := `{"type":"track","event":"Signed Up","userId":"u1"}`
	for _, c := range []struct {
		path, body, user string
		want             int
	}{
		{"/v1/track", track, "", http.StatusUnauthorized},
		{"/v1/track", track, "wk_nope_123", http.StatusUnauthorized},
		{"/v1/track", track, "wk_signer_1", http.StatusUnauthorized},
		{"/v1/track", track, "wk_app_123", http.StatusOK},
		{"/v1/batch", `{"writeKey":"wk_app_123","batch":[` + track + `]}`, "", http.StatusOK},
		{"/v1/track", `{"event":"Beacon","userId":"u1","writeKey":"wk_app_123"}`, "", http.StatusOK},                       // a beacon's key, in the body
		{"/v1/batch", `{"batch":[{"type":"track","event":"B","userId":"u1","writeKey":"wk_app_123"}]}`, "", http.StatusOK}, // the key in each message
		{"/v1/batch", `{"batch":[{"type":"track","event":"B","userId":"u1","writeKey":"wk_app_123"},{"type":"track","event":"B","userId":"u1","writeKey":"wk_other_1"}]}`, "", http.StatusBadRequest},
		{"/v1/track", track, "wk_app_123", http.StatusTooManyRequests},
	} {
		if got := send(c.path, c.body, c.user); got != c.want {
			t.Errorf("%s as %q: %d, want %d", c.path, c.user, got, c.want)
		}
	}
	if len(f.pipe.events) != 4 {
		t.Fatalf("%d events, want 4", len(f.pipe.events))
	}
	for _, e := range f.pipe.events {
		if e.SourceID != "app" {
			t.Errorf("source_id %q, want app", e.SourceID)
		}
	}
}

// TestSegmentEventIDPerSource: under AUTH_MODE=key a non-UUID messageId
// gives the same event_id whichever of its source's keys sent it (a key
// rotation mid-retry does not duplicate the event), as the README's "UUIDv5
// of source_id and messageId" says.
func TestSegmentEventIDPerSource(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	auth := newAuth(t, "sources:\n  - id: app\n    write_keys: [wk_app_old, wk_app_new]\n", func() time.Time { return now }, nil)
	f := newFixture(t, event.Policy{}, Options{Auth: auth})
	for _, key := range []string{"wk_app_old", "wk_app_new"} {
		r := httptest.NewRequest("POST", "/v1/track", strings.NewReader(`{"event":"e","userId":"u1","messageId":"ajs-next-1"}`))
		r.SetBasicAuth(key, "")
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", key, w.Code, w.Body)
		}
	}
	if len(f.pipe.events) != 2 {
		t.Fatalf("%d events, want 2", len(f.pipe.events))
	}
	if a, b := f.pipe.events[0].EventID, f.pipe.events[1].EventID; a != b {
		t.Errorf("event_id %s with one key, %s with the other", a, b)
	}
}
