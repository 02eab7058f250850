package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/spool"
)

// gauge reads one series of a gauge from reg.
func gauge(t *testing.T, reg prometheus.Gatherer, name, sinkName string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink" && l.GetValue() == sinkName {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{sink=%q}", name, sinkName)
	return 0
}

// TestDepthCountsTheBatchInRetry: events the worker holds while its sink
// is down are still counted in gotrack_queue_depth, so that saturation
// alerts see them.
func TestDepthCountsTheBatchInRetry(t *testing.T) {
	s := newMemSink()
	var down atomic.Bool
	down.Store(true)
	s.fail = func([]*event.Event) error {
		if down.Load() {
			return sink.Unavailable(errors.New("connection refused"))
		}
		return nil
	}
	f := newFixture(t, Options{BatchSize: 10, FlushInterval: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond},
		map[string]sink.Sink{"a": s})
	if err := f.p.Submit(sinktest.Events(3)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a retry", func() bool { return testutil.ToFloat64(f.p.metrics.retries.WithLabelValues("a")) > 0 })
	if got := gauge(t, f.reg, "gotrack_queue_depth", "a"); got != 3 {
		t.Errorf("gotrack_queue_depth = %v during the outage, want 3 (the batch in retry)", got)
	}
	if st := f.p.Stats()[0]; st.Pending != 3 {
		t.Errorf("Stats().Pending = %d, want 3", st.Pending)
	}
	down.Store(false)
	eventually(t, "the retry to succeed", func() bool { return s.count() == 3 })
	eventually(t, "the depth to fall", func() bool { return gauge(t, f.reg, "gotrack_queue_depth", "a") == 0 })
	f.close(t, 5*time.Second)
}

// faultyFile is a dead-letter file whose writes fail while fail says so.
type faultyFile struct {
	f    *os.File
	fail func() error
}

func (w *faultyFile) Write(b []byte) (int, error) {
	if err := w.fail(); err != nil {
		return 0, err
	}
	return w.f.Write(b)
}
func (w *faultyFile) Sync() error  { return w.f.Sync() }
func (w *faultyFile) Close() error { return w.f.Close() }

// newFaultyFixture is newFixture with a dead-letter file whose writes fail
// while fail returns an error.
func newFaultyFixture(t *testing.T, opts Options, s sink.Sink, fail func() error) *fixture {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dead.ndjson")
	dead := deadletter.NewOpener(path, func(p string) (deadletter.WriteSyncer, error) {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, err
		}
		return &faultyFile{f: f, fail: fail}, nil
	})
	p, err := New([]Output{{Name: "a", Sink: s}}, opts, m, reg, dead, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	return &fixture{p: p, reg: reg, dead: path}
}

var errNoSpace = &os.PathError{Op: "write", Path: "full", Err: syscall.ENOSPC}

// TestFullDiskLosesNothingSilently: when neither the sink nor the
// dead-letter file can take the events by the deadline, Close counts each
// one as lost, in the metric and its error, and none as dead-lettered.
func TestFullDiskLosesNothingSilently(t *testing.T) {
	s := newMemSink()
	s.fail = func([]*event.Event) error { return errNoSpace }
	f := newFaultyFixture(t, Options{BatchSize: 10, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond}, s,
		func() error { return errNoSpace })
	submitAll(t, f.p, sinktest.Events(25))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := f.p.Close(ctx)
	if !errors.Is(err, ErrLost) {
		t.Fatalf("Close = %v, want ErrLost", err)
	}
	st := f.p.Stats()[0]
	if st.Lost != 25 || st.DeadLettered != 0 {
		t.Errorf("lost %d, dead-lettered %d; want 25 and 0", st.Lost, st.DeadLettered)
	}
	if v := testutil.ToFloat64(f.p.metrics.lost.WithLabelValues("a")); v != 25 {
		t.Errorf("gotrack_events_lost_total = %v, want 25", v)
	}
	if v := testutil.ToFloat64(f.p.metrics.deadLettered.WithLabelValues("a", DeadShutdown)); v != 0 {
		t.Errorf("dead-lettered (shutdown) = %v, want 0: nothing was written", v)
	}
	if n := len(f.deadLines(t)); n != 0 {
		t.Errorf("dead-letter file has %d lines, want 0", n)
	}
}

// TestDeadLetterWriteRetried: a dead-letter write that fails for a while
// is retried, and counted once it is written.
func TestDeadLetterWriteRetried(t *testing.T) {
	events := sinktest.Events(4)
	s := newMemSink()
	s.fail = func(batch []*event.Event) error {
		for _, e := range batch {
			if e.EventID == events[1].EventID {
				return sink.Permanent(errors.New("rejected"))
			}
		}
		return nil
	}
	var failures atomic.Int32
	failures.Store(3)
	f := newFaultyFixture(t, Options{BatchSize: 4, FlushInterval: time.Hour, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond}, s,
		func() error {
			if failures.Add(-1) >= 0 {
				return errNoSpace
			}
			return nil
		})
	if err := f.p.Submit(events); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dead letter", func() bool { return f.p.Stats()[0].DeadLettered == 1 })
	f.close(t, 5*time.Second)
	st := f.p.Stats()[0]
	if st.Delivered != 3 || st.DeadLettered != 1 || st.Lost != 0 {
		t.Errorf("delivered %d, dead-lettered %d, lost %d; want 3, 1, 0", st.Delivered, st.DeadLettered, st.Lost)
	}
	if lines := f.deadLines(t); len(lines) != 1 {
		t.Errorf("dead-letter file has %d lines, want 1", len(lines))
	}
}

// stuckSink never returns from WriteBatch until released, whatever its
// context says: the worst a sink can do.
type stuckSink struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stuckSink) WriteBatch(context.Context, []*event.Event) error {
	s.entered <- struct{}{}
	<-s.release
	return nil
}
func (s *stuckSink) Close(context.Context) error { return nil }

