package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
	"github.com/gotrack/gotrack/internal/tracing/otlptest"
)

// runTraced runs gotrack in-process with env, and returns its ingest URL,
// its log output and a stop function.
func runTraced(t *testing.T, env map[string]string) (ingestURL string, logs *syncBuffer, stop func() error) {
	ingestURL, _, logs, stop = runTracedMetrics(t, env)
	return ingestURL, logs, stop
}

// runTracedMetrics is runTraced that also returns the metrics URL.
func runTracedMetrics(t *testing.T, env map[string]string) (ingestURL, metricsURL string, logs *syncBuffer, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	full := map[string]string{
		"SERVER_ADDR":      "127.0.0.1:0",
		"LOG_PATH":         filepath.Join(dir, "events.ndjson"),
		"DEAD_LETTER_PATH": filepath.Join(dir, "dead.ndjson"),
		"LOG_LEVEL":        "debug",
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs = new(syncBuffer)
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return full[k] }, io.Discard, logs) }()
	stop = sync.OnceValue(func() error { cancel(); return <-done })
	var addr, metrics string
	if !testkit.Wait(testkit.Patience, func() (ok bool) { addr, metrics, ok = startedLine(logs.String()); return ok }) {
		cancel()
		t.Fatalf("run did not start:\n%s", logs.String())
	}
	t.Cleanup(func() { stop() })
	return "http://" + addr, metrics, logs, stop
}

const (
	clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan  = "00f067aa0ba902b7"
	traceparent = "00-" + clientTrace + "-" + clientSpan + "-01"
	tracestate  = "vendor=opaque1"
)

// Personal data the requests carry, which must not reach a span.
var personal = []string{"203.0.113.7", "alice@example.org", "v-secret-visitor", "Mozilla/5.0 (Secret)", "https://ref.example/private", "utm_source", "%zz"}

func sendTraced(t *testing.T, method, url, body string) int {
	t.Helper()
	return sendWith(t, method, url, body, traceparent)
}

