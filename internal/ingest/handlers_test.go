package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/spool"
)

// fakePipeline records what the handlers give it; err, when set, is what
// Submit returns.
type fakePipeline struct {
	mu      sync.Mutex
	events  []*event.Event
	dropped map[string]int
	err     error
	info    []string // what Ready lists while ready
}

func (f *fakePipeline) Submit(events []*event.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.events = append(f.events, events...)
	return nil
}

func (f *fakePipeline) SubmitEach(e *event.Event) bool { return f.Submit([]*event.Event{e}) == nil }

func (f *fakePipeline) CountDropped(reason string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropped[reason] += n
}

func (f *fakePipeline) Ready() (bool, []string) {
	if f.err != nil {
		return false, []string{"queue log is full"}
	}
	return true, f.info
}

type fixture struct {
	h    http.Handler
	pipe *fakePipeline
	reg  *prometheus.Registry
}

func newFixture(t *testing.T, policy event.Policy, opts Options) *fixture {
	t.Helper()
	if policy.IPMode == "" {
		policy.IPMode = event.IPFull
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxBatchEvents == 0 {
		opts.MaxBatchEvents = 500
	}
	n, err := event.NewNormalizer(policy)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	pipe := &fakePipeline{dropped: map[string]int{}}
	h, err := NewHandler(opts, n, pipe, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{h: h, pipe: pipe, reg: reg}
}

func (f *fixture) do(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func post(body string, headers ...string) *http.Request {
	r := httptest.NewRequest("POST", "/collect", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	return r
}

func gz(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.String()
}

func TestPixel(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	for _, method := range []string{"GET", "HEAD"} {
		w := f.do(httptest.NewRequest(method, "/px.gif?e=view&url=https%3A%2F%2Fa.example%2F&uid=u1", nil))
		if w.Code != 200 || w.Header().Get("Content-Type") != "image/gif" ||
			w.Header().Get("Cache-Control") != "no-store, no-cache, must-revalidate, private" || w.Header().Get("Content-Length") != "43" {
			t.Errorf("%s: status %d, headers %v", method, w.Code, w.Header())
		}
		body := w.Body.Bytes()
		if method == "GET" && (len(body) != 43 || !bytes.HasPrefix(body, []byte("GIF89a")) || body[42] != 0x3B) {
			t.Errorf("GET: body is not the 43-byte GIF: % x", body)
		}
		if method == "HEAD" && len(body) != 0 {
			t.Errorf("HEAD: body of %d bytes", len(body))
		}
	}
	if len(f.pipe.events) != 2 || f.pipe.events[0].Type != "view" || f.pipe.events[0].VisitorID != "u1" {
		t.Fatalf("events = %+v", f.pipe.events)
	}
}

func TestPixelAlwaysAnswersGIF(t *testing.T) {
	f := newFixture(t, event.Policy{RespectDNT: true}, Options{})
	invalid := f.do(httptest.NewRequest("GET", "/px.gif?e=bad%20type", nil))
	dnt := httptest.NewRequest("GET", "/px.gif", nil)
	dnt.Header.Set("DNT", "1")
	gpc := httptest.NewRequest("GET", "/px.gif", nil)
	gpc.Header.Set("Sec-GPC", "1")
	for _, w := range []*httptest.ResponseRecorder{invalid, f.do(dnt), f.do(gpc)} {
		if w.Code != 200 || w.Body.Len() != 43 {
			t.Errorf("status %d, %d bytes; the pixel must always answer the GIF", w.Code, w.Body.Len())
		}
	}
	f.pipe.err = pipeline.ErrQueueFull
	if w := f.do(httptest.NewRequest("GET", "/px.gif", nil)); w.Code != 200 {
		t.Errorf("status %d with full queues", w.Code)
	}
	if len(f.pipe.events) != 0 || f.pipe.dropped[pipeline.DropInvalid] != 1 || f.pipe.dropped[pipeline.DropDNT] != 2 {
		t.Errorf("events %d, drops %v; want none accepted, 1 invalid and 2 DNT", len(f.pipe.events), f.pipe.dropped)
	}
}

func TestCollect(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	w := f.do(post(`{"type":"signup","props":{"plan":"pro"}}`, "User-Agent", "ua/1"))
	if w.Code != 202 || strings.TrimSpace(w.Body.String()) != `{"accepted":1,"rejected":0}` {
		t.Errorf("single: %d %s", w.Code, w.Body)
	}
	w = f.do(post(`[{"type":"a"},{"type":"bad type"},{"type":"c","ip":"1.1.1.1"},{"type":"d"}]`, "Content-Type", "text/plain;charset=UTF-8"))
	var resp collectResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || w.Code != 202 {
		t.Fatalf("batch: %d %s", w.Code, w.Body)
	}
	if resp.Accepted != 2 || resp.Rejected != 2 || resp.Errors[0].Index != 1 || !strings.HasPrefix(resp.Errors[0].Error, "type:") ||
		resp.Errors[1].Index != 2 || !strings.HasPrefix(resp.Errors[1].Error, "ip:") {
		t.Errorf("batch response %+v", resp)
	}
	if len(f.pipe.events) != 3 || f.pipe.events[0].UserAgent != "ua/1" || f.pipe.events[0].Source != event.SourceCollect {
		t.Errorf("accepted events %+v", f.pipe.events)
	}
	w = f.do(post(gz(t, []byte(`{"type":"zipped"}`)), "Content-Encoding", "gzip"))
	if w.Code != 202 || f.pipe.events[3].Type != "zipped" {
		t.Errorf("gzip: %d %s", w.Code, w.Body)
	}
}

func TestCollectErrors(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBodyBytes: 4096, MaxBatchEvents: 3})
	bomb := gz(t, bytes.Repeat([]byte(" "), 10<<20)) // 10 MiB of spaces, about 10 KiB zipped
	smallBomb := gz(t, append([]byte(`{"type":"x","title":"`), bytes.Repeat([]byte("a"), 8000)...))
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status int
		msg    string
	}{
		{"malformed", post(`{"type":`), 400, "malformed JSON"},
		{"malformed array", post(`[{"type":"a"},]`), 400, "malformed JSON"},
		{"not an object", post(`"hello"`), 400, "JSON event object"},
		{"empty", post(``), 400, "empty"},
		{"invalid UTF-8", post("{\"type\":\"a\",\"title\":\"\xff\xfe\"}"), 400, "UTF-8"},
		{"only invalid events", post(`{"type":"a","colour":"red"}`), 400, "colour"},
		{"too large", post(`{"type":"a","title":"` + strings.Repeat("a", 5000) + `"}`), 413, "MAX_BODY_BYTES"},
		{"gzip bomb", post(bomb, "Content-Encoding", "gzip"), 413, "MAX_BODY_BYTES"},
		{"gzip over limit after decompression", post(smallBomb, "Content-Encoding", "gzip"), 413, "after decompression"},
		{"bad gzip", post("not gzip at all", "Content-Encoding", "gzip"), 400, "gzip"},
		{"batch too long", post(`[{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"}]`), 413, "MAX_BATCH_EVENTS=3"},
		{"form content type", post(`{"type":"a"}`, "Content-Type", "application/x-www-form-urlencoded"), 415, "Content-Type"},
		{"no content type", post(`{"type":"a"}`, "Content-Type", ""), 415, "Content-Type"},
		{"brotli", post(`{"type":"a"}`, "Content-Encoding", "br"), 415, "Content-Encoding"},
		{"GET collect", httptest.NewRequest("GET", "/collect", nil), 405, "POST"},
		{"POST pixel", httptest.NewRequest("POST", "/px.gif", nil), 405, "GET"},
		{"unknown path", httptest.NewRequest("GET", "/wp-admin", nil), 404, "no such endpoint"},
		{"metrics not here", httptest.NewRequest("GET", "/metrics", nil), 404, "no such endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := f.do(tc.req)
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %q", w.Body)
			}
			if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.msg) {
				t.Errorf("got %d %s, want %d mentioning %q", w.Code, w.Body, tc.status, tc.msg)
			}
		})
	}
	if len(f.pipe.events) != 0 {
		t.Errorf("%d events accepted from bad requests", len(f.pipe.events))
	}
}

