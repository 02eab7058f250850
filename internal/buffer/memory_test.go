package buffer

import (
	"runtime"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

func events(n int) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		e := &event.Event{EventID: event.NewID(time.Now()), Type: "t", ReceivedAt: time.Now()}
		e.Seal()
		out[i] = e
	}
	return out
}

func put(t *testing.T, m *Memory, es []*event.Event) {
	t.Helper()
	if !m.TryReserve(int64(len(es))) {
		t.Fatalf("no room for %d events", len(es))
	}
	for _, e := range es {
		m.Put(e)
	}
}

// TestMemoryReadAckRewind: a batch read stays counted in Lag until it is
// acknowledged, and a rewind returns it again; its room is free at once.
func TestMemoryReadAckRewind(t *testing.T) {
	m := NewMemory(4)
	in := events(4)
	put(t, m, in)
	if m.TryReserve(1) {
		t.Fatal("a full buffer gave room")
	}
	stop := make(chan struct{})
	b, err := m.Read(3, 1<<20, time.Hour, stop)
	if err != nil || len(b) != 3 || b[0] != in[0] {
		t.Fatalf("Read = %d events, %v; want the first 3", len(b), err)
	}
	if got := m.Lag(); got != 4 {
		t.Errorf("Lag = %d with 3 held and 1 waiting, want 4", got)
	}
	if m.Waiting() != 1 || !m.TryReserve(3) {
		t.Error("reading did not free the room of the events read")
	}
	m.Release(3)
	m.Rewind()
	b, _ = m.Read(3, 1<<20, time.Millisecond, stop)
	if len(b) != 3 || b[0] != in[0] || b[2] != in[2] {
		t.Fatalf("after Rewind, Read = %d events, want the same 3 again", len(b))
	}
	if err := m.Ack(len(b)); err != nil {
		t.Fatal(err)
	}
	if got := m.Lag(); got != 1 {
		t.Errorf("Lag after Ack = %d, want 1", got)
	}
	close(stop)
	b, _ = m.Read(3, 1<<20, time.Hour, stop)
	if len(b) != 1 || b[0] != in[3] {
		t.Fatalf("stopping Read = %d events, want the last one at once", len(b))
	}
	m.Ack(1)
	if b, _ = m.Read(3, 1<<20, time.Hour, stop); len(b) != 0 {
		t.Fatalf("stopped and drained, Read = %d events, want none", len(b))
	}
}

// TestMemoryReadBounds: a batch ends at the count, at the bytes, or when
// wait has passed since its first event.
func TestMemoryReadBounds(t *testing.T) {
	m := NewMemory(10)
	in := events(10)
	put(t, m, in)
	stop := make(chan struct{})
	if b, _ := m.Read(10, 2*in[0].Size(), time.Hour, stop); len(b) != 2 {
		t.Errorf("byte-bounded Read = %d events, want 2", len(b))
	}
	m.Ack(2)
	if b, _ := m.Read(100, 1<<20, time.Millisecond, stop); len(b) != 8 {
		t.Errorf("time-bounded Read = %d events, want the 8 left", len(b))
	}
}

// TestMemoryDrain: Drain takes what waits, frees its room, and leaves Lag
// at zero although a batch is held (Close took that over).
func TestMemoryDrain(t *testing.T) {
	m := NewMemory(5)
	in := events(5)
	put(t, m, in)
	stop := make(chan struct{})
	if b, _ := m.Read(2, 1<<20, time.Millisecond, stop); len(b) != 2 {
		t.Fatalf("Read = %d events, want 2", len(b))
	}
	got := m.Drain()
	if len(got) != 3 || got[0] != in[2] || got[2] != in[4] {
		t.Fatalf("Drain = %d events, want the 3 not read", len(got))
	}
	if m.Lag() != 0 || m.Waiting() != 0 {
		t.Errorf("after Drain: Lag %d, Waiting %d, want 0 and 0", m.Lag(), m.Waiting())
	}
}

// TestMemoryReadWakesWhenFull: a reader gathering a batch sleeps while it
// is not full, and wakes as soon as the events put fill it, by count or by
// bytes, long before its wait has passed.
func TestMemoryReadWakesWhenFull(t *testing.T) {
	in := events(8)
	for _, tc := range []struct {
		name                string
		maxEvents, maxBytes int
		want                int
	}{
		{"by count", 5, 1 << 20, 5},
		{"by bytes", 100, 3 * in[0].Size(), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(10)
			stop := make(chan struct{})
			got := make(chan []*event.Event)
			go func() {
				b, _ := m.Read(tc.maxEvents, tc.maxBytes, time.Hour, stop)
				got <- b
			}()
			for i, e := range in[:tc.want] {
				if i > 0 { // let the reader go to sleep on a batch not full
					waitFor(t, func() bool { return m.wantEvents.Load() > 0 })
				}
				put(t, m, []*event.Event{e})
			}
			select {
			case b := <-got:
				if len(b) != tc.want || b[tc.want-1] != in[tc.want-1] {
					t.Fatalf("Read = %d events, want %d", len(b), tc.want)
				}
			case <-time.After(10 * time.Second): // the batch's own wait is an hour
				close(stop)
				t.Fatalf("Read did not return once its batch was full")
			}
		})
	}
}

// waitFor polls cond until it holds, for at most 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}

// TestMemoryConcurrent: events put by many producers while the reader
// sleeps and wakes, by a full batch or by its wait ending, are each read
// once, in batches within the bounds.
func TestMemoryConcurrent(t *testing.T) {
	const producers, each = 8, 2000
	m := NewMemory(64)
	in := events(producers * each)
	for i := range producers {
		go func() {
			for j, e := range in[i*each : (i+1)*each] {
				for !m.Reserve(1, time.Now().Add(10*time.Second)) {
				}
				m.Put(e)
				if j%100 == 0 { // pauses: the reader's wait ends with a batch not full, too
					time.Sleep(100 * time.Microsecond)
				}
			}
		}()
	}
	stop := make(chan struct{})
	watchdog := time.AfterFunc(time.Minute, func() { close(stop) }) // a lost event would leave Read waiting
	defer watchdog.Stop()
	seen := make(map[*event.Event]bool, len(in))
	for len(seen) < len(in) {
		b, err := m.Read(50, 40*in[0].Size(), 50*time.Microsecond, stop)
		if err != nil || len(b) == 0 || len(b) > 50 {
			t.Fatalf("Read = %d events, %v, with %d of %d read", len(b), err, len(seen), len(in))
		}
		for _, e := range b {
			if seen[e] {
				t.Fatal("an event was read twice")
			}
			seen[e] = true
		}
		m.Ack(len(b))
	}
	if m.Lag() != 0 {
		t.Errorf("Lag = %d after reading everything", m.Lag())
	}
}

// BenchmarkPutGosched puts events one at a time, yielding after each as a
// request handler does when it goes back to its connection, while a reader
// gathers batches of 500: the reader's cost per event put.
func BenchmarkPutGosched(b *testing.B) {
	m := NewMemory(10000)
	e := events(1)[0]
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			batch, _ := m.Read(500, 1<<20, 200*time.Millisecond, stop)
			if len(batch) == 0 {
				return
			}
			m.Ack(len(batch))
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		for !m.TryReserve(1) {
			runtime.Gosched()
		}
		m.Put(e)
		runtime.Gosched()
	}
	close(stop)
	<-done
}
