package source

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SignatureHeader carries a signed request's signature:
// t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>, the
// scheme of Stripe's webhooks. Several v1 values may be sent (while a
// secret is being rotated); one that matches is enough.
const SignatureHeader = "X-Gotrack-Signature"

// DefaultSignatureTolerance is SIGNATURE_TOLERANCE's default.
const DefaultSignatureTolerance = 5 * time.Minute

// ReplayCacheSize bounds the signatures remembered to refuse replays: at
// most this many, in two generations of half as many each, about 80 bytes
// apiece (some 20 MiB in all). A signature is remembered for at least
// twice SIGNATURE_TOLERANCE, longer than its timestamp stays acceptable.
// When the current generation is full of signatures still inside their
// window, new signed requests are refused with 503 (ErrReplayCacheFull)
// rather than let a replay through.
const ReplayCacheSize = 1 << 18

// maxSignatureHeader bounds the header's length, and maxV1 the v1 values
// it may hold.
const (
	maxSignatureHeader = 1024
	maxV1              = 4
)

// Signature failure reasons, for gotrack_auth_failures_total.
const (
	ReasonSignatureMissing   = "signature_missing"
	ReasonSignatureMalformed = "signature_malformed"
	ReasonSignatureStale     = "signature_stale"
	ReasonSignatureBad       = "signature_bad"
	ReasonSignatureReplayed  = "signature_replayed"
)

// ErrReplayCacheFull refuses a signed request, for now, because the replay
// cache has no room: /collect answers 503 with Retry-After. The error
// returned is a *ReplayCacheFullError, which errors.Is matches with it.
var ErrReplayCacheFull = errors.New("too many signed requests in the replay window; retry later")

// ReplayCacheFullError is ErrReplayCacheFull with the time until the
// replay cache turns over and has room again.
type ReplayCacheFullError struct {
	Wait time.Duration
}

func (e *ReplayCacheFullError) Error() string { return ErrReplayCacheFull.Error() }

// Is makes errors.Is(err, ErrReplayCacheFull) true.
func (e *ReplayCacheFullError) Is(target error) bool { return target == ErrReplayCacheFull }

// RetryAfter is Wait in whole seconds, rounded up, at least 1: room comes
// back only when the current generation turns over, not a second later.
func (e *ReplayCacheFullError) RetryAfter() int {
	return max(1, int((e.Wait+time.Second-1)/time.Second))
}

// Signed is a signed request whose signature header has been checked,
// while its body is read. Write the raw body, as received, before any
// decompression, then call Verify once.
type Signed struct {
	a   *Auth
	src *Source
	t   int64
	v1  [][sha256.Size]byte
	mac hash.Hash

	sum        [sha256.Size]byte // the MAC, once verified
	remembered bool              // sum is in the replay memory
}

// Write adds raw body bytes to the MAC; it never fails.
func (s *Signed) Write(p []byte) (int, error) { return s.mac.Write(p) }

// BeginSignature checks r's signature header for src, which has a secret:
// present, well formed, and its timestamp within SIGNATURE_TOLERANCE of
// now, either way. It returns the *Signed to feed the body to, or a
// *Failure, which it counts.
func (a *Auth) BeginSignature(r *http.Request, src *Source) (*Signed, error) {
	h := first(r.Header[SignatureHeader])
	if h == "" {
		return nil, a.fail(src.ID, ReasonSignatureMissing, "the source requires signed requests: the "+SignatureHeader+" header is missing")
	}
	t, v1, ok := parseSignature(h)
	if !ok {
		return nil, a.fail(src.ID, ReasonSignatureMalformed, "the "+SignatureHeader+" header is malformed; want t=<unix seconds>,v1=<64 hex digits>")
	}
	now := a.now().Unix()
	if d := now - t; d > int64(a.tolerance/time.Second) || -d > int64(a.tolerance/time.Second) {
		return nil, a.fail(src.ID, ReasonSignatureStale, "the signature's timestamp is stale: more than SIGNATURE_TOLERANCE away from the server's clock")
	}
	mac := hmac.New(sha256.New, src.Secret)
	mac.Write(strconv.AppendInt(nil, t, 10))
	mac.Write([]byte{'.'})
	return &Signed{a: a, src: src, t: t, v1: v1, mac: mac}, nil
}

