package segment

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/tracing"
)

// TestTracedRequest checks what the API adds to the ingest listener's
// span: the event counts (here a 503, whose events count as dropped, the
// client may send them again), and the span's ids on its log lines.
func TestTracedRequest(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewJSONHandler(&logs, nil)))
	n, err := event.NewNormalizer(event.Policy{IPMode: event.IPTruncate, SanitizeParams: event.DefaultSanitizeParams})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	pipe := &fakePipe{dropped: map[string]int{}, err: errors.New("disk on fire")}
	New(Options{MaxBodyBytes: 1 << 20, MaxBatchEvents: 500}, n, pipe, prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}), log).Register(mux)

	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	var counts tracing.Counts
	ctx := tracing.WithCounts(trace.ContextWithSpanContext(t.Context(), sc), &counts)
	body := `{"batch":[{"type":"track","event":"a","userId":"u"},{"type":"page","anonymousId":"a"},{"type":"nonsense"}]}`
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/batch", strings.NewReader(body))
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", w.Code, w.Body)
	}
	if want := (tracing.Counts{Rejected: 1, Dropped: 2}); counts != want {
		t.Errorf("span counts %+v, want %+v", counts, want)
	}
	var l struct {
		Msg     string `json:"msg"`
		TraceID string `json:"trace_id"`
		SpanID  string `json:"span_id"`
	}
	if err := json.Unmarshal(logs.Bytes(), &l); err != nil {
		t.Fatalf("%v: %s", err, logs.String())
	}
	if l.Msg != "segment: submit failed" || l.TraceID != sc.TraceID().String() || l.SpanID != sc.SpanID().String() {
		t.Errorf("log line %s, want the submit failure with trace %s span %s", logs.String(), sc.TraceID(), sc.SpanID())
	}
}
