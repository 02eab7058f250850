// Package sink defines what every GoTrack output implements, and how a sink
// tells the pipeline which failures are worth retrying.
package sink

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/gotrack/gotrack/internal/event"
)

// Sink writes batches of events to one destination.
//
// The pipeline calls WriteBatch from one worker per sink: never
// concurrently, unless the sink's Policy allows more writes in flight. On
// an error that is not permanent it retries the batch with backoff; on a
// *BatchError it retries only the events named in Failed (the others are
// written). So WriteBatch must be safe to repeat. Whether a repeat can
// store an event twice is the sink's Policy.Idempotent: PostgreSQL writes
// each event_id once however often it is given; Kafka and the NDJSON file
// may store a retried event again (the NDJSON sink never leaves a torn or
// partial batch behind, but a batch written and then reported failed, by a
// timeout for example, is written again).
type Sink interface {
	// WriteBatch writes every event of batch and returns nil only once they
	// are durable by the sink's own standard (fsynced, committed,
	// acknowledged). The events must not be modified. An error wrapped with
	// Permanent says the batch will never be accepted as it is; a
	// *BatchError says which events failed while the others were written.
	// WriteBatch returns soon after ctx is done, except from a system call
	// that cannot be interrupted (a file write on a hung disk); Close
	// still returns by its own deadline then.
	WriteBatch(ctx context.Context, batch []*event.Event) error

	// Close releases the sink. It does not write anything queued elsewhere:
	// the pipeline drains first. Close returns by ctx's deadline, even
	// while a WriteBatch is stuck, and WriteBatch fails after Close.
	Close(ctx context.Context) error
}

// Policy is what a sink declares about how the pipeline should drive it,
// as Benthos outputs declare their batching and max_in_flight.
type Policy struct {
	// BatchEvents and BatchBytes bound each batch; 0 takes the pipeline's
	// BATCH_SIZE and BATCH_BYTES.
	BatchEvents, BatchBytes int
	// MaxInFlight is how many WriteBatch calls may run at once: a batch of
	// at least 2*MinPart events is split into up to MaxInFlight parts of at
	// least MinPart events each, written concurrently, each retried and
	// dead-lettered on its own. 0 or 1: one write at a time.
	MaxInFlight int
	MinPart     int
	// PartsOnBacklog says to split a batch into parts only when at least
	// another full batch waits behind it: a backlog, which parallel writes
	// clear faster. Otherwise the batch is written whole, for sinks that
	// spend less per event in one large write than in concurrent parts.
	PartsOnBacklog bool
	// Idempotent says that writing an event again stores it once (by
	// event_id), so retries and replays cause no duplicates.
	Idempotent bool
}

// Policied is implemented by sinks that declare a Policy; others get the
// zero Policy: pipeline batch limits, one write at a time, not idempotent.
type Policied interface {
	Policy() Policy
}

// PolicyOf returns s's declared Policy, or the zero Policy.
func PolicyOf(s Sink) Policy {
	if p, ok := s.(Policied); ok {
		return p.Policy()
	}
	return Policy{}
}

// Pinger is implemented by sinks whose backend can be unreachable. Ping
// reports whether it answers now; the pipeline uses it for readiness and the
// sink-up gauge.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Reopener is implemented by file sinks that reopen their file on SIGHUP,
// after logrotate has moved it.
type Reopener interface {
	Reopen() error
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying the same events cannot cure: the
// destination rejected their content. The pipeline then isolates the
// offending events by bisecting the batch, and dead-letters them.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// Unavailable marks err as the destination being unreachable, so that it is
// counted as such. It stays retryable. Unavailable(nil) is nil.
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	return &unavailableError{err}
}

// Failure is one event of a batch that was not written.
type Failure struct {
	Index int   // into the batch passed to WriteBatch
	Err   error // permanent or not, as for WriteBatch
}

// BatchError reports a batch that was partly written: every event not named
// in Failed is durable. The pipeline dead-letters the permanent failures and
// retries only the others.
type BatchError struct {
	Failed []Failure
}

func (e *BatchError) Error() string {
	if len(e.Failed) == 0 {
		return "sink: batch partly failed"
	}
	return "sink: " + strconv.Itoa(len(e.Failed)) + " events of the batch failed, first: " + e.Failed[0].Err.Error()
}

// The error types counted in gotrack_sink_errors_total{error_type}. The set
// is fixed so that the label stays bounded.
const (
	ErrRejected    = "rejected"    // the destination refused the content (permanent)
	ErrTimeout     = "timeout"     // a deadline passed
	ErrUnavailable = "unavailable" // the destination could not be reached
	ErrDiskFull    = "disk_full"   // no space left on the device
	ErrOther       = "other"       // anything else
)

// ErrorTypes lists every value ErrorType returns.
var ErrorTypes = []string{ErrRejected, ErrTimeout, ErrUnavailable, ErrDiskFull, ErrOther}

// ErrorType classifies err into one of ErrorTypes.
func ErrorType(err error) string {
	var (
		ne net.Error
		ue *unavailableError
	)
	switch {
	case IsPermanent(err):
		return ErrRejected
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ErrDiskFull
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case errors.As(err, &ue), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return ErrUnavailable
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return ErrUnavailable
	}
	return ErrOther
}
