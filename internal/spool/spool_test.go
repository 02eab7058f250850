package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

func open(t testing.TB, dir string, o Options) *Spool {
	t.Helper()
	o.Dir = dir
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	if o.Readers == nil {
		o.Readers = []string{"log"}
	}
	if o.Sync == (Sync{}) {
		o.Sync = Sync{Always: true}
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readAll reads until n events have come, acking each batch when ack is set.
func readAll(t *testing.T, r *Reader, n int, ack bool) []*event.Event {
	t.Helper()
	var out []*event.Event
	stop := make(chan struct{})
	timer := time.AfterFunc(10*time.Second, func() { close(stop) })
	defer timer.Stop()
	for len(out) < n {
		batch, err := r.Read(100, 1<<20, time.Millisecond, stop)
		if err != nil {
			t.Fatal(err)
		}
		if batch == nil {
			t.Fatalf("read %d events, want %d", len(out), n)
		}
		out = append(out, batch...)
		if ack {
			if err := r.Ack(len(batch)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

func ids(events []*event.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventID
	}
	return out
}

func TestAppendReadAck(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096})
	events := sinktest.Events(200)
	for i := 0; i < len(events); i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	segs := s.snapshot().segments
	if segs < 5 {
		t.Fatalf("%d segments; the small segment size should have rotated more", segs)
	}
	got := readAll(t, s.Reader("log"), 200, true)
	for i := range events {
		if got[i].EventID != events[i].EventID || string(got[i].JSON()) != string(events[i].JSON()) {
			t.Fatalf("event %d read back as %s, want %s", i, got[i].JSON(), events[i].JSON())
		}
	}
	if st := s.snapshot(); st.segments != 1 || !st.oldestAt.IsZero() {
		t.Errorf("after every ack: %d segments, oldest %v; want only the active one", st.segments, st.oldestAt)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLaggingReaderKeepsSegments(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096, Readers: []string{"fast", "slow"}})
	events := sinktest.Events(100)
	for i := 0; i < len(events); i += 10 {
		s.Append(events[i : i+10])
	}
	readAll(t, s.Reader("fast"), 100, true)
	if st := s.snapshot(); st.segments < 3 {
		t.Fatalf("segments deleted while the slow reader has not read them (%d left)", st.segments)
	}
	if lag := s.Reader("slow").Lag(); lag != 100 {
		t.Errorf("slow lag %d, want 100", lag)
	}
	got := readAll(t, s.Reader("slow"), 100, true)
	if len(got) != 100 || s.snapshot().segments != 1 {
		t.Errorf("slow read %d; %d segments left", len(got), s.snapshot().segments)
	}
	s.Close()
}

func TestReopenReplaysUnacked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	events := sinktest.Events(50)
	s.Append(events)
	r := s.Reader("log")
	readAll(t, r, 50, false)
	r.Ack(20) // the sink took 20; the other 30 were read but never acknowledged
	s.Close()

	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg, []string{"log"})
	if err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{Metrics: m})
	defer s.Close()
	got := readAll(t, s.Reader("log"), 30, true)
	if got[0].EventID != events[20].EventID || got[29].EventID != events[49].EventID {
		t.Errorf("replayed %v, want events 20 to 49", ids(got))
	}
	if v := testutil.ToFloat64(m.recovered.WithLabelValues("log")); v != 30 {
		t.Errorf("recovered = %v, want 30", v)
	}
	more := sinktest.Events(5)
	s.Append(more)
	if got := readAll(t, s.Reader("log"), 5, true); got[0].EventID != more[0].EventID {
		t.Errorf("after replay, read %s, want the new event", got[0].EventID)
	}
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	var last string
	for _, p := range paths {
		if st, _ := os.Stat(p); st.Size() > 0 {
			last = p
		}
	}
	return last
}

func TestTornTailIsTruncated(t *testing.T) {
	for name, damage := range map[string]func(b []byte) []byte{
		"partial record": func(b []byte) []byte { return append(b, 0x40, 0, 0, 0, 1, 2, 3) },
		"garbage tail":   func(b []byte) []byte { return append(b, []byte("\x00\x00\x00\x00garbage after a crash")...) },
		"bad CRC": func(b []byte) []byte {
			b[len(b)-5] ^= 0xFF // flips a byte of the last record's payload
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{})
			events := sinktest.Events(10)
			s.Append(events)
			s.Close()
			seg := lastSegment(t, dir)
			b, _ := os.ReadFile(seg)
			damaged := damage(b)
			os.WriteFile(seg, damaged, 0o640)

			reg := prometheus.NewPedanticRegistry()
			m, _ := NewMetrics(reg, []string{"log"})
			s = open(t, dir, Options{Metrics: m})
			defer s.Close()
			left, _ := os.ReadFile(seg)
			want := 10
			if name == "bad CRC" {
				want = 9 // the damaged last record is cut off
			}
			got := readAll(t, s.Reader("log"), want, true)
			if len(got) != want || got[0].EventID != events[0].EventID {
				t.Errorf("recovered %d events, want %d", len(got), want)
			}
			if v := testutil.ToFloat64(m.truncations); v != 1 {
				t.Errorf("truncations = %v, want 1", v)
			}
			q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*.tail.*"))
			if len(q) != 1 {
				t.Fatalf("quarantine holds %v; want one copy of the bytes cut", q)
			}
			if kept, _ := os.ReadFile(q[0]); !bytes.Equal(append(left, kept...), damaged) {
				t.Errorf("the segment left (%d bytes) and the copy (%d bytes) are not the segment as found (%d bytes)", len(left), len(kept), len(damaged))
			}
			if err := s.Append(sinktest.Events(1)); err != nil { // and it goes on
				t.Fatal(err)
			}
		})
	}
}