func TestCollectBackpressure(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	f.pipe.err = pipeline.ErrQueueFull
	w := f.do(post(`{"type":"a"}`))
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || w.Header().Get("Connection") != "" {
		t.Errorf("full queue: %d, Retry-After %q, Connection %q (the body was read: the connection may stay)",
			w.Code, w.Header().Get("Retry-After"), w.Header().Get("Connection"))
	}
	if w := f.do(httptest.NewRequest("GET", "/readyz", nil)); w.Code != 503 || !strings.Contains(w.Body.String(), "full") {
		t.Errorf("readyz with a full queue: %d %s", w.Code, w.Body)
	}
	f.pipe.err = pipeline.ErrClosed
	if w := f.do(post(`{"type":"a"}`)); w.Code != 503 {
		t.Errorf("shutting down: %d", w.Code)
	}
	f.pipe.err = nil
	if w := f.do(httptest.NewRequest("GET", "/readyz", nil)); w.Code != 200 {
		t.Errorf("readyz: %d %s", w.Code, w.Body)
	}
	if w := f.do(httptest.NewRequest("GET", "/healthz", nil)); w.Code != 200 {
		t.Errorf("healthz: %d", w.Code)
	}
	// A sink down behind the spool: ready, and named.
	f.pipe.info = []string{"sink kafka is down; the spool keeps its events"}
	if w := f.do(httptest.NewRequest("GET", "/readyz", nil)); w.Code != 200 || !strings.Contains(w.Body.String(), `"reasons":["sink kafka is down`) {
		t.Errorf("readyz with an informational reason: %d %s", w.Code, w.Body)
	}
}

