package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/tracing"
)

// tracedEvents returns n events, the i-th carrying request span i%spans.
func tracedEvents(n, spans int) []*event.Event {
	var out []*event.Event
	for i, e := range sinktest.Events(n) {
		c := *e
		c.TraceID = fmt.Sprintf("%032x", i%spans+1)
		c.SpanID = fmt.Sprintf("%016x", i%spans+1)
		c.Seal()
		out = append(out, &c)
	}
	return out
}

func recorder() (*tracetest.SpanRecorder, *sdktrace.TracerProvider) {
	rec := tracetest.NewSpanRecorder()
	return rec, sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestSinkSpans checks one span per write attempt, its parent and links to
// the request spans of its events (bounded by MaxLinks), its attributes,
// and the retry as a span event.
func TestSinkSpans(t *testing.T) {
	rec, tp := recorder()
	s := newMemSink()
	failures := 1
	s.fail = func([]*event.Event) error {
		if failures > 0 {
			failures--
			return sink.Unavailable(errors.New("connection refused"))
		}
		return nil
	}
	const requests = MaxLinks + 8
	f := newFixture(t, Options{BatchSize: 100, FlushInterval: time.Hour, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond,
		Tracer: tp.Tracer("test")}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(tracedEvents(100, requests)); err != nil {
		t.Fatal(err)
	}
	f.close(t, 5*time.Second)
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2 (a failed attempt, then the written one)", len(spans))
	}
	for i, sp := range spans {
		wantOutcome, wantAttempt := []string{OutcomeFailed, OutcomeWritten}[i], fmt.Sprint(i+1)
		if sp.Name() != "write a" || attr(sp, "gotrack.sink") != "a" || attr(sp, "gotrack.batch.size") != "100" ||
			attr(sp, "gotrack.attempt") != wantAttempt || attr(sp, "gotrack.outcome") != wantOutcome {
			t.Errorf("span %d: %s %v", i, sp.Name(), sp.Attributes())
		}
		if got := sp.Parent().SpanID().String(); got != fmt.Sprintf("%016x", 1) {
			t.Errorf("span %d: parent %s, want the first event's request span", i, got)
		}
		if len(sp.Links()) != MaxLinks-1 {
			t.Errorf("span %d: %d links, want %d (MaxLinks with the parent)", i, len(sp.Links()), MaxLinks-1)
		}
		var linked []string
		for _, l := range sp.Links() {
			linked = append(linked, l.SpanContext.SpanID().String())
		}
		if !slices.Contains(linked, fmt.Sprintf("%016x", 2)) {
			t.Errorf("span %d: no link to request span 2: %v", i, linked)
		}
		// Events 0-99 carry request spans 1-40 in turn: those of spans 33-40
		// (8 in each of the two full rounds) are beyond the bound.
		if got := attr(sp, "gotrack.links.dropped_events"); got != "16" {
			t.Errorf("span %d: links.dropped_events=%q, want 16", i, got)
		}
	}
	if ev := spans[1].Events(); len(ev) != 1 || ev[0].Name != "retry" {
		t.Errorf("second attempt's events %v, want one retry", ev)
	}
}

// TestSinkSpansBisection checks that a permanent error shows as a bisect
// event, and that a batch with no traced event is a root span, sampled or
// not by the sampler alone.
func TestSinkSpansBisection(t *testing.T) {
	rec, tp := recorder()
	events := tracedEvents(4, 1)
	poison := events[3].EventID
	s := newMemSink()
	s.fail = func(batch []*event.Event) error {
		for _, e := range batch {
			if e.EventID == poison {
				return sink.Permanent(errors.New("invalid byte sequence"))
			}
		}
		return nil
	}
	f := newFixture(t, Options{BatchSize: 4, FlushInterval: time.Hour, Tracer: tp.Tracer("test")}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(events); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Submit(sinktest.Events(4)); err != nil { // untraced: NeverSample drops its span
		t.Fatal(err)
	}
	f.close(t, 5*time.Second)
	var names []string
	for _, sp := range rec.Ended() {
		for _, ev := range sp.Events() {
			if ev.Name != "exception" { // RecordError's
				names = append(names, ev.Name)
			}
		}
	}
	// 4 -> bisect into 2+2; the right half 2 -> bisect into 1+1; the poison -> dead_letter.
	if want := []string{"bisect", "bisect", "dead_letter"}; !slices.Equal(names, want) {
		t.Errorf("span events %v, want %v", names, want)
	}
	for _, sp := range rec.Ended() {
		if sp.Parent().SpanID().String() != fmt.Sprintf("%016x", 1) {
			t.Errorf("a span of an untraced batch was sampled: %s %v", sp.Name(), sp.Attributes())
		}
	}
}

// TestSpoolAppendSpan checks that a traced request's spool append is a
// child span of the request, and that an untraced one has none.
func TestSpoolAppendSpan(t *testing.T) {
	rec, tp := recorder()
	f := spoolFixture(t, t.TempDir(), 64<<20, Options{BatchSize: 100, Tracer: tp.Tracer("test")}, map[string]sink.Sink{"a": newMemSink()})
	if err := f.p.Submit(tracedEvents(3, 1)); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Submit(sinktest.Events(2)); err != nil {
		t.Fatal(err)
	}
	f.close(t, 10*time.Second)
	var appends []sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.Name() == "spool append" {
			appends = append(appends, sp)
		}
	}
	if len(appends) != 1 {
		t.Fatalf("%d spool append spans, want 1 (the traced request's)", len(appends))
	}
	if sp := appends[0]; sp.Parent().SpanID().String() != fmt.Sprintf("%016x", 1) || attr(sp, "gotrack.batch.size") != "3" {
		t.Errorf("spool append: parent %s, attributes %v", sp.Parent().SpanID(), sp.Attributes())
	}
}

// TestSinkSpansJobParent checks that with Options.Parent (a batch job's
// root span) every write attempt is its child, and the request spans the
// events carry are links.
func TestSinkSpansJobParent(t *testing.T) {
	rec, tp := recorder()
	job := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{9}, TraceFlags: trace.FlagsSampled})
	s := newMemSink()
	failures := 1
	s.fail = func([]*event.Event) error {
		if failures > 0 {
			failures--
			return sink.Unavailable(errors.New("connection refused"))
		}
		return nil
	}
	f := newFixture(t, Options{BatchSize: 10, FlushInterval: time.Hour, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond,
		Tracer: tp.Tracer("test"), Parent: job}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(tracedEvents(10, 2)); err != nil {
		t.Fatal(err)
	}
	f.close(t, 5*time.Second)
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2 (a failed attempt, then the written one)", len(spans))
	}
	for i, sp := range spans {
		if !sp.Parent().Equal(job) || sp.SpanContext().TraceID() != job.TraceID() {
			t.Errorf("span %d: parent %v, want the job's %v", i, sp.Parent(), job)
		}
		if got := attr(sp, "gotrack.attempt"); got != fmt.Sprint(i+1) {
			t.Errorf("span %d: attempt %s", i, got)
		}
		var linked []string
		for _, l := range sp.Links() {
			linked = append(linked, l.SpanContext.SpanID().String())
		}
		if want := []string{fmt.Sprintf("%016x", 1), fmt.Sprintf("%016x", 2)}; !slices.Equal(linked, want) {
			t.Errorf("span %d: links %v, want the request spans %v", i, linked, want)
		}
	}
}

