// Package ratelimit holds token buckets: one per source, from SOURCES_FILE,
// and one per client address (RATE_LIMIT_PER_IP), those in an LRU of
// bounded size so that a flood of distinct addresses cannot grow memory.
package ratelimit

import (
	"container/list"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Bucket is a token bucket's parameters: Rate tokens a second refill it up
// to Burst. A request takes one token.
type Bucket struct {
	Rate  float64
	Burst int
}

// state is a bucket's tokens at a time.
type state struct {
	tokens float64
	at     time.Time
}

// take refills s to now and takes one token if there is one. When there
// is none it returns how long until there will be.
func (s *state) take(b Bucket, now time.Time) (ok bool, wait time.Duration) {
	if d := now.Sub(s.at); d > 0 {
		s.tokens = math.Min(float64(b.Burst), s.tokens+d.Seconds()*b.Rate)
		s.at = now
	}
	if s.tokens >= 1 {
		s.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - s.tokens) / b.Rate * float64(time.Second)))
}

// Keyed is a set of token buckets of the same parameters, one per key, in
// an LRU of at most Size keys: when a new key comes and the LRU is full,
// the key used least recently is forgotten (its next request starts from a
// full bucket). It is safe for concurrent use.
type Keyed[K comparable] struct {
	b    Bucket
	size int
	now  func() time.Time

	mu    sync.Mutex
	byKey map[K]*list.Element
	lru   list.List // of *entry[K], most recently used first
}

type entry[K comparable] struct {
	key K
	s   state
}

// NewKeyed returns buckets of b for at most size keys; now is the clock
// (nil means time.Now).
func NewKeyed[K comparable](b Bucket, size int, now func() time.Time) *Keyed[K] {
	if now == nil {
		now = time.Now
	}
	return &Keyed[K]{b: b, size: size, now: now, byKey: make(map[K]*list.Element, min(size, 1024))}
}

// Allow takes a token of key's bucket. When there is none it reports false
// and how long until the next one.
func (k *Keyed[K]) Allow(key K) (bool, time.Duration) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	el, ok := k.byKey[key]
	if ok {
		k.lru.MoveToFront(el)
	} else {
		var e *entry[K]
		if k.lru.Len() >= k.size {
			el = k.lru.Back()
			e = el.Value.(*entry[K])
			delete(k.byKey, e.key)
			k.lru.MoveToFront(el)
		} else {
			e = new(entry[K])
			el = k.lru.PushFront(e)
		}
		*e = entry[K]{key: key, s: state{tokens: float64(k.b.Burst), at: now}}
		k.byKey[key] = el
	}
	return el.Value.(*entry[K]).s.take(k.b, now)
}

// Len is the number of keys held.
func (k *Keyed[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len()
}

// DefaultIPBuckets bounds the per-address buckets of RATE_LIMIT_PER_IP:
// 65,536 addresses, about 190 bytes each as measured (some 12 MiB at most).
const DefaultIPBuckets = 1 << 16

// IPs is RATE_LIMIT_PER_IP's buckets, keyed by client address.
type IPs = Keyed[netip.Addr]

// Sources holds one bucket per source id, with each source's own
// parameters. A source's bucket is kept across reloads of SOURCES_FILE
// while its parameters stay the same, and starts full when they change.
// Its size is bounded by the number of sources in the file.
type Sources struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*sourceBucket
}

type sourceBucket struct {
	b Bucket
	s state
}

// NewSources returns per-source buckets; now is the clock (nil means
// time.Now).
func NewSources(now func() time.Time) *Sources {
	if now == nil {
		now = time.Now
	}
	return &Sources{now: now, m: map[string]*sourceBucket{}}
}

// Set makes buckets the current set, keyed by source id; ids missing from
// it are forgotten, and have no limit.
func (s *Sources) Set(buckets map[string]Bucket) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]*sourceBucket, len(buckets))
	for id, b := range buckets {
		if old, ok := s.m[id]; ok && old.b == b {
			next[id] = old
			continue
		}
		next[id] = &sourceBucket{b: b, s: state{tokens: float64(b.Burst), at: now}}
	}
	s.m = next
}

// Allow takes a token of source id's bucket; a source without one is not
// limited. When there is none it reports false and how long until the
// next one.
func (s *Sources) Allow(id string) (bool, time.Duration) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.m[id]
	if sb == nil {
		return true, 0
	}
	return sb.s.take(sb.b, now)
}

// Exceeded is a request over a limit: /collect answers 429 with
// Retry-After, the pixel counts a drop.
type Exceeded struct {
	Limit string        // LimitSource or LimitIP
	Wait  time.Duration // until the bucket has a token again
}

// The limits, the limit label of gotrack_rate_limited_total.
const (
	LimitSource = "source" // the source's rate in SOURCES_FILE
	LimitIP     = "ip"     // RATE_LIMIT_PER_IP
)

func (e *Exceeded) Error() string {
	if e.Limit == LimitIP {
		return "too many requests from this address (RATE_LIMIT_PER_IP); retry later"
	}
	return "too many requests for this source (its rate in SOURCES_FILE); retry later"
}

// RetryAfter is Wait in whole seconds, rounded up, at least 1.
func (e *Exceeded) RetryAfter() int {
	return max(1, int(math.Ceil(e.Wait.Seconds())))
}