func TestCollectDNT(t *testing.T) {
	f := newFixture(t, event.Policy{RespectDNT: true}, Options{})
	w := f.do(post(`[{"type":"a"},{"type":"b"}]`, "DNT", "1"))
	if w.Code != 202 || !strings.Contains(w.Body.String(), `"dropped":2`) || len(f.pipe.events) != 0 {
		t.Errorf("DNT: %d %s, %d events", w.Code, w.Body, len(f.pipe.events))
	}
}

func TestIPModes(t *testing.T) {
	for mode, want := range map[event.IPMode]string{
		event.IPFull:     "203.0.113.77",
		event.IPTruncate: "203.0.113.0",
		event.IPDrop:     "",
	} {
		f := newFixture(t, event.Policy{IPMode: mode}, Options{})
		r := post(`{"type":"a"}`)
		r.RemoteAddr = "203.0.113.77:4321"
		r.Header.Set("X-Forwarded-For", "198.51.100.1") // spoofed: TRUST_PROXY is false
		if w := f.do(r); w.Code != 202 {
			t.Fatalf("%s: %d", mode, w.Code)
		}
		if got := f.pipe.events[0].IP; got != want {
			t.Errorf("IP_MODE=%s: ip %q, want %q", mode, got, want)
		}
	}
	f := newFixture(t, event.Policy{IPMode: event.IPHash, IPHashSecret: []byte("0123456789abcdef")}, Options{})
	r := httptest.NewRequest("GET", "/px.gif", nil)
	r.RemoteAddr = "203.0.113.77:4321"
	f.do(r)
	if ip := f.pipe.events[0].IP; len(ip) != 64 || strings.Contains(ip, "203") {
		t.Errorf("IP_MODE=hash: ip %q", ip)
	}
}

func TestTrustedProxy(t *testing.T) {
	f := newFixture(t, event.Policy{IPMode: event.IPFull, TrustProxy: true}, Options{})
	r := httptest.NewRequest("GET", "/px.gif", nil)
	r.RemoteAddr = "127.0.0.1:80"
	r.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.5")
	f.do(r)
	if ip := f.pipe.events[0].IP; ip != "203.0.113.5" {
		t.Errorf("ip %q, want the right-most forwarded address", ip)
	}
}

