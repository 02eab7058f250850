package ingest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/source"
	"github.com/gotrack/gotrack/internal/testkit"
)

// serve runs the fixture's handler behind the ingest listener's real
// http.Server (its limits included) on a loopback port.
func (f *fixture) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ln.Addr().String(), f.h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// rawRequest writes req on a new connection and reads the response.
func rawRequest(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a failure, not a timing assertion
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestInflightBudget: while stalled bodies hold MAX_INFLIGHT_BYTES, a
// /collect request is answered 503 at once, unread, with Retry-After and
// Connection: close, and counted as shed; pixels are still served; once the
// bodies complete, the budget is whole again.
func TestInflightBudget(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBodyBytes: 64 << 10, MaxInflightBytes: 100 << 10})
	addr := f.serve(t)

	// A body that declares 60 KiB is charged its buffer, 64 KiB + 1, up
	// front; send all of it but the last byte, and stall.
	body := `{"type":"big"` + strings.Repeat(" ", 60<<10-14) + `}`
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)-1])
	for budgetUsed(t, f) == 0 {
		time.Sleep(time.Millisecond)
	}

	// A second large body does not fit: shed at once, though its client
	// has sent only its headers.
	resp, b := rawRequest(t, addr, "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !resp.Close ||
		!strings.Contains(b, "MAX_INFLIGHT_BYTES") || !json.Valid([]byte(b)) {
		t.Errorf("over budget: %d, Retry-After %q, close %v, %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, b)
	}
	// A gzip body is charged as it inflates: the first 4 KiB fit, the
	// next class does not.
	zbody := gz(t, []byte(`{"type":"z","title":"`+strings.Repeat("z", 40<<10)+`"}`))
	resp, b = rawRequest(t, addr, fmt.Sprintf("POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", len(zbody), zbody))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("gzip over budget after decompression: %d %s", resp.StatusCode, b)
	}
	if v := testutil.ToFloat64(mustCounter(t, f.reg, "gotrack_requests_shed_total", ShedInflightBytes)); v != 2 {
		t.Errorf("gotrack_requests_shed_total{reason=%q} = %v, want 2", ShedInflightBytes, v)
	}
	// Small bodies and pixels still fit.
	if resp, b := rawRequest(t, addr, "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"type\":\"s\"}"); resp.StatusCode != http.StatusAccepted {
		t.Errorf("small body within budget: %d %s", resp.StatusCode, b)
	}
	if resp, _ := rawRequest(t, addr, "GET /px.gif?e=p HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Errorf("pixel: %d", resp.StatusCode)
	}

	// The stalled body completes and gives its share back.
	io.WriteString(stalled, body[len(body)-1:])
	resp, err = http.ReadResponse(bufio.NewReader(stalled), nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("stalled body, completed: %v %v", resp, err)
	}
	if used := budgetUsed(t, f); used != 0 {
		t.Errorf("%v bytes still charged after every request ended", used)
	}
	if resp, b := rawRequest(t, addr, fmt.Sprintf("POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)); resp.StatusCode != http.StatusAccepted {
		t.Errorf("large body after the budget came back: %d %s", resp.StatusCode, b)
	}
}

func budgetUsed(t *testing.T, f *fixture) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "gotrack_inflight_body_bytes" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no gotrack_inflight_body_bytes")
	return 0
}

// TestBodyClassesGrowWithoutGarbage: a body read in pieces ends in the
// smallest class that holds it, with its whole content.
func TestBodyClassesGrowWithoutGarbage(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBodyBytes: 1 << 20})
	for _, n := range []int{10, 5000, 40000, 300000, 1<<20 - 100} {
		title := strings.Repeat("t", n)
		body := `{"type":"x","props":{"t":"` + title + `"}}`
		r := post(body)
		r.ContentLength = -1 // as chunked: the size is learnt while reading
		if w := f.do(r); n < event.MaxPropsBytes && w.Code != http.StatusAccepted || n >= event.MaxPropsBytes && w.Code != http.StatusBadRequest {
			t.Errorf("%d-byte props: %d %s", n, w.Code, w.Body)
		}
		if used := budgetUsed(t, f); used != 0 {
			t.Errorf("%d-byte body: %v bytes still charged", n, used)
		}
	}
}

