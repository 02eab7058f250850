package pipeline

import (
	"context"
	"errors"
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
// start.
func (p *Pipeline) work(o *output) {
	for {
		batch, err := o.buf.Read(o.policy.BatchEvents, o.policy.BatchBytes, p.opts.FlushInterval, p.stopRead)
		if err != nil {
			p.log.Error("buffer read failed", "sink", o.name, "err", err)
			o.buf.Rewind()
			if !p.sleep(p.abortCtx, time.Second) {
				return
			}
			continue
		}
		if len(batch) == 0 {
			return // stopping, and drained
		}
		if left := p.deliver(o, batch); len(left) > 0 {
			if o.buf.Durable() {
				o.buf.Rewind() // delivered on the next start
				return
			}
			if !p.deadLetter(o, DeadShutdown, errors.New("shutdown deadline passed before the sink took the events"), left) {
				if !o.abandoned.Load() {
					p.lose(o, int64(len(left)), errors.New("the dead-letter file could not be written by the shutdown deadline"))
				}
			}
		}
		if err := o.buf.Ack(len(batch)); err != nil {
			p.log.Error("buffer acknowledgement not saved; the batch may be delivered again", "sink", o.name, "err", err)
		}
	}
}

// deliver writes batch, spread over up to the sink's MaxInFlight parts
// written at once, and returns the events neither written nor
// dead-lettered when the drain deadline passed (or, with a durable buffer,
// when stopping).
func (p *Pipeline) deliver(o *output, batch []*event.Event) []*event.Event {
	parts := min(o.policy.MaxInFlight, len(batch)/o.policy.MinPart)
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
			p.written(o, len(pending)-dups, dups)
			return unsaved
		}
		sm.errors[sink.ErrorType(err)].Inc()

		var be *sink.BatchError
		switch {
		case errors.As(err, &be):
			p.written(o, len(pending)-len(be.Failed), 0)
			var retry []*event.Event
			for _, f := range be.Failed {
				if !sink.IsPermanent(f.Err) {
					retry = append(retry, pending[f.Index])
				} else if !p.deadLetter(o, DeadRejected, f.Err, pending[f.Index:f.Index+1]) {
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
				if !p.deadLetter(o, DeadRejected, err, pending) {
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

// written counts a successful write of n new events and dups events the
// sink held already (see sink.Deduplicator).
func (p *Pipeline) written(o *output, n, dups int) {
	if n+dups <= 0 {
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

// deadLetter writes events to the dead-letter file, and counts them as
// dead-lettered once they are there. It retries a failed write with
// backoff until the dead-letter part of Close's deadline has passed, and
// reports false when that passed first: the worker then keeps the events
// in a durable buffer, or counts them as lost. Meanwhile the worker waits:
// its buffer fills, and clients get 503s rather than silent loss.
func (p *Pipeline) deadLetter(o *output, reason string, cause error, events []*event.Event) bool {
	backoff := p.opts.RetryMin
	for attempt := 0; ; attempt++ {
		if p.killCtx.Err() != nil {
			return false
		}
		err := p.dead.Write(o.name, reason, cause, events)
		if err == nil {
			o.deadLet.Add(int64(len(events)))
			if reason == DeadShutdown {
				o.m.deadShutdown.Add(float64(len(events)))
			} else {
				o.m.deadRejected.Add(float64(len(events)))
			}
			p.log.Warn("events dead-lettered", "sink", o.name, "events", len(events), "reason", reason,
				"path", p.dead.Path(), "err", cause)
			return true
		}
		if attempt == 0 {
			p.log.Error("the dead-letter file cannot be written; retrying until the shutdown deadline",
				"sink", o.name, "events", len(events), "reason", reason, "err", err)
		}
		if !p.sleep(p.killCtx, jitter(backoff)) {
			return false
		}
		backoff = min(2*backoff, p.opts.RetryMax)
	}
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
