package pipeline

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/spool"
)

// queue is one sink's bounded queue. Producers reserve room before they
// send, so a request can claim room in every queue before it commits to any
// (see Pipeline.Submit), and a send into ch never blocks.
type queue struct {
	name string
	sink sink.Sink
	ch   chan *event.Event
	size int64

	batchSize, batchBytes int

	reader *spool.Reader // in spool mode, where the worker reads; ch is then unused

	// reserved counts events sent or about to be sent into ch and not yet
	// taken by the worker: len(ch) <= reserved <= size.
	reserved atomic.Int64

	waiters atomic.Int32
	mu      sync.Mutex
	space   chan struct{} // closed, and replaced, when the worker frees room

	pingOK    atomic.Bool // the last Ping succeeded (or the sink has no Ping)
	writeOK   atomic.Bool // the last write attempt did not fail retryably
	delivered atomic.Int64
	deadLet   atomic.Int64
}

func newQueue(name string, s sink.Sink, size int) *queue {
	q := &queue{name: name, sink: s, ch: make(chan *event.Event, size), size: int64(size), space: make(chan struct{})}
	q.pingOK.Store(true)
	q.writeOK.Store(true)
	return q
}

func (q *queue) tryReserve(n int64) bool {
	for {
		cur := q.reserved.Load()
		if cur+n > q.size {
			return false
		}
		if q.reserved.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// reserve claims room for n events, waiting until deadline for the worker to
// free it. A zero deadline does not wait.
func (q *queue) reserve(n int64, deadline time.Time) bool {
	if q.tryReserve(n) {
		return true
	}
	wait := time.Until(deadline)
	if deadline.IsZero() || wait <= 0 {
		return false
	}
	q.waiters.Add(1)
	defer q.waiters.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		q.mu.Lock()
		space := q.space
		q.mu.Unlock()
		if q.tryReserve(n) {
			return true
		}
		select {
		case <-space:
		case <-timer.C:
			return q.tryReserve(n)
		}
	}
}

// release gives back room for n events and wakes any waiting producers.
func (q *queue) release(n int) {
	q.reserved.Add(-int64(n))
	if q.waiters.Load() > 0 {
		q.mu.Lock()
		close(q.space)
		q.space = make(chan struct{})
		q.mu.Unlock()
	}
}

func (q *queue) full() bool { return q.reserved.Load() >= q.size }

// depth is the events waiting for the sink: in its queue, or in the spool.
func (q *queue) depth() int {
	if q.reader != nil {
		return int(q.reader.Lag())
	}
	return len(q.ch)
}

// isUp reports the sink-up state: its destination answers and its last
// write did not fail.
func (q *queue) isUp() bool { return q.pingOK.Load() && q.writeOK.Load() }