// TestCloseBoundedByItsDeadline: a sink stuck in a write cannot hold Close
// past its context's deadline. Close takes over from the stuck worker: the
// batch of the stuck write (never confirmed) and what waits in the queue
// go to the dead-letter file, nothing is lost, and when the write returns
// later nothing is counted twice.
func TestCloseBoundedByItsDeadline(t *testing.T) {
	s := &stuckSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, Options{BatchSize: 5, FlushInterval: time.Millisecond}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(sinktest.Events(5)); err != nil {
		t.Fatal(err)
	}
	<-s.entered
	if err := f.p.Submit(sinktest.Events(20)); err != nil { // queued behind the stuck write
		t.Fatal(err)
	}
	// Close waits for the worker until 95% of this and has the last 5%
	// (200ms) to write the dead-letter file: ample, even under -race.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.p.Close(ctx) }()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, ErrLost) {
			t.Errorf("Close = %v, want the stuck-worker error and no ErrLost", err)
		}
	case <-time.After(30 * time.Second): // far past the deadline
		t.Fatal("Close did not return after its deadline while a write was stuck")
	}
	want := Stats{Sink: "a", DeadLettered: 25}
	if st := f.p.Stats()[0]; st != want {
		t.Errorf("after Close: %+v, want %+v", st, want)
	}
	if n := len(f.deadLines(t)); n != 25 {
		t.Errorf("dead-letter file has %d lines, want 25", n)
	}
	close(s.release)   // the stuck write returns now, "successfully"
	f.p.workers.Wait() // the abandoned worker runs on to its end
	if st := f.p.Stats()[0]; st != want {
		t.Errorf("after the stuck write returned: %+v, want %+v (counted twice?)", st, want)
	}
	if got := testutil.ToFloat64(f.p.metrics.lost.WithLabelValues("a")); got != 0 {
		t.Errorf("gotrack_events_lost_total = %v, want 0", got)
	}
}