// TestBatchLogsCarrySpan checks that the log lines of a batch's delivery,
// the warning of a failed write and that of the events dead-lettered,
// carry the trace and span ids of the write attempt they are about.
func TestBatchLogsCarrySpan(t *testing.T) {
	rec, tp := recorder()
	var logs bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&logs, nil)))
	s := newMemSink()
	calls := 0
	s.fail = func([]*event.Event) error {
		if calls++; calls == 1 {
			return sink.Unavailable(errors.New("connection refused"))
		}
		return sink.Permanent(errors.New("invalid byte sequence"))
	}
	f := newLoggedFixture(t, Options{BatchSize: 1, FlushInterval: time.Hour, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond,
		Tracer: tp.Tracer("test")}, map[string]sink.Sink{"a": s}, log)
	if err := f.p.Submit(tracedEvents(1, 1)); err != nil {
		t.Fatal(err)
	}
	f.close(t, 5*time.Second)
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2 (a failed attempt, then the rejected one)", len(spans))
	}
	want := map[string]trace.SpanContext{
		"sink write failed, retrying": spans[0].SpanContext(),
		"events dead-lettered":        spans[1].SpanContext(),
	}
	for line := range strings.Lines(logs.String()) {
		var l struct {
			Msg     string `json:"msg"`
			TraceID string `json:"trace_id"`
			SpanID  string `json:"span_id"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		sc, ok := want[l.Msg]
		if !ok {
			continue
		}
		delete(want, l.Msg)
		if l.TraceID != sc.TraceID().String() || l.SpanID != sc.SpanID().String() {
			t.Errorf("%q carries %s/%s, want the write span's %s/%s", l.Msg, l.TraceID, l.SpanID, sc.TraceID(), sc.SpanID())
		}
	}
	for msg := range want {
		t.Errorf("no %q line:\n%s", msg, logs.String())
	}
}
