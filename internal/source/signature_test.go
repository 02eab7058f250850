package source

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSignature(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	for h, ok := range map[string]bool{
		"t=1,v1=" + hex64:                             true,
		"t=1, v1=" + hex64 + ",v0=whatever":           true,
		"v1=" + hex64 + ",t=1,v1=" + hex64:            true,
		"t=1":                                         false,
		"v1=" + hex64:                                 false,
		"t=x,v1=" + hex64:                             false,
		"t=-5,v1=" + hex64:                            false,
		"t=1,t=2,v1=" + hex64:                         false,
		"t=1,v1=" + hex64[:62]:                        false,
		"t=1,v1=" + strings.Repeat("zz", 32):          false,
		"t=1,v1":                                      false,
		"t=1" + strings.Repeat(",v1="+hex64, 5):       false,
		"t=1,v1=" + hex64 + strings.Repeat(" ", 1024): false,
	} {
		if _, _, got := parseSignature(h); got != ok {
			t.Errorf("parseSignature(%.40q...) ok=%v, want %v", h, got, ok)
		}
	}
}

func sig(i int) [sha256.Size]byte {
	var s [sha256.Size]byte
	binary.BigEndian.PutUint64(s[:], uint64(i))
	return s
}

// TestReplayCache checks that a signature is remembered for at least one
// period, forgotten after two, and that the cache never holds more than
// its bound: a full generation refuses, it does not forget.
func TestReplayCache(t *testing.T) {
	const period = 10 * time.Minute
	c := newReplayCache(period, 8)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 4 {
		if seen, err := c.add(sig(i), t0); seen || err != nil {
			t.Fatalf("add %d: %v %v", i, seen, err)
		}
	}
	if _, err := c.add(sig(99), t0); !errors.Is(err, ErrReplayCacheFull) {
		t.Fatalf("a full generation took more: %v", err)
	}
	// Room comes back at the next turn-over, not a second later: a client
	// told Retry-After: 1 would hammer a full cache for the whole period.
	var full *ReplayCacheFullError
	if _, err := c.add(sig(99), t0.Add(3*time.Minute)); !errors.As(err, &full) || full.RetryAfter() != int((period-3*time.Minute)/time.Second) {
		t.Fatalf("a full cache 3 minutes into its period: %#v, want Retry-After %v", err, period-3*time.Minute)
	}
	if seen, _ := c.add(sig(0), t0.Add(period-time.Second)); !seen {
		t.Fatal("forgot a signature within the period")
	}
	// One rotation later: the first four are in the previous generation.
	if seen, _ := c.add(sig(1), t0.Add(period+period-time.Second)); !seen {
		t.Fatal("forgot a signature within two periods of its first use")
	}
	if seen, err := c.add(sig(99), t0.Add(period)); seen || err != nil {
		t.Fatalf("no room after a rotation: %v %v", seen, err)
	}
	if n := c.len(); n > 8 {
		t.Fatalf("cache holds %d, more than its bound 8", n)
	}
	if seen, _ := c.add(sig(2), t0.Add(2*period)); seen {
		t.Fatal("remembered a signature past two periods")
	}
	if seen, _ := c.add(sig(3), t0.Add(24*time.Hour)); seen {
		t.Fatal("remembered a signature after a long idle time")
	}
	if n := c.len(); n != 1 {
		t.Fatalf("after a long idle time the cache holds %d, want 1", n)
	}
}

// TestReplayCacheBound floods the cache with distinct signatures at the
// real bound, and checks it stays within it.
func TestReplayCacheBound(t *testing.T) {
	c := newReplayCache(10*time.Minute, ReplayCacheSize)
	t0 := time.Unix(1_800_000_000, 0)
	full := 0
	for i := range ReplayCacheSize + 1000 {
		if _, err := c.add(sig(i), t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			full++
		}
	}
	if n := c.len(); n > ReplayCacheSize {
		t.Fatalf("cache holds %d, more than ReplayCacheSize %d", n, ReplayCacheSize)
	}
	if full == 0 {
		t.Fatal("the flood never filled a generation")
	}
}
