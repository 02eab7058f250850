package ingest

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/tracing"
)

// Attributes of an ingest span besides the HTTP semantic conventions.
const (
	AttrAccepted = attribute.Key("gotrack.events.accepted")
	AttrRejected = attribute.Key("gotrack.events.rejected")
	AttrDropped  = attribute.Key("gotrack.events.dropped")
)

// spanCounts collects, while a traced request is served, the numbers its
// span ends with.
type spanCounts struct{ accepted, rejected, dropped int }

type spanCountsKey struct{}

// tracedRoute returns the route of an ingest request that gets a span:
// GET and HEAD /px.gif, POST /collect.
func tracedRoute(r *http.Request) string {
	switch {
	case r.URL.Path == "/px.gif" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		return "/px.gif"
	case r.URL.Path == "/collect" && r.Method == http.MethodPost:
		return "/collect"
	}
	return ""
}

// traced wraps the whole ingest handler, metrics included, so that the
// duration histogram sees the span for its exemplar. Each request to an
// ingest route gets a server span named by method and route ("POST
// /collect", "GET /px.gif"), joining the trace of a traceparent/tracestate
// the client sent; other requests (health checks, errors) get none. With
// tracing off it returns h itself, so the request path is unchanged. The
// span's attributes are the method, route, scheme, protocol version and
// status, and the event counts: never the body, the query, the client
// address, the user agent or the referrer, which may be personal.
func (s *server) traced(h http.Handler) http.Handler {
	if s.tracer == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := tracedRoute(r)
		if route == "" {
			h.ServeHTTP(w, r)
			return
		}
		ctx := tracing.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		ctx, span := s.tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				semconv.HTTPRequestMethodKey.String(r.Method),
				semconv.HTTPRoute(route),
				semconv.URLPath(route),
				semconv.URLScheme(scheme),
				semconv.NetworkProtocolVersion(protoVersion(r)),
			))
		defer span.End()
		counts := new(spanCounts)
		ctx = context.WithValue(ctx, spanCountsKey{}, counts)
		sw := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(
			semconv.HTTPResponseStatusCode(sw.status),
			AttrAccepted.Int(counts.accepted),
			AttrRejected.Int(counts.rejected),
			AttrDropped.Int(counts.dropped),
		)
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// exemplar is the duration histogram's exemplar source: the sampled
// span's trace id, or none when tracing is off.
func exemplar(t trace.Tracer) func(context.Context) prometheus.Labels {
	if t == nil {
		return nil
	}
	return tracing.Exemplar
}

// count adds to the event counts of r's span, if r is traced.
func (s *server) count(r *http.Request, accepted, rejected, dropped int) {
	if s.tracer == nil {
		return
	}
	if c, ok := r.Context().Value(spanCountsKey{}).(*spanCounts); ok {
		c.accepted += accepted
		c.rejected += rejected
		c.dropped += dropped
	}
}

// spanIDs returns the hex ids of r's span when it is sampled, for its
// events to carry.
func spanIDs(r *http.Request) (traceID, spanID string) {
	sc := trace.SpanContextFromContext(r.Context())
	if !sc.IsSampled() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}

func protoVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "2"
	case r.ProtoMinor == 0:
		return "1.0"
	}
	return "1.1"
}

// statusRecorder keeps the status a traced handler answers.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusRecorder) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and http.MaxBytesReader reach the
// underlying writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
