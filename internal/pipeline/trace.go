package pipeline

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/event"
)

// MaxLinks bounds the links of one sink write span to the request spans
// whose events the batch carries. Only sampled requests' events carry a
// span, so at the default 0.1% a 500-event batch has about one; a batch with
// more keeps the first MaxLinks request spans and counts the events of the
// others in gotrack.links.dropped_events.
const MaxLinks = 32

// Attributes of a sink write span.
const (
	AttrSink         = attribute.Key("gotrack.sink")
	AttrBatchSize    = attribute.Key("gotrack.batch.size")
	AttrAttempt      = attribute.Key("gotrack.attempt")
	AttrOutcome      = attribute.Key("gotrack.outcome")
	AttrLinksDropped = attribute.Key("gotrack.links.dropped_events")
)

// Outcomes of a write attempt, in gotrack.outcome.
const (
	OutcomeWritten  = "written"  // the whole batch
	OutcomePartial  = "partial"  // some events failed (sink.BatchError)
	OutcomeRejected = "rejected" // permanent error: bisected or dead-lettered
	OutcomeFailed   = "failed"   // transient error: retried
)

// startWrite starts the span of one write attempt of batch to o. Its
// parent is Options.Parent when set, or else the first request span the
// batch's events carry, so that the request's sampled trace shows the
// write; the other request spans are links. With no tracer it returns ctx
// and a nil span.
func (p *Pipeline) startWrite(ctx context.Context, o *output, batch []*event.Event, attempt int, backoff time.Duration) (context.Context, trace.Span) {
	if p.opts.Tracer == nil {
		return ctx, nil
	}
	var (
		parent  = p.opts.Parent
		links   []trace.Link
		dropped int
	)
	for _, e := range batch {
		if e.SpanID == "" {
			continue
		}
		tid, err1 := trace.TraceIDFromHex(e.TraceID)
		sid, err2 := trace.SpanIDFromHex(e.SpanID)
		if err1 != nil || err2 != nil {
			continue
		}
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
		if !parent.IsValid() {
			parent = sc
			continue
		}
		if sc.Equal(parent) || hasLink(links, sc) {
			continue
		}
		if len(links) == MaxLinks-1 { // the parent is one of the MaxLinks
			dropped++
			continue
		}
		links = append(links, trace.Link{SpanContext: sc})
	}
	switch {
	case p.opts.Parent.IsValid():
		ctx = trace.ContextWithSpanContext(ctx, parent) // in this process
	case parent.IsValid():
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	attrs := []attribute.KeyValue{AttrSink.String(o.name), AttrBatchSize.Int(len(batch)), AttrAttempt.Int(attempt + 1)}
	if dropped > 0 {
		attrs = append(attrs, AttrLinksDropped.Int(dropped))
	}
	ctx, span := p.opts.Tracer.Start(ctx, "write "+o.name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(links...), trace.WithAttributes(attrs...))
	if attempt > 0 {
		span.AddEvent("retry", trace.WithAttributes(AttrAttempt.Int(attempt+1), attribute.String("gotrack.backoff", backoff.String())))
	}
	return ctx, span
}

func hasLink(links []trace.Link, sc trace.SpanContext) bool {
	for _, l := range links {
		if l.SpanContext.Equal(sc) {
			return true
		}
	}
	return false
}

// endWrite ends a write attempt's span with its outcome.
func endWrite(span trace.Span, outcome string, err error) {
	if span == nil {
		return
	}
	span.SetAttributes(AttrOutcome.String(outcome))
	if err != nil {
		span.SetStatus(codes.Error, outcome)
		span.RecordError(err)
	}
	span.End()
}

// startAppend starts the span of a spool append, a child of the request
// span the events carry (they come from one request); it returns nil when
// tracing is off or the request was not sampled. Under SPOOL_FSYNC=always
// the span includes the wait for the group commit's fsync.
func (p *Pipeline) startAppend(events []*event.Event) trace.Span {
	if p.opts.Tracer == nil || events[0].SpanID == "" {
		return nil
	}
	tid, err1 := trace.TraceIDFromHex(events[0].TraceID)
	sid, err2 := trace.SpanIDFromHex(events[0].SpanID)
	if err1 != nil || err2 != nil {
		return nil
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	_, span := p.opts.Tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "spool append",
		trace.WithAttributes(AttrBatchSize.Int(len(events))))
	return span
}

func endAppend(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetStatus(codes.Error, "append failed")
		span.RecordError(err)
	}
	span.End()
}

// observeFlush records a write's latency, with the span's trace id as the
// exemplar when the span is sampled.
func observeFlush(o prometheus.Observer, span trace.Span, d time.Duration) {
	if span != nil {
		if sc := span.SpanContext(); sc.IsSampled() {
			if eo, ok := o.(prometheus.ExemplarObserver); ok {
				eo.ObserveWithExemplar(d.Seconds(), prometheus.Labels{"trace_id": sc.TraceID().String()})
				return
			}
		}
	}
	o.Observe(d.Seconds())
}

// spanEvent adds an event to span, if there is one.
func spanEvent(span trace.Span, name string, attrs ...attribute.KeyValue) {
	if span != nil {
		span.AddEvent(name, trace.WithAttributes(attrs...))
	}
}
