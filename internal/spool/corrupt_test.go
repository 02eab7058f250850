package spool

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// closedSegment makes a spool whose first segment, seg-0, holds n events
// and is closed (a later segment follows it), with no cursor moved.
func closedSegment(t *testing.T, n int) (string, []*event.Event) {
	t.Helper()
	dir := t.TempDir()
	events := sinktest.Events(n)
	s := open(t, dir, Options{SegmentBytes: 1 << 30})
	for i := 0; i < n; i += 10 {
		if err := s.Append(events[i:min(n, i+10)]); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	open(t, dir, Options{}).Close() // starts seg-n, which closes seg-0
	return dir, events
}

// recordStarts returns the offset of each record of a segment.
func recordStarts(b []byte) []int {
	var out []int
	for off := 0; off+headerLen <= len(b); off += headerLen + int(binary.LittleEndian.Uint32(b[off:])) {
		out = append(out, off)
	}
	return out
}

func setCursor(t *testing.T, dir, reader string, v int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cursor."+reader), []byte(strconv.Itoa(v)+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
}

// drain reads every event left for r.
func drain(t *testing.T, s *Spool, name string) []*event.Event {
	t.Helper()
	r := s.Reader(name)
	return readAll(t, r, int(r.Lag())-countPlaceholdersAhead(s, r), true)
}

// countPlaceholdersAhead counts the placeholders after r's cursor, which
// the lag includes and Read skips.
func countPlaceholdersAhead(s *Spool, r *Reader) int {
	n := 0
	for _, seg := range s.segs {
		b, _ := os.ReadFile(seg.path)
		seq := seg.base
		for _, off := range recordStarts(b) {
			l := int(binary.LittleEndian.Uint32(b[off:]))
			if seq >= r.Cursor() && isPlaceholder(b[off+headerLen:off+headerLen+l]) {
				n++
			}
			seq++
		}
	}
	return n
}

// TestMidSegmentCorruption is issue 11's case: one bit flipped at 25% of a
// closed segment of 1,960 events used to cost the 1,470 events after it.
// Now only the damaged record is lost, wherever the bit falls (payload,
// length, CRC), and a zeroed disk block costs only the records it covers;
// a copy of the damaged file is kept; a reader whose cursor is past the
// damage gets exactly the events it had not taken.
func TestMidSegmentCorruption(t *testing.T) {
	const n, late = 1960, 1000
	damages := map[string]func(b []byte, starts []int, rec int) (lost []int){
		"payload bit": func(b []byte, starts []int, rec int) []int {
			b[starts[rec]+headerLen+40] ^= 1 << 3
			return []int{rec}
		},
		"length bit, low byte": func(b []byte, starts []int, rec int) []int {
			b[starts[rec]] ^= 1 << 4
			return []int{rec}
		},
		"length bit, high byte": func(b []byte, starts []int, rec int) []int {
			b[starts[rec]+3] ^= 1 << 6
			return []int{rec}
		},
		"CRC bit": func(b []byte, starts []int, rec int) []int {
			b[starts[rec]+5] ^= 1
			return []int{rec}
		},
		"zeroed 4 KiB block": func(b []byte, starts []int, rec int) []int {
			from := starts[rec] + 100
			var lost []int
			for i, off := range starts {
				end := off + headerLen + int(binary.LittleEndian.Uint32(b[off:]))
				if i >= rec && off < from+4096 && end > from {
					lost = append(lost, i)
				}
			}
			clear(b[from : from+4096])
			return lost
		},
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			dir, events := closedSegment(t, n)
			seg := filepath.Join(dir, segmentName(0))
			b, _ := os.ReadFile(seg)
			starts := recordStarts(b)
			rec := slices.IndexFunc(starts, func(off int) bool { return off >= len(b)/4 })
			lost := damage(b, starts, rec)
			os.WriteFile(seg, b, 0o640)
			setCursor(t, dir, "late", late)

			logs := &logCount{}
			reg := prometheus.NewPedanticRegistry()
			m, _ := NewMetrics(reg, []string{"log", "late"})
			s := open(t, dir, Options{Readers: []string{"log", "late"}, Metrics: m, Log: slog.New(logs)})
			defer s.Close()

			var want []string
			for i, e := range events {
				if !slices.Contains(lost, i) {
					want = append(want, e.EventID)
				}
			}
			got := ids(drain(t, s, "log"))
			if !slices.Equal(got, want) {
				t.Fatalf("recovered %d of %d events, want %d (all but records %v)", len(got), n, len(want), lost)
			}
			t.Logf("%s at byte %d of %d: %d of %d events survive", name, starts[rec], len(b), len(got), n)
			if got := ids(drain(t, s, "late")); !slices.Equal(got, ids(events[late:])) {
				t.Errorf("the reader at cursor %d got %d events, want events %d to %d: cursors moved", late, len(got), late, n-1)
			}
			if v := testutil.ToFloat64(m.corrupt); v != float64(len(lost)) {
				t.Errorf("gotrack_spool_corrupt_records_total = %v, want %d", v, len(lost))
			}
			if v := testutil.ToFloat64(m.truncations); v != 0 {
				t.Errorf("truncations = %v: a closed segment was cut", v)
			}
			if logs.errorCount() != 1 || !strings.Contains(logs.lines.String(), "skipped damaged records") {
				t.Errorf("want one ERROR naming the damage, got:\n%s", logs.lines.String())
			}
			q, _ := filepath.Glob(filepath.Join(dir, "quarantine", segmentName(0)+".*"))
			if len(q) != 1 {
				t.Fatalf("quarantine holds %v, want one copy of the segment", q)
			}
			if kept, _ := os.ReadFile(q[0]); !bytes.Equal(kept, b) {
				t.Error("the quarantined copy is not the segment as it was found")
			}
			// Later events keep their numbers: appending goes on after them.
			if err := s.Append(sinktest.Events(1)); err != nil {
				t.Fatal(err)
			}
			if s.Reader("log").Lag() != 1 { // the cursor passed the placeholders too
				t.Errorf("lag %d after one more append, want 1", s.Reader("log").Lag())
			}
		})
	}
}

