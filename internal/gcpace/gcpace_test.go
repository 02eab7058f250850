package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const MiB = 1 << 20
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, Max},
		{1 * MiB, Max},
		{16 * MiB, Max}, // a fifth of the budget: 400 ends at the budget
		{20 * MiB, 300}, // 20 MiB at 300 grows to 80
		{32 * MiB, 150 + 50},
		{40 * MiB, Min}, // over a third: as GOGC=200, past the budget
		{1 << 40, Min},
	} {
		if got := Percent(tc.live, DefaultBudget); got != tc.want {
			t.Errorf("Percent(%d MiB) = %d, want %d", tc.live/MiB, got, tc.want)
		}
	}
	// Within [Min, Max], the heap ends at the budget, never past it.
	for live := uint64(16 * MiB); live <= 80*MiB/3; live += MiB / 4 {
		p := Percent(live, DefaultBudget)
		if end := live * uint64(100+p) / 100; end > DefaultBudget || end < DefaultBudget-live/50 {
			t.Errorf("live %d: GOGC %d grows the heap to %d, want about %d", live, p, end, DefaultBudget)
		}
	}
}

// TestRun: Run sets GOGC from the live heap at once, and returns when its
// context is done.
func TestRun(t *testing.T) {
	runtime.GC() // for a live heap to measure
	prev := debug.SetGCPercent(50)
	defer debug.SetGCPercent(prev)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Run(ctx, 1<<50, time.Hour) // a budget no live heap reaches a fifth of
	if got := debug.SetGCPercent(prev); got != Max {
		t.Errorf("GOGC after Run = %d, want %d", got, Max)
	}
	Run(ctx, 1, time.Hour) // a budget every live heap is past
	if got := debug.SetGCPercent(prev); got != Min {
		t.Errorf("GOGC after Run = %d, want %d", got, Min)
	}
}