// TestCloseStuckWorkerWithSpool: with the spool, what a stuck worker held
// stays in the spool for the next start: neither lost nor dead-lettered,
// and the write returning later does not acknowledge it.
func TestCloseStuckWorkerWithSpool(t *testing.T) {
	dir := t.TempDir()
	s := &stuckSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := spoolFixture(t, dir, 64<<20, Options{BatchSize: 5, FlushInterval: time.Millisecond}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(sinktest.Events(5)); err != nil {
		t.Fatal(err)
	}
	<-s.entered
	if err := f.p.Submit(sinktest.Events(20)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := f.p.Close(ctx); err == nil || errors.Is(err, ErrLost) {
		t.Errorf("Close = %v, want the stuck-worker error and no ErrLost", err)
	}
	close(s.release)
	f.p.workers.Wait()
	if st := f.p.Stats()[0]; st.Lost != 0 || st.DeadLettered != 0 || st.Delivered != 0 {
		t.Errorf("after Close: %+v, want nothing lost, dead-lettered or counted delivered", st)
	}
	back := newMemSink()
	f2 := spoolFixture(t, dir, 64<<20, Options{BatchSize: 50}, map[string]sink.Sink{"a": back})
	f2.close(t, 10*time.Second)
	if back.count() != 25 {
		t.Errorf("the next start delivered %d events, want all 25 kept in the spool", back.count())
	}
}

// partsSink declares writes in flight and records how many overlap: each
// of the first MaxInFlight writes waits until all of them have started.
type partsSink struct {
	*memSink
	policy   sink.Policy
	mu       sync.Mutex
	now, top int
	arrived  int
	all      chan struct{} // closed once MaxInFlight writes have started
	parts    []int
}

func (s *partsSink) Policy() sink.Policy { return s.policy }

func (s *partsSink) WriteBatch(ctx context.Context, batch []*event.Event) error {
	s.mu.Lock()
	s.now++
	s.top = max(s.top, s.now)
	s.parts = append(s.parts, len(batch))
	if s.arrived++; s.arrived == s.policy.MaxInFlight {
		close(s.all)
	}
	s.mu.Unlock()
	select {
	case <-s.all:
	case <-time.After(5 * time.Second): // they never came: top stays below MaxInFlight
	}
	defer func() {
		s.mu.Lock()
		s.now--
		s.mu.Unlock()
	}()
	return s.memSink.WriteBatch(ctx, batch)
}

// TestSinkPolicyParts: a sink declaring MaxInFlight gets a large batch in
// concurrent parts of at least MinPart events; a poison event costs only
// its own part a bisection, and the engine merges the outcome.
func TestSinkPolicyParts(t *testing.T) {
	events := sinktest.Events(90)
	poison := events[70].EventID
	s := &partsSink{memSink: newMemSink(), all: make(chan struct{}), policy: sink.Policy{BatchEvents: 90, MaxInFlight: 3, MinPart: 30}}
	s.fail = func(batch []*event.Event) error {
		for _, e := range batch {
			if e.EventID == poison {
				return sink.Permanent(errors.New("bad row"))
			}
		}
		return nil
	}
	f := newFixture(t, Options{BatchSize: 10, FlushInterval: time.Hour}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(events); err != nil {
		t.Fatal(err)
	}
	f.close(t, 10*time.Second)
	if s.top != 3 {
		t.Errorf("%d writes overlapped, want 3 (MaxInFlight)", s.top)
	}
	if s.parts[0] != 30 {
		t.Errorf("first write of %d events, want a part of 30 (the policy's batch of 90 over 3)", s.parts[0])
	}
	if st := f.p.Stats()[0]; st.Delivered != 89 || st.DeadLettered != 1 {
		t.Errorf("delivered %d, dead-lettered %d; want 89, 1", st.Delivered, st.DeadLettered)
	}
}

// TestSpoolKeepsRejectedEventsItCannotDeadLetter: with a spool, a rejected
// event whose dead-letter write keeps failing is neither lost nor skipped:
// the batch stays in the spool, and the next start dead-letters it.
func TestSpoolKeepsRejectedEventsItCannotDeadLetter(t *testing.T) {
	dir := t.TempDir()
	events := sinktest.Events(6)
	reject := func(batch []*event.Event) error {
		for _, e := range batch {
			if e.EventID == events[5].EventID {
				return sink.Permanent(errors.New("rejected"))
			}
		}
		return nil
	}
	s := newMemSink()
	s.fail = reject
	sp, err := spool.Open(spool.Options{Dir: dir, Sync: spool.Sync{Always: true}, MaxBytes: 64 << 20, Readers: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	f := newFaultyFixture(t, Options{Spool: sp, BatchSize: 6, FlushInterval: time.Hour, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond},
		s, func() error { return errNoSpace })
	if err := f.p.Submit(events); err != nil {
		t.Fatal(err)
	}
	// Bisection writes events 0 to 4, then the worker waits on the
	// dead-letter file for event 5.
	eventually(t, "the events before the rejected one", func() bool { return s.count() == 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := f.p.Close(ctx); err != nil {
		t.Fatalf("Close = %v, want nil: the spool keeps the events", err)
	}
	if st := f.p.Stats()[0]; st.Lost != 0 || st.DeadLettered != 0 || st.Pending != 6 {
		t.Fatalf("%+v, want nothing lost or dead-lettered, the batch of 6 pending in the spool", st)
	}

	s2 := newMemSink()
	s2.fail = reject
	f2 := spoolFixture(t, dir, 64<<20, Options{BatchSize: 6, FlushInterval: time.Hour}, map[string]sink.Sink{"a": s2})
	f2.close(t, 10*time.Second)
	if st := f2.p.Stats()[0]; st.DeadLettered != 1 || st.Delivered != 5 {
		t.Errorf("after the restart: %+v, want 5 delivered and the rejected one dead-lettered", st)
	}
}

// stuckPartSink writes every part at once (MaxInFlight 2) and gets stuck
// on the part holding the event stuck, whatever its context says.
type stuckPartSink struct {
	stuck   string
	entered chan struct{}
	release chan struct{}
	written atomic.Int64
}

func (s *stuckPartSink) WriteBatch(_ context.Context, batch []*event.Event) error {
	for _, e := range batch {
		if e.EventID == s.stuck {
			s.entered <- struct{}{}
			<-s.release
			return nil
		}
	}
	s.written.Add(int64(len(batch)))
	return nil
}
func (s *stuckPartSink) Close(context.Context) error { return nil }
func (s *stuckPartSink) Policy() sink.Policy {
	return sink.Policy{BatchEvents: 10, MaxInFlight: 2, MinPart: 5}
}

// TestCloseTakesOverOnlyTheStuckPart: of a batch written in two parts, one
// written and one stuck, Close takes over (dead-letters) the stuck part
// only: the written part is neither dead-lettered nor counted twice.
func TestCloseTakesOverOnlyTheStuckPart(t *testing.T) {
	events := sinktest.Events(10)
	s := &stuckPartSink{stuck: events[7].EventID, entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, Options{FlushInterval: time.Hour}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(events); err != nil {
		t.Fatal(err)
	}
	<-s.entered
	eventually(t, "the first part written", func() bool { return f.p.Stats()[0].Delivered == 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := f.p.Close(ctx); err == nil || errors.Is(err, ErrLost) {
		t.Errorf("Close = %v, want the stuck-worker error and no ErrLost", err)
	}
	want := Stats{Sink: "a", Delivered: 5, DeadLettered: 5}
	if st := f.p.Stats()[0]; st != want {
		t.Errorf("after Close: %+v, want %+v", st, want)
	}
	if n := len(f.deadLines(t)); n != 5 {
		t.Errorf("dead-letter file has %d lines, want 5 (the stuck part)", n)
	}
	close(s.release)
	f.p.workers.Wait()
	if st := f.p.Stats()[0]; st != want {
		t.Errorf("after the stuck write returned: %+v, want %+v (counted twice?)", st, want)
	}
}

// backlogSink declares PartsOnBacklog, records the size of each write,
// and holds the first write until release is closed.
type backlogSink struct {
	*memSink
	mu      sync.Mutex
	sizes   []int
	entered chan struct{}
	release chan struct{}
}

func (s *backlogSink) Policy() sink.Policy {
	return sink.Policy{BatchEvents: 90, MaxInFlight: 3, MinPart: 30, PartsOnBacklog: true}
}

func (s *backlogSink) WriteBatch(ctx context.Context, batch []*event.Event) error {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(batch))
	first := len(s.sizes) == 1
	s.mu.Unlock()
	if first {
		close(s.entered)
		<-s.release
	}
	return s.memSink.WriteBatch(ctx, batch)
}

// TestPartsOnBacklog: a sink declaring PartsOnBacklog gets a full batch
// whole while nothing waits behind it, and in parts when at least another
// full batch does.
func TestPartsOnBacklog(t *testing.T) {
	events := sinktest.Events(270)
	s := &backlogSink{memSink: newMemSink(), entered: make(chan struct{}), release: make(chan struct{})}
	f := newFixture(t, Options{QueueSize: 1000, FlushInterval: time.Hour}, map[string]sink.Sink{"a": s})
	if err := f.p.Submit(events[:90]); err != nil {
		t.Fatal(err)
	}
	<-s.entered // the first batch, alone in the queue, is being written
	if err := f.p.Submit(events[90:]); err != nil {
		t.Fatal(err)
	}
	close(s.release)
	f.close(t, 10*time.Second)
	if want := []int{90, 30, 30, 30, 90}; !slices.Equal(s.sizes, want) {
		t.Errorf("writes of %v events, want %v: the batch with another behind it in parts, the others whole", s.sizes, want)
	}
	if st := f.p.Stats()[0]; st.Delivered != 270 {
		t.Errorf("delivered %d, want 270", st.Delivered)
	}
}
