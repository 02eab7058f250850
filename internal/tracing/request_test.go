package tracing

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestExtractBounds pins what README "Joining the client's trace" says of
// a client's headers: a tracestate is kept as sent up to the W3C limit of
// 32 members (about 8 KiB at most, carried by each of the request's
// spans), a longer one is dropped while the traceparent still counts, and
// a malformed traceparent starts a trace of GoTrack's own.
func TestExtractBounds(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var members []string
	for i := range 33 {
		members = append(members, fmt.Sprintf("k%d=%s", i, strings.Repeat("v", 250)))
	}
	for _, c := range []struct {
		name, traceparent, tracestate string
		valid                         bool
		stateLen                      int
	}{
		{"32 members", tp, strings.Join(members[:32], ","), true, len(strings.Join(members[:32], ","))},
		{"33 members", tp, strings.Join(members, ","), true, 0},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", false, 0},
		{"version ff", "ff" + tp[2:], "", false, 0},
		{"upper-case hex", strings.ToUpper(tp), "", false, 0},
		{"oversized", strings.Repeat("x", 10000), "", false, 0},
	} {
		h := http.Header{"Traceparent": {c.traceparent}, "Tracestate": {c.tracestate}}
		sc := trace.SpanContextFromContext(Extract(context.Background(), h))
		if sc.IsValid() != c.valid || len(sc.TraceState().String()) != c.stateLen {
			t.Errorf("%s: valid=%v tracestate of %d bytes, want valid=%v and %d bytes", c.name, sc.IsValid(), len(sc.TraceState().String()), c.valid, c.stateLen)
		}
	}
}
