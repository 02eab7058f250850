// Package pipeline fans accepted events out to the sinks: one bounded queue
// and one worker per sink, batching by count, bytes and time, retrying with
// backoff, isolating and dead-lettering events a sink rejects, and
// accounting for every event it was given.
package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/spool"
)

// FullPolicy says what Submit does when a queue is full.
type FullPolicy string

// The queue-full policies.
const (
	Block FullPolicy = "block" // wait up to Options.EnqueueTimeout for room
	Drop  FullPolicy = "drop"  // give up at once
)

// ParseFullPolicy parses one of the policy names.
func ParseFullPolicy(s string) (FullPolicy, error) {
	switch p := FullPolicy(s); p {
	case Block, Drop:
		return p, nil
	}
	return "", fmt.Errorf("unknown queue-full policy %q (want block or drop)", s)
}

// Options configure a Pipeline. Zero values take the documented defaults.
type Options struct {
	QueueSize      int           // events per sink queue; default 10000
	BatchSize      int           // flush at this many events; default 500
	BatchBytes     int           // flush at this many bytes of JSON; default 1 MiB
	FlushInterval  time.Duration // flush a batch this long after its first event; default 200ms
	FullPolicy     FullPolicy    // default Block
	EnqueueTimeout time.Duration // how long Block waits; default 100ms
	RetryMin       time.Duration // first retry backoff; default 100ms
	RetryMax       time.Duration // backoff cap; default 5s
	WriteTimeout   time.Duration // per WriteBatch attempt; default 30s
	PingInterval   time.Duration // how often Pinger sinks are checked; default 5s

	// Spool, when set, makes delivery durable: Submit appends to it before
	// returning, and each sink's worker reads it through the sink's own
	// cursor instead of an in-memory queue. It must have a reader named
	// after each output. The pipeline closes it.
	Spool *spool.Spool
}

func (o *Options) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.FullPolicy == "" {
		o.FullPolicy = Block
	}
	def(&o.FlushInterval, 200*time.Millisecond)
	def(&o.EnqueueTimeout, 100*time.Millisecond)
	def(&o.RetryMin, 100*time.Millisecond)
	def(&o.RetryMax, 5*time.Second)
	def(&o.WriteTimeout, 30*time.Second)
	def(&o.PingInterval, 5*time.Second)
}

// Output is a named sink, with its own batch limits when it wants other
// than the pipeline's (a database writes far better in large batches than
// a file needs).
type Output struct {
	Name       string
	Sink       sink.Sink
	BatchSize  int // 0 for Options.BatchSize
	BatchBytes int // 0 for Options.BatchBytes
}

// Errors returned by Submit.
var (
	ErrQueueFull = errors.New("pipeline: a sink queue is full")
	ErrSpoolFull = errors.New("pipeline: the spool is full")
	ErrClosed    = errors.New("pipeline: shutting down")
)

// Pipeline delivers events to its sinks. Submit and Ready are safe for
// concurrent use; Start and Close are called once each.
type Pipeline struct {
	opts    Options
	queues  []*queue
	metrics *Metrics
	sm      []*sinkMetrics
	dead    *DeadLetter
	log     *slog.Logger

	inflight atomic.Int64 // Submit calls under way
	closing  atomic.Bool
	workers  sync.WaitGroup
	stopPing chan struct{}
	stopRead chan struct{} // closed on Close: spool readers drain, then stop

	// abortCtx is cancelled when Close's deadline passes: retries stop and
	// what is left goes to the dead-letter file.
	abortCtx context.Context
	abort    context.CancelFunc
}

// New returns a pipeline over outputs. Its metrics, including live queue
// state, are registered on reg through m and the returned pipeline's
// collector; dead receives what the sinks cannot take.
func New(outputs []Output, opts Options, m *Metrics, reg prometheus.Registerer, dead *DeadLetter, log *slog.Logger) (*Pipeline, error) {
	opts.setDefaults()
	p := &Pipeline{opts: opts, metrics: m, dead: dead, log: log, stopPing: make(chan struct{}), stopRead: make(chan struct{})}
	for _, o := range outputs {
		size := opts.QueueSize
		if opts.Spool != nil {
			size = 0 // the spool is the queue
		}
		q := newQueue(o.Name, o.Sink, size)
		if opts.Spool != nil {
			if q.reader = opts.Spool.Reader(o.Name); q.reader == nil {
				return nil, fmt.Errorf("pipeline: the spool has no reader for sink %s", o.Name)
			}
		}
		q.batchSize, q.batchBytes = cmp.Or(o.BatchSize, opts.BatchSize), cmp.Or(o.BatchBytes, opts.BatchBytes)
		p.queues = append(p.queues, q)
		p.sm = append(p.sm, m.forSink(o.Name))
	}
	if err := reg.Register(newStateCollector(p.queues)); err != nil {
		return nil, err
	}
	p.abortCtx, p.abort = context.WithCancel(context.Background())
	return p, nil
}

