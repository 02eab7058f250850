package ingest

import (
	"context"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/segment"
	"github.com/gotrack/gotrack/internal/tracing"
)

// Attributes of an ingest span besides the HTTP semantic conventions.
const (
	AttrAccepted = attribute.Key("gotrack.events.accepted")
	AttrRejected = attribute.Key("gotrack.events.rejected")
	AttrDropped  = attribute.Key("gotrack.events.dropped")
)

// tracedRoute returns the span name (the route pattern) and the route of
// an ingest request that gets a span: GET and HEAD /px.gif, POST /collect,
// and a POST to a call of the Segment-compatible API (/v1/track, ...).
// Both are constants, so that naming a span allocates nothing.
func tracedRoute(r *http.Request) (name, route string) {
	p := r.URL.Path
	switch {
	case p == "/px.gif" && r.Method == http.MethodGet:
		return "GET /px.gif", "/px.gif"
	case p == "/px.gif" && r.Method == http.MethodHead:
		return "HEAD /px.gif", "/px.gif"
	case r.Method != http.MethodPost:
		return "", ""
	case p == "/collect":
		return "POST /collect", "/collect"
	}
	if name, ok := segmentSpans[p]; ok {
		return name, name[len("POST "):]
	}
	return "", ""
}

// segmentSpans maps the path of each POST route of the Segment API to its
// pattern, "POST /v1/track" and so on.
var segmentSpans = func() map[string]string {
	m := map[string]string{}
	for _, rt := range segment.Routes {
		if path, ok := strings.CutPrefix(rt.Pattern, "POST "); ok {
			m[path] = rt.Pattern
		}
	}
	return m
}()

// serverSpan are the options of every ingest span, built once: a variadic
// list built at each call would be allocated at each call.
var serverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// spanState is what a recorded request span needs while the request is
// served, in one allocation.
type spanState struct {
	statusRecorder
	counts tracing.Counts
}

// traced wraps the whole ingest handler, metrics included, so that the
// duration histogram sees the span for its exemplar. Each request to an
// ingest route (see tracedRoute) gets a server span named by method and
// route ("POST /collect", "GET /px.gif", "POST /v1/batch"), joining the
// trace of a traceparent/tracestate the client sent, or linked to it (see
// startSpan); other requests
// (health checks, errors) get none. With tracing off it returns h itself,
// so the request path is unchanged. The span's attributes are the method,
// route, scheme, protocol version and status, and the event counts: never
// the body, the query, the client address, the user agent, the referrer or
// a write key, which may be personal or secret.
//
// A span the sampler leaves out records nothing, so none of that is built
// for it: its request only carries the span context, for log lines.
func (s *server) traced(h http.Handler) http.Handler {
	if s.tracer == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, route := tracedRoute(r)
		if route == "" {
			h.ServeHTTP(w, r)
			return
		}
		ctx, span := s.startSpan(r, name)
		defer span.End()
		if !span.IsRecording() {
			h.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		span.SetAttributes(
			semconv.HTTPRequestMethodKey.String(r.Method),
			semconv.HTTPRoute(route),
			semconv.URLPath(route),
			semconv.URLScheme(scheme),
			semconv.NetworkProtocolVersion(protoVersion(r)),
		)
		st := &spanState{statusRecorder: statusRecorder{ResponseWriter: w, status: http.StatusOK}}
		h.ServeHTTP(&st.statusRecorder, r.WithContext(tracing.WithCounts(ctx, &st.counts)))
		span.SetAttributes(
			semconv.HTTPResponseStatusCode(st.status),
			AttrAccepted.Int(st.counts.Accepted),
			AttrRejected.Int(st.counts.Rejected),
			AttrDropped.Int(st.counts.Dropped),
		)
		if st.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(st.status))
		}
	})
}

// startSpan starts r's server span: in the trace of the client's
// traceparent, or with Options.LinkClientTraces in a trace of its own,
// linked to the client's span, so that a client's sampled flag and trace
// id cannot make GoTrack trace (and export) every one of its requests.
// Linking, the traceparent and tracestate are read only once the sampler
// has kept the span: a request it leaves out costs what one without a
// traceparent does, whatever the client sends. (GoTrack's samplers do not
// look at links, so adding the link after the start changes no decision.)
func (s *server) startSpan(r *http.Request, name string) (context.Context, trace.Span) {
	if !s.opts.LinkClientTraces {
		return s.tracer.Start(tracing.Extract(r.Context(), r.Header), name, serverSpan...)
	}
	ctx, span := s.tracer.Start(r.Context(), name, serverSpan...)
	if span.IsRecording() {
		if client := trace.SpanContextFromContext(tracing.Extract(r.Context(), r.Header)); client.IsValid() {
			span.AddLink(trace.Link{SpanContext: client})
		}
	}
	return ctx, span
}

// exemplar is the duration histogram's exemplar source: the sampled
// span's trace id, or none when tracing is off.
func exemplar(t trace.Tracer) func(context.Context) prometheus.Labels {
	if t == nil {
		return nil
	}
	return tracing.Exemplar
}

// count adds to the event counts of r's span, if it is recorded.
func (s *server) count(r *http.Request, accepted, rejected, dropped int) {
	if s.tracer != nil {
		tracing.CountEvents(r.Context(), accepted, rejected, dropped)
	}
}

// spanIDs returns the hex ids of r's span when it is sampled, for its
// events to carry.
func spanIDs(r *http.Request) (traceID, spanID string) { return tracing.SpanIDs(r.Context()) }

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
