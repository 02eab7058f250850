// Package deadletter is the dead-letter file: the one definition of its
// line format, the writer the pipeline appends to, and the decoder
// `gotrack replay` reads it back with.
package deadletter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// Line is one line of the dead-letter file, an NDJSON object:
//
//	{"sink":"postgres","reason":"rejected","error":"...","failed_at":"...","event":{...}}
type Line struct {
	Sink     string          `json:"sink"`
	Reason   string          `json:"reason"`
	Error    string          `json:"error,omitempty"`
	FailedAt time.Time       `json:"failed_at"`
	Event    json.RawMessage `json:"event"`
}

// ErrNotDeadLetter is returned by Decode for a line that is not a
// dead-letter line, such as a plain event.
var ErrNotDeadLetter = errors.New("deadletter: not a dead-letter line")

// Decode decodes one dead-letter line. A line with any key that Line does
// not have, or without an event, is not one: Decode then returns
// ErrNotDeadLetter, so that a plain event line is told apart by decoding,
// not by looking for a substring.
func Decode(b []byte) (Line, error) {
	var l Line
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&l); err != nil || len(l.Event) == 0 || l.Sink == "" {
		return Line{}, ErrNotDeadLetter
	}
	if _, err := d.Token(); err != io.EOF {
		return Line{}, ErrNotDeadLetter
	}
	return l, nil
}

// File appends events that a sink could not take to an NDJSON file of
// Lines. It is safe for concurrent use.
type File struct {
	path string
	open func(path string) (WriteSyncer, error)
	mu   sync.Mutex
	f    WriteSyncer
}

// WriteSyncer is the file File writes to.
type WriteSyncer interface {
	io.WriteCloser
	Sync() error
}

// New returns a File writing to path. The file is created on the first
// write, so that a healthy system leaves none behind.
func New(path string) *File {
	return &File{path: path, open: func(path string) (WriteSyncer, error) {
		return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	}}
}

// NewOpener returns a File that opens path with open, for tests that
// inject write or sync faults such as a full disk.
func NewOpener(path string, open func(path string) (WriteSyncer, error)) *File {
	return &File{path: path, open: open}
}

// Path returns the file's path.
func (d *File) Path() string { return d.path }

// Write appends the events, each with the sink, reason and error, and syncs
// the file before it returns. On an error nothing may be counted as
// written: part of the lines may be in the file, and a retry appends them
// again (replay is then at-least-once).
func (d *File) Write(sinkName, reason string, cause error, events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	var b []byte
	line := Line{Sink: sinkName, Reason: reason, Error: msg, FailedAt: time.Now().UTC()}
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
		f, err := d.open(d.path)
		if err != nil {
			return fmt.Errorf("dead letter: open: %w", err)
		}
		d.f = f
	}
	if _, err := d.f.Write(b); err != nil {
		// Reopen on the next attempt: a file that failed may be replaced.
		d.f.Close()
		d.f = nil
		return fmt.Errorf("dead letter: write %d events: %w", len(events), err)
	}
	if err := d.f.Sync(); err != nil {
		d.f.Close()
		d.f = nil
		return fmt.Errorf("dead letter: fsync: %w", err)
	}
	return nil
}

// Close closes the file, if it was opened.
func (d *File) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
