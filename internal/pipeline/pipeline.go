// Package pipeline is GoTrack's delivery engine. It fans accepted events
// out to the sinks, one buffer.Buffer and one worker per sink: a bounded
// memory buffer each, or, with a spool, one durable log read through each
// sink's cursor. The worker loop (worker.go) is the same for both: it
// batches by count, bytes and time as the sink's Policy asks, writes up to
// the sink's MaxInFlight parts at once, retries with backoff, isolates and
// dead-letters events a sink rejects, and accounts for every event it was
// given: delivered, dead-lettered, left in the spool, or counted as lost.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/buffer"
	"github.com/gotrack/gotrack/internal/deadletter"
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
	BatchSize      int           // flush at this many events, unless the sink's Policy says; default 500
	BatchBytes     int           // flush at this many bytes of JSON, unless the sink's Policy says; default 1 MiB
	FlushInterval  time.Duration // flush a batch this long after its first event; default 200ms
	FullPolicy     FullPolicy    // default Block
	EnqueueTimeout time.Duration // how long Block waits; default 100ms
	RetryMin       time.Duration // first retry backoff; default 100ms
	RetryMax       time.Duration // backoff cap; default 5s
	WriteTimeout   time.Duration // per WriteBatch attempt; default 30s
	PingInterval   time.Duration // how often Pinger sinks are checked; default 5s

	// Spool, when set, makes delivery durable: Submit appends to it before
	// returning, and each sink's worker reads it through the sink's own
	// cursor instead of a memory buffer. It must have a reader named after
	// each output. The pipeline closes it.
	Spool *spool.Spool

	// Tracer, when not nil, gives each batch write attempt a span linked
	// to the request spans its events carry; nil (tracing off) costs
	// nothing.
	Tracer trace.Tracer
	// Parent, when valid, is the parent of every write span: the root span
	// of a batch job such as `gotrack replay`. The request spans the events
	// carry are then links only.
	Parent trace.SpanContext
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

// Output is a named sink. Its batch limits and writes in flight are the
// sink's own declaration (sink.Policy).
type Output struct {
	Name string
	Sink sink.Sink
}

// Errors returned by Submit.
var (
	ErrQueueFull = errors.New("pipeline: a sink queue is full")
	ErrSpoolFull = errors.New("pipeline: the spool is full")
	ErrClosed    = errors.New("pipeline: shutting down")
)

// ErrLost is wrapped by the error Close returns when acknowledged events
// could be neither delivered nor written to the dead-letter file.
var ErrLost = errors.New("acknowledged events lost")

// output is one sink with its buffer and its worker's state.
type output struct {
	name   string
	sink   sink.Sink
	policy sink.Policy // with the pipeline's defaults filled in
	buf    buffer.Buffer
	m      *sinkMetrics

	pingOK    atomic.Bool // the last Ping succeeded (or the sink has no Ping)
	writeOK   atomic.Bool // the last write attempt did not fail retryably
	delivered atomic.Int64
	deadLet   atomic.Int64
	lost      atomic.Int64
	// mu guards holding, settled and abandoned's change, between the
	// worker and Close taking over from it.
	mu sync.Mutex
	// holding is the batch the worker read and has not acknowledged yet;
	// settled are those of its events the worker wrote or claimed for the
	// dead-letter file.
	holding []*event.Event
	settled [][]*event.Event
	// abandoned is set, under mu, when Close gave up waiting for the
	// worker and took over its buffer and the unsettled part of the batch
	// it holds; the worker then touches the buffer no more and counts
	// nothing.
	abandoned atomic.Bool
}

// isUp reports the sink-up state: its destination answers and its last
// write did not fail.
func (o *output) isUp() bool { return o.pingOK.Load() && o.writeOK.Load() }

// Pipeline delivers events to its sinks. Submit, SubmitEach, Ready and
// StopReady are safe for concurrent use; Start and Close are called once
// each.
type Pipeline struct {
	opts    Options
	outs    []*output
	in      intake
	metrics *Metrics
	dead    *deadletter.File
	log     *slog.Logger

	inflight  atomic.Int64 // Submit calls under way
	closing   atomic.Bool
	closed    atomic.Bool   // Close was called
	notReady  atomic.Bool   // StopReady was called
	submitted chan struct{} // signalled by the last Submit to leave once closing
	workers   sync.WaitGroup
	stopPing  chan struct{}
	stopRead  chan struct{} // closed on Close: workers drain their buffers, then stop

	// abortCtx is cancelled when the drain part of Close's deadline has
	// passed: sink retries stop and what is left is dead-lettered (or, in
	// a durable buffer, kept). killCtx is cancelled when the dead-letter
	// part has passed: dead-letter writes stop retrying and what is still
	// unwritten is lost.
	abortCtx context.Context
	abort    context.CancelFunc
	killCtx  context.Context
	kill     context.CancelFunc
}

