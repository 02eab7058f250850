package ingest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/testkit"
)

// failWithin bounds a test's wait for something that must happen; it is
// not a timing assertion.
const failWithin = 20 * time.Second

// tcpPair returns a server connection wrapped by s and its client.
func tcpPair(t *testing.T, s *sweeper) (*coarseConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := s.wrap(server)
	t.Cleanup(func() { c.Close(); client.Close() })
	return c, client
}

func testSweeper(t *testing.T, tick time.Duration) *sweeper {
	s := newSweeper(tick, 0) // every deadline not yet passed is the sweeper's
	t.Cleanup(func() { close(s.stop) })
	return s
}

// result runs f in a goroutine and returns its error when it is done.
func result(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

func wantTimeout(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: %v, want a deadline exceeded", what, err)
		}
	case <-time.After(failWithin):
		t.Fatalf("%s: its deadline never fired", what)
	}
}

// TestSweeperReadDeadline: a read whose deadline passes fails, pending or
// not, as with the runtime's timer; a deadline moved away before it
// passes, or cleared, does not fire; a connection cut off reads again once
// given a new deadline.
func TestSweeperReadDeadline(t *testing.T) {
	s := testSweeper(t, 5*time.Millisecond)
	c, client := tcpPair(t, s)
	buf := make([]byte, 1)

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	wantTimeout(t, "pending read", result(func() error { _, err := c.Read(buf); return err }))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after the deadline: %v", err)
	}

	// Cleared, then moved away before it passes: neither fires.
	c.SetReadDeadline(time.Time{})
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	c.SetReadDeadline(time.Now().Add(time.Hour))
	done := result(func() error { _, err := c.Read(buf); return err })
	select {
	case err := <-done:
		t.Fatalf("read with its deadline an hour away: %v", err)
	case <-time.After(200 * time.Millisecond): // forty ticks: a bound on waiting for what must not happen
	}
	client.Write([]byte("x"))
	if err := <-done; err != nil {
		t.Errorf("read once the client wrote: %v", err)
	}
}

// TestSweeperPastDeadline: a deadline already passed, as net/http sets to
// abort a read at once, applies at once, without waiting for a tick.
func TestSweeperPastDeadline(t *testing.T) {
	s := newSweeper(time.Hour, nearDeadline) // never ticks during the test
	t.Cleanup(func() { close(s.stop) })
	c, _ := tcpPair(t, s)
	buf := make([]byte, 1)
	done := result(func() error { _, err := c.Read(buf); return err })
	c.SetReadDeadline(time.Unix(1, 0))
	wantTimeout(t, "read aborted with a past deadline", done)
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Now())
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write with a deadline of now: %v", err)
	}
}

// TestSweeperWriteDeadline: a write to a client that stopped reading fails
// once its deadline passes.
func TestSweeperWriteDeadline(t *testing.T) {
	s := testSweeper(t, 5*time.Millisecond)
	c, _ := tcpPair(t, s)
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	chunk := make([]byte, 1<<20)
	wantTimeout(t, "write to a stalled client", result(func() error {
		for {
			if _, err := c.Write(chunk); err != nil { // fills the socket buffers, then blocks
				return err
			}
		}
	}))
}

// TestSweeperOutlivesItsListener: once its listener is closed, as
// Shutdown does first, the connections still open keep their deadlines,
// even one accepted as the sweeper was stopping.
func TestSweeperOutlivesItsListener(t *testing.T) {
	s := newSweeper(5*time.Millisecond, 0)
	close(s.stop)
	testkit.Eventually(t, "the sweeper to stop, holding nothing", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.running
	})
	c, _ := tcpPair(t, s) // it starts again
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	wantTimeout(t, "read after the sweeper was stopped", result(func() error { _, err := c.Read(make([]byte, 1)); return err }))
	c2, _ := tcpPair(t, s)
	c.Close()
	c2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	wantTimeout(t, "read of a second connection", result(func() error { _, err := c2.Read(make([]byte, 1)); return err }))
}

// TestSweeperForgetsClosed: a closed connection leaves the sweeper.
func TestSweeperForgetsClosed(t *testing.T) {
	s := testSweeper(t, time.Hour)
	c, _ := tcpPair(t, s)
	c.Close()
	c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != 0 {
		t.Errorf("%d connections held after Close", len(s.conns))
	}
}

// TestListenerTimeouts: through LimitListener, an http.Server's timeouts
// still cut off a client that stalls in its headers, one that stays idle
// between requests, and one that stops reading the answer.
func TestListenerTimeouts(t *testing.T) {
	for _, limit := range []int{0, 4} {
		t.Run(fmt.Sprintf("MAX_CONNECTIONS=%d", limit), func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			big := strings.Repeat("x", 64<<20)
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/big" {
						io.WriteString(w, big) // more than the socket buffers hold
						return
					}
					io.WriteString(w, "ok")
				}),
				ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
				WriteTimeout: 200 * time.Millisecond, IdleTimeout: 100 * time.Millisecond,
			}
			s := newSweeper(10*time.Millisecond, 0)
			ln := limitListenerSweeping(inner, limit, srv, s, mustConnMetrics(t, prometheus.NewRegistry(), limit, s))
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			dial := func() net.Conn {
				c, err := net.Dial("tcp", inner.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				c.SetDeadline(time.Now().Add(failWithin))
				return c
			}
			closed := func(what string, br *bufio.Reader) {
				t.Helper()
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("%s: the connection was not closed (%v)", what, err)
				}
			}

			stalled := dial()
			io.WriteString(stalled, "GET / HTTP/1.1\r\nHost: x\r\n") // and never the blank line
			closed("stalled in the headers", bufio.NewReader(stalled))

			idle := dial()
			br := bufio.NewReader(idle)
			io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			closed("idle after a request", br)

			slow := dial()
			io.WriteString(slow, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
			time.Sleep(300 * time.Millisecond) // not reading, past WriteTimeout
			n, err := io.Copy(io.Discard, slow)
			if err != nil || n >= int64(len(big)) {
				t.Errorf("a client that stopped reading got %d bytes of %d (%v): the answer was not cut off", n, len(big), err)
			}
		})
	}
}

// BenchmarkSetReadDeadline is what net/http does three to five times per
// request: on the connection itself, and through the sweeper.
func BenchmarkSetReadDeadline(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	s := newSweeper(sweepTick, nearDeadline)
	defer close(s.stop)
	for name, c := range map[string]net.Conn{"conn": server, "sweeper": s.wrap(server)} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				c.SetReadDeadline(time.Time{})
			}
		})
	}
}
