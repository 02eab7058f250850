package ingest

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// sweepTick is how often a sweeper enforces the deadlines it holds: the
// ingest listener's timeouts fire up to this much late.
const sweepTick = 250 * time.Millisecond

// nearDeadline: a deadline closer than this to the sweeper's clock, or past
// (net/http's "abort the read now", writeError's "stop reading the body"),
// is set on the connection itself, to fire on time. net/http's own are
// seconds away.
const nearDeadline = time.Second

// sweeper holds the read and write deadlines of the ingest listener's
// connections and enforces them every tick. net/http sets them three to
// five times per request (ReadHeaderTimeout, ReadTimeout, WriteTimeout,
// IdleTimeout), and each set on a TCP connection re-arms a runtime timer,
// reading the clock and taking the timer heap's locks: a measured 4% of the
// pixel's CPU. Here a set is a store under the connection's own lock; a
// deadline that passes is then set, in the past, on the connection, which
// fails its pending and later reads or writes with os.ErrDeadlineExceeded,
// as the runtime's timer would have.
//
// Its clock is the monotonic one, as the runtime's timers: a deadline is
// held as the nanoseconds from the sweeper's start to it, read off the
// monotonic reading that time.Now, and so net/http's deadlines, carry. A
// step of the wall clock (NTP stepping it, a VM resumed, date -s) then
// fires no deadline early and delays none, where comparing wall readings
// would fire every deadline held at a step forward and none for as long
// as a step back.
type sweeper struct {
	tick  time.Duration
	near  time.Duration // nearDeadline, but in tests
	epoch time.Time     // when it started, with its monotonic reading
	now   atomic.Int64  // the last tick, on the sweeper's clock (see reading)

	mu      sync.Mutex
	conns   map[*coarseConn]struct{}
	running bool // run is sweeping
	stop    chan struct{}
}

// newSweeper starts a sweeper. close(s.stop) stops it once the
// connections it holds are closed: a server's Shutdown closes its listener
// first, and its requests in flight keep their timeouts.
func newSweeper(tick, near time.Duration) *sweeper {
	s := &sweeper{tick: tick, near: near, epoch: time.Now(), conns: map[*coarseConn]struct{}{}, stop: make(chan struct{}), running: true}
	s.now.Store(s.reading(time.Now()))
	go s.run()
	return s
}

// reading returns t on the sweeper's clock: nanoseconds since its epoch,
// by the monotonic readings when t has one (by the wall clock when it has
// none, as a time built with time.Unix), and at least 1, as 0 is no
// deadline. A time past the Duration range reads as its end.
func (s *sweeper) reading(t time.Time) int64 { return max(int64(t.Sub(s.epoch)), 1) }

func (s *sweeper) run() {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	for {
		<-t.C
		if !s.sweep(s.reading(time.Now())) {
			return
		}
	}
}

// sweep fails the reads and writes whose deadline is at or before now. It
// reports false, the sweeper no longer running, when it is stopped and
// holds no connection.
func (s *sweeper) sweep(now int64) bool {
	s.now.Store(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.expire(now)
	}
	select {
	case <-s.stop:
		if len(s.conns) == 0 {
			s.running = false
			return false
		}
	default:
	}
	return true
}

// wrap returns c with its deadlines held by s, until it is closed.
func (s *sweeper) wrap(c net.Conn) *coarseConn { return s.hold(&coarseConn{Conn: c, s: s}) }

// hold holds cc's deadlines, until it is closed, and returns it.
func (s *sweeper) hold(cc *coarseConn) *coarseConn {
	s.mu.Lock()
	s.conns[cc] = struct{}{}
	if !s.running { // stopped with nothing to hold, and given more
		s.running = true
		go s.run()
	}
	s.mu.Unlock()
	return cc
}

// sweepListener hands out its connections with their deadlines held by a
// sweeper, which it stops when closed: LimitListener's without a limit.
type sweepListener struct {
	net.Listener
	s        *sweeper
	stopOnce sync.Once
}

func (l *sweepListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.wrap(c), nil
}

func (l *sweepListener) Close() error {
	err := l.Listener.Close()
	l.stopOnce.Do(func() { close(l.s.stop) })
	return err
}

// coarseConn is a connection whose deadlines a sweeper holds. Under
// LimitListener, it also holds one of the listener's slots, and is marked
// idle between requests.
type coarseConn struct {
	net.Conn
	s         *sweeper
	slots     chan struct{} // the limit's, one of which it holds; nil for none
	idle      atomic.Bool   // between requests, as the http.Server's ConnState says
	closeOnce sync.Once

	mu          sync.Mutex
	read, write deadline
}

// deadline is one direction's deadline.
type deadline struct {
	at  int64 // on the sweeper's clock (see reading); 0 for none
	set bool  // set on the connection itself: near, or passed
}

func (c *coarseConn) SetReadDeadline(t time.Time) error { return c.setDeadline(t, true, false) }

func (c *coarseConn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, false, true) }

func (c *coarseConn) SetDeadline(t time.Time) error { return c.setDeadline(t, true, true) }

func (c *coarseConn) setDeadline(t time.Time, read, write bool) error {
	at, near := int64(0), false
	if !t.IsZero() {
		at = c.s.reading(t)
		near = at < c.s.now.Load()+int64(c.s.near)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if read {
		err = c.update(&c.read, at, near, t, false)
	}
	if write {
		if werr := c.update(&c.write, at, near, t, true); err == nil {
			err = werr
		}
	}
	return err
}

// update sets d, the write deadline or the read one, to at; a near
// deadline goes on the connection, and one set there before is cleared.
// c.mu is held.
func (c *coarseConn) update(d *deadline, at int64, near bool, t time.Time, write bool) error {
	d.at = at
	if !near {
		if !d.set {
			return nil
		}
		t = time.Time{}
	}
	d.set = near
	if write {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetReadDeadline(t)
}

// aLongTimeAgo is a deadline passed on every clock.
var aLongTimeAgo = time.Unix(1, 0)

// expire sets each deadline at or before now on the connection, in the
// past: its pending and later reads or writes fail. (Not at its own time:
// that, without the monotonic reading, the runtime would read on the wall
// clock.)
func (c *coarseConn) expire(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := &c.read; d.at != 0 && d.at <= now && !d.set {
		d.set = true
		c.Conn.SetReadDeadline(aLongTimeAgo)
	}
	if d := &c.write; d.at != 0 && d.at <= now && !d.set {
		d.set = true
		c.Conn.SetWriteDeadline(aLongTimeAgo)
	}
}

// Close closes the connection; the first time, it leaves the sweeper and
// gives its slot back, before any Close returns.
func (c *coarseConn) Close() error {
	var err error
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		err = c.Conn.Close()
		if c.slots != nil {
			<-c.slots
		}
	})
	if !first {
		return c.Conn.Close()
	}
	return err
}

// CloseWrite lets net/http half-close the connection before it closes it
// whole, as it does with a bare TCP connection, so that a client still
// sending a body it will not read gets the answer rather than a reset.
// net/http looks for the method on the connection it is given, which
// embedding net.Conn does not provide.
func (c *coarseConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
