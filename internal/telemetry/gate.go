package telemetry

import (
	"context"
	"net"
	"net/netip"
	"sync"
)

// bcryptGate bounds the bcrypt comparisons under way and shares them fairly
// among clients. A comparison costs tens of milliseconds of CPU, so a flood
// of guesses could otherwise keep every slot busy and lock the real scraper
// out. Waiters queue per client address, and a freed slot goes to the next
// client in turn (round robin), not to the next waiter: a client with 32
// guesses in flight gets no more turns than a scraper with one attempt, which
// therefore waits for at most one comparison per client ahead of it.
//
// Both queues are bounded: a client may have perClient attempts waiting, and
// at most maxClients clients may wait; beyond that an attempt is refused at
// once. Waiting ends with the context.
type bcryptGate struct {
	mu         sync.Mutex
	free       int                        // slots not taken
	waiting    map[string][]chan struct{} // client -> its waiters, oldest first
	turn       []string                   // clients with waiters, in the order they are served
	perClient  int
	maxClients int
}

func newBcryptGate(slots, perClient, maxClients int) *bcryptGate {
	return &bcryptGate{free: slots, waiting: map[string][]chan struct{}{}, perClient: perClient, maxClients: maxClients}
}

// acquire takes a slot for client, waiting its turn until ctx ends. It
// reports whether it got one; if so, the caller must release it.
func (g *bcryptGate) acquire(ctx context.Context, client string) bool {
	g.mu.Lock()
	if g.free > 0 && len(g.turn) == 0 {
		g.free--
		g.mu.Unlock()
		return true
	}
	q, known := g.waiting[client]
	if !known && len(g.turn) >= g.maxClients || len(q) >= g.perClient {
		g.mu.Unlock()
		return false
	}
	if !known {
		g.turn = append(g.turn, client)
	}
	granted := make(chan struct{})
	g.waiting[client] = append(q, granted)
	g.mu.Unlock()

	select {
	case <-granted:
		return true
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-granted: // handed over just as ctx ended: pass it on
		g.releaseLocked()
		return false
	default:
	}
	q = g.waiting[client]
	for i, c := range q {
		if c == granted {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		g.waiting[client] = q
	} else {
		g.dropLocked(client)
	}
	return false
}

// release gives the slot to the next client in turn, or frees it.
func (g *bcryptGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *bcryptGate) releaseLocked() {
	if len(g.turn) == 0 {
		g.free++
		return
	}
	client := g.turn[0]
	q := g.waiting[client]
	close(q[0])
	g.turn = append(g.turn[:0], g.turn[1:]...)
	if q = q[1:]; len(q) > 0 {
		g.waiting[client] = q
		g.turn = append(g.turn, client) // to the back of the line
	} else {
		delete(g.waiting, client)
	}
}

func (g *bcryptGate) dropLocked(client string) {
	delete(g.waiting, client)
	for i, c := range g.turn {
		if c == client {
			g.turn = append(g.turn[:i], g.turn[i+1:]...)
			return
		}
	}
}

// clientKey names the client that sent a request for fair sharing: its IP
// address, or its /64 for IPv6, since one host commonly holds a whole /64.
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if a = a.Unmap(); a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