// TestNewestSegmentMidCorruption damages a length field in the middle of
// the newest segment, where no later segment says how many records the
// damaged stretch held: a reader past the damage may get a few events again,
// but none after its cursor is lost, and the torn-tail cut does not take
// the records after the damage.
func TestNewestSegmentMidCorruption(t *testing.T) {
	dir := t.TempDir()
	events := sinktest.Events(500)
	s := open(t, dir, Options{SegmentBytes: 1 << 30})
	for i := 0; i < len(events); i += 10 {
		s.Append(events[i : i+10])
	}
	s.Close()
	seg := filepath.Join(dir, segmentName(0))
	b, _ := os.ReadFile(seg)
	starts := recordStarts(b)
	b[starts[125]+2] ^= 1 // the length of record 125 becomes larger than what is left
	os.WriteFile(seg, b, 0o640)
	setCursor(t, dir, "late", 300)

	s = open(t, dir, Options{Readers: []string{"log", "late"}})
	defer s.Close()
	got := ids(drain(t, s, "log"))
	want := slices.Delete(ids(events), 125, 126)
	if !slices.Equal(got, want) {
		t.Fatalf("recovered %d events, want the 499 undamaged ones", len(got))
	}
	late := ids(drain(t, s, "late"))
	i := slices.Index(late, events[300].EventID)
	if i < 0 || !slices.Equal(late[i:], ids(events[300:])) || !slices.Equal(late[:i], ids(events[300-i:300])) {
		t.Fatalf("the reader at cursor 300 got %d events from %v on; want events 300 to 499, maybe after a few before them", len(late), late[:1])
	}
	t.Logf("reader past the damage got %d events again", i)
}

// TestDamagedEndOfClosedSegment: a record failing its CRC at the end of a
// closed segment is damage, not a torn tail: the segment keeps its count,
// and the next segment's events their numbers.
func TestDamagedEndOfClosedSegment(t *testing.T) {
	dir, events := closedSegment(t, 100)
	s := open(t, dir, Options{})
	s.Append(sinktest.Events(5))
	s.Close()
	seg := filepath.Join(dir, segmentName(0))
	b, _ := os.ReadFile(seg)
	b[len(b)-5] ^= 0xFF
	os.WriteFile(seg, b, 0o640)
	setCursor(t, dir, "late", 100)

	s = open(t, dir, Options{Readers: []string{"log", "late"}})
	defer s.Close()
	if got := drain(t, s, "log"); len(got) != 104 || got[98].EventID != events[98].EventID {
		t.Errorf("recovered %d events, want 104", len(got))
	}
	if got := drain(t, s, "late"); len(got) != 5 {
		t.Errorf("the reader past the closed segment got %d events, want the 5 after it", len(got))
	}
}

