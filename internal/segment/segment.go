// Package segment is GoTrack's Segment-compatible HTTP tracking API: the
// routes, limits, responses and write-key conventions of Segment's
// api.segment.io/v1, so that Segment's and RudderStack's SDKs (and anything
// else that speaks that protocol) can send to GoTrack by changing one host
// name. Each message becomes one GoTrack event (see Map) and goes through
// the same privacy policy, pipeline, queues, spool and metrics as /collect.
//
// With tracing on, each POST to a call has the ingest listener's server
// span (internal/ingest wraps the whole listener); the handler adds its
// event counts to it, and gives the events of a sampled request the span's
// trace_id and span_id, through internal/tracing as /collect does.
package segment

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/httpmetrics"
	"github.com/gotrack/gotrack/internal/cors"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/tracing"
)

// Segment's own limits: a message may be at most 32 KB and a batch request
// at most 500 KB. Its client libraries split their batches to fit.
const (
	MaxMessageBytes = 32 << 10
	MaxBatchBytes   = 500 << 10
)

// Pipeline is what the API needs of the delivery pipeline.
type Pipeline interface {
	Submit(events []*event.Event) error
	CountDropped(reason string, n int)
}

// Options are the limits and CORS policy, shared with /collect.
type Options struct {
	MaxBodyBytes   int64    // MAX_BODY_BYTES; caps Segment's own limits when smaller
	MaxBatchEvents int      // MAX_BATCH_EVENTS: most messages in one batch
	CORSOrigins    []string // empty allows any origin, without credentials

	// Budget, when set, is the bound on request body bytes held in memory
	// across all requests (MAX_INFLIGHT_BYTES), shared with /collect. Each
	// request is charged its largest possible body before reading it, and
	// shed with a 503 when that does not fit; Shed then counts it.
	Budget Budget
	Shed   func()

	// Authorize, when set (AUTH_MODE=key), checks the request's write key
	// (HTTP Basic, or the body's writeKey) once the body is read. It
	// returns the source id to store on the events, or answers the refusal
	// itself (401, 429) and reports false.
	Authorize func(w http.ResponseWriter, r *http.Request, key string) (sourceID string, ok bool)
}

// Budget is a shared bound on bytes held in memory.
type Budget interface {
	Take(n int64) bool // reports whether n more bytes fit, and charges them if so
	Give(n int64)      // gives back what Take charged
}

// calls maps each route's last path element, long and short, to its call
// type. The short ones are what Segment's browser library (analytics-next)
// posts to: the first letter of the call type, and "b" for its batching
// delivery strategy.
var calls = []struct{ path, call string }{
	{"track", "track"}, {"t", "track"},
	{"page", "page"}, {"p", "page"},
	{"screen", "screen"}, {"s", "screen"},
	{"identify", "identify"}, {"i", "identify"},
	{"group", "group"}, {"g", "group"},
	{"alias", "alias"}, {"a", "alias"},
	{"batch", ""}, {"b", ""},
}

// Routes are the API's routes, with the statuses they answer, for the
// ingest listener's HTTP metrics.
var Routes = func() []httpmetrics.Route {
	var rs []httpmetrics.Route
	for _, c := range calls {
		rs = append(rs, httpmetrics.Route{Pattern: "POST /v1/" + c.path, Statuses: []int{200, 400, 401, 403, 429, 503}})
	}
	return append(rs, httpmetrics.Route{Pattern: "/v1/{call}", Method: http.MethodOptions, Statuses: []int{204, 403}})
}()

// Handler serves the API. It is safe for concurrent use.
type Handler struct {
	opts     Options
	norm     *event.Normalizer
	pipe     Pipeline
	received prometheus.Counter
	log      *slog.Logger
}

// New returns the API's handler. received counts every message received,
// before validation (gotrack_events_received_total{source="segment"}).
func New(opts Options, n *event.Normalizer, p Pipeline, received prometheus.Counter, log *slog.Logger) *Handler {
	return &Handler{opts: opts, norm: n, pipe: p, received: received, log: log}
}

// Register adds the API's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	for _, c := range calls {
		call := c.call
		mux.HandleFunc("POST /v1/"+c.path, func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, call) })
	}
	mux.HandleFunc("/v1/{call}", h.other)
}