// Verify checks the MAC of what was written against the header's v1
// values, in constant time, then refuses a signature already seen. It
// returns nil, a *Failure (counted), or ErrReplayCacheFull.
func (s *Signed) Verify() error {
	var sum [sha256.Size]byte
	s.mac.Sum(sum[:0])
	match := false
	for _, v := range s.v1 {
		if hmac.Equal(sum[:], v[:]) {
			match = true
		}
	}
	if !match {
		return s.a.fail(s.src.ID, ReasonSignatureBad, "the signature is bad: it does not match the body")
	}
	seen, err := s.a.replays.add(sum, s.a.now())
	if err != nil {
		return err
	}
	if seen {
		return s.a.fail(s.src.ID, ReasonSignatureReplayed, "the signature was already used: a replay")
	}
	s.sum, s.remembered = sum, true
	return nil
}

// Forget removes the signature Verify remembered, when the request it
// signed was not accepted after all (a 400 or a 503), so that the client's
// retry of it is not taken for a replay. It does nothing on a nil *Signed,
// or one that Verify did not pass.
func (s *Signed) Forget() {
	if s == nil || !s.remembered {
		return
	}
	s.a.replays.forget(s.sum)
	s.remembered = false
}

// parseSignature parses t=<unix>,v1=<hex>[,v1=<hex>...]; other schemes
// (v0=...) are ignored.
func parseSignature(h string) (t int64, v1 [][sha256.Size]byte, ok bool) {
	if len(h) > maxSignatureHeader {
		return 0, nil, false
	}
	haveT := false
	for part := range strings.SplitSeq(h, ",") {
		k, v, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return 0, nil, false
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || haveT || n <= 0 {
				return 0, nil, false
			}
			t, haveT = n, true
		case "v1":
			var d [sha256.Size]byte
			if len(v) != 2*sha256.Size || len(v1) == maxV1 {
				return 0, nil, false
			}
			if _, err := hex.Decode(d[:], []byte(v)); err != nil {
				return 0, nil, false
			}
			v1 = append(v1, d)
		}
	}
	return t, v1, haveT && len(v1) > 0
}

// replayCache remembers the signatures seen in two generations; the
// current one becomes the previous one every period, and the previous one
// is forgotten. An entry thus lives between one and two periods.
type replayCache struct {
	mu        sync.Mutex
	cur, prev map[[sha256.Size]byte]struct{}
	rotated   time.Time
	period    time.Duration
	genMax    int
}

func newReplayCache(period time.Duration, size int) *replayCache {
	return &replayCache{cur: map[[sha256.Size]byte]struct{}{}, prev: map[[sha256.Size]byte]struct{}{}, period: period, genMax: size / 2}
}

// add reports whether sig was seen already, and remembers it if not.
func (c *replayCache) add(sig [sha256.Size]byte, now time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rotated.IsZero() {
		c.rotated = now
	}
	for now.Sub(c.rotated) >= c.period {
		c.prev, c.cur = c.cur, make(map[[sha256.Size]byte]struct{}, len(c.cur))
		c.rotated = c.rotated.Add(c.period)
		if now.Sub(c.rotated) >= c.period { // idle for two periods or more
			c.prev, c.rotated = map[[sha256.Size]byte]struct{}{}, now
		}
	}
	if _, ok := c.cur[sig]; ok {
		return true, nil
	}
	if _, ok := c.prev[sig]; ok {
		return true, nil
	}
	if len(c.cur) >= c.genMax {
		return false, &ReplayCacheFullError{Wait: c.rotated.Add(c.period).Sub(now)}
	}
	c.cur[sig] = struct{}{}
	return false, nil
}

func (c *replayCache) forget(sig [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.cur, sig)
	delete(c.prev, sig)
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}
