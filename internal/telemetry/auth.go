package telemetry

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"

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

	// bcryptSlots bounds the bcrypt comparisons under way. When they are all
	// taken (a password-guessing flood), further uncached attempts are
	// refused at once rather than queued, so cached scrapes never wait.
	bcryptSlots chan struct{}
}

func newAuthenticator(tokenFile, htpasswdFile string, failures *prometheus.CounterVec) (*authenticator, error) {
	a := &authenticator{failures: failures, cache: map[string][sha256.Size]byte{}, bcryptSlots: make(chan struct{}, 2)}
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
		a.dummy, _ = bcrypt.GenerateFromPassword([]byte("gotrack-dummy"), bcrypt.DefaultCost)
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
		w.Header()["WWW-Authenticate"] = challenge
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
}

// Authentication failure reasons, the reason label of
// gotrack_metrics_auth_failures_total.
var authFailureReasons = []string{"missing", "invalid", "busy"}

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
	select {
	case a.bcryptSlots <- struct{}{}:
	default:
		return "busy"
	}
	hash, known := a.users[user]
	if !known {
		hash = a.dummy
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	<-a.bcryptSlots
	if err != nil || !known {
		return "invalid"
	}
	a.mu.Lock()
	a.cache[user] = sum
	a.mu.Unlock()
	return ""
}
