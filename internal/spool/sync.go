package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// syncer makes appends durable. Under Sync.Always it runs group-commit
// rounds: each writes every record queued since the last round with one
// write, syncs once (fdatasync within preallocated space, fsync otherwise:
// see syncRound), and then wakes exactly the appends of that round by
// closing the round's channel. Otherwise it fsyncs the active segment on a
// timer.
type syncer struct {
	s      *Spool
	kick   chan struct{} // an append is waiting for a round
	stopCh chan struct{}
	done   chan struct{}
	synced atomic.Uint64 // records known to be on disk
	err    atomic.Pointer[error]
}

func startSyncer(s *Spool) {
	y := &syncer{s: s, kick: make(chan struct{}, 1), stopCh: make(chan struct{}), done: make(chan struct{})}
	y.synced.Store(s.next)
	s.syncer = y // before the goroutine, which reads it
	if s.opts.Sync.Always {
		go y.groupCommit()
	} else {
		go y.interval(s.opts.Sync.Interval)
	}
}

// wait blocks until the round of an append is done, and returns its
// outcome.
func (y *syncer) wait(round *commit) error {
	select {
	case y.kick <- struct{}{}:
	default: // a round is already asked for
	}
	<-round.done
	return round.err
}

func (y *syncer) groupCommit() {
	defer close(y.done)
	zeros := make([]byte, 64<<10)
	y.s.preallocate(zeros)
	for {
		select {
		case <-y.kick:
		case <-y.stopCh:
			y.round(zeros) // what was queued before the stop
			return
		}
		y.round(zeros)
	}
}

// round runs group-commit rounds until nothing is queued.
//
// Before it cuts each round it yields the processor once. The goroutines
// runnable at that moment are mostly requests on their way to Append: the
// appends the last round has just woken (close readies them on this
// processor), now answered and reading their connection's next request,
// and requests parsed since. Without the yield they wait on this
// processor's run queue while the syncer blocks in write and fsync, until
// the runtime moves them elsewhere, and their next appends miss the round
// being written and wait for the one after it. With it, they join this
// round: in BenchmarkAppendAlwaysReader, 64 appenders make rounds of about
// 44 events rather than 31 at 15 to 25% less CPU per append, and 8
// appenders rounds of 7.4 rather than 4 at about half the CPU per append
// (measured on 2 shared cores; CPU per round is mostly the fsync's own,
// some 100 µs here). Gosched returns at once when nothing else is
// runnable, so an idle spool adds no latency, and it never leaves a CPU
// idle: under load the round is cut once the work ready before it has run.
// Durability is untouched: each append still returns only after the
// fsync of a round that wrote its records.
//
// After each round, once its appends are woken, it extends the active
// segment's preallocated space when little is left (see preallocate): the
// next round waits for that, one round in some 1,000 to 2,000 pixel events.
func (y *syncer) round(zeros []byte) {
	for {
		runtime.Gosched()
		upto, more, round := y.s.flushPending()
		if round == nil {
			return
		}
		if round.err == nil {
			y.synced.Store(upto)
		}
		close(round.done)
		y.s.preallocate(zeros)
		if !more {
			return
		}
	}
}

func (y *syncer) interval(d time.Duration) {
	defer close(y.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			y.syncActive()
		case <-y.stopCh:
			y.syncActive()
			return
		}
	}
}

// syncActive fsyncs the active segment, under Sync.Interval. Segments
// closed since were synced when they were closed.
func (y *syncer) syncActive() {
	y.s.mu.Lock()
	f, target := y.s.active, y.s.next
	y.s.mu.Unlock()
	if f == nil || y.synced.Load() == target {
		return
	}
	start := time.Now()
	err := f.Sync()
	if errors.Is(err, os.ErrClosed) {
		err = nil
	}
	y.s.m.fsync.Observe(time.Since(start).Seconds())
	if err != nil {
		y.fail(fmt.Errorf("sync: %w", err))
		return
	}
	y.synced.Store(target)
}

// fail makes a write or fsync failure sticky, in every sync mode: after
// one, the kernel may have dropped data it reported as written, so nothing
// more is accepted until a restart recovers the spool from what is really
// on disk. It returns the sticky error (the first failure's), which wraps
// ErrFailed.
func (y *syncer) fail(err error) error {
	err = fmt.Errorf("%w: %w", ErrFailed, err)
	if y.err.CompareAndSwap(nil, &err) {
		y.s.log.Error("spool: write or fsync failed; every append will fail until GoTrack restarts", "err", err)
	}
	return y.failed()
}

// failed reports the sticky failure, if any.
func (y *syncer) failed() error {
	if p := y.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (y *syncer) stop() {
	close(y.stopCh)
	<-y.done
}

// refusalLogEvery is how often, at most, the spool logs the events it
// refuses after a failure: a full disk must not log one line per request.
const refusalLogEvery = 10 * time.Second

// refusals counts the events refused after a failure and logs them at
// ERROR at most once per every.
type refusals struct {
	mu     sync.Mutex
	every  time.Duration
	last   time.Time
	events int
}

func (r *refusals) note(log *slog.Logger, n int, err error) {
	r.mu.Lock()
	r.events += n
	if now := time.Now(); r.last.IsZero() || now.Sub(r.last) >= r.every {
		log.Error("spool: refusing events until GoTrack restarts (logged at most every "+r.every.String()+")",
			"events", r.events, "err", err)
		r.last, r.events = now, 0
	}
	r.mu.Unlock()
}
