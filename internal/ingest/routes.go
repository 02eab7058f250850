// Package ingest is GoTrack's HTTP API: the tracking pixel, the JSON collect
// endpoint, and the health checks. It turns requests into events and hands
// them to the pipeline; it knows nothing of the sinks.
package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/httpmetrics"
	"github.com/gotrack/gotrack/internal/enrich"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/ratelimit"
	"github.com/gotrack/gotrack/internal/segment"
	"github.com/gotrack/gotrack/internal/source"
	"github.com/gotrack/gotrack/web/tracker"
)

// Pipeline is what the handlers need of the delivery pipeline.
type Pipeline interface {
	Submit(events []*event.Event) error
	SubmitEach(e *event.Event) bool
	CountDropped(reason string, n int)
	Ready() (bool, []string)
}

// Options are the request limits and the CORS policy.
type Options struct {
	RoutePrefix string // ROUTE_PREFIX: serve every route under it; see underPrefix

	// Auth decides which source a request writes for (AUTH_MODE,
	// SOURCES_FILE); nil takes every request as from source anonymous.
	Auth *source.Auth
	// RateLimitPerIP, when not nil, limits each client address, as
	// TRUST_PROXY chooses it (RATE_LIMIT_PER_IP).
	RateLimitPerIP *ratelimit.IPs
	// Enricher, when not nil, adds ua, bot, geo, asn and campaign to
	// events, and applies BOT_POLICY.
	Enricher       *enrich.Enricher
	MaxBodyBytes   int64
	MaxBatchEvents int
	CORSOrigins    []string // empty allows any origin, without credentials
	// MaxInflightBytes bounds the /collect body bytes held in memory at
	// once, after decompression, across all requests; at least
	// MaxBodyBytes. Zero means DefaultMaxInflightBytes.
	MaxInflightBytes int64
	// Tracer, when not nil, gives each /px.gif and /collect request a
	// server span; nil (tracing off) costs nothing.
	Tracer trace.Tracer
	// LinkClientTraces starts each request span in a new trace, linked to
	// the span of the client's traceparent instead of joining its trace
	// (TRACE_CLIENT_PARENT=link): the sampler then decides alone, on a
	// trace id GoTrack chose.
	LinkClientTraces bool
}

// Validate reports every option out of range at once.
func (o Options) Validate() error {
	var errs []error
	if o.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("ingest: MaxBodyBytes=%d must be positive", o.MaxBodyBytes))
	}
	if o.MaxBatchEvents <= 0 {
		errs = append(errs, fmt.Errorf("ingest: MaxBatchEvents=%d must be positive", o.MaxBatchEvents))
	}
	if o.MaxInflightBytes != 0 && o.MaxInflightBytes <= o.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("ingest: MAX_INFLIGHT_BYTES=%d must be larger than MAX_BODY_BYTES=%d, or no body of the largest size could ever be read",
			o.MaxInflightBytes, o.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// Routes is every route of the ingest listener, with the statuses it is
// expected to answer; the metrics are pre-initialised from it.
var Routes = append([]httpmetrics.Route{
	{Pattern: "GET /px.gif", Statuses: []int{200}},
	{Pattern: "HEAD /px.gif", Statuses: []int{200}},
	{Pattern: "POST /collect", Statuses: []int{202, 400, 401, 403, 413, 415, 429, 503}},
	{Pattern: "OPTIONS /collect", Statuses: []int{204}},
	{Pattern: "GET /healthz", Statuses: []int{200}},
	{Pattern: "GET /readyz", Statuses: []int{200, 503}},
	{Pattern: "GET /gotrack.js", Statuses: []int{200, 304}},
}, segment.Routes...)

// catchAll is the pattern that answers every unknown path with 404.
const catchAll = "/"

// NewHandler returns the ingest API. The HTTP metrics are registered on reg.
func NewHandler(opts Options, n *event.Normalizer, p Pipeline, reg prometheus.Registerer, log *slog.Logger) (http.Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.MaxInflightBytes == 0 {
		opts.MaxInflightBytes = DefaultMaxInflightBytes
	}
	s, err := newServer(opts, n, p, reg, log)
	if err != nil {
		return nil, err
	}
	hm, err := httpmetrics.New(reg, httpmetrics.Opts{
		Namespace:      "gotrack",
		RequestsName:   "http_requests_total",
		RequestsHelp:   "HTTP requests served by the ingest listener, by route pattern, method and status.",
		RequestsLabels: []httpmetrics.Label{httpmetrics.Endpoint, httpmetrics.Method, httpmetrics.Status},
		DurationName:   "http_duration_seconds",
		DurationHelp:   "Time to serve an ingest request, by route pattern and method.",
		DurationLabels: []httpmetrics.Label{httpmetrics.Endpoint, httpmetrics.Method},
		CatchAll:       catchAll,
		Routes:         Routes,
		Exemplar:       exemplar(opts.Tracer),
	})
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /px.gif", s.pixel) // GET patterns also match HEAD
	mux.HandleFunc("POST /collect", s.collect)
	mux.HandleFunc("OPTIONS /collect", s.preflight)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	segment.New(segment.Options{
		MaxBodyBytes:   opts.MaxBodyBytes,
		MaxBatchEvents: opts.MaxBatchEvents,
		CORSOrigins:    opts.CORSOrigins,
		Budget:         segmentBudget{&s.budget},
		Shed:           s.shed.Inc,
		Authorize:      s.segmentAuthorize(),
	}, n, p, s.received.segment, log).Register(mux)
	mux.Handle("GET /gotrack.js", tracker.Handler())
	for _, path := range []string{"/px.gif", "/collect", "/healthz", "/readyz", "/gotrack.js"} {
		mux.HandleFunc(path, methodNotAllowed)
	}
	mux.HandleFunc(catchAll, notFound)
	if opts.RoutePrefix != "" {
		return underPrefix(opts.RoutePrefix, s.traced(hm.Wrap(guard(mux)))), nil
	}
	return s.traced(hm.Wrap(guard(mux))), nil
}

// guard answers, as JSON, the requests that net/http's mux or the metrics
// would otherwise answer in its own words: a path that is not clean
// ("//collect", "/./collect"), which the mux would redirect with an HTML
// body, and headers beyond MaxHeaderBytes that net/http's slack let through.
func guard(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cleanPath(r.URL.Path) && r.Method != http.MethodConnect {
			writeError(w, r, refuse(kindNotFound, "no such endpoint; the path is not in canonical form (no //, /./ or /../)"), nil)
			return
		}
		if headerBytes(r) > MaxHeaderBytes {
			w.Header()["Connection"] = connClose
			writeError(w, r, refuse(kindHeaderTooLarge, fmt.Sprintf("request headers are larger than %d bytes", MaxHeaderBytes)), nil)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath reports whether the mux would serve p as it is rather than
// redirect it: p is rooted and path.Clean leaves it alone, but for a
// trailing slash.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return true // no empty, "." or ".." element: clean, trailing slash or not
	}
	c := path.Clean(p)
	return c == p || (p[len(p)-1] == '/' && c+"/" == p)
}

// headerBytes estimates the size of the request line and headers as sent,
// without allocating.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len("Host: \r\n") + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // ": " and CRLF
		}
	}
	return n
}

// Timeouts for the ingest listener. Beacons and pixels are small: a client
// that takes longer than these is slow or hostile.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 15 * time.Second
	WriteTimeout      = 15 * time.Second
	IdleTimeout       = 90 * time.Second
	MaxHeaderBytes    = 32 << 10
)

// NewServer returns the ingest listener's http.Server with its timeouts.
func NewServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