// other answers every request to /v1/ that is not a POST to a known call:
// the CORS preflight, 405 for another method, 404 for an unknown path.
func (h *Handler) other(w http.ResponseWriter, r *http.Request) {
	if !slices.ContainsFunc(calls, func(c struct{ path, call string }) bool { return c.path == r.PathValue("call") }) {
		writeError(w, http.StatusNotFound, "no such endpoint; the Segment API is /v1/track, page, screen, identify, group, alias and batch")
		return
	}
	if r.Method == http.MethodOptions {
		h.preflight(w, r)
		return
	}
	w.Header().Set("Allow", "POST, OPTIONS")
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed here; use POST")
}

// response is the body of every answer: Segment's {"success": true}, with
// what GoTrack has to add.
type response struct {
	Success  bool        `json:"success"`
	Error    string      `json:"error,omitempty"`
	Rejected int         `json:"rejected,omitempty"` // batch messages refused; the others were accepted
	Dropped  int         `json:"dropped,omitempty"`  // Do Not Track
	Errors   []itemError `json:"errors,omitempty"`
}

type itemError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// batchInfo is what a batch request says about all of its messages.
type batchInfo struct {
	sentAt json.RawMessage // each message's sentAt, unless it has its own
	extra  json.RawMessage // the other members, kept in each message's context._segment._batch
}

// serve answers one request; call is "" for a batch.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, call string) {
	if !h.cors(w, r) {
		writeError(w, http.StatusForbidden, "origin is not allowed (CORS_ORIGINS)")
		return
	}
	limit := int64(MaxMessageBytes)
	if call == "" {
		limit = MaxBatchBytes
	}
	limit = min(limit, h.opts.MaxBodyBytes)
	if b := h.opts.Budget; b != nil {
		if !b.Take(limit) {
			if h.opts.Shed != nil {
				h.opts.Shed()
			}
			hd := w.Header()
			hd.Set("Retry-After", "1")
			hd.Set("Connection", "close") // the body is left unread
			writeError(w, http.StatusServiceUnavailable, "too many request bytes in flight (MAX_INFLIGHT_BYTES); retry later")
			return
		}
		defer b.Give(limit)
	}
	body, msg := readBody(w, r, limit)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if !utf8.Valid(body) {
		writeError(w, http.StatusBadRequest, "body is not valid UTF-8")
		return
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object")
		return
	}

	key, _, _ := r.BasicAuth()
	var items []json.RawMessage
	var b batchInfo
	if call == "" {
		if err := json.Unmarshal(top["batch"], &items); err != nil || len(items) == 0 {
			writeError(w, http.StatusBadRequest, "batch must be a non-empty array of messages")
			return
		}
		if len(items) > h.opts.MaxBatchEvents {
			writeError(w, http.StatusBadRequest, fmt.Sprintf(
				"batch has %d messages, more than MAX_BATCH_EVENTS=%d", len(items), h.opts.MaxBatchEvents))
			return
		}
		if key == "" {
			key = stringValue(top["writeKey"])
		}
		if key == "" {
			// Browser libraries put the key in each message instead.
			var ok bool
			if key, ok = messagesKey(items); !ok {
				writeError(w, http.StatusBadRequest, "the batch's messages carry different write keys")
				return
			}
		}
		b.sentAt = top["sentAt"]
		for _, k := range []string{"batch", "writeKey", "sentAt"} {
			delete(top, k)
		}
		if len(top) > 0 {
			b.extra, _ = json.Marshal(top) // RudderStack's batch timestamp, say
		}
	} else {
		items = []json.RawMessage{body}
		if key == "" {
			key = stringValue(top["writeKey"]) // a beacon cannot send Authorization
		}
	}
	var sourceID string
	if h.opts.Authorize != nil {
		id, ok := h.opts.Authorize(w, r, key)
		if !ok {
			return
		}
		sourceID = id
	}
	h.received.Add(float64(len(items)))

	var resp response
	if h.norm.DoNotTrack(first(r.Header["Dnt"]), first(r.Header["Sec-Gpc"])) {
		resp.Success, resp.Dropped = true, len(items)
		h.pipe.CountDropped(pipeline.DropDNT, len(items))
		tracing.CountEvents(r.Context(), 0, 0, len(items))
		writeJSON(w, http.StatusOK, resp)
		return
	}
	m := event.Meta{
		Now:       time.Now(),
		IP:        h.norm.ClientIP(r.RemoteAddr, r.Header["X-Forwarded-For"]),
		UserAgent: first(r.Header["User-Agent"]),
		SourceID:  sourceID, // "" leaves the key's own (SourceID)
	}
	m.TraceID, m.SpanID = tracing.SpanIDs(r.Context())
	events := make([]*event.Event, 0, len(items))
	for i, raw := range items {
		e, err := h.message(raw, call, key, b, m)
		if err != nil {
			resp.Errors = append(resp.Errors, itemError{Index: i, Error: err.Error()})
			continue
		}
		events = append(events, e)
	}
	if n := len(resp.Errors); n > 0 {
		h.pipe.CountDropped(pipeline.DropInvalid, n)
		if len(events) == 0 {
			tracing.CountEvents(r.Context(), 0, n, 0)
			resp.Error = resp.Errors[0].Error
			if call == "" {
				resp.Error = "no valid message in the batch"
			} else {
				resp.Errors = nil
			}
			writeJSON(w, http.StatusBadRequest, resp)
			return
		}
		resp.Rejected = n
	}
	if err := h.pipe.Submit(events); err != nil {
		status, msg := submitStatus(err, w.Header())
		if msg == errStore {
			h.log.ErrorContext(r.Context(), "segment: submit failed", "err", err)
		}
		tracing.CountEvents(r.Context(), 0, resp.Rejected, len(events)) // refused with a 503: the client may send them again
		writeError(w, status, msg)
		return
	}
	tracing.CountEvents(r.Context(), len(events), resp.Rejected, 0)
	resp.Success = true
	writeJSON(w, http.StatusOK, resp)
}