// Start checks the sinks that can be pinged, then starts one worker per
// sink and the health checks.
func (p *Pipeline) Start() {
	p.ping()
	for i, q := range p.queues {
		p.workers.Add(1)
		go func() {
			defer p.workers.Done()
			if q.reader != nil {
				p.workSpool(q, p.sm[i])
			} else {
				p.work(q, p.sm[i])
			}
		}()
	}
	go func() {
		t := time.NewTicker(p.opts.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.ping()
			case <-p.stopPing:
				return
			}
		}
	}()
}

func (p *Pipeline) ping() {
	for _, q := range p.queues {
		pg, ok := q.sink.(sink.Pinger)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(p.abortCtx, 2*time.Second)
		err := pg.Ping(ctx)
		cancel()
		if was := q.pingOK.Swap(err == nil); was != (err == nil) {
			if err != nil {
				p.log.Warn("sink is down", "sink", q.name, "err", err)
			} else {
				p.log.Info("sink is up", "sink", q.name)
			}
		}
	}
}

// Submit hands events to every sink's queue, all or nothing: it first
// reserves room for all of them in every queue, waiting as the full-queue
// policy allows, and enqueues only once every reservation is held. It
// returns ErrQueueFull or ErrClosed when nothing was enqueued. It never
// waits for sink I/O.
func (p *Pipeline) Submit(events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	if p.closing.Load() {
		p.metrics.dropped.WithLabelValues(AllSinks, DropClosed).Add(float64(len(events)))
		return ErrClosed
	}
	if sp := p.opts.Spool; sp != nil {
		if err := sp.Append(events); err != nil {
			return p.spoolError(err, len(events))
		}
		return nil
	}
	n := int64(len(events))
	deadline := p.deadline()
	for i, q := range p.queues {
		if !q.reserve(n, deadline) {
			for _, r := range p.queues[:i] {
				r.release(len(events))
			}
			p.sm[i].queueFull.Add(float64(n))
			return ErrQueueFull
		}
	}
	for _, q := range p.queues {
		for _, e := range events {
			q.ch <- e
		}
	}
	return nil
}

// SubmitEach enqueues one event into every queue that has room, counting a
// drop for each that has none. It is for the pixel, whose client cannot
// retry, so that one full sink does not cost the others the event. It
// reports whether every sink took the event.
func (p *Pipeline) SubmitEach(e *event.Event) bool {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	if p.closing.Load() {
		p.metrics.dropped.WithLabelValues(AllSinks, DropClosed).Inc()
		return false
	}
	if sp := p.opts.Spool; sp != nil {
		if err := sp.Append([]*event.Event{e}); err != nil {
			p.spoolError(err, 1)
			return false
		}
		return true
	}
	all := true
	deadline := time.Time{}
	for i, q := range p.queues {
		ok := q.tryReserve(1)
		if !ok && p.opts.FullPolicy == Block {
			if deadline.IsZero() {
				deadline = p.deadline()
			}
			ok = q.reserve(1, deadline)
		}
		if !ok {
			p.sm[i].queueFull.Inc()
			all = false
			continue
		}
		q.ch <- e
	}
	return all
}

// spoolError counts n events refused by the spool and says why.
func (p *Pipeline) spoolError(err error, n int) error {
	if errors.Is(err, spool.ErrFull) {
		p.metrics.dropped.WithLabelValues(AllSinks, DropSpoolFull).Add(float64(n))
		return ErrSpoolFull
	}
	p.metrics.dropped.WithLabelValues(AllSinks, DropSpoolFailed).Add(float64(n))
	return fmt.Errorf("pipeline: %w", err)
}

func (p *Pipeline) deadline() time.Time {
	if p.opts.FullPolicy == Drop {
		return time.Time{}
	}
	return time.Now().Add(p.opts.EnqueueTimeout)
}

// CountDropped counts events dropped before they reached any queue.
func (p *Pipeline) CountDropped(reason string, n int) {
	p.metrics.dropped.WithLabelValues(AllSinks, reason).Add(float64(n))
}

