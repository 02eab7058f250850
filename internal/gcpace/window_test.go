package gcpace

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestGrownHeapBeforeTheNextLook guards the caveat in the package comment
// and the README: the pacer looks at the live heap every interval, not at
// each collection, so after a collection that finds the live heap grown
// past a third of the budget, the GOGC set for the smaller heap (Max) still
// applies until the next look, and the heap's goal is five times the live
// heap, not three. Should the pacer come to act at each collection, this
// fails, and the caveat is to go.
func TestGrownHeapBeforeTheNextLook(t *testing.T) {
	const MiB = 1 << 20
	old := debug.SetGCPercent(Percent(8*MiB, DefaultBudget)) // as Run sets for a small live heap
	defer debug.SetGCPercent(old)
	keep := make([][]byte, 40)
	for i := range keep {
		keep[i] = make([]byte, MiB)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	runtime.KeepAlive(keep)
	if ms.HeapAlloc < 40*MiB {
		t.Fatalf("live heap %d MiB after keeping 40", ms.HeapAlloc/MiB)
	}
	// Midway between GOGC=Min's goal, three times the live heap (a little
	// more: the runtime counts stacks and globals in), and Max's, five.
	if mid := ms.HeapAlloc * (100 + (Min+Max)/2) / 100; ms.NextGC <= mid {
		t.Errorf("heap goal %d MiB for %d MiB live, nearer GOGC=%d's than %d's: the caveat on the pacer's interval is out of date",
			ms.NextGC/MiB, ms.HeapAlloc/MiB, Min, Max)
	}
}
