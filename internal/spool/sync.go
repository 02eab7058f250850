package spool

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// syncer makes appends durable. Under Sync.Always it runs group-commit
// rounds: each writes every record queued since the last round with one
// write, fsyncs once, and then wakes exactly the appends of that round by
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

func startSyncer(s *Spool) *syncer {
	y := &syncer{s: s, kick: make(chan struct{}, 1), stopCh: make(chan struct{}), done: make(chan struct{})}
	y.synced.Store(s.next)
	if s.opts.Sync.Always {
		go y.groupCommit()
	} else {
		go y.interval(s.opts.Sync.Interval)
	}
	return y
}

// wait blocks until the round of an append is done.
func (y *syncer) wait(round <-chan struct{}) error {
	select {
	case y.kick <- struct{}{}:
	default: // a round is already asked for
	}
	<-round
	return y.failed()
}

func (y *syncer) groupCommit() {
	defer close(y.done)
	for {
		select {
		case <-y.kick:
		case <-y.stopCh:
			y.round() // what was queued before the stop
			return
		}
		y.round()
	}
}

// round runs group-commit rounds until nothing is queued.
func (y *syncer) round() {
	for {
		upto, more, round, err := y.s.flushPending()
		if err != nil {
			y.fail(err) // before the round's appends wake, so that they see it
		} else {
			y.synced.Store(upto)
		}
		if round != nil {
			close(round)
		}
		if err != nil || !more {
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
		y.fail(err)
		return
	}
	y.synced.Store(target)
}

// fail makes a write or fsync failure sticky: after one, the kernel may
// have dropped data it reported as written, so nothing more is accepted
// until a restart recovers the spool from what is really on disk.
func (y *syncer) fail(err error) {
	err = fmt.Errorf("spool: write or fsync failed; refusing events until restart: %w", err)
	if y.err.CompareAndSwap(nil, &err) {
		y.s.log.Error("spool: write or fsync failed; every append will fail until GoTrack restarts", "err", err)
	}
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
