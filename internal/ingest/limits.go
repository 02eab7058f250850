package ingest

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the memory limits, as documented for MAX_INFLIGHT_BYTES and
// MAX_CONNECTIONS.
const (
	DefaultMaxInflightBytes = 64 << 20
	DefaultMaxConnections   = 1024
)

// budget bounds the request body bytes that /collect holds in memory at
// once, after decompression, across every request. It is charged with the
// capacity of the buffers it lends, so that what it bounds is memory, not
// just content.
type budget struct {
	max  int64
	used atomic.Int64
}

// take reports whether n more bytes fit in the budget, and charges them if
// so. It never waits: a request that does not fit is shed at once.
func (b *budget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *budget) give(n int64) { b.used.Add(-n) }

// bodyBuf is a request body buffer of one size class.
type bodyBuf struct {
	b     []byte
	class int
}

// bufPools lends body buffers in a few size classes, each eight times the
// last, the largest holding MaxBodyBytes+1 (one byte more tells a body that
// is too large). A body grows by moving to the next class, and the smaller
// buffer goes back to its pool: growing leaves no garbage, so the heap stays
// near what the budget charges instead of waiting for the collector.
type bufPools struct {
	sizes []int
	pools []sync.Pool
}

func newBufPools(maxBody int64) *bufPools {
	p := &bufPools{}
	for size := int64(4 << 10); size < maxBody+1; size *= 8 {
		p.sizes = append(p.sizes, int(size))
	}
	p.sizes = append(p.sizes, int(maxBody+1))
	p.pools = make([]sync.Pool, len(p.sizes))
	return p
}

// classFor returns the smallest class that holds n bytes.
func (p *bufPools) classFor(n int64) int {
	for i, size := range p.sizes {
		if int64(size) >= n {
			return i
		}
	}
	return len(p.sizes) - 1
}

func (p *bufPools) get(class int) *bodyBuf {
	if b, ok := p.pools[class].Get().(*bodyBuf); ok {
		return b
	}
	return &bodyBuf{b: make([]byte, 0, p.sizes[class]), class: class}
}

func (p *bufPools) put(b *bodyBuf) {
	b.b = b.b[:0]
	p.pools[b.class].Put(b)
}

// LimitListener returns a listener that lets srv serve at most n
// connections from ln at once (MAX_CONNECTIONS). When a client connects at
// the limit, an idle keep-alive connection of srv's is closed to make room
// (HTTP clients reopen such a connection, as they do after IdleTimeout);
// only when every connection is busy does the new one wait, accepted, for
// one to close, and the ones after it wait in the kernel's accept backlog,
// where they cost GoTrack no memory. It sets srv.ConnState, keeping any
// hook already there. n <= 0 means no limit.
//
// Whatever n, the connections' read and write deadlines, which net/http
// sets for srv's timeouts, are enforced by a sweeper every quarter second
// (see sweeper) rather than by a runtime timer re-armed at each set.
//
// The connection metrics (see newConnMetrics) are registered on reg; the
// only error is theirs, and then ln is left as it was.
func LimitListener(ln net.Listener, n int, srv *http.Server, reg prometheus.Registerer) (net.Listener, error) {
	s := newSweeper(sweepTick, nearDeadline)
	m, err := newConnMetrics(reg, n, s)
	if err != nil {
		close(s.stop) // it holds no connection: it stops at its next tick
		return nil, err
	}
	return limitListenerSweeping(ln, n, srv, s, m), nil
}

// connMetrics count what the connection limit does. The open connections
// are the sweeper's, read at each scrape: counting them costs Accept and
// Close nothing more.
type connMetrics struct {
	idleClosed prometheus.Counter // idle keep-alive connections closed to make room
	waited     prometheus.Counter // connections that waited for a busy one to finish
}

