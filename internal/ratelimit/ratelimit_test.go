package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// TestExactThreshold takes a burst at one instant: exactly Burst requests
// pass, the next waits exactly for one token, and the refill is exact.
func TestExactThreshold(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	k := NewKeyed[string](Bucket{Rate: 10, Burst: 20}, 10, c.now)
	for i := range 20 {
		if ok, _ := k.Allow("a"); !ok {
			t.Fatalf("request %d of a burst of 20 refused", i+1)
		}
	}
	ok, wait := k.Allow("a")
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("21st request: ok=%v wait=%v, want refused, wait 100ms", ok, wait)
	}
	if ok, _ := k.Allow("b"); !ok {
		t.Fatal("another key shares the bucket")
	}
	c.t = c.t.Add(99 * time.Millisecond)
	if ok, _ := k.Allow("a"); ok {
		t.Fatal("a token before its time")
	}
	c.t = c.t.Add(time.Millisecond)
	if ok, _ := k.Allow("a"); !ok {
		t.Fatal("no token after 100ms at 10/s")
	}
	c.t = c.t.Add(time.Hour)
	n := 0
	for {
		if ok, _ := k.Allow("a"); !ok {
			break
		}
		n++
	}
	if n != 20 {
		t.Fatalf("after an hour %d requests passed, want the burst, 20", n)
	}
}

func TestRetryAfter(t *testing.T) {
	for wait, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 90 * time.Second: 90} {
		if got := (&Exceeded{Wait: wait}).RetryAfter(); got != want {
			t.Errorf("RetryAfter(%v) = %d, want %d", wait, got, want)
		}
	}
}

// TestLRUBound floods the per-address buckets with 100,000 distinct
// addresses and checks that they never hold more than their bound, and
// that an address used all along keeps its (empty) bucket.
func TestLRUBound(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	k := NewKeyed[netip.Addr](Bucket{Rate: 1, Burst: 1}, DefaultIPBuckets, c.now)
	victim := netip.MustParseAddr("192.0.2.1")
	k.Allow(victim)
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range 100_000 {
		a := base
		a[1], a[2], a[3] = byte(i>>16), byte(i>>8), byte(i)
		k.Allow(netip.AddrFrom4(a))
		if i%1000 == 0 {
			if ok, _ := k.Allow(victim); ok {
				t.Fatalf("after %d addresses the victim's bucket was refilled: it was evicted though used", i)
			}
		}
		if n := k.Len(); n > DefaultIPBuckets {
			t.Fatalf("%d buckets, more than the bound %d", n, DefaultIPBuckets)
		}
	}
	if n := k.Len(); n != DefaultIPBuckets {
		t.Fatalf("%d buckets after the flood, want the bound %d", n, DefaultIPBuckets)
	}
}

// TestSourcesReload keeps a source's bucket over a reload that leaves its
// parameters alone, and refills it when they change.
func TestSourcesReload(t *testing.T) {
	c := &clock{time.Unix(1_800_000_000, 0)}
	s := NewSources(c.now)
	s.Set(map[string]Bucket{"a": {Rate: 1, Burst: 1}})
	if ok, _ := s.Allow("a"); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := s.Allow("none"); !ok {
		t.Fatal("a source without a rate was limited")
	}
	s.Set(map[string]Bucket{"a": {Rate: 1, Burst: 1}})
	if ok, _ := s.Allow("a"); ok {
		t.Fatal("an unchanged reload refilled the bucket")
	}
	s.Set(map[string]Bucket{"a": {Rate: 2, Burst: 2}})
	if ok, _ := s.Allow("a"); !ok {
		t.Fatal("new parameters did not start from a full bucket")
	}
}
