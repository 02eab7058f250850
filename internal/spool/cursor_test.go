package spool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// TestCursorPersistedInPlace checks how Ack persists a cursor: the first
// time in a process with a rename, which leaves a file of exactly
// cursorLen bytes whatever was there before (here a cursor in the old,
// unpadded form followed by blanks, longer than cursorLen), and then by
// overwriting that same file, so that each Ack costs one write rather than
// a new file. The file is checked right after each Ack, before any Close:
// what a killed process leaves.
func TestCursorPersistedInPlace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cursor.log")
	s := open(t, dir, Options{})
	events := sinktest.Events(30)
	if err := s.Append(events); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// An old cursor: unpadded, and longer than a padded one.
	if err := os.WriteFile(path, []byte("5\n                              \n"), 0o640); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, Options{})
	r := s.Reader("log")
	if got := r.Cursor(); got != 5 {
		t.Fatalf("cursor %d after reopening, want 5 from the file", got)
	}
	readAll(t, r, 25, false)
	want := func(content string) os.FileInfo {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != content {
			t.Fatalf("cursor file holds %q, want %q", b, content)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if err := r.Ack(3); err != nil {
		t.Fatal(err)
	}
	first := want("00000000000000000008\n")
	if err := r.Ack(12); err != nil {
		t.Fatal(err)
	}
	if err := r.Ack(1); err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(first, want("00000000000000000021\n")) {
		t.Error("a later Ack replaced the cursor file; want it overwritten in place")
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("cursor.log.tmp left behind: %v", err)
	}

	s.Close()
	s = open(t, dir, Options{})
	defer s.Close()
	if got := s.Reader("log").Cursor(); got != 21 {
		t.Fatalf("cursor %d after reopening, want 21", got)
	}
	if got := readAll(t, s.Reader("log"), 9, true); got[0].EventID != events[21].EventID {
		t.Errorf("after reopening, read %s first, want event 21", got[0].EventID)
	}
}

// TestCursorDamagedReplays: a cursor file a crash or a disk left damaged
// (all zero bytes, as a file whose blocks were never written reads back,
// zero digits, garbage, a digit string too long for a uint64, empty)
// replays every record still in the spool: duplicates, never a skip. And
// the next Ack writes a whole cursor over it, which Verify reads.
func TestCursorDamagedReplays(t *testing.T) {
	for name, content := range map[string]string{
		"zero bytes": string(make([]byte, cursorLen)),
		"zeros":      "00000000000000000000\n",
		"garbage":    "0000000000\xff\xfe0000000021\n",
		"overflow":   "99999999999999999999\n",
		"empty":      "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{})
			events := sinktest.Events(10)
			if err := s.Append(events); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if err := os.WriteFile(filepath.Join(dir, "cursor.log"), []byte(content), 0o640); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir, Options{})
			r := s.Reader("log")
			if got := r.Cursor(); got != 0 {
				t.Fatalf("cursor %d, want 0: the oldest record", got)
			}
			if got := readAll(t, r, 10, false); got[0].EventID != events[0].EventID {
				t.Fatalf("read %s first, want event 0", got[0].EventID)
			}
			if err := r.Ack(4); err != nil {
				t.Fatal(err)
			}
			s.Close()
			rep, err := Verify(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 0 || len(rep.Cursors) != 1 || rep.Cursors[0].Cursor != 4 || rep.Cursors[0].Lag != 6 {
				t.Errorf("Verify: problems %q, cursors %+v; want the cursor at 4, lag 6", rep.Problems, rep.Cursors)
			}
		})
	}
}
