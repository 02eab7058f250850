package telemetry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/credfile"
)

// authenticator checks scrapes against a bearer token, htpasswd users, or
// both (either one suffices).
type authenticator struct {
	token    *[sha256.Size]byte // sha256 of the token, so the comparison's time says nothing of its length
	users    map[string][]byte  // user -> bcrypt hash
	dummy    []byte             // compared for unknown users, so they cost as much as known ones
	failures *prometheus.CounterVec

	// cache holds, per user, the sha256 of the last password that passed
	// bcrypt. Only a successful check writes it, so a flood of wrong
	// passwords can neither evict nor replace a good entry, and it holds at
	// most one entry per user in the file.
	mu    sync.RWMutex
	cache map[string][sha256.Size]byte

	// gate bounds the bcrypt comparisons under way and shares them fairly
	// among client addresses; see bcryptGate.
	gate *bcryptGate

	// failed remembers recent wrong attempts, so that a password sent again
	// and again is refused without another bcrypt comparison and without
	// taking a turn from anyone.
	failed *failureCache

	delay time.Duration // before a refusal other than "missing" is answered
}

// Limits of the work that wrong passwords can cause.
const (
	bcryptSlots      = 2                      // comparisons under way at once
	bcryptPerClient  = 4                      // attempts one client address may have waiting
	bcryptClients    = 64                     // client addresses that may wait at once
	bcryptWait       = 2 * time.Second        // longest wait for a turn, within the request's own deadline
	failureCacheSize = 4096                   // recent wrong attempts remembered
	failureDelay     = 500 * time.Millisecond // before answering a wrong or unchecked attempt
)

func newAuthenticator(tokenFile, htpasswdFile string, failures *prometheus.CounterVec) (*authenticator, error) {
	a := &authenticator{failures: failures, cache: map[string][sha256.Size]byte{},
		gate: newBcryptGate(bcryptSlots, bcryptPerClient, bcryptClients), failed: newFailureCache(failureCacheSize),
		delay: failureDelay}
	if tokenFile != "" {
		tok, err := credfile.ReadToken(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("METRICS_BEARER_TOKEN_FILE: %w", err)
		}
		sum := sha256.Sum256([]byte(tok))
		a.token = &sum
	}
	if htpasswdFile != "" {
		users, err := credfile.ReadHtpasswd(htpasswdFile)
		if err != nil {
			return nil, fmt.Errorf("METRICS_BASIC_AUTH_FILE: %w", err)
		}
		a.users = users
		// The dummy costs as much as the dearest real hash, so that an
		// unknown user is neither faster nor slower to refuse.
		cost := bcrypt.MinCost
		for _, h := range users {
			c, _ := bcrypt.Cost(h) // credfile.ReadHtpasswd checked every hash
			cost = max(cost, c)
		}
		a.dummy, _ = bcrypt.GenerateFromPassword([]byte("gotrack-dummy"), cost)
	}
	return a, nil
}

func (a *authenticator) enabled() bool { return a.token != nil || a.users != nil }

// wrap lets through only requests that authenticate.
func (a *authenticator) wrap(next http.Handler) http.Handler {
	if !a.enabled() {
		return next
	}
	var challenge []string
	if a.users != nil {
		challenge = append(challenge, `Basic realm="gotrack-metrics", charset="UTF-8"`)
	}
	if a.token != nil {
		challenge = append(challenge, `Bearer realm="gotrack-metrics"`)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reason := a.check(r)
		if reason == "" {
			next.ServeHTTP(w, r)
			return
		}
		a.failures.WithLabelValues(reason).Inc()
		if reason != "missing" {
			// Answer a wrong or unchecked attempt late. It holds no bcrypt
			// slot meanwhile, but each connection of a flood can then try
			// only a few times a second, which leaves the CPU to the real
			// scraper's own bcrypt check.
			t := time.NewTimer(a.delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
			}
		}
		w.Header()["WWW-Authenticate"] = challenge
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
}

// Authentication failure reasons, the reason label of
// gotrack_metrics_auth_failures_total. client_cert counts mTLS handshakes
// refused by verifyClient.
var authFailureReasons = []string{"missing", "invalid", "busy", "client_cert"}

// check returns "" for an authenticated request, else why not.
func (a *authenticator) check(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok && a.token != nil {
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1 {
			return ""
		}
		return "invalid"
	}
	user, pass, ok := r.BasicAuth()
	if !ok || a.users == nil {
		if h == "" {
			return "missing"
		}
		return "invalid"
	}
	sum := sha256.Sum256([]byte(pass))
	a.mu.RLock()
	cached, hit := a.cache[user]
	a.mu.RUnlock()
	if hit && subtle.ConstantTimeCompare(sum[:], cached[:]) == 1 {
		return ""
	}
	attempt := a.failed.key(user, pass)
	if a.failed.has(attempt) {
		return "invalid"
	}
	ctx, cancel := context.WithTimeout(r.Context(), bcryptWait)
	defer cancel()
	if !a.gate.acquire(ctx, clientKey(r.RemoteAddr)) {
		return "busy"
	}
	if a.failed.has(attempt) { // refused while this one waited its turn
		a.gate.release()
		return "invalid"
	}
	hash, known := a.users[user]
	if !known {
		hash = a.dummy
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	a.gate.release()
	if err != nil || !known {
		a.failed.add(attempt)
		return "invalid"
	}
	a.mu.Lock()
	a.cache[user] = sum
	a.mu.Unlock()
	return ""
}

// failureCache is a bounded set of recent wrong attempts, each kept as an
// HMAC of user and password under a key drawn at start: the set never holds
// a password, nor a plain hash of one that could be looked up offline. When
// full, the oldest entry goes.
type failureCache struct {
	secret [32]byte
	mu     sync.Mutex
	set    map[[sha256.Size]byte]struct{}
	ring   [][sha256.Size]byte // insertion order, for eviction
	next   int
}

func newFailureCache(size int) *failureCache {
	c := &failureCache{set: make(map[[sha256.Size]byte]struct{}, size), ring: make([][sha256.Size]byte, 0, size)}
	rand.Read(c.secret[:])
	return c
}

func (c *failureCache) key(user, pass string) [sha256.Size]byte {
	m := hmac.New(sha256.New, c.secret[:])
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

func (c *failureCache) has(k [sha256.Size]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.set[k]
	return ok
}

func (c *failureCache) add(k [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.set[k]; ok {
		return
	}
	if len(c.ring) < cap(c.ring) {
		c.ring = append(c.ring, k)
	} else {
		delete(c.set, c.ring[c.next])
		c.ring[c.next] = k
		c.next = (c.next + 1) % len(c.ring)
	}
	c.set[k] = struct{}{}
}
