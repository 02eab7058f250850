package segment

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
)

type fakePipe struct {
	mu      sync.Mutex
	events  []*event.Event
	dropped map[string]int
	err     error
}

func (p *fakePipe) Submit(es []*event.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.events = append(p.events, es...)
	return nil
}

func (p *fakePipe) CountDropped(reason string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropped[reason] += n
}

type fixture struct {
	mux  *http.ServeMux
	pipe *fakePipe
}

func newFixture(t *testing.T, pol event.Policy, opts Options) *fixture {
	t.Helper()
	if pol.IPMode == "" {
		pol.IPMode = event.IPTruncate
	}
	if pol.SanitizeParams == nil {
		pol.SanitizeParams = event.DefaultSanitizeParams
	}
	n, err := event.NewNormalizer(pol)
	if err != nil {
		t.Fatal(err)
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxBatchEvents == 0 {
		opts.MaxBatchEvents = 500
	}
	f := &fixture{mux: http.NewServeMux(), pipe: &fakePipe{dropped: map[string]int{}}}
	New(opts, n, f.pipe, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), slog.New(slog.DiscardHandler)).Register(f.mux)
	return f
}

type answer struct {
	status int
	body   map[string]any
	header http.Header
}

func (f *fixture) post(t *testing.T, path, body string, hdr ...string) answer {
	t.Helper()
	r := httptest.NewRequest("POST", path, strings.NewReader(body))
	r.RemoteAddr = "198.51.100.7:4000"
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return f.do(t, r)
}

func (f *fixture) do(t *testing.T, r *http.Request) answer {
	t.Helper()
	w := httptest.NewRecorder()
	f.mux.ServeHTTP(w, r)
	a := answer{status: w.Code, header: w.Header()}
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &a.body); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %q", r.Method, r.URL.Path, w.Body)
		}
	}
	return a
}

