// Package replay reads NDJSON event files (event logs or dead-letter
// files) back, for `gotrack replay`, and reports how the run went: as
// progress while it runs, and as batch-job metrics pushed to a Prometheus
// Pushgateway at the end.
package replay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
)

// Line is one line read back: an event, and for a dead-letter line the sink
// it failed in.
type Line struct {
	File  string
	No    int
	Event *event.Event
	Sink  string // "" for a plain event line: every sink
}

// Parse reads one line: an event as GoTrack writes it, or a dead-letter
// line wrapping one (told apart by decoding it as a deadletter.Line).
// Blank lines give a nil event and no error.
func Parse(b []byte) (*event.Event, string, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, "", nil
	}
	if d, err := deadletter.Decode(b); err == nil {
		e, err := event.Decode(d.Event)
		return e, d.Sink, err
	}
	e, err := event.Decode(b)
	return e, "", err
}

// Reader reads lines from a list of files in order, counting bytes for
// progress.
type Reader struct {
	files []string
	total int64
	read  int64

	file string
	f    *os.File
	sc   *bufio.Scanner
	no   int
}

// NewReader checks that every file can be opened, and sums their sizes.
func NewReader(files []string) (*Reader, error) {
	r := &Reader{files: files}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		r.total += st.Size()
	}
	return r, nil
}

// Close closes the file being read, if any. Next after Close starts the
// next file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f, r.sc = nil, nil
	return err
}

// Total returns the bytes to read; Done, the bytes read so far.
func (r *Reader) Total() int64 { return r.total }

// Done returns the bytes read so far.
func (r *Reader) Done() int64 { return r.read }

// Next returns the next line's parse, or io.EOF after the last file. A line
// that is not an event comes back with its error; reading goes on.
func (r *Reader) Next() (Line, error) {
	for {
		if r.sc == nil {
			if len(r.files) == 0 {
				return Line{}, io.EOF
			}
			f, err := os.Open(r.files[0])
			if err != nil {
				return Line{}, err
			}
			r.file, r.files, r.f, r.no = r.files[0], r.files[1:], f, 0
			r.sc = bufio.NewScanner(f)
			r.sc.Buffer(make([]byte, 64<<10), 4<<20)
		}
		if !r.sc.Scan() {
			err := r.sc.Err()
			r.f.Close()
			r.f, r.sc = nil, nil
			if err != nil {
				return Line{File: r.file, No: r.no + 1}, fmt.Errorf("%s: %w", r.file, err)
			}
			continue
		}
		r.no++
		b := r.sc.Bytes()
		r.read += int64(len(b)) + 1
		e, sink, err := Parse(b)
		if e == nil && err == nil {
			continue // blank
		}
		return Line{File: r.file, No: r.no, Event: e, Sink: sink}, err
	}
}
