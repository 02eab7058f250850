package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// TestRunAfterEachCollection: Run looks at the live heap after each
// collection, not only on its timer. With a timer that never fires in the
// test, a collection that finds the live heap grown past a third of the
// budget brings GOGC down from Max to Min. Without the look after each
// collection, GOGC stays at Max and this fails.
func TestRunAfterEachCollection(t *testing.T) {
	const MiB = 1 << 20
	prev := debug.SetGCPercent(Max)
	defer debug.SetGCPercent(prev)
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { Run(ctx, 64*MiB, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()
	waitGOGC(t, Max) // Run's look at start: the live heap is small

	keep := make([][]byte, 40)
	for i := range keep {
		keep[i] = make([]byte, MiB)
	}
	runtime.GC()
	waitGOGC(t, Min)
	runtime.KeepAlive(keep)
}

// waitGOGC waits, for at most 10 s, until GOGC is want.
func waitGOGC(t *testing.T, want int) {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		metrics.Read(s)
		got := int(s[0].Value.Uint64())
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d, want %d", got, want)
		}
	}
}
