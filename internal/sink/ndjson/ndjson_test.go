package ndjson

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConformance(t *testing.T) {
	var path string
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T) sink.Sink {
			path = filepath.Join(t.TempDir(), "events.ndjson")
			s, err := Open(Options{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Stored: func(t *testing.T) [][]byte { return readLines(t, path) },
		// A file on a disk that is gone: a directory where the file was,
		// after a reopen.
		Break: func(t *testing.T, s sink.Sink) func() {
			if err := os.Rename(path, path+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(path, 0o750); err != nil {
				t.Fatal(err)
			}
			_ = s.(sink.Reopener).Reopen() // fails: the path is a directory now
			return func() {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
		},
		// A standard output whose reader stopped reading.
		Stall: func(t *testing.T) (sink.Sink, <-chan struct{}, func()) {
			w := &stuckWriter{release: make(chan struct{}), stuck: make(chan struct{})}
			s, err := Open(Options{Path: Stdout, Stdout: w})
			if err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			return s, w.stuck, func() { once.Do(func() { close(w.release) }) }
		},
	})
}

// stuckWriter blocks every Write until release is closed, and closes
// stuck when the first one arrives.
type stuckWriter struct {
	release, stuck chan struct{}
	once           sync.Once
}

func (w *stuckWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { close(w.stuck) })
	<-w.release
	return len(b), nil
}

func goldenEvents() []*event.Event {
	at := time.Date(2026, 11, 22, 12, 0, 0, 5, time.UTC)
	events := []*event.Event{
		{EventID: "0190f0f0-0000-7000-8000-000000000001", ReceivedAt: at, Type: "pageview",
			URL: "https://example.com/", Source: event.SourcePixel, IP: "192.0.2.0"},
		{EventID: "0190f0f0-0000-7000-8000-000000000002", ReceivedAt: at, SentAt: at.Add(-time.Second),
			Type: "signup", Title: "Line\nbreak \"q\" é \u2028", VisitorID: "v", SessionID: "s",
			UserAgent: "UA", Props: json.RawMessage(`{"plan":"pro","seats":3}`), Source: event.SourceCollect},
	}
	for _, e := range events {
		e.Seal()
	}
	return events
}

func TestGolden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ndjson")
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), goldenEvents()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	golden := filepath.Join("testdata", "batch.golden.ndjson")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, got)
	}
}

func TestStdout(t *testing.T) {
	var buf bytes.Buffer
	s, err := Open(Options{Path: Stdout, Stdout: &buf})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), goldenEvents()); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("wrote %d lines to stdout, want 2", n)
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.ndjson")
	events := sinktest.Events(40)
	one := int64(len(events[0].JSON()) + 1)
	s, err := Open(Options{Path: path, RotateBytes: 5 * one, Backups: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(events); i += 4 { // every batch of 4 is over RotateBytes, so each file holds one
		if err := s.WriteBatch(t.Context(), events[i:i+4]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"events.ndjson", "events.ndjson.1", "events.ndjson.2"}
	if len(names) != len(want) || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("files after rotation = %v, want %v", names, want)
	}
	// The newest events are in the live file, the ones before in .1 and .2.
	for i, name := range []string{"events.ndjson.2", "events.ndjson.1", "events.ndjson"} {
		lines := readLines(t, filepath.Join(dir, name))
		first := 28 + 4*i
		if len(lines) != 4 || !bytes.Contains(lines[0], []byte(events[first].EventID)) {
			t.Errorf("%s holds %d lines starting %.60s, want 4 starting with event %d", name, len(lines), lines[0], first)
		}
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.ndjson")
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	events := sinktest.Events(2)
	if err := s.WriteBatch(t.Context(), events[:1]); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".old"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	if err := s.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), events[1:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if old, now := readLines(t, path+".old"), readLines(t, path); len(old) != 1 || len(now) != 1 {
		t.Errorf("after reopen: %d lines in the moved file and %d in the new one, want 1 and 1", len(old), len(now))
	}
}

func TestDiskFullIsRetryable(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	s, err := Open(Options{Path: "/dev/full", Fsync: FsyncNever})
	if err != nil {
		t.Fatal(err)
	}
	err = s.WriteBatch(t.Context(), sinktest.Events(3))
	if err == nil {
		t.Fatal("writing to /dev/full succeeded")
	}
	if sink.IsPermanent(err) || sink.ErrorType(err) != sink.ErrDiskFull {
		t.Errorf("error %v: permanent=%v type=%s, want retryable %s", err, sink.IsPermanent(err), sink.ErrorType(err), sink.ErrDiskFull)
	}
}

func TestParseFsyncPolicy(t *testing.T) {
	for _, ok := range []string{"batch", "interval", "never"} {
		if _, err := ParseFsyncPolicy(ok); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseFsyncPolicy("sometimes"); err == nil {
		t.Error("accepted an unknown policy")
	}
}

func TestValidate(t *testing.T) {
	if err := (Options{Path: "events.ndjson"}).Validate(); err != nil {
		t.Errorf("Validate of a plain path = %v", err)
	}
	err := Options{Fsync: "sometimes", RotateBytes: -1, Backups: MaxBackups + 1, BatchSize: -1}.Validate()
	for _, want := range []string{"Path is empty", `Fsync: unknown fsync policy "sometimes"`, "RotateBytes is negative", "Backups=1001 is out of range; want 0 to 1000",
		"BatchSize=-1 is out of range"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to say %q", err, want)
		}
	}
	if _, err := Open(Options{}); err == nil || !strings.Contains(err.Error(), "ndjson: Path is empty") {
		t.Errorf("Open without a path = %v", err)
	}
}

// TestPolicyBatchSize: the sink declares Options.BatchSize as its batch
// policy, which the pipeline follows; 0 leaves the pipeline's.
func TestPolicyBatchSize(t *testing.T) {
	for _, n := range []int{0, 2000} {
		s, err := Open(Options{Path: filepath.Join(t.TempDir(), "e.ndjson"), BatchSize: n})
		if err != nil {
			t.Fatal(err)
		}
		if got := sink.PolicyOf(s); got.BatchEvents != n || got.Idempotent {
			t.Errorf("BatchSize %d: Policy = %+v, want BatchEvents %d, not idempotent", n, got, n)
		}
		s.Close(context.Background())
	}
	if err := (Options{Path: "e", BatchSize: MaxBatchSize + 1}).Validate(); err == nil {
		t.Errorf("Validate accepted BatchSize %d", MaxBatchSize+1)
	}
}
