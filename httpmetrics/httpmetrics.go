// Package httpmetrics instruments an http.Handler with Prometheus metrics: a
// request counter, a duration histogram and an in-flight gauge.
//
// Requests are labelled by the net/http ServeMux route pattern that served
// them (Request.Pattern, such as "/px.gif" or "/items/{id}"), never by the
// raw path, so the number of series is fixed by the routes however many
// distinct paths clients send. Requests no pattern matched share the
// endpoint "other", and methods outside the standard set share "OTHER".
//
// The metrics are registered on a Registerer the caller passes in; the
// package holds no global state.
package httpmetrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A Label is one dimension a metric may be partitioned by.
type Label string

// The labels a metric can carry.
const (
	Endpoint Label = "endpoint" // the route pattern without its method, or "other"
	Method   Label = "method"   // the request method, or "OTHER"
	Status   Label = "status"   // the response status code
)

// Unmatched is the endpoint label of requests that no route matched.
const Unmatched = "other"

// Opts names the metrics and chooses their labels. Empty names take the
// defaults shown; the label lists are used as given.
type Opts struct {
	Namespace string // prefix joined with "_", such as "gotrack"

	RequestsName   string  // default "http_requests_total"
	RequestsHelp   string  // default "HTTP requests served."
	RequestsLabels []Label // of Endpoint, Method, Status

	DurationName   string  // default "http_duration_seconds"
	DurationHelp   string  // default "Time to serve an HTTP request."
	DurationLabels []Label // of Endpoint, Method, Status
	Buckets        []float64

	InFlightName string // default "http_requests_in_flight"; "-" for no gauge

	// CatchAll, when set, is a pattern registered to answer every path no
	// other pattern matches (typically "/"); its requests are labelled
	// Unmatched like those the mux itself turns away.
	CatchAll string

	// Routes are pre-initialised so that their series exist at zero from the
	// first scrape: each pattern with each of its statuses.
	Routes []Route

	// Exemplar, when set, gives the exemplar labels of a request's duration
	// from its context (such as the trace_id of a sampled span), or nil for
	// none. The middleware it wraps must put the span in the context.
	Exemplar func(ctx context.Context) prometheus.Labels
}

// Route is a pattern, as registered on the ServeMux, with the method and
// statuses it is expected to answer.
type Route struct {
	Pattern  string // such as "GET /px.gif" or "/collect"
	Method   string // used when Pattern names none
	Statuses []int
}

// Metrics is an instrumentation middleware. It is safe for concurrent use.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	inFlight    prometheus.Gauge
	reqLabels   []Label
	durLabels   []Label
	catchAll    string
	statusCache [600]string
	exemplar    func(context.Context) prometheus.Labels
	// series holds the children of the pre-initialised routes, so that
	// their requests skip the vectors' label hashing and checks; it is
	// not changed after New.
	series map[seriesKey]children
}

type seriesKey struct {
	endpoint, method string
	status           int
}

type children struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// DefaultBuckets suit a service whose requests take from a fraction of a
// millisecond to a few seconds.
var DefaultBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// New creates the metrics on reg.
func New(reg prometheus.Registerer, o Opts) (*Metrics, error) {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.RequestsName, "http_requests_total")
	def(&o.RequestsHelp, "HTTP requests served.")
	def(&o.DurationName, "http_duration_seconds")
	def(&o.DurationHelp, "Time to serve an HTTP request.")
	def(&o.InFlightName, "http_requests_in_flight")
	if o.Buckets == nil {
		o.Buckets = DefaultBuckets
	}
	for _, l := range append(append([]Label{}, o.RequestsLabels...), o.DurationLabels...) {
		if l != Endpoint && l != Method && l != Status {
			return nil, errors.New("httpmetrics: unknown label " + string(l))
		}
	}
	m := &Metrics{reqLabels: o.RequestsLabels, durLabels: o.DurationLabels, catchAll: o.CatchAll, exemplar: o.Exemplar,
		series: make(map[seriesKey]children)}
	for i := range m.statusCache {
		m.statusCache[i] = strconv.Itoa(i)
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: o.Namespace, Name: o.RequestsName, Help: o.RequestsHelp,
	}, labelNames(o.RequestsLabels))
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: o.Namespace, Name: o.DurationName, Help: o.DurationHelp, Buckets: o.Buckets,
	}, labelNames(o.DurationLabels))
	cs := []prometheus.Collector{m.requests, m.duration}
	if o.InFlightName != "-" {
		m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: o.Namespace, Name: o.InFlightName, Help: "HTTP requests being served now.",
		})
		cs = append(cs, m.inFlight)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range o.Routes {
		method, endpoint := r.Method, r.Pattern
		if m, rest, ok := strings.Cut(r.Pattern, " "); ok {
			method, endpoint = m, rest
		}
		method = normMethod(method)
		endpoint = stripHost(endpoint)
		for _, st := range r.Statuses {
			m.series[seriesKey{endpoint, method, st}] = m.children(endpoint, method, st)
		}
	}
	return m, nil
}

func labelNames(ls []Label) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = string(l)
	}
	return out
}

func (m *Metrics) values(ls []Label, endpoint, method string, status int) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		switch l {
		case Endpoint:
			out[i] = endpoint
		case Method:
			out[i] = method
		case Status:
			out[i] = m.status(status)
		}
	}
	return out
}

// children returns the request counter and the duration observer of a
// request, creating them if need be.
func (m *Metrics) children(endpoint, method string, status int) children {
	if c, ok := m.series[seriesKey{endpoint, method, status}]; ok {
		return c
	}
	return children{
		requests: m.requests.WithLabelValues(m.values(m.reqLabels, endpoint, method, status)...),
		duration: m.duration.WithLabelValues(m.values(m.durLabels, endpoint, method, status)...),
	}
}

func (m *Metrics) status(code int) string {
	if code >= 100 && code < len(m.statusCache) {
		return m.statusCache[code]
	}
	return "other"
}

// Wrap returns next instrumented. next is normally a *http.ServeMux, whose
// routing sets Request.Pattern, read here after it returns.
func (m *Metrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if m.inFlight != nil {
			m.inFlight.Inc()
			defer m.inFlight.Dec()
		}
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rw, r)
		endpoint := Unmatched
		if r.Pattern != "" && r.Pattern != m.catchAll {
			_, endpoint, _ = cutMethod(r.Pattern)
			endpoint = stripHost(endpoint)
		}
		c := m.children(endpoint, normMethod(r.Method), rw.status)
		c.requests.Inc()
		obs := c.duration
		if m.exemplar != nil {
			if ex := m.exemplar(r.Context()); ex != nil {
				obs.(prometheus.ExemplarObserver).ObserveWithExemplar(time.Since(start).Seconds(), ex)
				return
			}
		}
		obs.Observe(time.Since(start).Seconds())
	})
}

func cutMethod(pattern string) (method, rest string, ok bool) {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return pattern[:i], strings.TrimLeft(pattern[i+1:], " \t"), true
	}
	return "", pattern, false
}

// stripHost drops a host from a pattern such as "example.com/x".
func stripHost(p string) string {
	if i := strings.IndexByte(p, '/'); i > 0 {
		return p[i:]
	}
	return p
}

func normMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// statusWriter records the status code a handler writes.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 { // 1xx responses precede the real one
		w.status = code
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
