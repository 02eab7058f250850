package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

// Extract returns ctx joined to the trace of the traceparent and
// tracestate in h, or ctx itself when h has no traceparent. It reads the
// canonical header keys directly, which http.Header.Get would allocate on
// every request to find.
func Extract(ctx context.Context, h http.Header) context.Context {
	if _, ok := h["Traceparent"]; !ok {
		return ctx
	}
	return Propagator.Extract(ctx, canonicalCarrier(h))
}

// canonicalCarrier reads the two W3C trace context headers of an incoming
// request, whose keys net/http has made canonical.
type canonicalCarrier http.Header

func (c canonicalCarrier) Get(key string) string {
	var vs []string
	switch key {
	case "traceparent":
		vs = c["Traceparent"]
	case "tracestate":
		vs = c["Tracestate"]
	default:
		vs = http.Header(c).Values(key)
	}
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func (c canonicalCarrier) Set(key, value string) { http.Header(c).Set(key, value) }

func (c canonicalCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Counts are the event counts a request span ends with: events accepted,
// rejected as invalid, and dropped (Do Not Track, no room, refused).
type Counts struct{ Accepted, Rejected, Dropped int }

type countsKey struct{}

// WithCounts returns ctx carrying c, to which CountEvents adds.
func WithCounts(ctx context.Context, c *Counts) context.Context {
	return context.WithValue(ctx, countsKey{}, c)
}

// CountEvents adds to the counts ctx carries, if any: a request whose span
// is not recorded carries none, and the call costs a context lookup.
func CountEvents(ctx context.Context, accepted, rejected, dropped int) {
	if c, ok := ctx.Value(countsKey{}).(*Counts); ok {
		c.Accepted += accepted
		c.Rejected += rejected
		c.Dropped += dropped
	}
}

// SpanIDs returns the hex trace and span ids of ctx's span when it is
// sampled, for the request's events to carry, and "" otherwise: an event
// cannot be joined to a trace that was not exported.
func SpanIDs(ctx context.Context) (traceID, spanID string) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}