// Ready reports whether the pipeline can take events now, and if not, why:
// a sink that is down or a queue that is full.
func (p *Pipeline) Ready() (bool, []string) {
	var why []string
	if p.closing.Load() {
		why = append(why, "shutting down")
	}
	if sp := p.opts.Spool; sp != nil {
		if err := sp.Failed(); err != nil {
			why = append(why, "the spool cannot sync: restart GoTrack")
		} else if sp.Full() {
			why = append(why, "the spool is full")
		}
	}
	for _, q := range p.queues {
		if !q.isUp() {
			why = append(why, "sink "+q.name+" is down")
		}
		if q.reader == nil && q.full() {
			why = append(why, "queue "+q.name+" is full")
		}
	}
	return len(why) == 0, why
}

// Stats is what one sink delivered.
type Stats struct {
	Sink         string
	Delivered    int64 // events the sink wrote, or held already (duplicates)
	DeadLettered int64 // events written to the dead-letter file instead
	Pending      int   // events still queued, or in the spool for the next start
}

// Stats returns each sink's delivery counts.
func (p *Pipeline) Stats() []Stats {
	out := make([]Stats, len(p.queues))
	for i, q := range p.queues {
		out[i] = Stats{Sink: q.name, Delivered: q.delivered.Load(), DeadLettered: q.deadLet.Load(), Pending: q.depth()}
	}
	return out
}

// work is one sink's worker: it gathers batches and flushes them until its
// queue is closed and empty.
func (p *Pipeline) work(q *queue, sm *sinkMetrics) {
	batch := make([]*event.Event, 0, q.batchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		e, ok := <-q.ch
		if !ok {
			return
		}
		batch = append(batch[:0], e)
		size := e.Size()
		timer.Reset(p.opts.FlushInterval)
		open := true
	gather:
		for len(batch) < q.batchSize && size < q.batchBytes {
			select {
			case e, ok := <-q.ch:
				if !ok {
					open = false
					break gather
				}
				batch = append(batch, e)
				size += e.Size()
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		q.release(len(batch))
		if left := p.flush(q, sm, batch); len(left) > 0 {
			p.deadLetter(q, sm, DeadShutdown, errors.New("shutdown deadline passed before the sink took the events"), left)
		}
		clear(batch) // let the events go
		if !open {
			return
		}
	}
}

// flush writes batch, retrying what can be retried until it is written or
// the shutdown deadline passes, and dead-letters what the sink rejects. It
// returns the events still unwritten when the deadline passed.
func (p *Pipeline) flush(q *queue, sm *sinkMetrics, batch []*event.Event) []*event.Event {
	pending := batch
	backoff := p.opts.RetryMin
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			sm.retries.Inc()
			if !p.sleep(jitter(backoff)) {
				break
			}
			backoff = min(2*backoff, p.opts.RetryMax)
		}
		if p.abortCtx.Err() != nil {
			break
		}
		ctx, cancel := context.WithTimeout(p.abortCtx, p.opts.WriteTimeout)
		start := time.Now()
		dups, err := sink.Write(ctx, q.sink, pending)
		cancel()
		sm.flushLatency.Observe(time.Since(start).Seconds())
		if err == nil {
			p.written(q, sm, len(pending)-dups, dups)
			return nil
		}
		sm.errors[sink.ErrorType(err)].Inc()

		var be *sink.BatchError
		switch {
		case errors.As(err, &be):
			p.written(q, sm, len(pending)-len(be.Failed), 0)
			var retry []*event.Event
			for _, f := range be.Failed {
				if sink.IsPermanent(f.Err) {
					p.deadLetter(q, sm, DeadRejected, f.Err, pending[f.Index:f.Index+1])
				} else {
					retry = append(retry, pending[f.Index])
				}
			}
			pending = retry
			if len(retry) > 0 {
				p.log.Warn("sink write partly failed, retrying", "sink", q.name, "failed", len(retry), "err", err)
			}
		case sink.IsPermanent(err):
			if len(pending) == 1 {
				p.deadLetter(q, sm, DeadRejected, err, pending)
				return nil
			}
			// Bisect to find the events the sink rejects; the rest are written.
			half := len(pending) / 2
			left := p.flush(q, sm, pending[:half])
			return append(left, p.flush(q, sm, pending[half:])...)
		default:
			if q.writeOK.Swap(false) || attempt == 0 {
				p.log.Warn("sink write failed, retrying", "sink", q.name, "events", len(pending), "err", err)
			}
			if q.reader != nil && p.closing.Load() {
				return pending // stopping: the spool keeps them for the next start
			}
		}
	}
	return pending
}