func TestCORS(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{CORSOrigins: []string{"https://shop.example"}})
	pre := httptest.NewRequest("OPTIONS", "/collect", nil)
	pre.Header.Set("Origin", "https://shop.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	w := f.do(pre)
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://shop.example" ||
		!strings.Contains(w.Header().Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", w.Code, w.Header())
	}
	if w := f.do(post(`{"type":"a"}`, "Origin", "https://evil.example")); w.Code != 403 {
		t.Errorf("disallowed origin: %d", w.Code)
	}
	if w := f.do(post(`{"type":"a"}`, "Origin", "https://shop.example")); w.Code != 202 ||
		w.Header().Get("Access-Control-Allow-Origin") != "https://shop.example" || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("allowed origin: %d %v", w.Code, w.Header())
	}
	any := newFixture(t, event.Policy{}, Options{})
	if w := any.do(post(`{"type":"a"}`, "Origin", "https://anyone.example")); w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("default CORS: %v", w.Header())
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	f.do(httptest.NewRequest("GET", "/px.gif", nil))
	f.do(post(`[{"type":"a"},{"type":"b"}]`))
	f.do(httptest.NewRequest("GET", "/random/path/1", nil))
	want := `
# HELP gotrack_events_received_total Events received, by source (pixel, collect, segment), before validation and the privacy policy.
# TYPE gotrack_events_received_total counter
gotrack_events_received_total{source="collect"} 2
gotrack_events_received_total{source="pixel"} 1
gotrack_events_received_total{source="segment"} 0
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "gotrack_events_received_total"); err != nil {
		t.Error(err)
	}
	if v := testutil.ToFloat64(mustCounter(t, f.reg, "gotrack_http_requests_total", "other", "GET", "404")); v != 1 {
		t.Errorf("unmatched path counted %v times under endpoint=other", v)
	}
	problems, err := testutil.GatherAndLint(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// mustCounter finds one series of a counter by its label values.
func mustCounter(t *testing.T, reg *prometheus.Registry, name string, values ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, lp := range m.GetLabel() {
				if lp.GetValue() != values[i] {
					continue next
				}
			}
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x", Help: "x"})
			c.Add(m.GetCounter().GetValue())
			return c
		}
	}
	t.Fatalf("no series %s%v", name, values)
	return nil
}

// TestAuth checks, through the handler, that /collect answers 401 JSON to
// a request without a valid key, the pixel still answers the GIF and counts
// a drop, and an accepted event carries its source_id.
func TestAuth(t *testing.T) {
	auth := newAuth(t, "sources:\n  - id: shop-web\n    write_keys: [wk_shop_1]\n    origins: [\"https://shop.example\"]\n", nil, nil)
	f := newFixture(t, event.Policy{}, Options{Auth: auth})

	for _, key := range []string{"", "wk_wrong"} {
		r := httptest.NewRequest("POST", "/collect", strings.NewReader(`{"type":"x"}`))
		r.Header.Set("Content-Type", "application/json")
		if key != "" {
			r.Header.Set("X-Write-Key", key)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		var body errorBody
		if w.Code != http.StatusUnauthorized || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.Error == "" {
			t.Fatalf("key %q: %d %s, want 401 with a JSON error", key, w.Code, w.Body)
		}
	}
	r := httptest.NewRequest("POST", "/collect", strings.NewReader(`{"type":"x"}`))
	r.Header.Set("Content-Type", "application/json")
	r.SetBasicAuth("wk_shop_1", "")
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusAccepted {
		t.Fatalf("good key: %d %s", w.Code, w.Body)
	}

	for _, c := range []struct {
		query, referer string
		kept           bool
	}{
		{"e=pageview", "https://shop.example/", false},
		{"e=pageview&k=wk_shop_1", "", false},
		{"e=pageview&k=wk_shop_1", "https://shop.example/cart", true},
	} {
		r := httptest.NewRequest("GET", "/px.gif?"+c.query, nil)
		if c.referer != "" {
			r.Header.Set("Referer", c.referer)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "image/gif" {
			t.Fatalf("pixel %s: %d %s", c.query, w.Code, w.Header())
		}
	}
	if got := f.pipe.dropped[pipeline.DropUnauthorized]; got != 2 {
		t.Errorf("unauthorized pixel drops %d, want 2", got)
	}
	if len(f.pipe.events) != 2 {
		t.Fatalf("%d events kept, want 2", len(f.pipe.events))
	}
	for _, e := range f.pipe.events {
		if e.SourceID != "shop-web" || !strings.Contains(string(e.JSON()), `"source_id":"shop-web"`) {
			t.Errorf("event lacks its source_id: %s", e.JSON())
		}
	}
}

// errorLines counts the ERROR records logged through it.
type errorLines struct {
	mu sync.Mutex
	n  int
}

func (l *errorLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *errorLines) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return nil
}
func (l *errorLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLines) WithGroup(string) slog.Handler      { return l }

// TestFailedSpoolIsNotLoggedPerRequest: once the spool's write or fsync has
// failed (a full disk), every /collect gets 503, and the spool logs that
// itself, once and then at most every 10 s. The handler must not add an
// ERROR line per request, which on a full disk floods the log (and the disk
// holding it). A failure it does not know is still logged.
func TestFailedSpoolIsNotLoggedPerRequest(t *testing.T) {
	n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPFull})
	pipe := &fakePipeline{dropped: map[string]int{}}
	logs := &errorLines{}
	h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500}, n, pipe, prometheus.NewPedanticRegistry(), slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	pipe.err = fmt.Errorf("pipeline: %w", fmt.Errorf("%w: write and sync: no space left on device", spool.ErrFailed))
	for range 50 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, post(`{"type":"a"}`))
		if w.Code != 503 || w.Header().Get("Retry-After") == "" {
			t.Fatalf("failed spool: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
		}
	}
	if logs.n != 0 {
		t.Errorf("%d ERROR lines for 50 requests refused by a failed spool, want none from the handler", logs.n)
	}
	pipe.err = errors.New("something nobody foresaw")
	h.ServeHTTP(httptest.NewRecorder(), post(`{"type":"a"}`))
	if logs.n != 1 {
		t.Errorf("%d ERROR lines for an unknown failure, want 1", logs.n)
	}
}

// TestCollectResponseCounts: the 202's body, written without encoding/json
// when it has no errors, is what encoding/json writes.
func TestCollectResponseCounts(t *testing.T) {
	for _, r := range []collectResponse{{}, {Accepted: 20}, {Accepted: 3, Rejected: 17}, {Dropped: 5},
		{Accepted: -1, Rejected: 1 << 40, Dropped: 1}, {Accepted: 1, Errors: []itemError{{Index: 1, Error: "type: is missing"}}},
		{Error: "no valid event in the body", Rejected: 2}} {
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		writeJSON(w, http.StatusAccepted, &r)
		if got := w.Body.String(); got != string(want)+"\n" {
			t.Errorf("writeJSON(%+v) = %q, want %q", r, got, want)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
}

// TestCollectLongArrayMemory: a /collect array of many tiny items, far more
// than MAX_BATCH_EVENTS, is refused 413 without the parser recording every
// item first. Recording them cost 56 bytes per 2-byte item, about 28 times
// the body, before the MAX_BATCH_EVENTS check, and the pooled parser kept
// that much for the next request: memory is to stay bounded whatever
// clients send.
func TestCollectLongArrayMemory(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500})
	body := "[" + strings.Repeat("0,", 1<<19-2) + "0]" // 1 MiB, 524287 items
	f.do(post(`{"type":"warm"}`))                      // pools, route metrics
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := f.do(post(body))
	runtime.ReadMemStats(&after)
	if w.Code != 413 || !strings.Contains(w.Body.String(), "batch has 524287 events, more than MAX_BATCH_EVENTS=500") {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	// The body itself (read into a pooled buffer, then a string here) and
	// the response are a few MiB at most.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("a 1 MiB body of tiny items allocated %d MiB", alloc>>20)
	}
}