func TestFullThenDrained(t *testing.T) {
	dir := t.TempDir()
	events := sinktest.Events(200)
	s := open(t, dir, Options{MaxBytes: 64 << 10, SegmentBytes: 8 << 10})
	defer s.Close()
	n := 0
	var err error
	for ; n < len(events); n++ {
		if err = s.Append(events[n : n+1]); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrFull) || n == 0 {
		t.Fatalf("after %d appends: %v, want ErrFull", n, err)
	}
	if !s.Full() {
		t.Error("Full() = false when an append was just refused")
	}
	readAll(t, s.Reader("log"), n, true)
	if err := s.Append(events[n : n+1]); err != nil {
		t.Errorf("append after the reader caught up: %v", err)
	}
}

// TestGroupCommit appends from many goroutines at once under Sync.Always:
// every append returns only once synced, and fewer fsyncs than appends
// cover them.
func TestGroupCommit(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	s := open(t, t.TempDir(), Options{Metrics: m})
	defer s.Close()
	events := sinktest.Events(800)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := g; i < len(events); i += 16 {
				if err := s.Append(events[i : i+1]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s.syncer.synced.Load() != s.next {
		t.Errorf("synced %d of %d records", s.syncer.synced.Load(), s.next)
	}
	n, _ := testutil.GatherAndCount(reg, "gotrack_spool_fsync_seconds")
	var fsyncs uint64
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "gotrack_spool_fsync_seconds" {
			fsyncs = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if n != 1 || fsyncs == 0 || fsyncs >= 800 {
		t.Errorf("%d fsyncs for 800 concurrent appends; group commit should share them", fsyncs)
	}
	t.Logf("800 appends from 16 goroutines, %d fsyncs", fsyncs)
	problems, _ := testutil.GatherAndLint(reg)
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestIntervalSync(t *testing.T) {
	s := open(t, t.TempDir(), Options{Sync: Sync{Interval: 5 * time.Millisecond}})
	s.Append(sinktest.Events(3))
	testkit.Eventually(t, "the interval syncer to sync", func() bool {
		s.mu.Lock()
		next := s.next
		s.mu.Unlock()
		return s.syncer.synced.Load() == next
	})
	s.Close()
}

func TestParseSync(t *testing.T) {
	for in, want := range map[string]Sync{"always": {Always: true}, "interval:100ms": {Interval: 100 * time.Millisecond}} {
		if got, err := ParseSync(in); err != nil || got != want {
			t.Errorf("ParseSync(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"sometimes", "interval:", "interval:-1s", "interval:2h"} {
		if _, err := ParseSync(bad); err == nil {
			t.Errorf("ParseSync(%q) accepted", bad)
		}
	}
}

// TestFullBeforeOrdinaryBatchesFail is issue 17's item 5: Full (which
// readiness reports) turns true while a 100-event batch still fits, so
// /readyz says not ready before requests of ordinary size get 503.
func TestFullBeforeOrdinaryBatchesFail(t *testing.T) {
	for _, maxBytes := range []int64{4 << 20, 64 << 20} {
		s := open(t, t.TempDir(), Options{MaxBytes: maxBytes, Sync: Sync{Interval: time.Hour}})
		batch := sinktest.Events(100)
		fullAt := -1
		for i := 0; ; i++ {
			if s.Full() && fullAt < 0 {
				fullAt = i
			}
			err := s.Append(batch)
			if errors.Is(err, ErrFull) {
				if fullAt < 0 || i-fullAt < 1 {
					t.Errorf("MaxBytes %d: batch %d refused; Full() turned true at batch %d, want at least one batch earlier", maxBytes, i, fullAt)
				}
				t.Logf("MaxBytes %d (margin %d): Full() at batch %d, first refusal at batch %d", maxBytes, s.Margin(), fullAt, i)
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
}