// New returns a pipeline over outputs. Its metrics, including live buffer
// state, are registered on reg through m and the returned pipeline's
// collector; dead receives what the sinks cannot take.
func New(outputs []Output, opts Options, m *Metrics, reg prometheus.Registerer, dead *deadletter.File, log *slog.Logger) (*Pipeline, error) {
	opts.setDefaults()
	p := &Pipeline{opts: opts, metrics: m, dead: dead, log: log, stopPing: make(chan struct{}),
		stopRead: make(chan struct{}), submitted: make(chan struct{}, 1)}
	var mems []*buffer.Memory
	for _, o := range outputs {
		out := &output{name: o.Name, sink: o.Sink, policy: sink.PolicyOf(o.Sink), m: m.forSink(o.Name)}
		out.policy.BatchEvents = cmpOr(out.policy.BatchEvents, opts.BatchSize)
		out.policy.BatchBytes = cmpOr(out.policy.BatchBytes, opts.BatchBytes)
		out.policy.MaxInFlight = max(out.policy.MaxInFlight, 1)
		out.policy.MinPart = max(out.policy.MinPart, 1)
		if opts.Spool != nil {
			r := opts.Spool.Reader(o.Name)
			if r == nil {
				return nil, fmt.Errorf("pipeline: the spool has no reader for sink %s", o.Name)
			}
			out.buf = r
		} else {
			mem := buffer.NewMemory(opts.QueueSize)
			mems = append(mems, mem)
			out.buf = mem
		}
		out.pingOK.Store(true)
		out.writeOK.Store(true)
		p.outs = append(p.outs, out)
	}
	if opts.Spool != nil {
		p.in = &spoolIntake{p: p, sp: opts.Spool}
	} else {
		p.in = &memIntake{p: p, mems: mems}
	}
	if err := reg.Register(newStateCollector(p.outs)); err != nil {
		return nil, err
	}
	p.abortCtx, p.abort = context.WithCancel(context.Background())
	p.killCtx, p.kill = context.WithCancel(context.Background())
	return p, nil
}

func cmpOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// Start checks the sinks that can be pinged, then starts one worker per
// sink and the health checks.
func (p *Pipeline) Start() {
	p.ping()
	for _, o := range p.outs {
		p.workers.Add(1)
		go func() {
			defer p.workers.Done()
			p.work(o)
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
	for _, o := range p.outs {
		pg, ok := o.sink.(sink.Pinger)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(p.abortCtx, 2*time.Second)
		err := pg.Ping(ctx)
		cancel()
		if was := o.pingOK.Swap(err == nil); was != (err == nil) {
			if err != nil {
				p.log.Warn("sink is down", "sink", o.name, "err", err)
			} else {
				p.log.Info("sink is up", "sink", o.name)
			}
		}
	}
}

// Submit hands events to every sink, all or nothing. Without a spool it
// first reserves room for all of them in every sink's memory buffer,
// waiting as the full-queue policy allows, and puts them only once every
// reservation is held; it never waits for sink I/O. With a spool it appends
// them once, for every sink, and returns when they are on disk: under
// SPOOL_FSYNC=always that is after the fsync of the group commit they
// joined. It returns ErrQueueFull, ErrSpoolFull, ErrClosed, or the spool's
// write error, when nothing was accepted.
func (p *Pipeline) Submit(events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	if !p.enter() {
		p.metrics.dropped.WithLabelValues(AllSinks, DropClosed).Add(float64(len(events)))
		return ErrClosed
	}
	defer p.leave()
	return p.in.put(events)
}

// SubmitEach hands one event to every sink that has room, counting a drop
// for each that has none. It is for the pixel, whose client cannot retry,
// so that one full sink does not cost the others the event. It reports
// whether every sink took the event. With a spool it is Submit of one
// event.
func (p *Pipeline) SubmitEach(e *event.Event) bool {
	if !p.enter() {
		p.metrics.dropped.WithLabelValues(AllSinks, DropClosed).Inc()
		return false
	}
	defer p.leave()
	return p.in.putEach(e)
}

// enter counts a Submit in, unless the pipeline is closing.
func (p *Pipeline) enter() bool {
	p.inflight.Add(1)
	if p.closing.Load() {
		p.leave()
		return false
	}
	return true
}

// leave counts a Submit out, and tells a waiting Close when it was the last.
func (p *Pipeline) leave() {
	if p.inflight.Add(-1) == 0 && p.closing.Load() {
		select {
		case p.submitted <- struct{}{}:
		default:
		}
	}
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

// StopReady makes Ready report "shutting down" from now on, while Submit
// still accepts events: the drain delay before a graceful stop, during
// which load balancers take the instance out of rotation.
func (p *Pipeline) StopReady() { p.notReady.Store(true) }

// Ready reports whether the pipeline can take events now, and why not: it
// is stopping, a queue or the spool is full, or a sink with a memory buffer
// is down. A down sink whose buffer is durable (the spool) does not make
// the pipeline not ready, since the spool absorbs its events until it is
// back; it is still listed in why, as information, while Ready is true.
func (p *Pipeline) Ready() (bool, []string) {
	var why, info []string
	if p.closing.Load() || p.notReady.Load() {
		why = append(why, "shutting down")
	}
	why = p.in.notReady(why)
	for _, o := range p.outs {
		switch {
		case o.isUp():
		case o.buf.Durable():
			info = append(info, "sink "+o.name+" is down; the spool keeps its events")
		default:
			why = append(why, "sink "+o.name+" is down")
		}
	}
	return len(why) == 0, append(why, info...)
}

// Stats is what one sink delivered.
type Stats struct {
	Sink         string
	Delivered    int64 // events the sink wrote, or held already (duplicates)
	DeadLettered int64 // events written to the dead-letter file instead
	Lost         int64 // acknowledged events neither delivered nor dead-lettered
	Pending      int   // events still buffered, or in the spool for the next start
}

// Stats returns each sink's delivery counts.
func (p *Pipeline) Stats() []Stats {
	out := make([]Stats, len(p.outs))
	for i, o := range p.outs {
		out[i] = Stats{Sink: o.name, Delivered: o.delivered.Load(), DeadLettered: o.deadLet.Load(),
			Lost: o.lost.Load(), Pending: int(o.buf.Lag())}
	}
	return out
}

// Close stops taking events, lets every worker drain its buffer into its
// sink, and closes the spool, the sinks and the dead-letter file, all by
// ctx's deadline, which is the one bound of the whole stop:
//
//  1. Submit refuses new events; Close waits for the calls under way.
//  2. The workers deliver what is buffered, retrying as usual, until nine
//     tenths of the time left has passed.
//  3. Then retries stop. What a memory buffer still holds is written to the
//     dead-letter file, retrying that until 92.5% of the time left has
//     passed; what the spool holds stays there for the next start.
//  4. At 95%, Close takes over from any worker still running (stuck in a
//     sink write that ignores its context, or in a dead-letter write): the
//     unconfirmed batch it holds and what waits in its memory buffer are
//     written to the dead-letter file in the time left; the worker no
//     longer touches its buffer nor counts anything, even if its write
//     returns later. With the spool, what it holds stays there.
//  5. The spool, the sinks and the dead-letter file are closed, the sinks
//     with ctx.
//
// Events that were neither delivered, nor dead-lettered, nor kept in the
// spool are lost: each sink's number is logged and counted in
// gotrack_events_lost_total, and Close returns an error wrapping ErrLost.
// Callers pass a fresh context: an already-cancelled one leaves no time to
// drain.
func (p *Pipeline) Close(ctx context.Context) error {
	if !p.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	defer p.kill()
	defer p.abort()
	drainCtx, cancelDrain := partOf(ctx, 9, 10)
	defer cancelDrain()
	stopAbort := context.AfterFunc(drainCtx, p.abort)
	defer stopAbort()
	deadCtx, cancelDead := partOf(ctx, 37, 40)
	defer cancelDead()
	stopKill := context.AfterFunc(deadCtx, p.kill)
	defer stopKill()
	waitCtx, cancelWait := partOf(ctx, 19, 20)
	defer cancelWait()

	var errs []error
	p.closing.Store(true)
	for p.inflight.Load() > 0 { // Submit calls that passed the closing check
		select {
		case <-p.submitted:
		case <-ctx.Done():
			errs = append(errs, errors.New("pipeline: Submit calls still under way at the shutdown deadline"))
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(p.stopRead)
	drained := make(chan struct{})
	go func() {
		p.workers.Wait()
		close(drained)
	}()
	// Wait for the workers until a little after the dead-letter part has
	// passed; one still running then is stuck (in a sink write that
	// ignores its context, or a dead-letter write), and Close takes over
	// from it in the time left.
	abandon := false
	select {
	case <-drained:
	case <-waitCtx.Done():
		select {
		case <-drained: // they finished just in time
		default:
			abandon = true
			errs = append(errs, errors.New("pipeline: a worker was still writing at the shutdown deadline"))
		}
	}
	close(p.stopPing)

	var kept int64
	var takeovers []*takeover
	for _, o := range p.outs {
		if o.buf.Durable() {
			if abandon {
				o.mu.Lock()
				o.abandoned.Store(true) // what it holds stays in the spool: no Ack
				o.mu.Unlock()
			}
			kept += int64(o.buf.Lag())
		} else if abandon || o.buf.Lag() > 0 {
			// The worker is stuck, or gone with events still buffered (put
			// by a Submit that outlived the deadline).
			takeovers = append(takeovers, p.takeOver(o))
		}
	}
	p.deadLetterTaken(ctx, takeovers)
	var lost int64
	for _, o := range p.outs {
		lost += o.lost.Load()
	}
	if err := p.in.close(); err != nil {
		errs = append(errs, err)
	}
	if kept > 0 {
		p.log.Warn("events left in the spool for the next start", "events", kept)
	}
	for _, o := range p.outs {
		if err := o.sink.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close sink %s: %w", o.name, err))
		}
	}
	if err := p.dead.Close(); err != nil {
		errs = append(errs, err)
	}
	if lost > 0 {
		p.log.Error("acknowledged events were lost: neither delivered nor dead-lettered", "events", lost)
		errs = append(errs, fmt.Errorf("pipeline: %d %w", lost, ErrLost))
	}
	return errors.Join(errs...)
}

// takeover is what Close took from a stuck or gone worker's memory buffer.
type takeover struct {
	o      *output
	events []*event.Event
	state  atomic.Int32 // 0 until counted: 1 dead-lettered, 2 lost
}

// takeOver stops o's worker from touching its buffer or counting, and
// takes what it held and did not settle (a stuck write's batch was never
// confirmed) and what waits in its memory buffer.
func (p *Pipeline) takeOver(o *output) *takeover {
	o.mu.Lock()
	o.abandoned.Store(true)
	t := &takeover{o: o}
	settled := make(map[*event.Event]bool)
	for _, s := range o.settled {
		for _, e := range s {
			settled[e] = true
		}
	}
	for _, e := range o.holding {
		if !settled[e] {
			t.events = append(t.events, e)
		}
	}
	o.holding = nil
	o.mu.Unlock()
	if d, ok := o.buf.(interface{ Drain() []*event.Event }); ok {
		t.events = append(t.events, d.Drain()...)
	}
	return t
}

// deadLetterTaken writes what Close took over to the dead-letter file,
// retrying until ctx ends, and counts it as dead-lettered, or as lost when
// ctx ends first (a dead-letter write that outlives ctx is not waited for:
// whichever of the two counts first counts the events).
func (p *Pipeline) deadLetterTaken(ctx context.Context, ts []*takeover) {
	cause := errors.New("shutdown deadline passed while the sink's write was stuck")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, t := range ts {
			backoff := p.opts.RetryMin
			for len(t.events) > 0 && ctx.Err() == nil {
				if err := p.dead.Write(t.o.name, DeadShutdown, cause, t.events); err == nil {
					if t.state.CompareAndSwap(0, 1) {
						p.deadLettered(ctx, t.o, DeadShutdown, cause, t.events)
					}
					break
				}
				if !p.sleep(ctx, jitter(backoff)) {
					break
				}
				backoff = min(2*backoff, p.opts.RetryMax)
			}
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	for _, t := range ts {
		if len(t.events) > 0 && t.state.CompareAndSwap(0, 2) {
			p.lose(t.o, int64(len(t.events)), errors.New("still buffered or being written at the shutdown deadline"))
		}
	}
}

// partOf returns a context that ends when num/den of the time left before
// ctx's deadline has passed, or with ctx when it has none. Close splits its
// one deadline so: draining, then dead-lettering, then closing.
func partOf(ctx context.Context, num, den int64) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	left := time.Until(dl)
	return context.WithDeadline(ctx, dl.Add(-left+left*time.Duration(num)/time.Duration(den)))
}