// workSpool is one sink's worker in spool mode: it reads batches through
// the sink's cursor and acknowledges each once the sink has it. When the
// shutdown deadline cuts a batch short, it is not acknowledged: it stays in
// the spool and is delivered on the next start.
func (p *Pipeline) workSpool(q *queue, sm *sinkMetrics) {
	for {
		batch, err := q.reader.Read(q.batchSize, q.batchBytes, p.opts.FlushInterval, p.stopRead)
		if err != nil {
			p.log.Error("spool read failed", "sink", q.name, "err", err)
			if !p.sleep(time.Second) {
				return
			}
			q.reader.Rewind()
			continue
		}
		if len(batch) == 0 {
			return // stopping, and caught up
		}
		if left := p.flush(q, sm, batch); len(left) > 0 {
			q.reader.Rewind()
			return
		}
		if err := q.reader.Ack(len(batch)); err != nil {
			p.log.Error("spool cursor not saved; the batch may be delivered again", "sink", q.name, "err", err)
		}
	}
}

// written counts a successful write of n new events and dups events the
// sink held already (see sink.Deduplicator).
func (p *Pipeline) written(q *queue, sm *sinkMetrics, n, dups int) {
	if n+dups <= 0 {
		return
	}
	q.delivered.Add(int64(n + dups)) // the sink holds them all: Stats and replay count both
	sm.ingested.Add(float64(n))
	sm.duplicates.Add(float64(dups))
	sm.batchSize.Observe(float64(n + dups))
	sm.lastFlush.SetToCurrentTime()
	if !q.writeOK.Swap(true) {
		p.log.Info("sink recovered", "sink", q.name)
	}
}

func (p *Pipeline) deadLetter(q *queue, sm *sinkMetrics, reason string, cause error, events []*event.Event) {
	q.deadLet.Add(int64(len(events)))
	if reason == DeadShutdown {
		sm.deadShutdown.Add(float64(len(events)))
	} else {
		sm.deadRejected.Add(float64(len(events)))
	}
	if err := p.dead.Write(q.name, reason, cause, events); err != nil {
		p.log.Error("events lost: the dead-letter file could not be written",
			"sink", q.name, "events", len(events), "reason", reason, "err", err)
		return
	}
	p.log.Warn("events dead-lettered", "sink", q.name, "events", len(events), "reason", reason,
		"path", p.dead.Path(), "err", cause)
}

// sleep waits d, or returns false at once when the shutdown deadline passes.
func (p *Pipeline) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.abortCtx.Done():
		return false
	}
}

// jitter spreads a backoff uniformly over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// Close stops taking events, lets every worker drain its queue into its sink
// and closes the sinks. When ctx expires first, what is still undelivered
// goes to the dead-letter file. Close does not use ctx for the writes
// themselves, so an already-cancelled parent context does not abort the
// drain: callers pass a fresh context with the shutdown deadline.
func (p *Pipeline) Close(ctx context.Context) error {
	p.closing.Store(true)
	for p.inflight.Load() > 0 { // Submit calls that passed the closing check
		time.Sleep(time.Millisecond)
	}
	for _, q := range p.queues {
		close(q.ch)
	}
	close(p.stopRead)
	stop := context.AfterFunc(ctx, p.abort)
	defer stop()
	drained := make(chan struct{})
	go func() {
		p.workers.Wait()
		close(drained)
	}()
	var errs []error
	select {
	case <-drained:
	case <-ctx.Done():
		// The workers are dead-lettering; a sink stuck in a write past its
		// timeout is waited for only briefly.
		select {
		case <-drained:
		case <-time.After(5 * time.Second):
			errs = append(errs, errors.New("pipeline: a sink did not return from its write after the shutdown deadline"))
		}
	}
	close(p.stopPing)
	if sp := p.opts.Spool; sp != nil {
		var left uint64
		for _, q := range p.queues {
			left += q.reader.Lag()
		}
		if err := sp.Close(); err != nil {
			errs = append(errs, err)
		}
		if left > 0 {
			p.log.Warn("events left in the spool for the next start", "events", left)
		}
	}
	for _, q := range p.queues {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := q.sink.Close(cctx); err != nil {
			errs = append(errs, fmt.Errorf("close sink %s: %w", q.name, err))
		}
		cancel()
	}
	if err := p.dead.Close(); err != nil {
		errs = append(errs, err)
	}
	p.abort()
	return errors.Join(errs...)
}
