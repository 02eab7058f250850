package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// work is one sink's worker, the same over every kind of buffer: it reads
// a batch, delivers it, and acknowledges it, until Close stops it and the
// buffer is drained. What the sink has not taken when the drain ends is
// dead-lettered, unless the buffer is durable and keeps it for the next
// start. Once Close has taken over from it (o.abandoned), the worker no
// longer touches the buffer nor counts anything: see Pipeline.takeOver.
func (p *Pipeline) work(o *output) {
	for {
		o.mu.Lock()
		if o.abandoned.Load() {
			o.mu.Unlock()
			return
		}
		batch, err := o.buf.Read(o.policy.BatchEvents, o.policy.BatchBytes, p.opts.FlushInterval, p.stopRead)
		o.holding = batch
		clear(o.settled) // let the last batch's events go
		o.settled = o.settled[:0]
		o.mu.Unlock()
		if err != nil {
			p.log.Error("buffer read failed", "sink", o.name, "err", err)
			if !o.withBuffer(o.buf.Rewind) || !p.sleep(p.abortCtx, time.Second) {
				return
			}
			continue
		}
		if len(batch) == 0 {
			return // stopping, and drained
		}
		if left := p.deliver(o, batch); len(left) > 0 {
			if o.buf.Durable() {
				o.withBuffer(o.buf.Rewind) // delivered on the next start
				return
			}
			if !p.deadLetter(context.Background(), o, DeadShutdown, errors.New("shutdown deadline passed before the sink took the events"), left) {
				o.mu.Lock()
				ours := o.settle(left) // else Close has taken them over
				o.mu.Unlock()
				if ours {
					p.lose(o, int64(len(left)), errors.New("the dead-letter file could not be written by the shutdown deadline"))
				}
			}
		}
		var ackErr error
		if !o.withBuffer(func() { ackErr = o.buf.Ack(len(batch)) }) {
			return
		}
		if ackErr != nil {
			p.log.Error("buffer acknowledgement not saved; the batch may be delivered again", "sink", o.name, "err", ackErr)
		}
	}
}

// withBuffer runs f on the worker's buffer and lets the held batch go,
// unless Close has taken over; it reports whether f ran.
func (o *output) withBuffer(f func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.abandoned.Load() {
		return false
	}
	f()
	o.holding = nil
	return true
}

// settle marks events of the held batch as settled by the worker (written,
// or claimed for the dead-letter file), so that Close does not take them
// over; it reports false, marking nothing, once Close has taken over.
// It records the slice, not each event: a batch settles in a few parts,
// and only Close's rare takeover needs to look events up.
// Called with o.mu held.
func (o *output) settle(events []*event.Event) bool {
	if o.abandoned.Load() {
		return false
	}
	o.settled = append(o.settled, events)
	return true
}

// unsettle undoes settle(events), for a dead-letter write that failed.
// Called with o.mu held.
func (o *output) unsettle(events []*event.Event) {
	for i := len(o.settled) - 1; i >= 0; i-- {
		if s := o.settled[i]; len(s) == len(events) && (len(s) == 0 || &s[0] == &events[0]) {
			o.settled = append(o.settled[:i], o.settled[i+1:]...)
			return
		}
	}
}

// deliver writes batch, spread over up to the sink's MaxInFlight parts
// written at once (with PartsOnBacklog, only when another full batch is
// buffered behind it), and returns the events neither written nor
// dead-lettered when the drain deadline passed (or, with a durable buffer,
// when stopping).
func (p *Pipeline) deliver(o *output, batch []*event.Event) []*event.Event {
	parts := min(o.policy.MaxInFlight, len(batch)/o.policy.MinPart)
	if parts > 1 && o.policy.PartsOnBacklog && o.buf.Lag() < uint64(len(batch)+o.policy.BatchEvents) {
		parts = 1 // the Lag counts the batch itself
	}
	if parts <= 1 {
		return p.flush(o, batch)
	}
	lefts := make([][]*event.Event, parts)
	size := (len(batch) + parts - 1) / parts
	var wg sync.WaitGroup
	for i := range parts {
		part := batch[i*size : min((i+1)*size, len(batch))]
		wg.Go(func() { lefts[i] = p.flush(o, part) })
	}
	wg.Wait()
	var left []*event.Event
	for _, l := range lefts {
		left = append(left, l...)
	}
	return left
}