// decoded returns the i-th submitted event as the sinks see it.
func (f *fixture) decoded(t *testing.T, i int) map[string]any {
	t.Helper()
	f.pipe.mu.Lock()
	defer f.pipe.mu.Unlock()
	if i >= len(f.pipe.events) {
		t.Fatalf("want event %d, have %d", i, len(f.pipe.events))
	}
	var m map[string]any
	if err := json.Unmarshal(f.pipe.events[i].JSON(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEveryRouteAndAlias(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	bodies := map[string]string{
		"track":    `{"event":"Signed Up","anonymousId":"a1"}`,
		"page":     `{"name":"Home","anonymousId":"a1"}`,
		"screen":   `{"name":"Main","anonymousId":"a1"}`,
		"identify": `{"userId":"u1","traits":{"plan":"pro"}}`,
		"group":    `{"userId":"u1","groupId":"g1"}`,
		"alias":    `{"userId":"u1","previousId":"a1"}`,
	}
	n := 0
	for _, c := range calls {
		if c.call == "" {
			continue
		}
		a := f.post(t, "/v1/"+c.path, bodies[c.call])
		if a.status != 200 || a.body["success"] != true {
			t.Fatalf("/v1/%s: %d %v", c.path, a.status, a.body)
		}
		e := f.decoded(t, n)
		n++
		wantType := c.call
		if c.call == "page" {
			wantType = "pageview"
		}
		if e["call"] != c.call || e["type"] != wantType || e["source"] != "segment" {
			t.Errorf("/v1/%s stored call=%v type=%v source=%v", c.path, e["call"], e["type"], e["source"])
		}
	}
	for _, path := range []string{"/v1/batch", "/v1/b"} {
		a := f.post(t, path, `{"batch":[{"type":"track","event":"x","userId":"u"},{"type":"page","anonymousId":"a"}]}`)
		if a.status != 200 || a.body["success"] != true {
			t.Fatalf("%s: %d %v", path, a.status, a.body)
		}
	}
	if got := len(f.pipe.events); got != n+4 {
		t.Errorf("%d events stored, want %d", got, n+4)
	}
	if a := f.do(t, httptest.NewRequest("GET", "/v1/track", nil)); a.status != 405 || a.header.Get("Allow") != "POST, OPTIONS" {
		t.Errorf("GET /v1/track: %d %v", a.status, a.header)
	}
	if a := f.post(t, "/v1/nope", `{}`); a.status != 404 || a.body["error"] == nil {
		t.Errorf("POST /v1/nope: %d %v", a.status, a.body)
	}
}

func TestMapping(t *testing.T) {
	f := newFixture(t, event.Policy{IPMode: event.IPTruncate}, Options{})
	msg := `{
	  "type": "track", "event": "Order Completed", "messageId": "ajs-next-1700000000000-abc",
	  "anonymousId": "anon-1", "userId": 42,
	  "properties": {"revenue": 9.5, "items": [{"sku": "a"}]},
	  "traits": {"email": "x@example.com"},
	  "integrations": {"All": true},
	  "context": {
	    "page": {"url": "https://shop.example/cart?token=s3cret&x=1", "referrer": "https://r.example/", "title": "Cart", "path": "/cart", "search": "?token=s3cret&x=1"},
	    "userAgent": "Mozilla/5.0 (X11) Relayed", "ip": "203.0.113.77",
	    "campaign": {"source": "news", "medium": "email"},
	    "library": {"name": "analytics-node", "version": "3.1.0"}, "locale": "en-GB"
	  },
	  "originalTimestamp": "2026-01-01T10:00:00.000Z",
	  "sentAt": "2026-01-01T10:00:05.000Z",
	  "receivedAt": "2020-01-01T00:00:00Z"
	}`
	before := time.Now()
	a := f.post(t, "/v1/track", msg, "Authorization", "Basic "+b64("wk_secret_1:"), "User-Agent", "analytics-node-next/latest")
	after := time.Now()
	if a.status != 200 {
		t.Fatalf("%d %v", a.status, a.body)
	}
	e := f.decoded(t, 0)
	wantID, derived := EventID(SourceID("wk_secret_1"), "ajs-next-1700000000000-abc")
	if !derived {
		t.Fatal("a non-UUID messageId was not derived")
	}
	for k, want := range map[string]any{
		"event_id": wantID, "message_id": "ajs-next-1700000000000-abc",
		"type": "track", "call": "track", "name": "Order Completed",
		"visitor_id": "anon-1", "user_id": "42",
		"url":      "https://shop.example/cart?x=1", // SANITIZE_PARAMS applied
		"referrer": "https://r.example/", "title": "Cart",
		"user_agent": "Mozilla/5.0 (X11) Relayed", "ip": "203.0.113.0", // context.ip under IP_MODE=truncate
		"source_id": SourceID("wk_secret_1"), "original_timestamp": "2026-01-01T10:00:00Z",
		"sent_at": "2026-01-01T10:00:05Z",
	} {
		if e[k] != want {
			t.Errorf("%s = %v, want %v", k, e[k], want)
		}
	}
	if got := mustJSON(t, e["props"]); got != `{"items":[{"sku":"a"}],"revenue":9.5}` {
		t.Errorf("props = %s", got)
	}
	if got := mustJSON(t, e["campaign"]); got != `{"medium":"email","source":"news"}` {
		t.Errorf("campaign = %s", got)
	}
	ctx := mustJSON(t, e["context"])
	for _, want := range []string{`"library":{"name":"analytics-node","version":"3.1.0"}`, `"locale":"en-GB"`,
		`"page":{"path":"/cart","search":"?x=1"}`, `"_segment":{`, `"integrations":{"All":true}`,
		`"traits":{"email":"x@example.com"}`, `"receivedAt":"2020-01-01T00:00:00Z"`} {
		if !strings.Contains(ctx, want) {
			t.Errorf("context lacks %s: %s", want, ctx)
		}
	}
	line := string(f.pipe.events[0].JSON())
	for _, leak := range []string{"s3cret", "wk_secret_1", "203.0.113.77", "writeKey"} {
		if strings.Contains(line, leak) {
			t.Errorf("stored event holds %q: %s", leak, line)
		}
	}
	// Clock skew: the event happened 5 s before the client sent it.
	ts, err := time.Parse(time.RFC3339Nano, e["timestamp"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if ts.Before(before.Add(-5*time.Second-time.Millisecond)) || ts.After(after.Add(-5*time.Second+time.Millisecond)) {
		t.Errorf("timestamp %v is not receipt - 5s (receipt in [%v, %v])", ts, before, after)
	}

	// The same message again, by body writeKey this time: the same event id.
	var m map[string]any
	json.Unmarshal([]byte(msg), &m)
	m["writeKey"] = "wk_secret_1"
	f.post(t, "/v1/t", mustJSON(t, m))
	if e2 := f.decoded(t, 1); e2["event_id"] != wantID || e2["source_id"] != e["source_id"] {
		t.Errorf("a retry got event_id %v source_id %v, want %v %v", e2["event_id"], e2["source_id"], wantID, e["source_id"])
	}
	// Another key: another id for the same messageId.
	m["writeKey"] = "wk_other"
	f.post(t, "/v1/t", mustJSON(t, m))
	if e3 := f.decoded(t, 2); e3["event_id"] == wantID {
		t.Error("two sources' equal messageIds share an event id")
	}
	// A UUID messageId is the event id itself.
	f.post(t, "/v1/track", `{"event":"x","userId":"u","messageId":"0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"}`)
	if e4 := f.decoded(t, 3); e4["event_id"] != "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" || e4["message_id"] != nil || e4["source_id"] != AnonymousSource {
		t.Errorf("UUID messageId: %v", e4)
	}
}

func TestPageProperties(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	a := f.post(t, "/v1/p", `{"anonymousId":"a","name":"Docs","properties":{"url":"https://s.example/d?email=a@b.c&q=1","referrer":"https://s.example/?password=x","search":"?email=a@b.c&q=1","title":"Docs","path":"/d"},"timestamp":"2026-02-02T02:02:02.000Z"}`)
	if a.status != 200 {
		t.Fatalf("%d %v", a.status, a.body)
	}
	e := f.decoded(t, 0)
	if e["url"] != "https://s.example/d?q=1" || e["referrer"] != "https://s.example/" || e["title"] != "Docs" || e["name"] != "Docs" {
		t.Errorf("page fields: %v", e)
	}
	if p := mustJSON(t, e["props"]); strings.Contains(p, "email") || strings.Contains(p, "password") {
		t.Errorf("page properties keep a secret parameter: %s", p)
	}
	// No sentAt: the client's time is the timestamp.
	if e["timestamp"] != "2026-02-02T02:02:02Z" || e["original_timestamp"] != "2026-02-02T02:02:02Z" {
		t.Errorf("timestamps: %v %v", e["timestamp"], e["original_timestamp"])
	}
}

func TestInvalidMessages(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBatchEvents: 3})
	big := `{"event":"x","userId":"u","properties":{"p":"` + strings.Repeat("a", MaxMessageBytes) + `"}}`
	for _, c := range []struct{ path, body, want string }{
		{"/v1/track", `{"userId":"u"}`, "event is required"},
		{"/v1/track", `{"event":"x"}`, "userId or anonymousId is required"},
		{"/v1/group", `{"userId":"u"}`, "groupId is required"},
		{"/v1/alias", `{"userId":"u"}`, "previousId is required"},
		{"/v1/track", `{"event":"x","userId":"u","type":"page"}`, "does not match"},
		{"/v1/track", `{"event":"x","userId":"u","properties":[1]}`, "properties must be a JSON object"},
		{"/v1/track", `{"event":"x","userId":"u","timestamp":"yesterday"}`, "timestamp is not"},
		{"/v1/track", `{"event":"x","userId":"u","context":{"ip":"nope"}}`, "context.ip is not"},
		{"/v1/track", `[1]`, "JSON object"},
		{"/v1/track", `{"event":`, "JSON object"},
		{"/v1/track", big, "larger than 32768 bytes"},
		{"/v1/batch", `{"batch":[]}`, "non-empty array"},
		{"/v1/batch", `{"batch":[{"type":"nope","userId":"u"}]}`, "no valid message"},
		{"/v1/batch", `{"batch":[{},{},{},{}]}`, "more than MAX_BATCH_EVENTS=3"},
		{"/v1/batch", `{"batch":[` + strings.TrimSuffix(strings.Repeat(`{"type":"track","event":"x","userId":"u","properties":{"p":"`+strings.Repeat("a", 30<<10)+`"}},`, 17), ",") + `]}`, "larger than 512000 bytes"},
	} {
		a := f.post(t, c.path, c.body)
		msg, _ := a.body["error"].(string)
		if a.status != 400 || !strings.Contains(msg, c.want) || a.body["success"] != false {
			t.Errorf("%s %.60s: %d %v, want 400 naming %q", c.path, c.body, a.status, a.body, c.want)
		}
	}
	if len(f.pipe.events) != 0 {
		t.Errorf("%d invalid messages stored", len(f.pipe.events))
	}
	if f.pipe.dropped[pipeline.DropInvalid] == 0 {
		t.Error("invalid messages not counted")
	}

	// One bad message in a batch: the others are accepted, and the answer says which was refused.
	a := f.post(t, "/v1/batch", `{"batch":[{"type":"track","event":"ok","userId":"u"},{"type":"track","userId":"u"}]}`)
	if a.status != 200 || a.body["rejected"] != 1.0 || len(f.pipe.events) != 1 {
		t.Errorf("partial batch: %d %v, %d stored", a.status, a.body, len(f.pipe.events))
	}
}

func TestGzipDNTAndCORS(t *testing.T) {
	f := newFixture(t, event.Policy{RespectDNT: true}, Options{})
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, `{"batch":[{"type":"identify","userId":"u","traits":{"a":1}}],"sentAt":"2026-01-01T00:00:00Z","timestamp":"2026-01-01T00:00:00Z","writeKey":"k"}`)
	zw.Close()
	a := f.post(t, "/v1/batch", zb.String(), "Content-Encoding", "gzip", "Content-Type", "application/json")
	if a.status != 200 || len(f.pipe.events) != 1 {
		t.Fatalf("gzip batch: %d %v", a.status, a.body)
	}
	if e := f.decoded(t, 0); e["sent_at"] != "2026-01-01T00:00:00Z" {
		t.Errorf("a batch's sentAt is not each message's: %v", e["sent_at"])
	}
	if ctx := mustJSON(t, f.decoded(t, 0)["context"]); ctx != `{"_segment":{"_batch":{"timestamp":"2026-01-01T00:00:00Z"}}}` {
		t.Errorf("a batch's other members are not kept: %s", ctx)
	}
	a = f.post(t, "/v1/batch", "not gzip", "Content-Encoding", "gzip")
	if a.status != 400 {
		t.Errorf("bad gzip: %d", a.status)
	}

	a = f.post(t, "/v1/t", `{"event":"x","userId":"u"}`, "Dnt", "1")
	if a.status != 200 || a.body["dropped"] != 1.0 || len(f.pipe.events) != 1 || f.pipe.dropped[pipeline.DropDNT] != 1 {
		t.Errorf("DNT: %d %v, %d stored", a.status, a.body, len(f.pipe.events))
	}

	r := httptest.NewRequest("OPTIONS", "/v1/t", nil)
	r.Header.Set("Origin", "https://site.example")
	r.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	a = f.do(t, r)
	if a.status != 204 || a.header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(a.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: %d %v", a.status, a.header)
	}

	g := newFixture(t, event.Policy{}, Options{CORSOrigins: []string{"https://ok.example"}})
	a = g.post(t, "/v1/t", `{"event":"x","userId":"u"}`, "Origin", "https://evil.example")
	if a.status != 403 || len(g.pipe.events) != 0 {
		t.Errorf("disallowed origin: %d", a.status)
	}
}

func TestPipelineRefusal(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	f.pipe.err = pipeline.ErrQueueFull
	a := f.post(t, "/v1/track", `{"event":"x","userId":"u"}`)
	if a.status != 503 || a.header.Get("Retry-After") == "" || a.body["success"] != false {
		t.Errorf("queue full: %d %v %v", a.status, a.header, a.body)
	}
}

func TestEventIDIsStable(t *testing.T) {
	id1, _ := EventID("wk_1", "m-1")
	id2, _ := EventID("wk_1", "m-1")
	id3, _ := EventID("wk_1", "m-2")
	if id1 != id2 || id1 == id3 {
		t.Errorf("ids %s %s %s", id1, id2, id3)
	}
	if u, ok := event.ParseUUID(id1); !ok || u != id1 || id1[14] != '5' {
		t.Errorf("%s is not a lower-case UUIDv5", id1)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func b64(s string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	user, pass, _ := strings.Cut(s, ":")
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// TestDecodeRoundTrip reads a Segment event back as replay does: every
// field survives.
func TestDecodeRoundTrip(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	f.post(t, "/v1/track", `{"event":"Clicked","userId":"u","anonymousId":"a","messageId":"m-1","properties":{"a":1},"context":{"campaign":{"name":"c"},"locale":"de"},"groupId":"g","timestamp":"2026-01-01T00:00:00Z","sentAt":"2026-01-01T00:00:01Z"}`)
	orig := f.pipe.events[0].JSON()
	e, err := event.Decode(orig)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.JSON(); !bytes.Equal(got, orig) {
		t.Errorf("decoded and encoded again:\n%s\nwant\n%s", got, orig)
	}
}

// TestAcceptedMeansStorable: what PostgreSQL's jsonb refuses is refused with
// a 400 naming the member, as /collect refuses it in props, and a lone
// surrogate is stored as the replacement character.
func TestAcceptedMeansStorable(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBatchEvents: 3})
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	for _, c := range []struct{ body, want string }{
		{`{"event":"x","userId":"u","properties":{"p":"a\u0000b"}}`, "properties: holds a NUL"},
		{`{"event":"x","userId":"u","properties":{"\u0000":1}}`, "properties: holds a NUL"},
		{`{"event":"x","userId":"u","properties":{"p":{"k":1,"k":2}}}`, `properties: has the key "k" twice`},
		{`{"event":"x","userId":"u","properties":{"p":1e999999}}`, "properties: holds the number"},
		{`{"event":"x","userId":"u","properties":{"p":` + deep + `}}`, "properties: is nested deeper"},
		{`{"event":"x","userId":"u","context":{"x":"\u0000"}}`, "context: holds a NUL"},
		{`{"event":"x","userId":"u","integrations":{"x":"\u0000"}}`, "context: holds a NUL"},
		{`{"event":"x","userId":"u","context":{"campaign":{"name":"\u0000"}}}`, "holds a NUL"},
		{`{"event":"x","event":"y","userId":"u"}`, `message: has the key "event" twice`},
		{`{"event":"x","userId":"u","context":{"a":1,"a":2}}`, `message: has the key "a" twice`},
		{`{"event":"x","userId":"u","groupId":"\u0000"}`, "holds a NUL"},
	} {
		a := f.post(t, "/v1/track", c.body)
		msg, _ := a.body["error"].(string)
		if a.status != 400 || !strings.Contains(msg, c.want) {
			t.Errorf("%.80s: %d %v, want 400 naming %q", c.body, a.status, a.body, c.want)
		}
	}
	if len(f.pipe.events) != 0 {
		t.Fatalf("%d unstorable messages accepted", len(f.pipe.events))
	}
	a := f.post(t, "/v1/track", `{"event":"x","userId":"u","properties":{"p":"\ud800","q":"\ud83d\ude00"}}`)
	if a.status != 200 || len(f.pipe.events) != 1 {
		t.Fatalf("lone surrogate: %d %v", a.status, a.body)
	}
	if got := string(f.pipe.events[0].Props); got != `{"p":"\ufffd","q":"\ud83d\ude00"}` {
		t.Errorf("props = %s, want the lone surrogate replaced", got)
	}
}

// TestContextNonStringsNotDropped: a context member GoTrack maps to a field
// of its own, sent with the wrong JSON type, is refused or kept in context,
// never dropped silently.
func TestContextNonStringsNotDropped(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBatchEvents: 3})
	for _, c := range []struct{ body, want string }{
		{`{"event":"x","userId":"u","context":{"userAgent":7}}`, "context.userAgent must be a string"},
		{`{"event":"x","userId":"u","context":{"ip":true}}`, "context.ip is not"},
	} {
		a := f.post(t, "/v1/track", c.body)
		if msg, _ := a.body["error"].(string); a.status != 400 || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %d %v, want 400 naming %q", c.body, a.status, a.body, c.want)
		}
	}
	a := f.post(t, "/v1/track", `{"event":"x","userId":"u","context":{"page":{"url":5,"title":["t"],"referrer":"https://r.example/"}}}`)
	if a.status != 200 || len(f.pipe.events) != 1 {
		t.Fatalf("%d %v", a.status, a.body)
	}
	e := f.pipe.events[0]
	if got := string(e.Context); got != `{"page":{"title":["t"],"url":5}}` || e.Referrer != "https://r.example/" {
		t.Errorf("context = %s, referrer %q; want the non-string members kept in context.page", got, e.Referrer)
	}
}
