package source

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/ratelimit"
)

// Mode is AUTH_MODE.
type Mode string

// The authentication modes.
const (
	ModeOpen Mode = "open" // anyone may write; events are from source anonymous
	ModeKey  Mode = "key"  // every request names a write key of SOURCES_FILE
)

// ParseMode parses AUTH_MODE.
func ParseMode(v string) (Mode, error) {
	switch m := Mode(v); m {
	case ModeOpen, ModeKey:
		return m, nil
	}
	return "", errors.New("is not open or key; want open or key")
}

// Reasons, the reason label of gotrack_auth_failures_total.
const (
	ReasonMissingKey = "missing_key" // the request named no write key
	ReasonUnknownKey = "unknown_key" // the key is not in SOURCES_FILE
	ReasonOrigin     = "origin"      // a browser request from an origin the source does not list
)

var reasons = []string{ReasonMissingKey, ReasonUnknownKey, ReasonOrigin,
	ReasonSignatureMissing, ReasonSignatureMalformed, ReasonSignatureStale, ReasonSignatureBad, ReasonSignatureReplayed}

// Failure is a request that is refused for who sent it: /collect answers
// 401 with Msg, the pixel counts a drop.
type Failure struct {
	Reason string // one of the Reason constants
	Msg    string // shown to the client; never holds a key
}

func (f *Failure) Error() string { return f.Msg }

// Auth authenticates requests against the current set of sources. It is
// safe for concurrent use; Reload swaps the set atomically.
type Auth struct {
	mode      Mode
	path      string
	log       *slog.Logger
	tolerance time.Duration
	now       func() time.Time
	replays   *replayCache
	limits    *ratelimit.Sources
	set       atomic.Pointer[Set]
	anon      *Source

	failures *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	reloadMu sync.Mutex
}

// Options configure an Auth.
type Options struct {
	Mode Mode
	Path string // SOURCES_FILE
	// Set is the sources already loaded from Path under ModeKey (config
	// loads them, to report their problems with every other one).
	Set *Set
	// SignatureTolerance bounds the clock skew of a signed request, either
	// way; zero means DefaultSignatureTolerance.
	SignatureTolerance time.Duration
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
}

// New returns the authenticator. The metrics are registered on reg.
func New(opts Options, reg prometheus.Registerer, log *slog.Logger) (*Auth, error) {
	mode, set := opts.Mode, opts.Set
	if mode == ModeKey && set == nil {
		return nil, errors.New("sources: AUTH_MODE=key needs the sources of SOURCES_FILE")
	}
	if opts.SignatureTolerance <= 0 {
		opts.SignatureTolerance = DefaultSignatureTolerance
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Auth{mode: mode, path: opts.Path, log: log, anon: &Source{ID: Anonymous},
		tolerance: opts.SignatureTolerance, now: opts.Now,
		replays: newReplayCache(2*opts.SignatureTolerance, ReplayCacheSize),
		limits:  ratelimit.NewSources(opts.Now)}
	a.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_auth_failures_total",
		Help: "Requests refused (401 on /collect, a drop on the pixel) for their write key, origin or signature, by source (an id of SOURCES_FILE, or unknown) and reason (missing_key, unknown_key, origin, signature_missing, signature_malformed, signature_stale, signature_bad, signature_replayed).",
	}, []string{"source", "reason"})
	a.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_sources_reloads_total",
		Help: "Reloads of SOURCES_FILE on SIGHUP, by result (success, failure); a failure keeps the previous sources.",
	}, []string{"result"})
	for _, c := range []prometheus.Collector{a.failures, a.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	a.reloads.WithLabelValues("success")
	a.reloads.WithLabelValues("failure")
	if set != nil {
		a.use(set)
	}
	return a, nil
}

// Mode returns the authentication mode.
func (a *Auth) Mode() Mode { return a.mode }

// Sources returns the current set of sources; nil under ModeOpen.
func (a *Auth) Sources() *Set { return a.set.Load() }

func (a *Auth) use(set *Set) {
	for _, id := range append(set.IDs(), Unknown) {
		for _, r := range reasons {
			a.failures.WithLabelValues(id, r)
		}
	}
	buckets := map[string]ratelimit.Bucket{}
	for _, src := range set.sources {
		if src.Rate > 0 {
			buckets[src.ID] = ratelimit.Bucket{Rate: src.Rate, Burst: src.Burst}
		}
	}
	a.limits.Set(buckets)
	a.set.Store(set)
}

// Allow takes a token of src's bucket (its rate and burst in
// SOURCES_FILE), or returns a *ratelimit.Exceeded. A source without a rate,
// and the anonymous source, are not limited.
func (a *Auth) Allow(src *Source) error {
	if src.Rate == 0 {
		return nil
	}
	if ok, wait := a.limits.Allow(src.ID); !ok {
		return &ratelimit.Exceeded{Limit: ratelimit.LimitSource, Wait: wait}
	}
	return nil
}

