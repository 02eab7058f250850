package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/testkit"
)

// TestGateTakesClientsInTurn: a client with every slot and a full queue
// cannot keep a second client waiting for more than one released slot, and
// attempts beyond a client's queue are refused at once.
func TestGateTakesClientsInTurn(t *testing.T) {
	g := newBcryptGate(2, 4, 8)
	bg := context.Background()
	for range 2 {
		if !g.acquire(bg, "flood") {
			t.Fatal("a free slot was refused")
		}
	}
	got := make(chan string, 8)
	queued := func(n int) {
		t.Helper()
		testkit.Eventually(t, "waiters to queue", func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			total := 0
			for _, q := range g.waiting {
				total += len(q)
			}
			return total == n
		})
	}
	for i := range 4 {
		go func() {
			if g.acquire(bg, "flood") {
				got <- "flood"
			}
		}()
		queued(i + 1)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if g.acquire(ctx, "flood") || ctx.Err() != nil {
		t.Error("a fifth waiting attempt of one client was queued, not refused at once")
	}
	go func() {
		if g.acquire(bg, "scraper") {
			got <- "scraper"
		}
	}()
	queued(5)

	g.release()
	if who := <-got; who != "flood" {
		t.Fatalf("first slot went to %s, want the flood, which queued first", who)
	}
	g.release()
	if who := <-got; who != "scraper" {
		t.Fatalf("second slot went to %s, want the scraper: clients take turns", who)
	}
}

// TestGateGivesUpWithTheContext: a waiter whose context ends leaves the
// queue, and a slot handed over as it gives up is passed on, not lost.
func TestGateGivesUpWithTheContext(t *testing.T) {
	g := newBcryptGate(1, 4, 8)
	if !g.acquire(context.Background(), "a") {
		t.Fatal("a free slot was refused")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if g.acquire(ctx, "b") {
		t.Fatal("a waiter whose context ended got a slot")
	}
	if len(g.waiting) != 0 || len(g.turn) != 0 {
		t.Fatalf("the waiter that gave up is still queued: %v %v", g.waiting, g.turn)
	}
	g.release()
	if !g.acquire(context.Background(), "c") {
		t.Fatal("the released slot was lost")
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:443":               "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:9090": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1":    "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:80":       "192.0.2.7",
		"@":                           "@",
	} {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRefusalIsAnsweredLate: a wrong password is answered only after the
// delay, or when the client gives up, so each connection of a flood gets
// few tries a second; missing credentials are answered at once.
func TestRefusalIsAnsweredLate(t *testing.T) {
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f", Help: "f"}, []string{"reason"})
	a, err := newAuthenticator("", htpasswd(t, t.TempDir(), "prom", "pw"), failures)
	if err != nil {
		t.Fatal(err)
	}
	a.delay = time.Hour
	a.failed.add(a.failed.key("prom", "wrong")) // refused at once, without bcrypt's own time
	h := a.wrap(http.NotFoundHandler())

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 401 {
		t.Fatalf("no credentials: %d", w.Code)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest("GET", "/metrics", nil).WithContext(ctx)
	req.SetBasicAuth("prom", "wrong")
	w = httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h.ServeHTTP(w, req); close(done) }()
	select {
	case <-done:
		t.Fatal("a wrong password was answered before the delay")
	case <-time.After(300 * time.Millisecond): // a wrong answer could come only sooner
	}
	cancel()
	<-done
	if w.Code != 401 {
		t.Errorf("wrong password: %d, want 401", w.Code)
	}
}

// TestGateLosesNoSlot: many clients acquiring, giving up and releasing at
// once leave every slot free and no one queued.
func TestGateLosesNoSlot(t *testing.T) {
	g := newBcryptGate(2, 4, 8)
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Go(func() {
			for n := range 50 {
				// Some give up at once, some while a slot is being handed
				// to them, some never.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n%4)*20*time.Microsecond)
				if n%4 == 3 {
					// Waits as long as a lost slot takes to show.
					ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
				}
				if g.acquire(ctx, fmt.Sprint("client-", w%10)) {
					runtime.Gosched()
					g.release()
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if g.free != 2 || len(g.waiting) != 0 || len(g.turn) != 0 {
		t.Errorf("after the storm: %d free, %d clients waiting, turn %v; want 2, 0, none", g.free, len(g.waiting), g.turn)
	}
}
