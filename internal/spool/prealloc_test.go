package spool

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// crashCopy copies the spool files of dir, as they are now, into a new
// directory: what a process killed at this moment leaves on disk (the page
// cache is the file as every later reader sees it).
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	paths, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range paths {
		if filepath.Base(p) == "lock.pid" {
			continue
		}
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(p)), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// crashedWithPreallocation appends events to a spool and leaves it as a
// killed process would: the active segment holds the records, then the
// zeros preallocated after them. It returns the copy and the segment's path.
func crashedWithPreallocation(t *testing.T, events []*event.Event) (string, string) {
	t.Helper()
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	for i := 0; i < len(events); i += 10 {
		if err := s.Append(events[i:min(len(events), i+10)]); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	seg := *s.segs[len(s.segs)-1]
	s.mu.Unlock()
	dir := crashCopy(t, s.opts.Dir)
	path := filepath.Join(dir, filepath.Base(seg.path))
	if st, err := os.Stat(path); err != nil || st.Size() <= seg.size || seg.alloc != st.Size() {
		t.Fatalf("active segment of %d bytes of records, preallocated to %d, is %v bytes on disk (%v): want zeros after the records",
			seg.size, seg.alloc, st.Size(), err)
	}
	return dir, path
}

// TestCrashWithPreallocatedSegment: a process killed with its active
// segment preallocated and partly written loses nothing, and the zeros
// after the last record are cut without being taken for a torn tail
// (neither counted nor copied to quarantine/). `spool verify` notes them
// without calling them damage.
func TestCrashWithPreallocatedSegment(t *testing.T) {
	events := sinktest.Events(200)
	dir, path := crashedWithPreallocation(t, events)

	rep, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Print(&out)
	if rep.Damaged() || rep.Next != 200 || !strings.Contains(out.String(), "bytes of preallocated space after the last record") {
		t.Errorf("verify of a killed spool:\n%s\nwant no damage, 200 records and a note on the preallocated space", out.String())
	}

	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	s := open(t, dir, Options{Metrics: m})
	defer s.Close()
	b, _ := os.ReadFile(path) // before the reader acks it away
	if starts := recordStarts(b); len(starts) != 200 || len(b) == 0 || b[len(b)-1] == 0 {
		t.Errorf("recovered segment holds %d records and ends in %d zero bytes; want 200 records and no zeros", len(starts), len(b)-len(bytes.TrimRight(b, "\x00")))
	}
	got := readAll(t, s.Reader("log"), 200, true)
	for i, e := range got {
		if e.EventID != events[i].EventID {
			t.Fatalf("event %d is %s, want %s", i, e.EventID, events[i].EventID)
		}
	}
	if v := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.truncatedBytes) + testutil.ToFloat64(m.corrupt); v != 0 {
		t.Errorf("recovery counted %v torn or corrupt bytes and records in preallocated zeros", v)
	}
	if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*")); len(q) > 0 {
		t.Errorf("quarantine holds %v: zeros were copied as damage", q)
	}
}

// TestTornWriteIntoPreallocatedSpace: a crash in the middle of a write into
// preallocated space leaves part of a record, then zeros. The part is a
// torn tail as before (counted, kept under quarantine/); the zeros after
// it are not.
func TestTornWriteIntoPreallocatedSpace(t *testing.T) {
	events := sinktest.Events(50)
	dir, path := crashedWithPreallocation(t, events)
	b, _ := os.ReadFile(path)
	end := len(bytes.TrimRight(b, "\x00"))
	torn := []byte{0x40, 0, 0, 0, 1, 2, 3, '{', '"'}
	copy(b[end:], torn)
	os.WriteFile(path, b, 0o640)

	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	s := open(t, dir, Options{Metrics: m})
	defer s.Close()
	if got := readAll(t, s.Reader("log"), 50, true); got[49].EventID != events[49].EventID {
		t.Errorf("last event %s, want %s", got[49].EventID, events[49].EventID)
	}
	if n, cut := testutil.ToFloat64(m.truncations), testutil.ToFloat64(m.truncatedBytes); n != 1 || cut != float64(len(torn)) {
		t.Errorf("truncations %v of %v bytes; want 1 of %d, the torn bytes without the zeros", n, cut, len(torn))
	}
	q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*.tail.*"))
	if len(q) != 1 {
		t.Fatalf("quarantine holds %v, want one copy of the torn bytes", q)
	}
	if kept, _ := os.ReadFile(q[0]); !bytes.Equal(kept, torn) {
		t.Errorf("quarantined %q, want the torn bytes %q", kept, torn)
	}
}

