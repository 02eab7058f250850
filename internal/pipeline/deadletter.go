package pipeline

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// DeadLetter appends events that a sink could not take to an NDJSON file,
// one object per line:
//
//	{"sink":"postgres","reason":"rejected","error":"...","failed_at":"...","event":{...}}
//
// `gotrack replay` reads these lines back. It is safe for concurrent use.
type DeadLetter struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// deadLine is one line of the dead-letter file.
type deadLine struct {
	Sink     string          `json:"sink"`
	Reason   string          `json:"reason"`
	Error    string          `json:"error,omitempty"`
	FailedAt time.Time       `json:"failed_at"`
	Event    json.RawMessage `json:"event"`
}

// NewDeadLetter returns a DeadLetter writing to path. The file is created on
// the first write, so that a healthy system leaves none behind.
func NewDeadLetter(path string) *DeadLetter { return &DeadLetter{path: path} }

// Path returns the file's path.
func (d *DeadLetter) Path() string { return d.path }

// Write appends the events, each with the sink, reason and error, and syncs
// the file before it returns.
func (d *DeadLetter) Write(sinkName, reason string, cause error, events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	var b []byte
	line := deadLine{Sink: sinkName, Reason: reason, Error: msg, FailedAt: time.Now().UTC()}
	for _, e := range events {
		line.Event = e.JSON()
		j, err := json.Marshal(line)
		if err != nil {
			return fmt.Errorf("dead letter: encode: %w", err)
		}
		b = append(append(b, j...), '\n')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return fmt.Errorf("dead letter: open: %w", err)
		}
		d.f = f
	}
	if _, err := d.f.Write(b); err != nil {
		return fmt.Errorf("dead letter: write %d events: %w", len(events), err)
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("dead letter: fsync: %w", err)
	}
	return nil
}

// Close closes the file, if it was opened.
func (d *DeadLetter) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
