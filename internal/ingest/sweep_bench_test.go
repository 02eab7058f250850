package ingest

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkSweep: one tick over n connections whose deadlines are all
// ahead, as at MAX_CONNECTIONS=n busy or idle; the sweeper holds its lock,
// which Accept and Close wait for, the whole time.
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{1 << 10, 1 << 14, 1 << 17} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := &sweeper{conns: map[*coarseConn]struct{}{}, stop: make(chan struct{}), running: true}
			at := time.Now().Add(time.Hour).UnixNano()
			for range n {
				c := &coarseConn{s: s}
				c.read.at, c.write.at = at, at
				s.conns[c] = struct{}{}
			}
			now := time.Now().UnixNano()
			for b.Loop() {
				s.sweep(now)
			}
		})
	}
}
