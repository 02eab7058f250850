package spool

import (
	"sync"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConcurrentAppendsStayIntact appends from many goroutines while a
// reader drains, then reopens the spool: recovery must find every record
// whole. It caught group-commit rounds that wrote a buffer appends were
// still filling.
func TestConcurrentAppendsStayIntact(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	events := sinktest.Events(4000)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := g; i < len(events); i += 32 {
				if err := s.Append(events[i : i+1]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	rwg.Go(func() {
		r := s.Reader("log")
		for {
			b, _ := r.Read(100, 1<<20, time.Millisecond, stop)
			if b == nil {
				return
			}
			r.Ack(len(b))
		}
	})
	wg.Wait()
	close(stop)
	rwg.Wait()
	s.Close()
	reg := prometheus.NewRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	s2 := open(t, dir, Options{Metrics: m})
	defer s2.Close()
	if v := testutil.ToFloat64(m.truncations); v != 0 {
		t.Fatalf("truncations %v after a clean close", v)
	}
}
