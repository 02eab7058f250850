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
// ends at the budget. Once the pacer has looked, the heap grows no further
// than GOGC=Min would let it, or than the budget; until it looks, up to an
// interval after a collection that found the live heap grown, the GOGC set
// for the smaller heap applies (at 400, a live heap of 40 MiB may grow to
// 200 MiB rather than 120).
package gcpace

import (
	"context"
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

// Run sets GOGC to Percent of the live heap every interval until ctx is
// done. It sets it at once, before the first interval.
func Run(ctx context.Context, budget uint64, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	last := -1
	t := time.NewTicker(interval)
	defer t.Stop()
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
		}
	}
}