// TestZerosInsideWrittenRecordsAreDamage: zeros where records were
// written, with a valid record after them, are damage even in the newest
// segment with its preallocated tail: counted, the records around them
// kept under their numbers, never taken for the end of the records. (In
// the last preallocBytes of that segment, where the round a power loss
// cut short lies, they are counted as a torn tail instead: see
// TestRoundCutShortInPreallocatedSpace.)
func TestZerosInsideWrittenRecordsAreDamage(t *testing.T) {
	events := sinktest.Events(2000)
	dir, path := crashedWithPreallocation(t, events)
	b, _ := os.ReadFile(path)
	starts := recordStarts(b[:len(bytes.TrimRight(b, "\x00"))])
	if starts[62] >= len(b)-preallocBytes {
		t.Fatalf("record 62 at %d of %d bytes: not before the last preallocBytes", starts[62], len(b))
	}
	clear(b[starts[60]:starts[62]]) // records 60 and 61, as a block the disk lost reads
	os.WriteFile(path, b, 0o640)

	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	s := open(t, dir, Options{Metrics: m})
	defer s.Close()
	got := readAll(t, s.Reader("log"), 1998, true)
	want := append(append([]string{}, ids(events[:60])...), ids(events[62:])...)
	if !slicesEqual(ids(got), want) {
		t.Errorf("recovered %d events; want the 1998 around the zeroed records, in order", len(got))
	}
	// Counted as many records as the smallest record fits in the zeros, or
	// more: never fewer, so no record after them takes a lower number.
	if v := testutil.ToFloat64(m.corrupt); v < 2 {
		t.Errorf("corrupt records %v: the two zeroed records were not counted", v)
	}
	if v := testutil.ToFloat64(m.truncations); v != 0 {
		t.Errorf("truncations %v: zeros followed by records taken for a torn tail", v)
	}
	if s.Reader("log").Lag() != 0 || s.next < 2000 {
		t.Errorf("next %d: the zeroed records lost their numbers", s.next)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestClosedSegmentsEndAtTheirRecords: a segment closed for the next one,
// and the active one at Close, are cut back to their records, so that no
// closed segment holds zeros, which would be damage there.
func TestClosedSegmentsEndAtTheirRecords(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 16 << 10})
	events := sinktest.Events(400)
	for i := 0; i < len(events); i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	paths, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(paths) < 3 {
		t.Fatalf("%d segments, want several", len(paths))
	}
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		if len(b) > 0 && b[len(b)-1] == 0 {
			t.Errorf("%s ends in zeros", filepath.Base(p))
		}
	}
	rep, err := Verify(dir)
	if err != nil || rep.Damaged() || len(rep.Notes) > 0 || rep.Next != 400 {
		t.Errorf("verify after Close: %v, %+v", err, rep)
	}
}

// syncFS records how each segment write was made durable, and checks the
// rule fdatasync relies on: a file is fdatasynced only when its size has
// not changed since its last fsync, and every byte written since lies
// within that size (space already allocated and synced).
type syncFS struct {
	osFS
	failWriteAt error // preallocation's writes fail with it, as on a full disk

	mu         sync.Mutex
	fsyncs     int
	datasyncs  int
	violations []string
}

func (f *syncFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	fl, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	sf := &syncFile{osFile: fl.(osFile), fs: f, off: -1}
	if st, err := fl.Stat(); err == nil {
		sf.synced = st.Size()
	}
	return sf, nil
}