// flush writes batch, retrying what can be retried until it is written or
// the drain deadline passes, and dead-letters what the sink rejects. It
// returns the events neither written nor dead-lettered.
func (p *Pipeline) flush(o *output, batch []*event.Event) []*event.Event {
	sm := o.m
	pending := batch
	var unsaved []*event.Event // rejected, and the dead-letter file could not take them
	backoff, slept := p.opts.RetryMin, time.Duration(0)
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			sm.retries.Inc()
			slept = jitter(backoff)
			if !p.sleep(p.abortCtx, slept) {
				break
			}
			backoff = min(2*backoff, p.opts.RetryMax)
		}
		if p.abortCtx.Err() != nil {
			break
		}
		sctx, span := p.startWrite(p.abortCtx, o, pending, attempt, slept)
		ctx, cancel := context.WithTimeout(sctx, p.opts.WriteTimeout)
		start := time.Now()
		dups, err := sink.Write(ctx, o.sink, pending)
		cancel()
		observeFlush(sm.flushLatency, span, time.Since(start))
		if err == nil {
			endWrite(span, OutcomeWritten, nil)
			p.written(o, pending, dups)
			return unsaved
		}
		sm.errors[sink.ErrorType(err)].Inc()

		var be *sink.BatchError
		switch {
		case errors.As(err, &be):
			failed := make(map[int]bool, len(be.Failed))
			for _, f := range be.Failed {
				failed[f.Index] = true
			}
			ok := make([]*event.Event, 0, len(pending)-len(be.Failed))
			for i, e := range pending {
				if !failed[i] {
					ok = append(ok, e)
				}
			}
			p.written(o, ok, 0)
			var retry []*event.Event
			for _, f := range be.Failed {
				if !sink.IsPermanent(f.Err) {
					retry = append(retry, pending[f.Index])
				} else if !p.deadLetter(sctx, o, DeadRejected, f.Err, pending[f.Index:f.Index+1]) {
					unsaved = append(unsaved, pending[f.Index])
				}
			}
			pending = retry
			if len(retry) > 0 {
				p.log.WarnContext(sctx, "sink write partly failed, retrying", "sink", o.name, "failed", len(retry), "err", err)
			}
			endWrite(span, OutcomePartial, err)
		case sink.IsPermanent(err):
			if len(pending) == 1 {
				spanEvent(span, "dead_letter", AttrBatchSize.Int(1))
				endWrite(span, OutcomeRejected, err)
				if !p.deadLetter(sctx, o, DeadRejected, err, pending) {
					return append(unsaved, pending...)
				}
				return unsaved
			}
			// Bisect to find the events the sink rejects; the rest are written.
			half := len(pending) / 2
			spanEvent(span, "bisect", attribute.Int("gotrack.bisect.left", half), attribute.Int("gotrack.bisect.right", len(pending)-half))
			endWrite(span, OutcomeRejected, err)
			left := p.flush(o, pending[:half])
			return append(append(unsaved, left...), p.flush(o, pending[half:])...)
		default:
			if o.writeOK.Swap(false) || attempt == 0 {
				p.log.WarnContext(sctx, "sink write failed, retrying", "sink", o.name, "events", len(pending), "err", err)
			}
			endWrite(span, OutcomeFailed, err)
			if o.buf.Durable() && p.closing.Load() {
				return append(unsaved, pending...) // stopping: the buffer keeps them for the next start
			}
		}
	}
	return append(unsaved, pending...)
}