const errStore = "events could not be stored; retry later"

// submitStatus turns the pipeline's refusal into a status and message.
func submitStatus(err error, h http.Header) (int, string) {
	switch {
	case errors.Is(err, pipeline.ErrQueueFull):
		h.Set("Retry-After", "1")
		return http.StatusServiceUnavailable, "queues are full; retry later"
	case errors.Is(err, pipeline.ErrSpoolFull):
		h.Set("Retry-After", "1")
		return http.StatusServiceUnavailable, "the spool is full; retry later"
	case errors.Is(err, pipeline.ErrClosed):
		h.Set("Retry-After", "5")
		return http.StatusServiceUnavailable, "shutting down; retry later"
	}
	h.Set("Retry-After", "5")
	return http.StatusServiceUnavailable, errStore
}

// readBody reads at most limit bytes of the body, decompressed when it is
// gzip (RudderStack's SDKs compress by default), and returns a message
// saying what is wrong, if anything. The limit applies to the bytes after
// decompression, which is what Segment's limits are about.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, string) {
	tooLarge := fmt.Sprintf("body is larger than %d bytes (Segment's limits: 32 KB a message, 500 KB a batch)", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, readError(err, tooLarge)
		}
		body = zr
	default:
		return nil, "Content-Encoding must be gzip or identity"
	}
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, readError(err, tooLarge)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge
	}
	return b, ""
}

func readError(err error, tooLarge string) string {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge
	}
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "body is not valid gzip"
	}
	return "could not read the body"
}

// cors sets the CORS response headers and reports whether the request's
// origin, if any, is allowed. The policy is /collect's (CORS_ORIGINS).
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	return cors.Allow(w.Header(), r.Header.Get("Origin"), h.opts.CORSOrigins)
}

// preflight allows the Authorization header, which carries the write key:
// Segment's browser library sends it, so its requests are preflighted.
func (h *Handler) preflight(w http.ResponseWriter, r *http.Request) {
	if !h.cors(w, r) {
		writeError(w, http.StatusForbidden, "origin is not allowed (CORS_ORIGINS)")
		return
	}
	hd := w.Header()
	hd.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding, X-Retry-Count")
	hd.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, response{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // response always marshals
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// messagesKey returns the writeKey the batch's messages carry, "" for none,
// and false when two of them carry different keys: a request has one
// source.
func messagesKey(items []json.RawMessage) (string, bool) {
	var key string
	for _, raw := range items {
		var m struct {
			WriteKey json.RawMessage `json:"writeKey"`
		}
		if json.Unmarshal(raw, &m) != nil {
			continue // refused later, naming the message
		}
		switch k := stringValue(m.WriteKey); {
		case k == "" || k == key:
		case key == "":
			key = k
		default:
			return "", false
		}
	}
	return key, true
}

// stringValue returns a JSON string's value, "" for anything else.
func stringValue(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}
