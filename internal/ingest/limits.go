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
	waited     prometheus.Counter // connections that waited for a busy one to close
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
			Help: "Ingest connections open now, from accept to close: at most MAX_CONNECTIONS being served, plus one accepted that waits for a slot when every one is busy.",
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
	ln = &sweepListener{Listener: ln, s: s}
	if n <= 0 {
		return ln
	}
	l := &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{}),
		conns: map[*limitConn]struct{}{}, becameIdle: make(chan struct{}, 1), m: m}
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, state http.ConnState) {
		// Twice per request: a flag on the connection, no lock. A full
		// becameIdle takes no lock either.
		if lc, ok := c.(*limitConn); ok {
			lc.idle.Store(state == http.StateIdle)
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

type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	m         *connMetrics

	mu         sync.Mutex
	conns      map[*limitConn]struct{} // open, each marked when idle between requests
	becameIdle chan struct{}           // a connection has become idle
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
			return l.track(c), nil
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
			return l.track(c), nil
		case <-l.becameIdle: // close it, and try again
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// track returns c, holding a slot, as a limitConn of l's.
func (l *limitListener) track(c net.Conn) *limitConn {
	lc := &limitConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc
}

// closeIdle closes one idle connection, if there is one, to free its slot,
// and reports whether it did. At the limit only: it looks through every
// connection.
func (l *limitListener) closeIdle() bool {
	l.mu.Lock()
	var victim *limitConn
	for c := range l.conns {
		if c.idle.CompareAndSwap(true, false) {
			victim = c
			break
		}
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	victim.Close() // gives its slot back before it returns, whoever closes it first
	l.m.idleClosed.Inc()
	return true
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	l    *limitListener
	idle atomic.Bool // between requests, as srv.ConnState says
	once sync.Once
}

// Close closes the connection and gives its slot back, once.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}

// The reason label values of gotrack_requests_shed_total.
const (
	ShedInflightBytes = "inflight_bytes" // MAX_INFLIGHT_BYTES was spent
)

// CloseWrite lets net/http half-close the connection before it closes it
// whole, as it does with a bare TCP connection, so that a client still
// sending a body it will not read gets the answer rather than a reset.
func (c *limitConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c, for a wrapper's CloseWrite: net/http looks for
// the method on the connection it is given, which embedding net.Conn does
// not provide.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
