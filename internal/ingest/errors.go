package ingest

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/ratelimit"
	"github.com/gotrack/gotrack/internal/source"
	"github.com/gotrack/gotrack/internal/spool"
)

// kind is what is wrong with a request, in the handlers' terms. Handlers
// say what went wrong; answer alone turns that into an HTTP status.
type kind int

const (
	kindMalformed      kind = iota // the request cannot be read as events
	kindTooLarge                   // a body or batch beyond its limit
	kindHeaderTooLarge             // request headers beyond MaxHeaderBytes
	kindMediaType                  // a Content-Type or Content-Encoding GoTrack does not take
	kindOrigin                     // an Origin not in CORS_ORIGINS
	kindNotFound                   // a path GoTrack does not serve
	kindMethod                     // a method the path does not take
	kindOverloaded                 // MAX_INFLIGHT_BYTES is spent: the request is shed
	kindNoValidEvent               // every event of the body broke the schema
)

// requestError is a request GoTrack refuses. msg is shown to the client.
type requestError struct {
	kind kind
	msg  string
}

func (e *requestError) Error() string { return e.msg }

func refuse(k kind, msg string) error { return &requestError{kind: k, msg: msg} }

// Retry-After values: short when capacity comes back on its own (a queue
// drains, a body finishes), longer when GoTrack is stopping or its storage
// failed.
var (
	retryShort = []string{"1"}
	retryLong  = []string{"5"}
)

// reply is how GoTrack answers an error.
type reply struct {
	status     int
	msg        string   // shown to the client
	retryAfter []string // the Retry-After header, if any
	failed     bool     // GoTrack failed, not the client nor its load: log it
}

// answer is the one place where an outcome becomes an HTTP status: what the
// handlers refuse, and what the pipeline's typed errors say. An error it
// does not know is a failure to store events (the spool could not write or
// sync): nothing was accepted, so the client may retry.
func answer(err error) reply {
	var re *requestError
	var fe *event.FieldError
	var af *source.Failure
	var ex *ratelimit.Exceeded
	var full *source.ReplayCacheFullError
	switch {
	case errors.As(err, &ex):
		return reply{status: http.StatusTooManyRequests, msg: ex.Error(), retryAfter: []string{strconv.Itoa(ex.RetryAfter())}}
	case errors.As(err, &af):
		return reply{status: http.StatusUnauthorized, msg: af.Msg}
	case errors.As(err, &re):
		switch re.kind {
		case kindMalformed, kindNoValidEvent:
			return reply{status: http.StatusBadRequest, msg: re.msg}
		case kindTooLarge:
			return reply{status: http.StatusRequestEntityTooLarge, msg: re.msg}
		case kindHeaderTooLarge:
			return reply{status: http.StatusRequestHeaderFieldsTooLarge, msg: re.msg}
		case kindMediaType:
			return reply{status: http.StatusUnsupportedMediaType, msg: re.msg}
		case kindOrigin:
			return reply{status: http.StatusForbidden, msg: re.msg}
		case kindNotFound:
			return reply{status: http.StatusNotFound, msg: re.msg}
		case kindMethod:
			return reply{status: http.StatusMethodNotAllowed, msg: re.msg}
		case kindOverloaded:
			return reply{status: http.StatusServiceUnavailable, msg: re.msg, retryAfter: retryShort}
		}
	case errors.As(err, &fe):
		return reply{status: http.StatusBadRequest, msg: fe.Error()}
	case errors.As(err, &full):
		return reply{status: http.StatusServiceUnavailable, msg: err.Error(), retryAfter: []string{strconv.Itoa(full.RetryAfter())}}
	case errors.Is(err, source.ErrReplayCacheFull):
		return reply{status: http.StatusServiceUnavailable, msg: err.Error(), retryAfter: retryShort}
	case errors.Is(err, pipeline.ErrQueueFull):
		return reply{status: http.StatusServiceUnavailable, msg: "queues are full; retry later", retryAfter: retryShort}
	case errors.Is(err, pipeline.ErrSpoolFull):
		return reply{status: http.StatusServiceUnavailable, msg: "the spool is full; retry later", retryAfter: retryShort}
	case errors.Is(err, pipeline.ErrClosed):
		return reply{status: http.StatusServiceUnavailable, msg: "shutting down; retry later", retryAfter: retryLong}
	case errors.Is(err, spool.ErrFailed):
		// The spool logs its failure itself, once and then at most every
		// 10 s: logging it again per request would flood a full disk.
		return reply{status: http.StatusServiceUnavailable, msg: "events could not be stored; retry later", retryAfter: retryLong}
	}
	return reply{status: http.StatusServiceUnavailable, msg: "events could not be stored; retry later", retryAfter: retryLong, failed: true}
}

// writeError answers err to r as JSON, with the status answer gives it,
// and reports what answer said. body, when not nil, is the response to send
// instead of {"error": msg}; its Error field is set to msg.
//
// A refused request that carries a body closes its connection, and net/http
// is told to stop reading it: otherwise, after the answer, net/http would
// wait to drain what is left of the body, up to ReadTimeout, from a client
// that may be stalling on purpose, holding a connection slot all that time.
// r is nil when the body was read to its end: the connection then stays.
func writeError(w http.ResponseWriter, r *http.Request, err error, body *collectResponse) reply {
	rp := answer(err)
	h := w.Header()
	if rp.retryAfter != nil {
		h["Retry-After"] = rp.retryAfter
	}
	if r != nil && r.ContentLength != 0 {
		h["Connection"] = connClose
		_ = http.NewResponseController(w).SetReadDeadline(time.Now()) // fails only under a writer that cannot; then ReadTimeout bounds the wait
	}
	if body != nil {
		body.Error = rp.msg
		writeJSON(w, rp.status, body)
		return rp
	}
	writeJSON(w, rp.status, errorBody{rp.msg})
	return rp
}

var connClose = []string{"close"}

type errorBody struct {
	Error string `json:"error"`
}
