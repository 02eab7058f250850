// Package gcpace sets the garbage collector's GOGC from the live heap, so
// that a small heap is collected less often than GOGC=200 would, without
// letting a large one grow further than GOGC=200 lets it.
//
// GoTrack allocates per request and keeps little: under load its live heap
// is a few tens of MiB (the events queued and being written), and GOGC=200
// collects it several times a second. Each collection marks the live heap
// and sweeps the whole heap again; the load benchmark's pixel spent about a
// tenth of its CPU there. With GOGC=400 it spends half as much, but a heap
// of 30 MiB live would then grow to 150 MiB. So the pacer picks, after each
// look at the live heap, the GOGC that lets the heap grow to the budget,
// within [Min, Max]: Max while the live heap is under a fifth of the
// budget, Min (as before) once it is over a third, in between a heap that
// ends at the budget. It looks after each collection, when the runtime has
// just measured the live heap and set the next collection's goal, which
// SetGCPercent then moves at once; a timer makes it look again while no
// collection runs. So the heap grows no further than GOGC=Min would let it,
// or than the budget, but for what is allocated between the end of a
// collection that found the live heap grown and the pacer's look, the
// time a goroutine takes to be scheduled. (Looking on a timer alone, every
// 0.1 s, the /collect load benchmark's peak RSS rose from 94 MiB with
// GOGC=200 to 125: at its rate of allocation, 0.1 s at GOGC=400 was tens
// of MiB.)
package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults: GOGC between 200 and 400, for a heap of at most 80 MiB when
// that is more than GOGC=200 gives.
const (
	DefaultBudget = 80 << 20
	Min           = 200
	Max           = 400
)

// Percent returns the GOGC that lets a heap of live bytes grow to budget,
// within [Min, Max].
func Percent(live, budget uint64) int {
	if live == 0 {
		return Max
	}
	p := (int64(budget)*100/int64(live) - 100) // GOGC p lets the heap grow to live*(1+p/100)
	return int(min(max(p, Min), Max))
}

// Run sets GOGC to Percent of the live heap after each garbage collection,
// and every interval, until ctx is done. It sets it at once, before the
// first interval.
func Run(ctx context.Context, budget uint64, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	last := -1
	t := time.NewTicker(interval)
	defer t.Stop()
	collected := make(chan struct{}, 1)
	afterEachGC(ctx, collected)
	for {
		metrics.Read(sample)
		live := uint64(0)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = sample[0].Value.Uint64()
		}
		if p := Percent(live, budget); p != last {
			debug.SetGCPercent(p)
			last = p
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-collected:
		}
	}
}

// sentinel is an object whose finalizer runs once a collection has found
// it unreachable. Its pointer keeps it out of the tiny allocator, whose
// objects' finalizers may run late.
type sentinel struct {
	_ *byte
	_ [16]byte
}

// afterEachGC sends on c, without blocking, after each garbage collection
// until ctx is done: a sentinel's finalizer signals and arms the next one.
func afterEachGC(ctx context.Context, c chan<- struct{}) {
	var arm func()
	arm = func() {
		runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
			if ctx.Err() != nil {
				return
			}
			select {
			case c <- struct{}{}:
			default:
			}
			arm()
		})
	}
	arm()
}
