package ingest

import (
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"
)

// stepWall returns what time.Now would have returned at t had the wall
// clock been stepped by d (whole seconds) since the process started: t's
// monotonic reading, and its wall reading moved by d. No API builds such a
// time, and a test cannot step the machine's clock, so it moves the wall
// seconds inside time.Time (a flag bit, 33 bits of seconds, 30 of
// nanoseconds, when it has a monotonic reading), and checks that it did.
func stepWall(tb testing.TB, t time.Time, d time.Duration) time.Time {
	tb.Helper()
	type layout struct {
		wall uint64
		_    int64          // ext: the monotonic reading
		_    *time.Location // loc
	}
	stepped := t
	p := (*layout)(unsafe.Pointer(&stepped))
	if p.wall&(1<<63) == 0 || d%time.Second != 0 {
		tb.Fatalf("stepWall(%v, %v): no monotonic reading, or not whole seconds", t, d)
	}
	p.wall += uint64(int64(d/time.Second)) << 30
	if stepped.Sub(t) != 0 || stepped.Round(0).Sub(t.Round(0)) != d {
		tb.Fatalf("stepWall: time.Time's layout is not as assumed (monotonic %v, wall %v apart)", stepped.Sub(t), stepped.Round(0).Sub(t.Round(0)))
	}
	return stepped
}

// TestSweeperWallClockStepsForward: the runtime's deadlines, which the
// sweeper replaces, run on the monotonic clock, so a step of the wall
// clock (NTP stepping it, a VM resumed, date -s) fires none of them; nor
// may the sweeper's. A tick after a step of two hours forward leaves a
// deadline 30 s away alone (with wall readings it fired every deadline
// held at once, cutting every request in flight and every keep-alive
// connection).
func TestSweeperWallClockStepsForward(t *testing.T) {
	s := newSweeper(time.Hour, 0) // ticks only when the test says
	t.Cleanup(func() { close(s.stop) })
	c, client := tcpPair(t, s)
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // as net/http sets ReadTimeout

	s.sweep(s.reading(stepWall(t, time.Now(), 2*time.Hour))) // run's tick after the step

	c.mu.Lock()
	fired := c.read.set
	c.mu.Unlock()
	if fired {
		t.Fatalf("a read deadline 30 s away was fired by a tick after a wall-clock step forward")
	}
	client.Write([]byte("x"))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Errorf("read 30 s before its deadline, after a wall-clock step: %v", err)
	}
}

// TestSweeperWallClockStepsBack: after a step of the wall clock two hours
// back, a deadline passed on the monotonic clock is fired at the next
// tick, as the runtime's timer would (with wall readings it was not fired
// for two hours: a client stalled in its headers or body held its
// connection, and a MAX_CONNECTIONS slot, that long).
func TestSweeperWallClockStepsBack(t *testing.T) {
	s := newSweeper(time.Hour, 0)
	t.Cleanup(func() { close(s.stop) })
	c, _ := tcpPair(t, s)
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	time.Sleep(20 * time.Millisecond) // the deadline passes (not a timing assertion)

	s.sweep(s.reading(stepWall(t, time.Now(), -2*time.Hour)))

	done := result(func() error { _, err := c.Read(make([]byte, 1)); return err })
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read after its deadline passed, then a wall-clock step back: %v", err)
		}
	default:
		c.mu.Lock()
		fired := c.read.set
		c.mu.Unlock()
		if !fired {
			t.Fatalf("a read deadline passed before the wall clock stepped back was not fired")
		}
		wantTimeout(t, "read after its deadline passed, then a wall-clock step back", done)
	}
}