type syncFile struct {
	osFile
	fs       *syncFS
	synced   int64 // size at the last fsync
	dirtyEnd int64 // end of the furthest byte written since
	off      int64 // the file offset Write writes at, once known
}

func (f *syncFile) note(end int64) {
	f.fs.mu.Lock()
	f.dirtyEnd = max(f.dirtyEnd, end)
	f.fs.mu.Unlock()
}

func (f *syncFile) Write(b []byte) (int, error) {
	off, _ := f.Seek(0, 1)
	n, err := f.osFile.Write(b)
	f.note(off + int64(n))
	return n, err
}

func (f *syncFile) WriteAt(b []byte, off int64) (int, error) {
	if f.fs.failWriteAt != nil {
		return 0, f.fs.failWriteAt
	}
	n, err := f.osFile.WriteAt(b, off)
	f.note(off + int64(n))
	return n, err
}

func (f *syncFile) Sync() error {
	err := f.osFile.Sync()
	st, _ := f.Stat()
	f.fs.mu.Lock()
	f.fs.fsyncs++
	f.synced, f.dirtyEnd = st.Size(), 0
	f.fs.mu.Unlock()
	return err
}

func (f *syncFile) Datasync() error {
	st, _ := f.Stat()
	f.fs.mu.Lock()
	f.fs.datasyncs++
	if st.Size() != f.synced || f.dirtyEnd > f.synced {
		f.fs.violations = append(f.fs.violations, f.Name()+": fdatasync after the file changed size or was written past its synced size")
	}
	f.fs.mu.Unlock()
	return f.osFile.Datasync()
}

