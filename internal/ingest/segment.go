package ingest

// segmentBudget lends the Segment-compatible API (internal/segment) the
// MAX_INFLIGHT_BYTES budget of /collect, so that both share one bound.
type segmentBudget struct{ b *budget }

func (s segmentBudget) Take(n int64) bool { return s.b.take(n) }
func (s segmentBudget) Give(n int64)      { s.b.give(n) }