// TestLimitListener: at MAX_CONNECTIONS an idle keep-alive connection is
// closed to make room; when every connection is busy, the next one waits
// until one is done, and is then served.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})}
	ln, err := LimitListener(inner, 2, srv, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	addr := inner.Addr().String()

	get := func(c net.Conn, path string) error {
		c.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a failure, not a timing assertion
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// One keep-alive connection left idle, one busy: a third client is
	// served by closing the idle one.
	idle := dial()
	if err := get(idle, "/"); err != nil {
		t.Fatal(err)
	}
	busy := dial()
	busyDone := make(chan error, 1)
	go func() { busyDone <- get(busy, "/block") }()
	third := dial()
	if err := get(third, "/"); err != nil {
		t.Fatalf("third connection at the limit, with one idle: %v", err)
	}
	if err := get(idle, "/"); err == nil {
		t.Error("the idle connection was not closed to make room")
	}

	// Now both slots are busy (third is idle: block on it too): a fourth
	// client waits, and is served once one is done.
	thirdDone := make(chan error, 1)
	go func() { thirdDone <- get(third, "/block") }()
	<-entered
	<-entered // both are busy, neither idle
	fourth := dial()
	fourthDone := make(chan error, 1)
	go func() { fourthDone <- get(fourth, "/") }()
	select {
	case err := <-fourthDone:
		t.Fatalf("a fourth connection was served while two were busy (%v)", err)
	case <-time.After(200 * time.Millisecond): // a bound on waiting for what must not happen
	}
	close(release)
	if err := <-busyDone; err != nil {
		t.Fatal(err)
	}
	if err := <-thirdDone; err != nil {
		t.Fatal(err)
	}
	if err := <-fourthDone; err != nil {
		t.Fatalf("fourth connection, once the others were done: %v", err)
	}
}

// TestConnectionMetrics: over real connections at MAX_CONNECTIONS=2,
// gotrack_http_connections follows the connections as they open and
// close, an idle keep-alive connection closed to make room counts in
// gotrack_http_connections_idle_closed_total, and a connection that waits
// because both are busy counts once in gotrack_http_connections_waited_total,
// however often the listener wakes up while it waits.
func TestConnectionMetrics(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release, entered := make(chan struct{}), make(chan struct{}, 2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})}
	// Which connections net/http holds idle: as LimitListener's hook,
	// called after it, has seen them. A response read by its client may
	// come before its connection is marked idle.
	var mu sync.Mutex
	states := map[net.Conn]http.ConnState{}
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		states[c] = state
		if state == http.StateClosed || state == http.StateHijacked {
			delete(states, c)
		}
	}
	idleNow := func(n int) {
		t.Helper()
		testkit.Eventually(t, fmt.Sprint(n, " connections to be idle"), func() bool {
			mu.Lock()
			defer mu.Unlock()
			idle := 0
			for _, s := range states {
				if s == http.StateIdle {
					idle++
				}
			}
			return idle == n
		})
	}
	reg := prometheus.NewRegistry()
	ln, err := LimitListener(inner, 2, srv, reg)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before srv.Close, should the test stop early

	var clients []net.Conn // every one this test opened
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(failWithin)) // a bound on a failure
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
		return c
	}
	get := func(c net.Conn, path string) error {
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	want := func(when string, open, idleClosed, waited float64) {
		t.Helper()
		got := [3]float64{metricValue(t, reg, "gotrack_http_connections"),
			metricValue(t, reg, "gotrack_http_connections_idle_closed_total"),
			metricValue(t, reg, "gotrack_http_connections_waited_total")}
		if got != [3]float64{open, idleClosed, waited} {
			t.Errorf("%s: open, idle closed, waited = %v, want %v", when, got, [3]float64{open, idleClosed, waited})
		}
	}
	if v := metricValue(t, reg, "gotrack_http_connections_limit"); v != 2 {
		t.Errorf("gotrack_http_connections_limit = %v, want 2", v)
	}
	want("at start", 0, 0, 0)

	// Opened, even before a request; then one left idle, one busy.
	idle := dial()
	testkit.Eventually(t, "the first connection to be counted", func() bool {
		return metricValue(t, reg, "gotrack_http_connections") == 1
	})
	if err := get(idle, "/"); err != nil {
		t.Fatal(err)
	}
	idleNow(1)
	busy := dial()
	busyDone := make(chan error, 1)
	go func() { busyDone <- get(busy, "/block") }()
	<-entered
	want("one idle, one busy", 2, 0, 0)

	// A third client is served by closing the idle one: no wait.
	third := dial()
	if err := get(third, "/"); err != nil {
		t.Fatal(err)
	}
	want("the idle one closed for a third", 2, 1, 0)

	// Both busy: a fourth waits, counted once however often the listener
	// is woken while it waits (as by a connection that became idle and is
	// gone, or busy again, by the time the listener looks).
	thirdDone := make(chan error, 1)
	go func() { thirdDone <- get(third, "/block") }()
	<-entered
	fourth := dial()
	fourthDone := make(chan error, 1)
	go func() { fourthDone <- get(fourth, "/") }()
	testkit.Eventually(t, "the fourth connection to wait", func() bool {
		return metricValue(t, reg, "gotrack_http_connections_waited_total") > 0
	})
	l := ln.(*limitListener)
	for range 3 {
		l.becameIdle <- struct{}{}
		testkit.Eventually(t, "the listener to look for an idle connection", func() bool { return len(l.becameIdle) == 0 })
	}
	want("a fourth waiting, both busy", 2, 1, 1)

	// Once the two are done and idle, one is closed for the fourth.
	releaseOnce()
	for _, done := range []chan error{busyDone, thirdDone, fourthDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	want("the fourth served", 2, 2, 1)

	// A second episode of waiting counts again: the fourth busy, a sixth
	// served by closing the idle one left, and busy, then a fifth waits.
	release = make(chan struct{})
	releaseOnce = sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	go func() { busyDone <- get(fourth, "/block") }()
	<-entered
	idleNow(1)
	sixth := dial()
	go func() { thirdDone <- get(sixth, "/block") }()
	<-entered
	want("the last idle one closed for a sixth", 2, 3, 1)
	fifth := dial()
	go func() { fourthDone <- get(fifth, "/") }()
	testkit.Eventually(t, "the fifth connection to wait", func() bool {
		return metricValue(t, reg, "gotrack_http_connections_waited_total") == 2
	})
	releaseOnce()
	for _, done := range []chan error{busyDone, thirdDone, fourthDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	want("the fifth served", 2, 4, 2)

	// Closed by their clients, the connections are counted out.
	for _, c := range clients {
		c.Close()
	}
	testkit.Eventually(t, "every connection to be counted out", func() bool {
		return metricValue(t, reg, "gotrack_http_connections") == 0
	})
	want("all closed", 0, 4, 2)
}

// metricValue is the value of the one series of the gauge or counter name.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// mustConnMetrics registers on reg the metrics of a listener of at most n
// connections held by s.
func mustConnMetrics(t testing.TB, reg prometheus.Registerer, n int, s *sweeper) *connMetrics {
	t.Helper()
	m, err := newConnMetrics(reg, n, s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestEveryAnswerIsJSON: what GoTrack's own code answers on the ingest
// port is JSON, including the paths net/http's mux would redirect with an
// HTML body and the headers net/http's slack lets through.
func TestEveryAnswerIsJSON(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{})
	addr := f.serve(t)
	for _, tc := range []struct {
		name, req string
		status    int
		msg       string
	}{
		{"empty array", "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]", 400, "empty array"},
		{"spaced empty array", "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n[ \n ]", 400, "empty array"},
		{"double slash", "POST //collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"type\":\"a\"}", 404, "canonical"},
		{"dot segment", "POST /./collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"type\":\"a\"}", 404, "canonical"},
		{"dot-dot segment", "GET /x/../px.gif HTTP/1.1\r\nHost: x\r\n\r\n", 404, "canonical"},
		{"trailing dot", "GET /px.gif/. HTTP/1.1\r\nHost: x\r\n\r\n", 404, "canonical"},
		{"double slash healthz", "GET //healthz HTTP/1.1\r\nHost: x\r\n\r\n", 404, "canonical"},
		{"headers past MaxHeaderBytes", "GET /px.gif HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", MaxHeaderBytes+10) + "\r\n\r\n", 431, "headers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := rawRequest(t, addr, tc.req)
			if resp.StatusCode != tc.status || !strings.Contains(b, tc.msg) || resp.Header.Get("Content-Type") != "application/json" || !json.Valid([]byte(b)) {
				t.Errorf("got %d %q %s, want %d JSON mentioning %q", resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status, tc.msg)
			}
		})
	}
	if len(f.pipe.events) != 0 {
		t.Errorf("%d events accepted", len(f.pipe.events))
	}
	// Beyond net/http's own limit (MaxHeaderBytes plus its 4 KiB of
	// slack) net/http answers before GoTrack sees the request, in plain
	// text, as the README says.
	resp, _ := rawRequest(t, addr, "GET /px.gif HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", MaxHeaderBytes+8<<10)+"\r\n\r\n")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("net/http's own 431: %d %q; update the README's error table", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestAnswer pins the one mapping from outcomes to statuses.
func TestAnswer(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter bool
		failed     bool
	}{
		{refuse(kindMalformed, "m"), 400, false, false},
		{refuse(kindNoValidEvent, "m"), 400, false, false},
		{&event.FieldError{Field: "type", Reason: "is missing"}, 400, false, false},
		{refuse(kindTooLarge, "m"), 413, false, false},
		{refuse(kindHeaderTooLarge, "m"), 431, false, false},
		{refuse(kindMediaType, "m"), 415, false, false},
		{refuse(kindOrigin, "m"), 403, false, false},
		{refuse(kindNotFound, "m"), 404, false, false},
		{refuse(kindMethod, "m"), 405, false, false},
		{errShed, 503, true, false},
		{pipeline.ErrQueueFull, 503, true, false},
		{&source.ReplayCacheFullError{Wait: 7 * time.Minute}, 503, true, false},
		{fmt.Errorf("submit: %w", pipeline.ErrSpoolFull), 503, true, false},
		{pipeline.ErrClosed, 503, true, false},
		{errors.New("spool: fsync: input/output error"), 503, true, true},
	} {
		rp := answer(tc.err)
		if rp.status != tc.status || (rp.retryAfter != nil) != tc.retryAfter || rp.failed != tc.failed || rp.msg == "" {
			t.Errorf("answer(%v) = %+v, want %d, Retry-After %v, failed %v", tc.err, rp, tc.status, tc.retryAfter, tc.failed)
		}
		if full := (*source.ReplayCacheFullError)(nil); errors.As(tc.err, &full) && !slices.Equal(rp.retryAfter, []string{"420"}) {
			t.Errorf("answer(%v): Retry-After %v, want the time until the replay cache turns over, 420", tc.err, rp.retryAfter)
		}
	}
	for _, r := range Routes {
		if r.Pattern == "POST /collect" {
			for _, want := range []int{400, 403, 413, 415, 503} {
				if !slices.Contains(r.Statuses, want) {
					t.Errorf("Routes does not pre-initialise POST /collect's %d", want)
				}
			}
		}
	}
}

// TestRefusedBodyClosesAtOnce: a request refused before its body is read
// (shed, too large, wrong type) gets its answer and its connection closed
// at once, even if the client stalls mid-body; net/http would otherwise
// wait up to ReadTimeout (15s) to drain the body, holding a connection
// slot. The client waits 10s at most, so a server that drains fails.
func TestRefusedBodyClosesAtOnce(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBodyBytes: 64 << 10, MaxInflightBytes: 100 << 10})
	addr := f.serve(t)
	for _, tc := range []struct {
		name, head string
		status     int
	}{
		{"too large", "Content-Type: application/json\r\nContent-Length: 100000", 413},
		{"wrong type", "Content-Type: text/html\r\nContent-Length: 1000", 415},
		{"chunked, wrong type", "Content-Type: text/html\r\nTransfer-Encoding: chunked", 415},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "POST /collect HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", tc.head) // and no body: the client stalls
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("%d, Connection: close %v", resp.StatusCode, resp.Close)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the answer, the connection is not closed: %v", err)
			}
		})
	}
}

// BenchmarkConnState is what LimitListener's hook costs per request: net/http
// calls it as a connection becomes active, then idle again.
func BenchmarkConnState(b *testing.B) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{}
	ln, err := LimitListener(inner, 16, srv, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		srv.ConnState(c, http.StateActive)
		srv.ConnState(c, http.StateIdle)
	}
}
