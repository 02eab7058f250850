package main

import (
	"math/bits"
	"time"
)

// hist is a latency histogram with about 3% resolution from 1µs to an
// hour: 32 linear sub-buckets in every power-of-two range of microseconds.
type hist struct {
	counts [64 * 32]int64
	total  int64
}

func bucketOf(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us < 32 {
		return int(us)
	}
	exp := bits.Len64(us) - 6 // us >> exp is in [32, 64)
	return exp*32 + int(us>>exp)
}

func bucketValue(i int) time.Duration {
	if i < 32 {
		return time.Duration(i) * time.Microsecond
	}
	exp, sub := i/32-1, i%32+32 // the inverse of bucketOf
	return time.Duration(uint64(sub)<<exp) * time.Microsecond
}

func (h *hist) add(d time.Duration) {
	if b := bucketOf(d); b < len(h.counts) {
		h.counts[b]++
		h.total++
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
}

// quantile returns the smallest bucket value at or above the q quantile.
func (h *hist) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	want := int64(q * float64(h.total))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen > want {
			return bucketValue(i)
		}
	}
	return bucketValue(len(h.counts) - 1)
}