// TestFdatasyncOnlyWithinSyncedSpace runs appends of every size, from one
// event to batches larger than the preallocation, across several segments,
// and checks each fdatasync against the rule it relies on (see syncFS):
// the first write into a new segment, and a write past the preallocated
// space, are fsynced. It also checks that fdatasync is used at all.
func TestFdatasyncOnlyWithinSyncedSpace(t *testing.T) {
	fsys := &syncFS{}
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 3 << 20, MaxBytes: 1 << 30, fs: fsys})
	events := sinktest.Events(20000)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < 5000; i += 4 {
				if err := s.Append(events[i : i+1]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := s.Append(events[5000:]); err != nil { // some 5 MiB: past any preallocation, into a new segment
		t.Fatal(err)
	}
	if err := s.Append(events[:100]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	for _, v := range fsys.violations {
		t.Error(v)
	}
	if fsys.datasyncs == 0 {
		t.Errorf("no fdatasync in %d syncs: preallocation is not used", fsys.fsyncs)
	}
	t.Logf("%d fsyncs, %d fdatasyncs", fsys.fsyncs, fsys.datasyncs)
	s = open(t, dir, Options{})
	defer s.Close()
	if got := readAll(t, s.Reader("log"), 20100, true); len(got) != 20100 {
		t.Errorf("read %d events back", len(got))
	}
}

// TestPreallocationFailureFallsBack: where preallocation cannot write its
// zeros (a full disk, say), the spool appends and fsyncs each round as it
// did without preallocation, and loses nothing.
func TestPreallocationFailureFallsBack(t *testing.T) {
	fsys := &syncFS{failWriteAt: syscall.ENOSPC}
	dir := t.TempDir()
	s := open(t, dir, Options{fs: fsys})
	events := sinktest.Events(100)
	for i := 0; i < 100; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	fsys.mu.Lock()
	if fsys.datasyncs != 0 || fsys.fsyncs < 10 {
		t.Errorf("%d fdatasyncs and %d fsyncs for 10 rounds without preallocation; want fsyncs only", fsys.datasyncs, fsys.fsyncs)
	}
	fsys.mu.Unlock()
	if s.Failed() != nil {
		t.Errorf("a failed preallocation stopped the spool: %v", s.Failed())
	}
	s.Close()
	s = open(t, dir, Options{})
	defer s.Close()
	if got := readAll(t, s.Reader("log"), 100, true); len(got) != 100 {
		t.Errorf("read %d events back", len(got))
	}
}

// TestPreallocationWithinMaxBytes: the files never take more than
// MaxBytes, preallocated space included, and gotrack_spool_bytes counts
// the records only (as before preallocation, so that GoTrackSpoolFilling
// keeps its meaning): the files hold at most preallocBytes more.
func TestPreallocationWithinMaxBytes(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	const maxBytes = 1 << 20
	s := open(t, dir, Options{MaxBytes: maxBytes, SegmentBytes: 4 << 20, Metrics: m})
	defer s.Close()
	events := sinktest.Events(10)
	onDisk := func() int64 {
		var n int64
		paths, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
		for _, p := range paths {
			st, _ := os.Stat(p)
			n += st.Size()
		}
		return n
	}
	for i := 0; ; i++ {
		err := s.Append(events)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil || i > 100000 {
			t.Fatalf("append %d: %v", i, err)
		}
		if n := onDisk(); n > maxBytes {
			t.Fatalf("after %d appends the segments take %d bytes, over MaxBytes %d", i+1, n, maxBytes)
		}
		if i == 1 { // the first round's preallocation is there
			checkGauge(t, s, m, onDisk())
		}
	}
	checkGauge(t, s, m, onDisk())
}

// checkGauge checks that gotrack_spool_bytes is the bytes of the records,
// and that the files hold no more than preallocBytes beyond them.
func checkGauge(t *testing.T, s *Spool, m *Metrics, onDisk int64) {
	t.Helper()
	metric := m.collectBytes(t)
	s.mu.Lock()
	var records int64
	for _, g := range s.segs {
		records += g.size
	}
	s.mu.Unlock()
	if metric != records {
		t.Errorf("gotrack_spool_bytes %d, the records take %d", metric, records)
	}
	if onDisk < metric || onDisk > metric+preallocBytes {
		t.Errorf("gotrack_spool_bytes %d, the segments take %d: want at most preallocBytes more", metric, onDisk)
	}
}

func (m *Metrics) collectBytes(t *testing.T) int64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	m.Collect(ch)
	close(ch)
	for pm := range ch {
		if strings.Contains(pm.Desc().String(), `"gotrack_spool_bytes"`) {
			var d dto.Metric
			if err := pm.Write(&d); err != nil {
				t.Fatal(err)
			}
			return int64(d.GetGauge().GetValue())
		}
	}
	t.Fatal("no gotrack_spool_bytes")
	return 0
}

// TestReaderStopsAtTheRecords: a reader reading the active segment from
// the file (not from the ring of recent events) reads no further than its
// records, so that the preallocated zeros after them never stand in its
// buffer for the records written over them later.
func TestReaderStopsAtTheRecords(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	r := s.Reader("log")
	events := sinktest.Events(40)
	forget := func() { // as if the ring had moved on: the reader must read the file
		s.mu.Lock()
		clear(s.ring)
		s.mu.Unlock()
	}
	var got []*event.Event
	for i := 0; i < 40; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
		forget()
		got = append(got, readAll(t, r, 10, true)...)
	}
	if !slicesEqual(ids(got), ids(events)) {
		t.Errorf("read %d events from the file, not the 40 appended", len(got))
	}
	if v := testutil.ToFloat64(s.m.corrupt); v != 0 {
		t.Errorf("%v records taken for corrupt", v)
	}
}

