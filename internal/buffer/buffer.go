// Package buffer defines Buffer, where the pipeline keeps one sink's events
// between their acceptance and their delivery, and Memory, its bounded
// in-memory implementation. The durable, on-disk implementation is the
// spool's Reader (package spool): the pipeline's worker loop is written once
// against Buffer and runs the same over either, as Vector's sinks read from
// a memory or a disk buffer.
package buffer

import (
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// Buffer is one sink's supply of events, read by that sink's worker alone.
//
// The worker reads a batch, delivers it (or dead-letters it), and then
// acknowledges it; or it rewinds, and the next Read returns the same events
// again. A Buffer is used by one goroutine, except Lag and Capacity, which
// are safe to call at any time (metrics read them at scrape time).
type Buffer interface {
	// Read returns the next events, at most maxEvents and about maxBytes
	// of JSON: it waits until at least one is there, then gathers what
	// arrives within wait of the first. Once stop is closed it no longer
	// waits: it returns what is left, and an empty batch when nothing is.
	// The batch is valid until the next Read, Ack or Rewind.
	Read(maxEvents, maxBytes int, wait time.Duration, stop <-chan struct{}) ([]*event.Event, error)

	// Ack says that the n events read since the last Ack or Rewind are
	// done with: delivered, or written to the dead-letter file.
	Ack(n int) error

	// Rewind makes the next Read start again at the first event not
	// acknowledged.
	Rewind()

	// Lag returns the events the buffer holds that are not acknowledged,
	// those read and held by the worker (a batch being retried) included.
	Lag() uint64

	// Capacity returns how many events the buffer can hold, or 0 when it
	// is bounded by something other than a count (the spool, by bytes).
	Capacity() int

	// Durable reports whether events not acknowledged survive a restart.
	// The worker rewinds rather than dead-letters what a durable buffer
	// still holds when the shutdown deadline passes.
	Durable() bool
}
