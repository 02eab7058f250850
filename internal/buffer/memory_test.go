package buffer

import (
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
