package tracing

import (
	"context"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// JobSpanPrefix starts the names of batch jobs' root spans, which are
// always sampled (one span per run), unless OTEL_TRACES_SAMPLER=always_off.
const JobSpanPrefix = "gotrack "

// jobSampler samples every job root span and leaves the rest to base.
type jobSampler struct{ base sdktrace.Sampler }

func (s jobSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if strings.HasPrefix(p.Name, JobSpanPrefix) && !trace.SpanContextFromContext(p.ParentContext).IsValid() {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample,
			Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.base.ShouldSample(p)
}

func (s jobSampler) Description() string { return "JobsAlwaysOn{" + s.base.Description() + "}" }

// Run is the root span of a batch job such as `gotrack replay`; its
// methods do nothing when tracing is off.
type Run struct {
	ctx  context.Context
	span trace.Span
}

// StartRun starts a job's root span; p nil (tracing off) gives a Run that
// records nothing.
func StartRun(ctx context.Context, p *Provider, name string, attrs ...attribute.KeyValue) *Run {
	if p == nil {
		return &Run{ctx: ctx}
	}
	ctx, span := p.Tracer().Start(ctx, name, trace.WithNewRoot(), trace.WithAttributes(attrs...))
	return &Run{ctx: ctx, span: span}
}

// Context carries the run's span.
func (r *Run) Context() context.Context { return r.ctx }

// Progress records a progress event: bytes read of the total, and events.
func (r *Run) Progress(done, total, events int64) {
	if r.span == nil {
		return
	}
	r.span.AddEvent("progress", trace.WithAttributes(attribute.Int64("gotrack.bytes_done", done),
		attribute.Int64("gotrack.bytes_total", total), attribute.Int64("gotrack.events", events)))
}

// SetAttributes sets attributes on the run's span.
func (r *Run) SetAttributes(attrs ...attribute.KeyValue) {
	if r.span != nil {
		r.span.SetAttributes(attrs...)
	}
}

// End ends the span, marking it failed when err is not nil.
func (r *Run) End(err error) {
	if r.span == nil {
		return
	}
	if err != nil {
		r.span.SetStatus(codes.Error, "failed")
		r.span.RecordError(err)
	}
	r.span.End()
}
