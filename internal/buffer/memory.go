package buffer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// Memory is a bounded in-memory Buffer. Producers reserve room before they
// put, so that a request can claim room in several buffers before it
// commits to any (see pipeline.Pipeline.Submit), and Put never blocks.
// Reserve, TryReserve, Release, Put and Full are safe for concurrent use;
// the Buffer methods follow Buffer's rules.
//
// Room is given back as soon as the worker reads events, so a full buffer
// holds Capacity events waiting plus the one batch the worker holds.
type Memory struct {
	ch   chan *event.Event
	size int64

	// reserved counts events put or about to be put into ch and not yet
	// read: len(ch) <= reserved <= size.
	reserved atomic.Int64

	waiters atomic.Int32
	mu      sync.Mutex
	space   chan struct{} // closed, and replaced, when the reader frees room

	// While the reader gathers a batch, it sleeps until the events queued
	// could fill it rather than waking for each one: wantEvents, when not
	// 0, is how many it waits for, wantBytes how many bytes of JSON, and
	// pendingBytes counts the bytes put since it went to sleep. The Put
	// that queues enough signals wake, which holds one signal at most.
	wantEvents   atomic.Int64
	wantBytes    atomic.Int64
	pendingBytes atomic.Int64
	wake         chan struct{}

	// The reader's side: the batch read and not yet acknowledged.
	held     []*event.Event
	heldN    atomic.Int64 // len(held), for Lag
	rewound  bool         // the next Read returns held again
	timer    *time.Timer
	maxBatch int
}

// NewMemory returns a Memory holding up to size events.
func NewMemory(size int) *Memory {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Memory{ch: make(chan *event.Event, size), size: int64(size), space: make(chan struct{}), timer: t,
		wake: make(chan struct{}, 1)}
}

// TryReserve claims room for n events if there is some now.
func (m *Memory) TryReserve(n int64) bool {
	for {
		cur := m.reserved.Load()
		if cur+n > m.size {
			return false
		}
		if m.reserved.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// Reserve claims room for n events, waiting until deadline for the reader
// to free it. A zero deadline does not wait.
func (m *Memory) Reserve(n int64, deadline time.Time) bool {
	if m.TryReserve(n) {
		return true
	}
	wait := time.Until(deadline)
	if deadline.IsZero() || wait <= 0 {
		return false
	}
	m.waiters.Add(1)
	defer m.waiters.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		m.mu.Lock()
		space := m.space
		m.mu.Unlock()
		if m.TryReserve(n) {
			return true
		}
		select {
		case <-space:
		case <-timer.C:
			return m.TryReserve(n)
		}
	}
}

// Release gives back room for n events reserved and not put, and wakes any
// waiting producers.
func (m *Memory) Release(n int) {
	m.reserved.Add(-int64(n))
	if m.waiters.Load() > 0 {
		m.mu.Lock()
		close(m.space)
		m.space = make(chan struct{})
		m.mu.Unlock()
	}
}

// Put adds an event for which room was reserved. It never blocks. It
// wakes the reader only when the reader waits for the batch it gathers to
// fill, and the events queued now could fill it.
func (m *Memory) Put(e *event.Event) {
	m.ch <- e
	if n := m.wantEvents.Load(); n > 0 {
		if int64(len(m.ch)) >= n || m.pendingBytes.Add(int64(e.Size())) >= m.wantBytes.Load() {
			if m.wantEvents.CompareAndSwap(n, 0) {
				select {
				case m.wake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// Waiting returns the events reserved or put and not yet read.
func (m *Memory) Waiting() int { return int(m.reserved.Load()) }

// Full reports whether no room is left.
func (m *Memory) Full() bool { return m.reserved.Load() >= m.size }

// Read implements Buffer.
func (m *Memory) Read(maxEvents, maxBytes int, wait time.Duration, stop <-chan struct{}) ([]*event.Event, error) {
	if m.rewound {
		m.rewound = false
		return m.held, nil
	}
	if m.held == nil || maxEvents > m.maxBatch {
		m.held, m.maxBatch = make([]*event.Event, 0, min(maxEvents, 1<<16)), maxEvents
	}
	batch := m.held[:0]
	defer func() {
		m.held = batch
		m.heldN.Store(int64(len(batch)))
		m.Release(len(batch))
	}()
	var e *event.Event
	select {
	case e = <-m.ch:
	default:
		select {
		case e = <-m.ch:
		case <-stop:
			select { // stopping: take what is left, without waiting
			case e = <-m.ch:
			default:
				return batch, nil
			}
		}
	}
	batch = append(batch, e)
	size := e.Size()
	m.timer.Reset(wait)
	defer m.timer.Stop()
	ended := false // wait has passed, or stopping: take what is queued, then return
	for len(batch) < maxEvents && size < maxBytes {
		select {
		case e = <-m.ch:
			batch = append(batch, e)
			size += e.Size()
			continue
		default:
		}
		if ended {
			break
		}
		// Nothing queued: sleep until what is queued could fill the
		// batch, or wait has passed, or stopping; then take what is there.
		m.pendingBytes.Store(0)
		m.wantBytes.Store(int64(maxBytes - size))
		m.wantEvents.Store(int64(maxEvents - len(batch)))
		if len(m.ch) > 0 { // put before wantEvents was set: take it now
			m.stopWaiting()
			continue
		}
		select {
		case <-m.wake:
			continue
		case <-m.timer.C:
		case <-stop:
		}
		m.stopWaiting()
		ended = true
	}
	return batch, nil
}

// stopWaiting tells producers that the reader no longer waits, and takes
// back the wake signal of a producer that saw it waiting, so that the next
// wait does not end at once.
func (m *Memory) stopWaiting() {
	if m.wantEvents.Swap(0) == 0 {
		select {
		case <-m.wake:
		default: // the producer has not sent it yet: the next wait may end early, and wait again
		}
	}
}

// Ack implements Buffer: it lets the held events go.
func (m *Memory) Ack(int) error {
	clear(m.held)
	m.held = m.held[:0]
	m.heldN.Store(0)
	m.rewound = false
	return nil
}

// Drain takes, without waiting, every event put and not yet read, frees
// their room, and forgets the batch the reader holds (Lag no longer counts
// it). It is for the pipeline's Close when the reader is stuck or gone:
// the reader must not use the buffer afterwards.
func (m *Memory) Drain() []*event.Event {
	var out []*event.Event
	for {
		select {
		case e := <-m.ch:
			out = append(out, e)
		default:
			m.heldN.Store(0)
			m.Release(len(out))
			return out
		}
	}
}

// Rewind implements Buffer.
func (m *Memory) Rewind() { m.rewound = len(m.held) > 0 }

// Lag implements Buffer: the events waiting and the batch held.
func (m *Memory) Lag() uint64 { return uint64(len(m.ch)) + uint64(m.heldN.Load()) }

// Capacity implements Buffer.
func (m *Memory) Capacity() int { return int(m.size) }

// Durable implements Buffer: memory is lost with the process.
func (m *Memory) Durable() bool { return false }

var _ Buffer = (*Memory)(nil)