// TestDamageFoundWhileRunning covers the reader's skipSegment: a closed
// segment damaged on disk after the start (so no longer in the ring) is
// repaired as at start, and costs only the damaged record, also to a reader
// that had the file open before the repair. Damage that is still there
// after a repair (new damage, or a disk that reads differently each time)
// costs the rest of that segment, once, and the reader goes on with the
// next segment.
func TestDamageFoundWhileRunning(t *testing.T) {
	dir, events := closedSegment(t, 600)
	reg := prometheus.NewPedanticRegistry()
	names := []string{"log", "pg", "late"}
	m, _ := NewMetrics(reg, names)
	s := open(t, dir, Options{Metrics: m, Readers: names})
	defer s.Close()
	more := sinktest.Events(5)
	s.Append(more)
	want := append(slices.Delete(slices.Clone(events), 500, 501), more...)

	pg := s.Reader("pg")
	first, err := pg.Read(30, 1<<20, 0, nil) // pg now has the segment open, and its first 256 KiB buffered
	if err != nil || len(first) != 30 {
		t.Fatalf("pg read %d: %v", len(first), err)
	}
	pg.Ack(30)
	seg := filepath.Join(dir, segmentName(0))
	b, _ := os.ReadFile(seg)
	starts := recordStarts(b)
	f, _ := os.OpenFile(seg, os.O_WRONLY, 0) // in place: the inode pg reads
	f.WriteAt([]byte{b[starts[500]+headerLen+10] ^ 1}, int64(starts[500]+headerLen+10))
	f.Close()

	if got := ids(readAll(t, s.Reader("log"), 604, true)); !slices.Equal(got, ids(want)) {
		t.Fatalf("log read %d events; want all but the damaged one", len(got))
	}
	if got := ids(readAll(t, pg, 574, true)); !slices.Equal(got, ids(want[30:])) {
		t.Fatalf("pg, reading the file from before the repair, read %d events; want all but the damaged one", len(got))
	}
	if v := testutil.ToFloat64(m.corrupt); v != 1 {
		t.Errorf("corrupt records = %v, want the 1 damaged", v)
	}
	if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*")); len(q) != 1 {
		t.Errorf("quarantine holds %v, want one copy", q)
	}

	// New damage in the repaired segment, ahead of the late reader.
	b, _ = os.ReadFile(seg)
	starts = recordStarts(b)
	b[starts[550]+headerLen+10] ^= 1
	os.WriteFile(seg, b, 0o640)
	got := ids(readAll(t, s.Reader("late"), 554, true))
	if !slices.Equal(got, ids(append(slices.Clone(want[:549]), more...))) {
		t.Errorf("late read %d events; want the 549 before the new damage, then the next segment's", len(got))
	}
	if v := testutil.ToFloat64(m.corrupt); v != 51 {
		t.Errorf("corrupt records = %v, want 1 + the 50 skipped", v)
	}
}

// TestTruncatedClosedSegment: a closed segment cut short (a failed copy, a
// damaged file system) lost every record past the cut, not just the bytes
// of the partial record left at its end. The next segment's name says how
// many there were, so each lost record is counted, logged and given a
// placeholder; none is left uncounted because the cut left only a few bytes.
func TestTruncatedClosedSegment(t *testing.T) {
	for name, left := range map[string]int{"inside a record": headerLen + 3, "at a record boundary": 0} {
		t.Run(name, func(t *testing.T) { testTruncatedClosedSegment(t, left) })
	}
}

// testTruncatedClosedSegment cuts seg-0 of 200 records left bytes after
// the start of record 80.
func testTruncatedClosedSegment(t *testing.T, left int) {
	const n = 200
	dir, events := closedSegment(t, n)
	seg := filepath.Join(dir, segmentName(0))
	b, _ := os.ReadFile(seg)
	starts := recordStarts(b)
	const kept = 80
	os.WriteFile(seg, b[:starts[kept]+left], 0o640)

	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lostByVerify uint64
	for _, sp := range rep.Segments[0].Damaged {
		lostByVerify += sp.Records
	}
	if lostByVerify != n-kept || rep.Segments[0].Records != n {
		t.Errorf("verify: segment numbers %d records, %d lost; want %d and %d", rep.Segments[0].Records, lostByVerify, n, n-kept)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "(120 records lost)") {
		t.Errorf("verify's problems: %q, want one naming the 120 records lost", rep.Problems)
	}

	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	var logs bytes.Buffer
	s := open(t, dir, Options{Readers: []string{"log"}, Metrics: m, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	defer s.Close()
	logged := logs.String() // the start's lines; open returns after recovery
	if got := ids(drain(t, s, "log")); !slices.Equal(got, ids(events[:kept])) {
		t.Fatalf("recovered %d events, want the first %d", len(got), kept)
	}
	if v := testutil.ToFloat64(m.corrupt); v != n-kept {
		t.Errorf("gotrack_spool_corrupt_records_total = %v, want %d", v, n-kept)
	}
	if want := `"records_lost":` + strconv.Itoa(n-kept); !strings.Contains(logged, want) {
		t.Errorf("the ERROR line does not say %d records were lost:\n%s", n-kept, logged)
	}
}
