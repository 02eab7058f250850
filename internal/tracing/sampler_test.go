package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestClientForcesSampling pins what README "Sampling" says of a hostile
// client: its traceparent's sampled flag is followed by the parent-based
// samplers, and the traceidratio sampler, which ignores the flag, decides
// by the trace id, which the client chooses too. Only *_always_off and
// always_off keep a client from having its requests traced.
func TestClientForcesSampling(t *testing.T) {
	chosen, _ := trace.TraceIDFromHex("4bf92f3577b34da60000000000000000") // low half zero: below any ratio's bound
	parent := func(flags trace.TraceFlags) context.Context {
		sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		return trace.ContextWithRemoteSpanContext(context.Background(),
			trace.NewSpanContext(trace.SpanContextConfig{TraceID: chosen, SpanID: sid, TraceFlags: flags, Remote: true}))
	}
	for _, c := range []struct {
		sampler string
		flags   trace.TraceFlags
		want    bool
	}{
		{"parentbased_traceidratio", trace.FlagsSampled, true},
		{"parentbased_traceidratio", 0, false},
		{"traceidratio", 0, true},
		{"parentbased_always_off", trace.FlagsSampled, true},
		{"always_off", trace.FlagsSampled, false},
	} {
		s, err := NewSampler(c.sampler, 0.001)
		if err != nil {
			t.Fatal(err)
		}
		r := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: parent(c.flags), TraceID: chosen, Name: "GET /px.gif", Kind: trace.SpanKindServer})
		if got := r.Decision == sdktrace.RecordAndSample; got != c.want {
			t.Errorf("%s, client flags %v: sampled=%v, want %v", c.sampler, c.flags, got, c.want)
		}
	}
}
