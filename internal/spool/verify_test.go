package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// dirBytes reads every file of a spool directory, to show Verify changes
// nothing.
func dirBytes(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	paths, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range paths {
		if st, _ := os.Stat(p); st.Mode().IsRegular() {
			out[p], _ = os.ReadFile(p)
		}
	}
	return out
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 8 << 10, Readers: []string{"log", "pg"}})
	events := sinktest.Events(120)
	for i := 0; i < len(events); i += 10 {
		s.Append(events[i : i+10])
	}
	readAll(t, s.Reader("log"), 120, true)
	if b, err := s.Reader("pg").Read(20, 1<<20, time.Millisecond, nil); err != nil || len(b) != 20 || s.Reader("pg").Ack(20) != nil {
		t.Fatalf("pg read %d events: %v", len(b), err)
	}
	s.Close()

	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	if rep.Damaged() || rep.Next != 120 || len(rep.Cursors) != 2 || rep.Cursors[0].Lag != 0 || rep.Cursors[1].Lag != 100 {
		t.Fatalf("sound spool: damaged %v, next %d, cursors %+v; want no damage, next 120, lag log 0 and pg 100", rep.Damaged(), rep.Next, rep.Cursors)
	}

	// Damage the middle of the oldest segment pg still needs, and tear the newest.
	paths, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	first := paths[0]
	b, _ := os.ReadFile(first)
	b[len(b)/2] ^= 4
	os.WriteFile(first, b, 0o640)
	f, _ := os.OpenFile(paths[len(paths)-1], os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0x40, 0, 0, 0, 1}) // a torn tail on the newest segment
	f.Close()
	before := dirBytes(t, dir)
	rep, err = Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	rep.Print(&out)
	t.Log("\n" + out.String())
	if !rep.Damaged() || len(rep.Problems) != 2 || !strings.Contains(out.String(), "corrupt span: bytes") || !strings.Contains(out.String(), "torn tail of 5 bytes") {
		t.Fatalf("damaged spool reported as sound:\n%s", out.String())
	}
	if rep.Cursors[1].Lag != 100 {
		t.Errorf("pg lag %d after damage, want 100 still (the damaged record keeps its number)", rep.Cursors[1].Lag)
	}
	if after := dirBytes(t, dir); len(after) != len(before) {
		t.Errorf("Verify changed the directory: %d files, were %d", len(after), len(before))
	} else {
		for p, b := range before {
			if !bytes.Equal(after[p], b) {
				t.Errorf("Verify changed %s", p)
			}
		}
	}

	// After a start repairs it, the spool verifies clean, with a placeholder.
	open(t, dir, Options{SegmentBytes: 8 << 10, Readers: []string{"log", "pg"}}).Close()
	if rep, _ = Verify(dir); rep.Damaged() || rep.Quarantined == 0 {
		out.Reset()
		rep.Print(&out)
		t.Errorf("after recovery:\n%s", out.String())
	}
	var placeholders uint64
	for _, sr := range rep.Segments {
		placeholders += sr.Placeholders
	}
	if placeholders != 1 {
		t.Errorf("%d placeholders after the repair, want 1", placeholders)
	}
}