// written counts a successful write of events, dups of which the sink
// held already (see sink.Deduplicator). Once Close has taken over, it
// counts nothing: Close dead-lettered the batch, as the write had not
// returned by the deadline.
func (p *Pipeline) written(o *output, events []*event.Event, dups int) {
	n := len(events) - dups
	if n+dups <= 0 {
		return
	}
	o.mu.Lock()
	ours := o.settle(events)
	o.mu.Unlock()
	if !ours {
		return
	}
	o.delivered.Add(int64(n + dups)) // the sink holds them all: Stats and replay count both
	o.m.ingested.Add(float64(n))
	o.m.duplicates.Add(float64(dups))
	o.m.batchSize.Observe(float64(n + dups))
	o.m.lastFlush.SetToCurrentTime()
	if !o.writeOK.Swap(true) {
		p.log.Info("sink recovered", "sink", o.name)
	}
}

// deadLetter writes events of the worker's held batch to the dead-letter
// file, and counts them as dead-lettered once they are there. It retries a
// failed write with backoff until the dead-letter part of Close's deadline
// has passed, and reports false when that passed first: the worker then
// keeps the events in a durable buffer, or counts them as lost. Meanwhile
// the worker waits: its buffer fills, and clients get 503s rather than
// silent loss. Its log lines carry the span of ctx, the write attempt's.
//
// Each attempt first claims the events (settle), so that Close, taking
// over from a stuck worker, does not write them too. Once Close has taken
// over, deadLetter reports true without writing: the events are Close's
// to dead-letter (or, in a durable buffer, to keep), not the worker's to
// count.
func (p *Pipeline) deadLetter(ctx context.Context, o *output, reason string, cause error, events []*event.Event) bool {
	backoff := p.opts.RetryMin
	for attempt := 0; ; attempt++ {
		if p.killCtx.Err() != nil {
			return o.abandoned.Load()
		}
		o.mu.Lock()
		ours := o.settle(events)
		o.mu.Unlock()
		if !ours {
			return true
		}
		err := p.dead.Write(o.name, reason, cause, events)
		if err == nil {
			p.deadLettered(ctx, o, reason, cause, events)
			return true
		}
		o.mu.Lock()
		if o.abandoned.Load() {
			// Claimed, so Close left them to this worker: they are in the
			// spool still, or lost.
			o.mu.Unlock()
			if !o.buf.Durable() {
				p.lose(o, int64(len(events)), fmt.Errorf("the dead-letter file could not be written: %w", err))
			}
			return true
		}
		o.unsettle(events)
		o.mu.Unlock()
		if attempt == 0 {
			p.log.ErrorContext(ctx, "the dead-letter file cannot be written; retrying until the shutdown deadline",
				"sink", o.name, "events", len(events), "reason", reason, "err", err)
		}
		if !p.sleep(p.killCtx, jitter(backoff)) {
			return o.abandoned.Load()
		}
		backoff = min(2*backoff, p.opts.RetryMax)
	}
}

// deadLettered counts events written to the dead-letter file.
func (p *Pipeline) deadLettered(ctx context.Context, o *output, reason string, cause error, events []*event.Event) {
	o.deadLet.Add(int64(len(events)))
	if reason == DeadShutdown {
		o.m.deadShutdown.Add(float64(len(events)))
	} else {
		o.m.deadRejected.Add(float64(len(events)))
	}
	p.log.WarnContext(ctx, "events dead-lettered", "sink", o.name, "events", len(events), "reason", reason,
		"path", p.dead.Path(), "err", cause)
}

// lose counts n acknowledged events of o as lost, and says so.
func (p *Pipeline) lose(o *output, n int64, cause error) {
	o.lost.Add(n)
	o.m.lost.Add(float64(n))
	p.log.Error("events lost: neither delivered nor dead-lettered", "sink", o.name, "events", n, "err", cause)
}

// sleep waits d, or returns false at once when ctx ends.
func (p *Pipeline) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter spreads a backoff uniformly over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