func sendWith(t *testing.T, method, url, body, traceparent string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Traceparent", traceparent)
	req.Header.Set("Tracestate", tracestate)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("User-Agent", "Mozilla/5.0 (Secret)")
	req.Header.Set("Referer", "https://ref.example/private")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestIngestSpans checks, through a real OTLP/HTTP export decoded from
// protobuf, that each ingest request has a server span named by its route
// that joins the client's trace (traceparent and tracestate), counts its
// events, carries nothing personal, and that the request's log lines carry
// its trace and span ids.
func TestIngestSpans(t *testing.T) {
	rc := otlptest.New(t)
	eventsPath := filepath.Join(t.TempDir(), "events.ndjson")
	url, logs, stop := runTraced(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL,
		"OTEL_BSP_SCHEDULE_DELAY":     "20",
		"TRUST_PROXY":                 "true",
		"LOG_PATH":                    eventsPath,
		"FLUSH_INTERVAL":              "1s", // both /collect requests in one batch
	})
	body := `[{"type":"signup","url":"https://shop.example/?utm_source=x","visitor_id":"v-secret-visitor","props":{"email":"alice@example.org"}},` +
		`{"type":"pageview","url":"https://shop.example/"},{"type":7}]`
	if code := sendTraced(t, "POST", url+"/collect", body); code != http.StatusAccepted {
		t.Fatalf("/collect answered %d", code)
	}
	const otherTrace, otherSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	if code := sendWith(t, "POST", url+"/collect", `{"type":"click"}`, "00-"+otherTrace+"-"+otherSpan+"-01"); code != http.StatusAccepted {
		t.Fatalf("/collect answered %d", code)
	}
	if code := sendTraced(t, "GET", url+"/px.gif?e=%zz&uid=v-secret-visitor", ""); code != http.StatusOK {
		t.Fatalf("/px.gif answered %d", code)
	}
	if code := sendTraced(t, "HEAD", url+"/healthz", ""); code == 0 {
		t.Fatal("no answer")
	}

	named := func(name string) func(*tracepb.Span) bool {
		return func(s *tracepb.Span) bool { return s.Name == name }
	}
	collect := rc.WaitSpan(t, "POST /collect", named("POST /collect"))
	pixel := rc.WaitSpan(t, "GET /px.gif", named("GET /px.gif"))
	for _, s := range []*tracepb.Span{collect, pixel} {
		if otlptest.Hex(s.TraceId) != clientTrace || otlptest.Hex(s.ParentSpanId) != clientSpan {
			t.Errorf("%s: trace %x parent %x, want the client's %s %s", s.Name, s.TraceId, s.ParentSpanId, clientTrace, clientSpan)
		}
		if s.TraceState != tracestate {
			t.Errorf("%s: tracestate %q, want %q", s.Name, s.TraceState, tracestate)
		}
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("%s: kind %v, want server", s.Name, s.Kind)
		}
		for _, kv := range s.Attributes {
			v := otlptest.AnyString(kv.Value)
			for _, p := range personal {
				if strings.Contains(v, p) {
					t.Errorf("%s: attribute %s=%q carries personal data %q", s.Name, kv.Key, v, p)
				}
			}
		}
	}
	want := map[string]string{"http.request.method": "POST", "http.route": "/collect", "http.response.status_code": "202",
		"gotrack.events.accepted": "2", "gotrack.events.rejected": "1", "gotrack.events.dropped": "0"}
	for k, v := range want {
		if got, _ := otlptest.Attr(collect, k); got != v {
			t.Errorf("POST /collect: %s=%q, want %q", k, got, v)
		}
	}
	if got, _ := otlptest.Attr(pixel, "gotrack.events.rejected"); got != "1" {
		t.Errorf("GET /px.gif: rejected=%q, want 1", got)
	}
	// The batch write of the log sink joins the first request's trace and
	// links to the second request's span.
	other := rc.WaitSpan(t, "POST /collect of the other trace", func(s *tracepb.Span) bool {
		return s.Name == "POST /collect" && otlptest.Hex(s.TraceId) == otherTrace
	})
	write := rc.WaitSpan(t, "write log", named("write log"))
	ids := map[string]bool{otlptest.Hex(write.ParentSpanId): true}
	for _, l := range write.Links {
		ids[otlptest.Hex(l.SpanId)] = true
	}
	if !ids[otlptest.Hex(collect.SpanId)] || !ids[otlptest.Hex(other.SpanId)] || len(ids) != 2 {
		t.Errorf("write log: parent %x, links %v; want the two /collect spans %x and %x", write.ParentSpanId, write.Links, collect.SpanId, other.SpanId)
	}
	if got, _ := otlptest.Attr(write, "gotrack.batch.size"); got != "3" {
		t.Errorf("write log: batch size %q, want 3", got)
	}
	if got, _ := otlptest.Attr(write, "gotrack.outcome"); got != "written" {
		t.Errorf("write log: outcome %q, want written", got)
	}
	// Each stored event carries its request's trace id.
	stored, err := os.ReadFile(eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	traces := map[string]int{}
	for line := range strings.Lines(string(stored)) {
		var e struct {
			TraceID string `json:"trace_id"`
		}
		json.Unmarshal([]byte(line), &e)
		traces[e.TraceID]++
	}
	if traces[clientTrace] != 2 || traces[otherTrace] != 1 {
		t.Errorf("stored events' trace ids %v, want 2 of %s and 1 of %s", traces, clientTrace, otherTrace)
	}
	for _, s := range rc.Spans() {
		if strings.Contains(s.Name, "healthz") {
			t.Errorf("health checks are traced: %s", s.Name)
		}
	}

	// The pixel's debug line carries the pixel span's ids.
	var found bool
	for line := range strings.Lines(logs.String()) {
		var l struct{ Msg, TraceID, SpanID string }
		var raw map[string]any
		if json.Unmarshal([]byte(line), &raw) != nil || raw["msg"] != "pixel event invalid" {
			continue
		}
		l.TraceID, _ = raw["trace_id"].(string)
		l.SpanID, _ = raw["span_id"].(string)
		found = true
		if l.TraceID != clientTrace || l.SpanID != otlptest.Hex(pixel.SpanId) {
			t.Errorf("log line ids %s/%s, want %s/%x:\n%s", l.TraceID, l.SpanID, clientTrace, pixel.SpanId, line)
		}
	}
	if !found {
		t.Errorf("no \"pixel event invalid\" line:\n%s", logs.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestClientParentLinked checks TRACE_CLIENT_PARENT=link end to end: the
// pixel's span starts a trace of GoTrack's own, with a link to the
// client's span, and the stored event and the log line carry GoTrack's
// trace, not the client's.
func TestClientParentLinked(t *testing.T) {
	rc := otlptest.New(t)
	eventsPath := filepath.Join(t.TempDir(), "events.ndjson")
	url, logs, stop := runTraced(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL,
		"OTEL_BSP_SCHEDULE_DELAY":     "20",
		"OTEL_TRACES_SAMPLER":         "always_on",
		"TRACE_CLIENT_PARENT":         "link",
		"LOG_PATH":                    eventsPath,
	})
	if code := sendTraced(t, "GET", url+"/px.gif?e=%zz", ""); code != http.StatusOK {
		t.Fatalf("/px.gif answered %d", code)
	}
	if code := sendTraced(t, "GET", url+"/px.gif?e=pageview", ""); code != http.StatusOK {
		t.Fatalf("/px.gif answered %d", code)
	}
	pixel := rc.WaitSpan(t, "GET /px.gif", func(s *tracepb.Span) bool { return s.Name == "GET /px.gif" })
	own := otlptest.Hex(pixel.TraceId)
	if own == clientTrace || len(pixel.ParentSpanId) != 0 {
		t.Errorf("span in trace %s with parent %x, want a trace of its own", own, pixel.ParentSpanId)
	}
	if len(pixel.Links) != 1 || otlptest.Hex(pixel.Links[0].TraceId) != clientTrace || otlptest.Hex(pixel.Links[0].SpanId) != clientSpan {
		t.Errorf("links %v, want one to the client's span %s/%s", pixel.Links, clientTrace, clientSpan)
	} else if ts := pixel.Links[0].TraceState; ts != "" {
		// README: "the OTLP exporter sends the link's trace and span ids, not its tracestate".
		t.Errorf("the link carries tracestate %q: the README says it does not", ts)
	}
	if len(pixel.TraceState) != 0 {
		t.Errorf("GoTrack's own trace carries tracestate %q, want none", pixel.TraceState)
	}
	if !strings.Contains(logs.String(), `"trace_client_parent":"link"`) {
		t.Errorf("the started line does not say trace_client_parent link:\n%s", logs.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), clientTrace) || !strings.Contains(logs.String(), own) {
		t.Errorf("want the log line of the invalid event with GoTrack's trace id %s, not the client's:\n%s", own, logs.String())
	}
	stored, err := os.ReadFile(eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	// Each request has a trace of its own: the event is the second request's.
	var second string
	for _, s := range rc.Spans() {
		if id := otlptest.Hex(s.TraceId); s.Name == "GET /px.gif" && id != own {
			second = id
		}
	}
	if second == "" || strings.Contains(string(stored), clientTrace) || !strings.Contains(string(stored), `"trace_id":"`+second+`"`) {
		t.Errorf("stored event %s: want GoTrack's own trace id, not the client's", stored)
	}
}

// TestTracingOffByDefault checks that without an endpoint no span is
// exported, even with OTEL_* settings, and that OTEL_SDK_DISABLED wins.
func TestTracingOffByDefault(t *testing.T) {
	rc := otlptest.New(t)
	for _, env := range []map[string]string{
		{"OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "20"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL, "OTEL_SDK_DISABLED": "true", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_BSP_SCHEDULE_DELAY": "20"},
	} {
		url, logs, stop := runTraced(t, env)
		sendTraced(t, "GET", url+"/px.gif?e=%zz", "")
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if n := len(rc.Spans()); n != 0 {
			t.Errorf("%v: %d spans exported, want none", env, n)
		}
		if strings.Contains(logs.String(), "trace_id") {
			t.Errorf("%v: a log line carries a trace id though tracing is off", env)
		}
	}
}

// TestExemplarsReachPrometheus has a real Prometheus, with exemplar
// storage, scrape GoTrack (which answers OpenMetrics when asked) and reads
// back, through /api/v1/query_exemplars, exemplars carrying the client's
// trace id on the request duration and the batch flush latency histograms.
func TestExemplarsReachPrometheus(t *testing.T) {
	promBin := requireTool(t, "prometheus")
	rc := otlptest.New(t)
	url, metricsURL, _, stop := runTracedMetrics(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL,
		"OTEL_BSP_SCHEDULE_DELAY":     "20",
		"METRICS_ENABLED":             "true",
		"METRICS_ADDR":                "127.0.0.1:0",
		"FLUSH_INTERVAL":              "10ms",
	})
	for range 5 {
		sendTraced(t, "POST", url+"/collect", `{"type":"signup"}`)
	}
	host := strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics")

	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gotrack\n    static_configs:\n      - targets: [\"" + host + "\"]\n"
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freePort(t)
	var promLog syncBuffer
	prom := exec.Command(promBin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn", "--enable-feature=exemplar-storage")
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus logs:\n%s", promLog.String())
		}
	})

	exemplarTraces := func(metric string) map[string]bool {
		now := time.Now()
		q := "http://" + promAddr + "/api/v1/query_exemplars?query=" + metric +
			"&start=" + strconv.FormatInt(now.Add(-time.Hour).Unix(), 10) + "&end=" + strconv.FormatInt(now.Add(time.Minute).Unix(), 10)
		resp, err := http.Get(q)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var r struct {
			Data []struct {
				Exemplars []struct {
					Labels map[string]string `json:"labels"`
				} `json:"exemplars"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil {
			return nil
		}
		ids := map[string]bool{}
		for _, s := range r.Data {
			for _, e := range s.Exemplars {
				ids[e.Labels["trace_id"]] = true
			}
		}
		return ids
	}
	for _, metric := range []string{"gotrack_http_duration_seconds_bucket", "gotrack_batch_flush_latency_seconds_bucket"} {
		var got map[string]bool
		if !testkit.Wait(60*time.Second, func() bool { got = exemplarTraces(metric); return got[clientTrace] }) {
			t.Errorf("%s: exemplar trace ids %v, want %s", metric, got, clientTrace)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestReplaySpan checks that `gotrack replay` exports one root span for
// the run, sampled although the default ratio would almost never pick it,
// with its progress as events and its counts as attributes, that each
// batch write is a sink span under it (linking to the request span an
// event carries from its first delivery), and its job metrics over OTLP.
func TestReplaySpan(t *testing.T) {
	rc := otlptest.New(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.ndjson")
	var b strings.Builder
	const origTrace, origSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	for i, e := range sinktest.Events(25) {
		if i == 3 { // traced when first collected
			c := *e
			c.TraceID, c.SpanID = origTrace, origSpan
			c.Seal()
			e = &c
		}
		b.Write(e.JSON())
		b.WriteByte('\n')
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"LOG_PATH":                    filepath.Join(dir, "out.ndjson"),
		"DEAD_LETTER_PATH":            filepath.Join(dir, "dead.ndjson"),
		"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL,
		"FLUSH_INTERVAL":              "10ms",
	}
	var stdout, stderr syncBuffer
	if err := run(context.Background(), []string{"replay", in}, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	// Shutdown exported the spans before run returned.
	var root *tracepb.Span
	for _, s := range rc.Spans() {
		if s.Name == "gotrack replay" {
			root = s
		}
	}
	if root == nil {
		t.Fatalf("no gotrack replay span among %d", len(rc.Spans()))
	}
	if len(root.ParentSpanId) != 0 {
		t.Errorf("replay span has a parent %x", root.ParentSpanId)
	}
	if got, _ := otlptest.Attr(root, "gotrack.replay.replayed"); got != "25" {
		t.Errorf("replayed=%q, want 25", got)
	}
	var written, linked int
	for _, s := range rc.Spans() {
		if s.Name != "write log" {
			continue
		}
		if !bytes.Equal(s.TraceId, root.TraceId) || !bytes.Equal(s.ParentSpanId, root.SpanId) {
			t.Errorf("write log: trace %x parent %x, want the replay span's %x %x", s.TraceId, s.ParentSpanId, root.TraceId, root.SpanId)
		}
		want := map[string]string{"gotrack.sink": "log", "gotrack.attempt": "1", "gotrack.outcome": "written"}
		for k, v := range want {
			if got, _ := otlptest.Attr(s, k); got != v {
				t.Errorf("write log: %s=%q, want %q", k, got, v)
			}
		}
		n, _ := otlptest.Attr(s, "gotrack.batch.size")
		size, _ := strconv.Atoi(n)
		written += size
		for _, l := range s.Links {
			if otlptest.Hex(l.TraceId) == origTrace && otlptest.Hex(l.SpanId) == origSpan {
				linked++
			}
		}
	}
	if written != 25 || linked != 1 {
		t.Errorf("write log spans carry %d events and %d links to the event's request span; want 25 and 1", written, linked)
	}
	var progress int
	for _, ev := range root.Events {
		if ev.Name == "progress" {
			progress++
		}
	}
	if progress == 0 {
		t.Error("no progress event")
	}

	// The job metrics went over OTLP too (OTEL_EXPORTER_OTLP_ENDPOINT with
	// /v1/metrics), named as on the Pushgateway.
	got := map[string]float64{}
	for _, m := range rc.Metrics() {
		for _, dp := range m.GetGauge().GetDataPoints() {
			key := m.Name
			for _, a := range dp.Attributes {
				key += "{" + a.Key + "=" + otlptest.AnyString(a.Value) + "}"
			}
			got[key] = dp.GetAsDouble()
		}
	}
	if got["gotrack_replay_events{result=replayed}"] != 25 || got["gotrack_replay_events{result=failed}"] != 0 {
		t.Errorf("OTLP job metrics %v, want 25 replayed, 0 failed", got)
	}
	for _, name := range []string{"gotrack_replay_duration_seconds", "gotrack_replay_last_success_timestamp_seconds"} {
		if _, ok := got[name]; !ok {
			t.Errorf("OTLP job metrics lack %s: %v", name, got)
		}
	}
}

// TestSegmentSpans checks that requests to the Segment-compatible API get
// the same server span as /collect: named by route, joining the client's
// trace, with the HTTP attributes and the event counts, nothing personal
// or secret (the write key) among its attributes, and the span's trace id
// on the stored events.
func TestSegmentSpans(t *testing.T) {
	rc := otlptest.New(t)
	eventsPath := filepath.Join(t.TempDir(), "events.ndjson")
	url, logs, stop := runTraced(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL,
		"OTEL_BSP_SCHEDULE_DELAY":     "20",
		"TRUST_PROXY":                 "true",
		"LOG_PATH":                    eventsPath,
	})
	const writeKey = "wk-secret-write-key"
	batch := `{"writeKey":"` + writeKey + `","batch":[` +
		`{"type":"track","event":"Signed Up","anonymousId":"v-secret-visitor","properties":{"email":"alice@example.org"},"context":{"ip":"203.0.113.7"}},` +
		`{"type":"page","anonymousId":"a1","context":{"page":{"url":"https://shop.example/?utm_source=x"}}},` +
		`{"type":"nonsense"}]}`
	if code := sendTraced(t, "POST", url+"/v1/batch", batch); code != http.StatusOK {
		t.Fatalf("/v1/batch answered %d", code)
	}
	const otherTrace, otherSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	if code := sendWith(t, "POST", url+"/v1/t", `{"event":"x","anonymousId":"a1"}`, "00-"+otherTrace+"-"+otherSpan+"-01"); code != http.StatusOK {
		t.Fatalf("/v1/t answered %d", code)
	}

	sendTraced(t, "OPTIONS", url+"/v1/batch", "") // a CORS preflight: no span
	const dntTrace = "11111111111111111111111111111111"
	req, err := http.NewRequest("POST", url+"/v1/page", strings.NewReader(`{"name":"Home","anonymousId":"a1"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Traceparent", "00-"+dntTrace+"-"+clientSpan+"-01")
	req.Header.Set("Dnt", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	batchSpan := rc.WaitSpan(t, "POST /v1/batch", func(s *tracepb.Span) bool { return s.Name == "POST /v1/batch" })
	track := rc.WaitSpan(t, "POST /v1/t", func(s *tracepb.Span) bool { return s.Name == "POST /v1/t" })
	dnt := rc.WaitSpan(t, "POST /v1/page", func(s *tracepb.Span) bool { return s.Name == "POST /v1/page" })
	for _, c := range []struct {
		span          *tracepb.Span
		trace, parent string
		want          map[string]string
	}{
		{batchSpan, clientTrace, clientSpan, map[string]string{"http.request.method": "POST", "http.route": "/v1/batch", "url.path": "/v1/batch",
			"http.response.status_code": "200", "gotrack.events.accepted": "2", "gotrack.events.rejected": "1", "gotrack.events.dropped": "0"}},
		{track, otherTrace, otherSpan, map[string]string{"http.route": "/v1/t", "http.response.status_code": "200",
			"gotrack.events.accepted": "1", "gotrack.events.rejected": "0", "gotrack.events.dropped": "0"}},
		{dnt, dntTrace, clientSpan, map[string]string{"http.route": "/v1/page", "http.response.status_code": "200",
			"gotrack.events.accepted": "0", "gotrack.events.rejected": "0", "gotrack.events.dropped": "1"}},
	} {
		s := c.span
		if otlptest.Hex(s.TraceId) != c.trace || otlptest.Hex(s.ParentSpanId) != c.parent {
			t.Errorf("%s: trace %x parent %x, want the client's %s %s", s.Name, s.TraceId, s.ParentSpanId, c.trace, c.parent)
		}
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("%s: kind %v, want server", s.Name, s.Kind)
		}
		for k, v := range c.want {
			if got, _ := otlptest.Attr(s, k); got != v {
				t.Errorf("%s: %s=%q, want %q", s.Name, k, got, v)
			}
		}
		for _, kv := range s.Attributes {
			v := otlptest.AnyString(kv.Value)
			for _, p := range append(personal, writeKey) {
				if strings.Contains(v, p) {
					t.Errorf("%s: attribute %s=%q carries personal or secret data %q", s.Name, kv.Key, v, p)
				}
			}
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, s := range rc.Spans() {
		if strings.HasPrefix(s.Name, "OPTIONS") {
			t.Errorf("a CORS preflight is traced: %s", s.Name)
		}
	}
	// Each stored event carries its request's trace and span ids.
	stored, err := os.ReadFile(eventsPath)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for line := range strings.Lines(string(stored)) {
		var e struct {
			TraceID string `json:"trace_id"`
			SpanID  string `json:"span_id"`
		}
		json.Unmarshal([]byte(line), &e)
		ids[e.TraceID+"/"+e.SpanID]++
	}
	wantIDs := map[string]int{clientTrace + "/" + otlptest.Hex(batchSpan.SpanId): 2, otherTrace + "/" + otlptest.Hex(track.SpanId): 1}
	if !maps.Equal(ids, wantIDs) {
		t.Errorf("stored events' trace/span ids %v, want %v\n%s", ids, wantIDs, logs.String())
	}
}

// TestSDKErrorsLogged: with the collector unreachable, the SDK's reports
// of failed exports reach GoTrack's own log (JSON, a warning), not the
// process's stderr as plain text lines that break LOG_FORMAT=json.
func TestSDKErrorsLogged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() // nothing listens once closed
	ln.Close()
	url, logs, stop := runTraced(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": closed,
		"OTEL_TRACES_SAMPLER":         "always_on",
		"OTEL_BSP_SCHEDULE_DELAY":     "20",
		"LOG_FORMAT":                  "json",
	})
	if code := sendWith(t, "GET", url+"/px.gif?e=pageview", "", ""); code != http.StatusOK {
		t.Fatalf("/px.gif answered %d", code)
	}
	if !testkit.Wait(testkit.Patience, func() bool { return strings.Contains(logs.String(), "traces export") }) {
		t.Errorf("no log line reports the failed export:\n%s", logs.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(logs.String()) {
		var l struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("log line is not JSON: %q", line)
		} else if strings.Contains(line, "traces export") && l.Level != "WARN" {
			t.Errorf("failed export logged at %q, want WARN: %s", l.Level, line)
		}
	}
}

// TestTracingFlushWithinShutdownTimeout: SHUTDOWN_TIMEOUT is the one
// deadline of the whole stop, the export of the spans still buffered
// included. The collector here accepts connections and never answers, and
// the drain delay uses most of the timeout; the stop must still end by the
// deadline, not give the span export a fresh SHUTDOWN_TIMEOUT of its own
// (6s + 5s here). The bound leaves a wide margin for a busy machine.
func TestTracingFlushWithinShutdownTimeout(t *testing.T) {
	addr, connected := hungCollector(t)
	const timeout = 6 * time.Second
	url, logs, stop := runTraced(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + addr,
		"OTEL_TRACES_SAMPLER":         "always_on",
		"OTEL_BSP_SCHEDULE_DELAY":     "20",
		"SHUTDOWN_TIMEOUT":            timeout.String(),
		"SHUTDOWN_DRAIN_DELAY":        "5s",
	})
	if code := sendWith(t, "GET", url+"/px.gif?e=pageview", "", ""); code != http.StatusOK {
		t.Fatalf("/px.gif answered %d", code)
	}
	// The export of that span is under way, hanging, when the stop begins.
	if !testkit.Wait(testkit.Patience, func() bool { return connected() > 0 }) {
		t.Fatal("no export reached the collector")
	}
	began := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > timeout+2500*time.Millisecond {
		t.Errorf("the stop took %v, past SHUTDOWN_TIMEOUT=%v:\n%s", took.Round(time.Millisecond), timeout, logs.String())
	}
}

// TestHeadPixelSpan: README says HEAD /px.gif, which records an event as
// GET does, has its server span too, joining the client's trace, with
// nothing personal among its attributes.
func TestHeadPixelSpan(t *testing.T) {
	rc := otlptest.New(t)
	url, _, stop := runTraced(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rc.URL, "OTEL_BSP_SCHEDULE_DELAY": "20", "TRUST_PROXY": "true"})
	if code := sendTraced(t, "HEAD", url+"/px.gif?e=pageview&uid=v-secret-visitor&url=https%3A%2F%2Fshop.example%2F%3Futm_source%3Dx", ""); code != http.StatusOK {
		t.Fatalf("HEAD /px.gif answered %d", code)
	}
	s := rc.WaitSpan(t, "HEAD /px.gif", func(s *tracepb.Span) bool { return s.Name == "HEAD /px.gif" })
	if otlptest.Hex(s.TraceId) != clientTrace || otlptest.Hex(s.ParentSpanId) != clientSpan {
		t.Errorf("trace %x parent %x, want the client's %s %s", s.TraceId, s.ParentSpanId, clientTrace, clientSpan)
	}
	for k, v := range map[string]string{"http.request.method": "HEAD", "http.route": "/px.gif", "gotrack.events.accepted": "1"} {
		if got, _ := otlptest.Attr(s, k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	for _, kv := range s.Attributes {
		for _, p := range personal {
			if v := otlptest.AnyString(kv.Value); strings.Contains(v, p) {
				t.Errorf("attribute %s=%q carries personal data %q", kv.Key, v, p)
			}
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// hungCollector listens on loopback, accepts connections and never
// answers; connected says how many it has accepted.
func hungCollector(t *testing.T) (addr string, connected func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept() // and never answer
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
}

// TestReplayExitWithinShutdownTimeout: a collector that accepts and never
// answers holds gotrack replay's end (its OTLP job metrics, then its spans)
// for SHUTDOWN_TIMEOUT in all, not a fixed wait per step.
func TestReplayExitWithinShutdownTimeout(t *testing.T) {
	addr, _ := hungCollector(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, append(sinktest.Events(1)[0].JSON(), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	const timeout = 3 * time.Second
	env := map[string]string{
		"LOG_PATH":                    filepath.Join(dir, "out.ndjson"),
		"DEAD_LETTER_PATH":            filepath.Join(dir, "dead.ndjson"),
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + addr,
		"SHUTDOWN_TIMEOUT":            timeout.String(),
		"FLUSH_INTERVAL":              "10ms",
	}
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		done <- run(context.Background(), []string{"replay", in}, func(k string) string { return env[k] }, &stdout, &stderr)
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("replay reported success although its job metrics were never exported")
		}
	case <-time.After(4 * timeout): // before the fix: 30 s for the metrics, then 30 s for the spans
		t.Fatalf("replay still exporting %v after it finished its events; SHUTDOWN_TIMEOUT=%v", time.Since(began), timeout)
	}
	if took := time.Since(began); took > 2*timeout {
		t.Errorf("replay took %v with SHUTDOWN_TIMEOUT=%v", took, timeout)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out.ndjson")); err != nil || len(b) == 0 {
		t.Errorf("the event was not replayed: %v", err)
	}
}