// newConnMetrics registers on reg the metrics of a listener that serves
// at most n connections (none when n <= 0) and whose connections s holds.
// Without a limit, gotrack_http_connections_limit is absent and the
// counters stay 0.
func newConnMetrics(reg prometheus.Registerer, n int, s *sweeper) (*connMetrics, error) {
	m := &connMetrics{
		idleClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotrack_http_connections_idle_closed_total",
			Help: "Idle keep-alive ingest connections closed to make room for a new one at MAX_CONNECTIONS.",
		}),
		waited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotrack_http_connections_waited_total",
			Help: "Ingest connections accepted at MAX_CONNECTIONS with every connection busy, none idle to close, so that they waited for one to finish (and the clients after them in the kernel's accept backlog); once per connection.",
		}),
	}
	cs := []prometheus.Collector{m.idleClosed, m.waited,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gotrack_http_connections",
			Help: "Ingest connections open now, busy or idle between keep-alive requests: at most MAX_CONNECTIONS.",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.conns))
		})}
	if n > 0 {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gotrack_http_connections_limit",
			Help: "MAX_CONNECTIONS: the most ingest connections served at once.",
		}, func() float64 { return float64(n) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ingest: connection metrics: %w", err)
		}
	}
	return m, nil
}

// limitListenerSweeping is LimitListener with the sweeper s, counting in m.
func limitListenerSweeping(ln net.Listener, n int, srv *http.Server, s *sweeper, m *connMetrics) net.Listener {
	if n <= 0 {
		return &sweepListener{Listener: ln, s: s}
	}
	l := &limitListener{Listener: ln, s: s, slots: make(chan struct{}, n), done: make(chan struct{}),
		becameIdle: make(chan struct{}, 1), m: m}
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		// Twice per request: a flag on the connection, no lock. A full
		// becameIdle takes no lock either.
		if cc, ok := c.(*coarseConn); ok {
			cc.idle.Store(state == http.StateIdle)
		}
		if state == http.StateIdle {
			select {
			case l.becameIdle <- struct{}{}:
			default:
			}
		}
		if next != nil {
			next(c, state)
		}
	}
	return l
}

// limitListener hands out at most cap(slots) connections at once, their
// deadlines held by a sweeper, which it stops when closed. The sweeper's
// set of connections is also the set it looks through for an idle one:
// one wrapper and one lock per connection do for both.
type limitListener struct {
	net.Listener
	s          *sweeper
	slots      chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
	becameIdle chan struct{} // a connection has become idle
	m          *connMetrics
}

// Accept takes the next connection from the kernel first, so that it
// closes an idle connection only for a client that is really waiting.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	waited := false
	for {
		select {
		case l.slots <- struct{}{}:
			return l.s.hold(&coarseConn{Conn: c, s: l.s, slots: l.slots}), nil
		default:
		}
		if l.closeIdle() {
			continue // its slot is free now
		}
		// Every connection is busy. becameIdle may fire for one that
		// became idle long ago and is gone: the wait goes on, counted once.
		if !waited {
			waited = true
			l.m.waited.Inc()
		}
		select {
		case l.slots <- struct{}{}:
			return l.s.hold(&coarseConn{Conn: c, s: l.s, slots: l.slots}), nil
		case <-l.becameIdle: // close it, and try again
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// closeIdle closes one idle connection, if there is one, to free its slot,
// and reports whether it did. At the limit only: it looks through every
// connection.
func (l *limitListener) closeIdle() bool {
	l.s.mu.Lock()
	var victim *coarseConn
	for c := range l.s.conns {
		if c.idle.CompareAndSwap(true, false) {
			victim = c
			break
		}
	}
	l.s.mu.Unlock()
	if victim == nil {
		return false
	}
	victim.Close() // gives its slot back before it returns, whoever closes it first
	l.m.idleClosed.Inc()
	return true
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() {
		close(l.done)
		close(l.s.stop)
	})
	return err
}

// The reason label values of gotrack_requests_shed_total.
const (
	ShedInflightBytes = "inflight_bytes" // MAX_INFLIGHT_BYTES was spent
)
