package ingest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/testkit"
)

// TestShutdownDrainsAndStopsSweeper: Shutdown over LimitListener closes an
// idle keep-alive connection and waits for a request in flight whose
// client stalls its body, until ReadTimeout (far enough to be held by the
// sweeper, not set on the socket), enforced by the sweeper after the
// listener is closed, cuts it off; then the sweeper's goroutine stops,
// holding no connection.
func TestShutdownDrainsAndStopsSweeper(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 1)
	srv := &http.Server{ReadTimeout: 2 * nearDeadline, IdleTimeout: time.Hour,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/body" {
				entered <- struct{}{}
				if _, err := io.Copy(io.Discard, r.Body); err != nil {
					http.Error(w, "body", http.StatusBadRequest)
					return
				}
			}
			io.WriteString(w, "ok")
		})}
	s := newSweeper(10*time.Millisecond, nearDeadline)
	ln := limitListenerSweeping(inner, 4, srv, s, mustConnMetrics(t, prometheus.NewRegistry(), 4, s))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(failWithin)) // a bound on a failure
		t.Cleanup(func() { c.Close() })
		return c
	}

	idle := dial()
	fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	stalled := dial()
	fmt.Fprintf(stalled, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this")
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), failWithin)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a stalled body in flight: %v (ReadTimeout not enforced after the listener closed?)", err)
	}
	testkit.Eventually(t, "the sweeper to stop, holding no connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.running && len(s.conns) == 0
	})
}
