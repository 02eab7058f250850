package telemetry

import (
	"sync"
	"time"
)

// sometimes lets an event through at most once per interval and counts the
// ones held back in between, so that a flood of the same failure makes one
// log line per interval rather than one per attempt.
type sometimes struct {
	interval time.Duration
	now      func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether the event may be logged now, and how many were held
// back since the last one allowed.
func (s *sometimes) allow() (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if !s.last.IsZero() && now.Sub(s.last) < s.interval {
		s.suppressed++
		return false, 0
	}
	s.last = now
	suppressed, s.suppressed = s.suppressed, 0
	return true, suppressed
}
