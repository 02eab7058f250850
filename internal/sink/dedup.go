package sink

import (
	"context"

	"github.com/gotrack/gotrack/internal/event"
)

// A Deduplicator is an idempotent sink that can tell how many events of a
// batch it held already, so that they are counted as duplicates
// (gotrack_events_duplicate_total) rather than as newly ingested. The
// pipeline calls WriteBatchDedup in place of WriteBatch when a sink has it.
type Deduplicator interface {
	// WriteBatchDedup is WriteBatch that, on success, also returns how many
	// events of batch were not written because the sink held them already
	// or the batch repeated them. On error, duplicates is 0.
	WriteBatchDedup(ctx context.Context, batch []*event.Event) (duplicates int, err error)
}

// Write writes batch to s through WriteBatchDedup when s is a Deduplicator,
// and through WriteBatch, with no duplicates, otherwise.
func Write(ctx context.Context, s Sink, batch []*event.Event) (duplicates int, err error) {
	if d, ok := s.(Deduplicator); ok {
		return d.WriteBatchDedup(ctx, batch)
	}
	return 0, s.WriteBatch(ctx, batch)
}