// TestRoundCutShortInPreallocatedSpace: power fails while a round is being
// written into the preallocated zeros, before its fdatasync, and only some
// of its pages reach the disk: on disk, the acknowledged records, then
// zeros where a page of the round is missing, then records of the round
// that did arrive. None of the round's records was acknowledged. Recovery
// takes that for a write cut short, as a torn tail: WARN, counted in
// gotrack_spool_truncations_total, not in corrupt_records, no copy of the
// whole segment under quarantine/; every acknowledged record is delivered,
// in order, and the records after the zeros keep their numbers.
func TestRoundCutShortInPreallocatedSpace(t *testing.T) {
	for name, lose := range map[string]func(end, roundEnd int) (int, int){
		"the round's first page":  func(end, _ int) (int, int) { return end, (end/pageSize + 1) * pageSize },
		"a page inside the round": func(end, _ int) (int, int) { p := (end/pageSize + 2) * pageSize; return p, p + pageSize },
	} {
		t.Run(name, func(t *testing.T) {
			events := sinktest.Events(260)
			dir, path := crashedWithPreallocation(t, events[:200])
			b, _ := os.ReadFile(path)
			end := len(bytes.TrimRight(b, "\x00"))
			round := encodeRecords(events[200:])
			copy(b[end:], round)
			from, to := lose(end, end+len(round))
			if to > end+len(round)-pageSize {
				t.Fatalf("round of %d bytes too short for the test", len(round))
			}
			clear(b[from:to])
			os.WriteFile(path, b, 0o640)

			m, _ := NewMetrics(prometheus.NewPedanticRegistry(), []string{"log"})
			logs := &logCount{}
			s := open(t, dir, Options{Metrics: m, Log: slog.New(logs)})
			defer s.Close()
			got := drain(t, s, "log")
			if len(got) < 200 || !slices.Equal(ids(got[:200]), ids(events[:200])) {
				t.Fatalf("recovered %d events; the 200 acknowledged ones are not all there, in order", len(got))
			}
			if !isSubsequence(ids(got[200:]), ids(events[200:])) {
				t.Errorf("records of the round came back out of order or made up")
			}
			if s.next < 260 {
				t.Errorf("next %d, want at least 260: the records after the zeros lost their numbers", s.next)
			}
			if v := testutil.ToFloat64(m.corrupt); v != 0 {
				t.Errorf("corrupt_records %v: a round cut short was taken for damage", v)
			}
			if v := testutil.ToFloat64(m.truncations); v != 1 {
				t.Errorf("truncations %v, want 1: the round cut short is not counted", v)
			}
			if n := logs.errorCount(); n != 0 {
				t.Errorf("%d ERROR logs, want a WARN:\n%s", n, logs.lines.String())
			}
			if !strings.Contains(logs.lines.String(), "WARN spool: skipped a write a crash cut short") {
				t.Errorf("no WARN for the round cut short:\n%s", logs.lines.String())
			}
			if q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*")); len(q) != 0 {
				t.Errorf("quarantine/ holds %v: no copy of the segment is wanted for a write cut short", q)
			}
		})
	}
}

// isSubsequence reports whether a is b with some elements left out.
func isSubsequence(a, b []string) bool {
	i := 0
	for _, x := range b {
		if i < len(a) && a[i] == x {
			i++
		}
	}
	return i == len(a)
}

// TestPreallocationEndsOnAllocAlign: every preallocation, the first and
// those extending it later, ends the file on an allocAlign boundary, which
// is how recovery tells preallocated zeros from a torn tail: a spool
// killed after it counts nothing torn.
func TestPreallocationEndsOnAllocAlign(t *testing.T) {
	events := sinktest.Events(1500) // past preallocBytes/2: preallocated again
	dir, path := crashedWithPreallocation(t, events)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() <= preallocBytes || st.Size()%allocAlign != 0 {
		t.Errorf("segment of %d bytes: want it preallocated again, to a multiple of %d", st.Size(), allocAlign)
	}
	m, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
	s := open(t, dir, Options{Metrics: m})
	defer s.Close()
	if got := readAll(t, s.Reader("log"), len(events), true); !slices.Equal(ids(got), ids(events)) {
		t.Errorf("read back %d events, want the %d written", len(got), len(events))
	}
	if v := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.corrupt); v != 0 {
		t.Errorf("%v torn or corrupt: the preallocated zeros were taken for a torn tail", v)
	}
}
