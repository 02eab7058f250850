package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/spool"
)

func spoolFixture(t *testing.T, dir string, maxBytes int64, opts Options, sinks map[string]sink.Sink) *fixture {
	t.Helper()
	var names []string
	for _, n := range []string{"a", "b"} {
		if _, ok := sinks[n]; ok {
			names = append(names, n)
		}
	}
	sp, err := spool.Open(spool.Options{Dir: dir, Sync: spool.Sync{Always: true}, MaxBytes: maxBytes, Readers: names})
	if err != nil {
		t.Fatal(err)
	}
	opts.Spool = sp
	return newFixture(t, opts, sinks)
}

func TestSpoolDeliversAndDrains(t *testing.T) {
	a, b := newMemSink(), newMemSink()
	f := spoolFixture(t, t.TempDir(), 64<<20, Options{BatchSize: 100}, map[string]sink.Sink{"a": a, "b": b})
	events := sinktest.Events(1000)
	for i := 0; i < len(events); i += 10 {
		if err := f.p.Submit(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	f.close(t, 10*time.Second)
	if a.count() != 1000 || b.count() != 1000 {
		t.Errorf("sinks hold %d and %d events, want 1000 each", a.count(), b.count())
	}
}

// TestSpoolKeepsWhatASinkCannotTake stops with one sink down: its events
// stay in the spool, nothing is dead-lettered, the other sink has them all,
// and a restart with the sink back delivers them.
func TestSpoolKeepsWhatASinkCannotTake(t *testing.T) {
	dir := t.TempDir()
	down, ok := newMemSink(), newMemSink()
	down.fail = func([]*event.Event) error { return sink.Unavailable(errors.New("connection refused")) }
	f := spoolFixture(t, dir, 64<<20, Options{BatchSize: 50, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond},
		map[string]sink.Sink{"a": down, "b": ok})
	events := sinktest.Events(500)
	for _, e := range events {
		if !f.p.SubmitEach(e) {
			t.Fatal("SubmitEach refused an event with room in the spool")
		}
	}
	waitForCount(t, ok, 500)
	f.close(t, 2*time.Second)
	if st := f.p.Stats()[0]; st.Delivered != 0 || st.DeadLettered != 0 || st.Pending != 500 {
		t.Fatalf("down sink: %+v, want all 500 pending in the spool", st)
	}

	back := newMemSink()
	f2 := spoolFixture(t, dir, 64<<20, Options{BatchSize: 50}, map[string]sink.Sink{"a": back, "b": ok})
	f2.close(t, 10*time.Second)
	if back.count() != 500 {
		t.Errorf("after the restart the recovered sink got %d events, want 500", back.count())
	}
	if ok.count() != 500 {
		t.Errorf("the healthy sink holds %d distinct events, want 500", ok.count())
	}
}

func TestSpoolFull(t *testing.T) {
	down := newMemSink()
	down.gate = make(chan struct{}) // holds its first batch
	f := spoolFixture(t, t.TempDir(), 64<<10, Options{}, map[string]sink.Sink{"a": down})
	var err error
	n := 0
	for ; n < 10000 && err == nil; n++ {
		err = f.p.Submit(sinktest.Events(1))
	}
	if !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("after %d events: %v, want ErrSpoolFull", n, err)
	}
	if ready, why := f.p.Ready(); ready {
		t.Errorf("Ready with a full spool: %v", why)
	}
	if f.p.SubmitEach(sinktest.Events(1)[0]) {
		t.Error("the pixel path was accepted by a full spool")
	}
	close(down.gate)
	f.close(t, 10*time.Second)
	if down.count() != n-1 {
		t.Errorf("sink got %d events, %d were accepted", down.count(), n-1)
	}
}

func waitForCount(t *testing.T, s *memSink, n int) {
	t.Helper()
	eventually(t, "the sink to take every event", func() bool { return s.count() == n })
}

// TestSpoolSinkDownStaysReady: with the spool, a sink being down does not
// make the pipeline not ready (the spool absorbs its events), but Ready
// still names it; without the spool it does (TestFailingSinkDoesNotStallOthers).
func TestSpoolSinkDownStaysReady(t *testing.T) {
	down := newMemSink()
	down.fail = func([]*event.Event) error { return sink.Unavailable(errors.New("connection refused")) }
	f := spoolFixture(t, t.TempDir(), 64<<20, Options{BatchSize: 10, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond},
		map[string]sink.Sink{"a": down, "b": newMemSink()})
	if err := f.p.Submit(sinktest.Events(10)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sink a to be reported down", func() bool {
		_, why := f.p.Ready()
		return strings.Contains(strings.Join(why, ","), "sink a is down")
	})
	if ready, why := f.p.Ready(); !ready {
		t.Errorf("Ready() = false %v: a sink down behind the spool must not take GoTrack out of rotation", why)
	}
	f.close(t, 2*time.Second)
}

// TestMemorySinkDownNotReady: without the spool, a down sink makes the
// pipeline not ready although its queue has room: the memory queue holds
// only QUEUE_SIZE events, better sent to an instance whose sinks work.
func TestMemorySinkDownNotReady(t *testing.T) {
	down := newMemSink()
	down.fail = func([]*event.Event) error { return sink.Unavailable(errors.New("connection refused")) }
	f := newFixture(t, Options{QueueSize: 1000, BatchSize: 10, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond},
		map[string]sink.Sink{"a": down})
	if err := f.p.Submit(sinktest.Events(10)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sink a to be reported down", func() bool {
		_, why := f.p.Ready()
		return strings.Contains(strings.Join(why, ","), "sink a is down")
	})
	if ready, why := f.p.Ready(); ready || strings.Contains(strings.Join(why, ","), "full") {
		t.Errorf("Ready() = %v %v, want not ready for the down sink alone", ready, why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	f.p.Close(ctx) // the 10 events go to the dead-letter file
}
