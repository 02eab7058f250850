package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/tracing"
)

// tracePipeline keeps the trace ids of the events it is given.
type tracePipeline struct {
	nopPipeline
	mu  sync.Mutex
	ids []string
}

func (p *tracePipeline) Submit(es []*event.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range es {
		p.ids = append(p.ids, e.TraceID)
	}
	return nil
}

func (p *tracePipeline) SubmitEach(e *event.Event) bool { return p.Submit([]*event.Event{e}) == nil }

// highIDs makes trace ids whose low half is all ones, above any
// traceidratio bound below 1, so that GoTrack's own traces are never
// sampled at 0.001 and the test does not depend on chance.
type highIDs struct{}

func (highIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	tid := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return tid, trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}
}

func (highIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	return trace.SpanID{8, 7, 6, 5, 4, 3, 2, 1}
}

// TestLinkHostileClient plays a client that wants its requests traced
// under TRACE_CLIENT_PARENT=link: a sampled traceparent whose trace id has
// a zero low half (below any traceidratio bound), sent to every traced
// route, with ROUTE_PREFIX too, duplicated, in odd case, with tracestate
// and baggage. GoTrack's own trace ids are above the 0.001 bound, so under
// each of these samplers no span may be recorded and no event may carry a
// trace id; following the client (link false), all three would trace.
func TestLinkHostileClient(t *testing.T) {
	const (
		chosen = "4bf92f3577b34da60000000000000000"
		span   = "00f067aa0ba902b7"
		tp     = "00-" + chosen + "-" + span + "-01"
	)
	type req struct {
		method, path, body string
		header             http.Header
	}
	reqs := []req{
		{"GET", "/px.gif?e=pageview", "", nil},
		{"HEAD", "/px.gif?e=pageview", "", nil},
		{"GET", "/px.gif?e=pageview&traceparent=" + tp, "", nil},
		{"POST", "/collect", `{"type":"click"}`, nil},
		{"POST", "/collect", `{"type":"click","trace_id":"` + chosen + `","span_id":"` + span + `"}`, nil}, // refused: 400
		{"POST", "/v1/track", `{"event":"x","userId":"u"}`, nil},
		{"POST", "/v1/batch", `{"batch":[{"type":"track","event":"x","userId":"u"}]}`, nil},
		{"GET", "/px.gif?e=pageview", "", http.Header{"Traceparent": {tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}},
		{"GET", "/px.gif?e=pageview", "", http.Header{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", tp}}},
		{"GET", "/px.gif?e=pageview", "", http.Header{"Traceparent": {"01-" + chosen + "-" + span + "-01-extra"}}}, // future version
		{"GET", "/px.gif?e=pageview", "", http.Header{"Traceparent": {tp}, "Tracestate": {"ot=th:0;rv:00000000000000", "sampled=1"}, "Baggage": {"sampled=1"}}},
	}
	samplers := []string{"traceidratio", "parentbased_traceidratio", "parentbased_always_off"}
	for _, name := range samplers {
		for _, prefix := range []string{"", "/a7x"} {
			t.Run(name+prefix, func(t *testing.T) {
				sampler, err := tracing.NewSampler(name, 0.001)
				if err != nil {
					t.Fatal(err)
				}
				rec := tracetest.NewSpanRecorder()
				tprov := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(rec),
					sdktrace.WithIDGenerator(highIDs{}))
				n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, SanitizeParams: event.DefaultSanitizeParams})
				pipe := &tracePipeline{}
				h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Tracer: tprov.Tracer("test"),
					LinkClientTraces: true, RoutePrefix: prefix}, n, pipe, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				for _, rq := range reqs {
					r := httptest.NewRequest(rq.method, prefix+rq.path, strings.NewReader(rq.body))
					r.Header.Set("Content-Type", "application/json")
					if rq.header == nil {
						r.Header.Set("Traceparent", tp)
					}
					for k, vs := range rq.header {
						r.Header[k] = vs
					}
					w := httptest.NewRecorder()
					h.ServeHTTP(w, r)
					if w.Code >= 300 && !strings.Contains(rq.body, "trace_id") {
						t.Errorf("%s %s answered %d: %s", rq.method, rq.path, w.Code, w.Body)
					}
				}
				if spans := rec.Ended(); len(spans) != 0 {
					t.Errorf("%d spans recorded, want none: a client forced sampling (first: %s in trace %s)",
						len(spans), spans[0].Name(), spans[0].SpanContext().TraceID())
				}
				pipe.mu.Lock()
				defer pipe.mu.Unlock()
				if len(pipe.ids) == 0 {
					t.Fatal("no event reached the pipeline")
				}
				for _, id := range pipe.ids {
					if id != "" {
						t.Errorf("an event carries trace_id %q, want none (unsampled)", id)
					}
				}
			})
		}
	}
}

// TestLinkUnsampledCost checks that under TRACE_CLIENT_PARENT=link a
// request the sampler leaves out costs no more with a traceparent and a
// full tracestate than without: the client's headers are read only for a
// span that is kept.
func TestLinkUnsampledCost(t *testing.T) {
	tprov := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	n, _ := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, SanitizeParams: event.DefaultSanitizeParams})
	h, err := NewHandler(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500, Tracer: tprov.Tracer("test"), LinkClientTraces: true},
		n, nopPipeline{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	allocs := func(header http.Header) float64 {
		r := httptest.NewRequest("GET", "/px.gif?e=pageview", nil)
		maps.Copy(r.Header, header)
		w := &nopWriter{h: http.Header{}}
		return testing.AllocsPerRun(100, func() { clear(w.h); h.ServeHTTP(w, r) })
	}
	var members []string
	for i := range 32 {
		members = append(members, fmt.Sprintf("v%d=%s", i, strings.Repeat("x", 200)))
	}
	plain := allocs(nil)
	hostile := allocs(http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate": {strings.Join(members, ",")}})
	if hostile > plain {
		t.Errorf("an unsampled request allocates %v times with a client's traceparent and tracestate, %v without", hostile, plain)
	}
}