// Reload reads SOURCES_FILE again and, if it is valid, makes it the current
// set at once for every request that starts after. If it is not, the
// previous set stays, the problem is logged and counted, and returned.
// Under ModeOpen there is nothing to reload.
func (a *Auth) Reload() error {
	if a.mode != ModeKey {
		return nil
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	set, err := LoadFile(a.path)
	if err != nil {
		a.reloads.WithLabelValues("failure").Inc()
		a.log.Error("sources reload failed; the previous sources stay", "path", a.path, "err", err)
		return err
	}
	a.use(set)
	a.reloads.WithLabelValues("success").Inc()
	a.log.Info("sources reloaded", "path", a.path, "sources", set.Len())
	return nil
}

// Check returns the source r writes for, or a *Failure, which it counts.
// pixel says r is a pixel, whose k= parameter may carry the key. A key in a header
// (HTTP Basic user with an empty password, or X-Write-Key) counts as it is,
// but a browser request (one with an Origin header) must come from one of
// the source's origins when it lists any. A pixel key is public by nature:
// it counts only when the request's Origin, or else its Referer, is one of
// the source's origins.
//
// A source with a signing secret cannot write through the pixel, which has
// no body to sign: its pixels fail with ReasonSignatureMissing. Its
// /collect requests are checked further with BeginSignature.
func (a *Auth) Check(r *http.Request, pixel bool) (*Source, error) {
	if a.mode != ModeKey {
		return a.anon, nil
	}
	set := a.set.Load()
	key, fromHeader := headerKey(r)
	if key == "" && pixel {
		key = PixelKey(r.URL.RawQuery)
	}
	if key == "" {
		return nil, a.fail(Unknown, ReasonMissingKey, "a write key is required (HTTP Basic user, X-Write-Key header, or the pixel's k parameter)")
	}
	src := set.Lookup(key)
	if src == nil {
		return nil, a.fail(Unknown, ReasonUnknownKey, "the write key is not known")
	}
	origin := first(r.Header["Origin"])
	switch {
	case !fromHeader:
		ok := src.AllowsOrigin(origin)
		if origin == "" {
			ok = src.allowsReferer(first(r.Header["Referer"]))
		}
		if !ok {
			return nil, a.fail(src.ID, ReasonOrigin, "a pixel key counts only from one of its source's origins (Origin or Referer)")
		}
	case origin != "" && len(src.Origins) > 0 && !src.AllowsOrigin(origin):
		return nil, a.fail(src.ID, ReasonOrigin, "the origin is not one of the write key's source's origins")
	}
	if pixel && src.Secret != nil {
		return nil, a.fail(src.ID, ReasonSignatureMissing, "the source requires signed requests, which the pixel cannot send; use /collect")
	}
	return src, nil
}

// CheckKey is Check for an API that carried key where it could (the
// Segment API: HTTP Basic, or the body's writeKey), with the rules of a
// header key. A source with a signing secret is refused, as that API has
// no signatures.
func (a *Auth) CheckKey(r *http.Request, key string) (*Source, error) {
	if a.mode != ModeKey {
		return a.anon, nil
	}
	if key == "" {
		return nil, a.fail(Unknown, ReasonMissingKey, "a write key is required (HTTP Basic user, or writeKey in the body)")
	}
	src := a.set.Load().Lookup(key)
	if src == nil {
		return nil, a.fail(Unknown, ReasonUnknownKey, "the write key is not known")
	}
	if origin := first(r.Header["Origin"]); origin != "" && len(src.Origins) > 0 && !src.AllowsOrigin(origin) {
		return nil, a.fail(src.ID, ReasonOrigin, "the origin is not one of the write key's source's origins")
	}
	if src.Secret != nil {
		return nil, a.fail(src.ID, ReasonSignatureMissing, "the source requires signed requests, which the Segment API cannot send; use /collect")
	}
	return src, nil
}

func (a *Auth) fail(id, reason, msg string) *Failure {
	a.failures.WithLabelValues(id, reason).Inc()
	return &Failure{Reason: reason, Msg: msg}
}

// headerKey returns the key of the Authorization (Basic, key as user name,
// empty password) or X-Write-Key header, and whether there was one.
func headerKey(r *http.Request) (string, bool) {
	if k := first(r.Header["X-Write-Key"]); k != "" {
		return k, true
	}
	h := first(r.Header["Authorization"])
	const prefix = "Basic "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(h[len(prefix):])
	if err != nil {
		return "", false
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok || pass != "" || user == "" {
		return "", false
	}
	return user, true
}

// allowsReferer reports whether ref is a URL under one of the source's
// origins: the origin, then the end or one of / ? #. It compares the text
// as it is, without parsing the URL, as browsers send origins lower-case.
func (s *Source) allowsReferer(ref string) bool {
	for _, o := range s.Origins {
		if rest, ok := strings.CutPrefix(ref, o); ok && (rest == "" || rest[0] == '/' || rest[0] == '?' || rest[0] == '#') {
			return true
		}
	}
	return false
}

// PixelKey returns the k parameter of a pixel's raw query, unescaped, or
// "" when there is none or it cannot be unescaped. It does not parse the
// rest of the query.
func PixelKey(rawQuery string) string {
	for q := rawQuery; q != ""; {
		var part string
		part, q, _ = strings.Cut(q, "&")
		if v, ok := strings.CutPrefix(part, "k="); ok {
			if strings.ContainsAny(v, "%+") {
				u, err := url.QueryUnescape(v)
				if err != nil {
					return ""
				}
				return u
			}
			return v
		}
	}
	return ""
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// String names the mode and the number of sources, for the start log.
func (a *Auth) String() string {
	if s := a.set.Load(); s != nil {
		return fmt.Sprintf("%s (%d sources)", a.mode, s.Len())
	}
	return string(a.mode)
}
