package spool

// Hostile review of the preallocated spool (issue 16, branch spoolperf).
// Each test names the question it answers; see the review report.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// encodeRecords encodes events as Append writes them.
func encodeRecords(events []*event.Event) []byte {
	var buf []byte
	for _, e := range events {
		j := e.JSON()
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(j)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(j, crcTable))
		buf = append(buf, j...)
	}
	return buf
}

// datasyncFaultFS is the real file system whose segment files can fail
// fdatasync, fsync, or the preallocation's writes, once armed. Unlike
// faultFS, its files are datasyncers, so the production fdatasync path is
// the one that fails.
type datasyncFaultFS struct {
	osFS
	mu          sync.Mutex
	datasyncErr error
	syncErr     error
	writeAtErr  error
	failedSyncs []string // which kind of sync failed: "datasync", "fsync after preallocation", "fsync"
	zerosDirty  map[*datasyncFaultFile]bool
}

type datasyncFaultFile struct {
	osFile
	fs *datasyncFaultFS
}

func (f *datasyncFaultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	fl, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if filepath.Base(name)[:4] != "seg-" {
		return fl, nil
	}
	return &datasyncFaultFile{osFile: fl.(osFile), fs: f}, nil
}

func (f *datasyncFaultFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	err := f.fs.writeAtErr
	if f.fs.zerosDirty == nil {
		f.fs.zerosDirty = map[*datasyncFaultFile]bool{}
	}
	f.fs.zerosDirty[f] = true
	f.fs.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.osFile.WriteAt(b, off)
}

func (f *datasyncFaultFile) Sync() error {
	f.fs.mu.Lock()
	err, prealloc := f.fs.syncErr, f.fs.zerosDirty[f]
	delete(f.fs.zerosDirty, f)
	if err != nil {
		kind := "fsync"
		if prealloc {
			kind = "fsync after preallocation"
		}
		f.fs.failedSyncs = append(f.fs.failedSyncs, kind)
	}
	f.fs.mu.Unlock()
	if err != nil {
		return err
	}
	return f.osFile.Sync()
}

func (f *datasyncFaultFile) Datasync() error {
	f.fs.mu.Lock()
	err := f.fs.datasyncErr
	if err != nil {
		f.fs.failedSyncs = append(f.fs.failedSyncs, "datasync")
	}
	f.fs.mu.Unlock()
	if err != nil {
		return err
	}
	return f.osFile.Datasync()
}

// reopenAndCheck reopens dir with fresh metrics and checks that exactly the
// accepted events come back, in order, with nothing torn or corrupt.
func reopenAndCheck(t *testing.T, dir string, accepted []*event.Event, mode ...Sync) {
	t.Helper()
	m, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
	o := Options{Metrics: m}
	if len(mode) > 0 {
		o.Sync = mode[0]
	}
	s := open(t, dir, o)
	defer s.Close()
	if lag := s.Reader("log").Lag(); lag != uint64(len(accepted)) {
		t.Errorf("recovered %d events, want the %d accepted ones (refused events must not come back)", lag, len(accepted))
	}
	got := readAll(t, s.Reader("log"), len(accepted), true)
	if !slices.Equal(ids(got), ids(accepted)) {
		t.Errorf("recovered events differ from the accepted ones")
	}
	if v := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.corrupt); v != 0 {
		t.Errorf("recovery counted %v torn or corrupt: the refused write was not cut off", v)
	}
}

// TestReviewDatasyncFailureIsSticky: the existing fault tests
// (TestWriteAndSyncFailuresAreSticky) inject faults through faultFile,
// which has no Datasync method, so since the preallocation they only ever
// fail fsync, never the fdatasync that production rounds now use. Here
// fdatasync itself fails (EIO): the append must fail with ErrFailed, every
// later one too, and a restart must bring back exactly the accepted events.
func TestReviewDatasyncFailureIsSticky(t *testing.T) {
	fsys := &datasyncFaultFS{}
	dir := t.TempDir()
	s := open(t, dir, Options{fs: fsys})
	events := sinktest.Events(40)
	for i := 0; i < 20; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	fsys.mu.Lock()
	fsys.datasyncErr = syscall.EIO
	fsys.mu.Unlock()
	if err := s.Append(events[20:30]); !errors.Is(err, ErrFailed) {
		t.Fatalf("append whose fdatasync fails: %v, want ErrFailed", err)
	}
	fsys.mu.Lock()
	fsys.datasyncErr = nil
	kinds := slices.Clone(fsys.failedSyncs)
	fsys.mu.Unlock()
	if !slices.Equal(kinds, []string{"datasync"}) {
		t.Errorf("failed syncs %v, want one fdatasync: the round was not synced with fdatasync", kinds)
	}
	if err := s.Append(events[30:40]); !errors.Is(err, ErrFailed) {
		t.Errorf("append after a failed fdatasync: %v, want the sticky ErrFailed", err)
	}
	s.Close()
	reopenAndCheck(t, dir, events[:20])
}

// TestReviewPreallocationFsyncFailure: the fsync of the preallocated zeros
// fails (EIO). That failure is sticky: appends queued meanwhile and after
// are refused, and what was answered before is all there after a restart,
// and nothing refused comes back.
func TestReviewPreallocationFsyncFailure(t *testing.T) {
	fsys := &datasyncFaultFS{}
	dir := t.TempDir()
	s := open(t, dir, Options{fs: fsys})
	events := sinktest.Events(4000)
	if err := s.Append(events[:10]); err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	fsys.syncErr = syscall.EIO // rounds within the zeros fdatasync: the next fsync is the preallocation's
	fsys.mu.Unlock()
	accepted := 10
	for i := 10; i < len(events); i += 10 {
		err := s.Append(events[i : i+10])
		if err == nil {
			if accepted != i {
				t.Fatalf("append %d accepted after an earlier one was refused", i)
			}
			accepted = i + 10
			continue
		}
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("append %d: %v, want ErrFailed", i, err)
		}
	}
	fsys.mu.Lock()
	kinds := slices.Clone(fsys.failedSyncs)
	fsys.syncErr = nil
	fsys.mu.Unlock()
	if len(kinds) == 0 || kinds[0] != "fsync after preallocation" {
		t.Fatalf("failed syncs %v: want the preallocation's fsync to fail first (test did not reach it)", kinds)
	}
	if accepted == len(events) {
		t.Fatal("no append refused after the preallocation's fsync failed")
	}
	t.Logf("%d events accepted before the preallocation's fsync failed", accepted)
	s.Close()
	reopenAndCheck(t, dir, events[:accepted])
}

// TestReviewZeroHoleBeforeUnsyncedRecords: power fails while a round is
// being written into the preallocated zeros and before its fdatasync, and
// the device has persisted a later page of the round but not the first
// one (writeback does not keep the order of pages). On disk: the acked
// records, zeros, then valid records of the unsynced round, then zeros.
// Must hold: every acked record is delivered, in order, and the spool
// opens. The test logs what recovery calls the zeros (damage per the
// README: "Zeros followed by a valid record are damage").
func TestReviewZeroHoleBeforeUnsyncedRecords(t *testing.T) {
	acked := sinktest.Events(250)
	dir, path := crashedWithPreallocation(t, acked[:200])
	b, _ := os.ReadFile(path)
	end := len(bytes.TrimRight(b, "\x00"))
	round := encodeRecords(acked[200:])
	if end+len(round) > len(b) {
		t.Fatal("round does not fit in the preallocated space")
	}
	copy(b[end:], round)
	page := (end/4096 + 1) * 4096 // the page that held the acked end and the round's start was not written back
	clear(b[end:page])
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log"})
	logs := &logCount{}
	s := open(t, dir, Options{Metrics: m, Log: slog.New(logs)})
	defer s.Close()
	r := s.Reader("log")
	lag := r.Lag()
	got := drain(t, s, "log")
	if len(got) < 200 || !slices.Equal(ids(got[:200]), ids(acked[:200])) {
		t.Fatalf("recovered %d events; the 200 acked ones are not all there, in order", len(got))
	}
	q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*"))
	var qbytes int64
	for _, p := range q {
		if st, err := os.Stat(p); err == nil {
			qbytes += st.Size()
		}
	}
	t.Logf("hole of %d bytes: lag %d, %d events delivered (%d of the unsynced round), corrupt_records %v, truncations %v, %d ERROR logs, quarantine %d files / %d bytes",
		page-end, lag, len(got), len(got)-200, testutil.ToFloat64(m.corrupt), testutil.ToFloat64(m.truncations),
		logs.errorCount(), len(q), qbytes)
}

// TestReviewClosedSegmentEndingInZeros failed on main and on spoolperf
// before scan.assign capped a closed segment's damage at the records the
// next segment's base leaves it: the next segment's first record, intact
// and acked, was skipped.
//
// A closed segment that ends in zeros. The branch never writes one itself (a closed segment is cut to
// its records), but it can meet one: GoTrack main (a downgrade, then an
// upgrade again) cuts a crashed segment's zeros with a truncate it does
// not fsync before creating the next segment, so a power loss can bring
// them back behind a newer segment; an operator restoring a copy padded to
// a block size does the same. The README says such zeros are damage,
// costing "only the records it damaged": here there are none, and every
// record of the next segment must keep its number, also for a reader
// whose cursor is at the next segment's first record.
func TestReviewClosedSegmentEndingInZeros(t *testing.T) {
	dir, events := closedSegment(t, 100)
	more := sinktest.Events(5)
	s := open(t, dir, Options{})
	if err := s.Append(more); err != nil {
		t.Fatal(err)
	}
	s.Close()
	seg := filepath.Join(dir, segmentName(0))
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096))
	f.Close()
	setCursor(t, dir, "late", 100)

	reg := prometheus.NewPedanticRegistry()
	m, _ := NewMetrics(reg, []string{"log", "late"})
	s = open(t, dir, Options{Readers: []string{"log", "late"}, Metrics: m})
	defer s.Close()
	want := append(ids(events), ids(more)...)
	if got := ids(drain(t, s, "log")); !slices.Equal(got, want) {
		t.Errorf("reader from 0 got %d events, want the 105 written", len(got))
	}
	if got := ids(drain(t, s, "late")); !slices.Equal(got, ids(more)) {
		t.Errorf("reader at cursor 100 got %d events %v, want the 5 of the next segment", len(got), got)
	}
	t.Logf("corrupt_records %v", testutil.ToFloat64(m.corrupt))
}

// TestReviewModeSwitchAfterCrash: a spool killed with a preallocated
// segment under always, restarted with interval:..., then with always
// again: every event comes back once, nothing counted as torn or corrupt.
func TestReviewModeSwitchAfterCrash(t *testing.T) {
	events := sinktest.Events(260)
	dir, _ := crashedWithPreallocation(t, events[:200])
	m, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
	s := open(t, dir, Options{Sync: Sync{Interval: 100e6}, Metrics: m})
	for i := 200; i < 230; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, dir, Options{Metrics: m})
	for i := 230; i < 260; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	dir2 := crashCopy(t, dir) // killed again, with a preallocated segment
	s.Close()
	s = open(t, dir2, Options{Metrics: m})
	defer s.Close()
	if got := readAll(t, s.Reader("log"), 260, true); !slices.Equal(ids(got), ids(events)) {
		t.Errorf("read back %d events, not the 260 written", len(got))
	}
	if v := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.corrupt); v != 0 {
		t.Errorf("%v torn or corrupt after switching modes", v)
	}
}

// TestReviewSpoolBytesOnAnEmptySmallSpool measures what gotrack_spool_bytes
// / gotrack_spool_capacity_bytes (GoTrackSpoolFilling fires above 0.8)
// shows for a nearly empty spool and one 70% full, for a small
// SPOOL_MAX_BYTES. Informational: logs the ratios.
func TestReviewSpoolBytesOnAnEmptySmallSpool(t *testing.T) {
	const maxBytes = 4 << 20
	m, _ := NewMetrics(prometheus.NewPedanticRegistry(), []string{"log"})
	s := open(t, t.TempDir(), Options{MaxBytes: maxBytes, Metrics: m})
	defer s.Close()
	events := sinktest.Events(1)
	if err := s.Append(events); err != nil {
		t.Fatal(err)
	}
	s.Append(events) // the preallocation runs after the first round
	empty := float64(m.collectBytes(t)) / maxBytes
	batch := sinktest.Events(10)
	for float64(s.snapshot().bytes) < 0.7*maxBytes {
		if err := s.Append(batch); err != nil {
			t.Fatal(err)
		}
	}
	s.Append(batch)
	full := float64(m.collectBytes(t)) / maxBytes
	t.Logf("SPOOL_MAX_BYTES=4MiB: ratio %.3f with 2 events, %.3f with records at %.3f", empty, full, float64(s.snapshot().bytes)/maxBytes)
}

// TestReviewIntervalZeroTailIsCounted failed on spoolperf (passed on main)
// before a zero tail was taken for preallocated space only on an allocAlign
// boundary.
//
// Under SPOOL_FSYNC=interval:... there is no preallocation: each request's
// records are appended and answered 2xx before the sync. A power loss
// inside the window can leave the file's new size on disk without its
// data, which reads back as zeros (XFS does this; ext4 with
// data=writeback too). Those zeros are events answered 2xx and lost, which
// the README's interval paragraph accepts, but main counted them
// (gotrack_spool_truncations_total, WARN). The branch's zero-tail rule
// does not know which mode wrote the segment and cuts them at INFO,
// uncounted: a loss of 2xx'd events that no metric shows. (crashsim, on
// ext4 data=ordered and on xfs, found no crash state with such zeros: both
// hide unwritten appends behind the old size; the rule bites on file
// systems that do not, such as ext4 data=writeback.)
func TestReviewIntervalZeroTailIsCounted(t *testing.T) {
	dir := t.TempDir()
	events := sinktest.Events(100)
	s := open(t, dir, Options{Sync: Sync{Interval: 100e6}})
	for i := 0; i < 100; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	path := filepath.Join(dir, segmentName(0))
	b, _ := os.ReadFile(path)
	starts := recordStarts(b)
	clear(b[starts[97]:]) // the last three records' blocks never reached the disk; the size did
	os.WriteFile(path, b, 0o640)

	m, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
	s = open(t, dir, Options{Sync: Sync{Interval: 100e6}, Metrics: m})
	defer s.Close()
	if lag := s.Reader("log").Lag(); lag != 97 {
		t.Fatalf("recovered %d events, want the 97 whose data was on disk", lag)
	}
	if n := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.corrupt); n == 0 {
		t.Errorf("3 events answered 2xx were cut (%d zero bytes) and neither gotrack_spool_truncations_total nor corrupt_records counts them",
			len(b)-starts[97])
	}
}

// TestReviewRealDiskFull fills a real, small file system (a loop-mounted
// ext4 image: set SPOOL_REVIEW_SMALLFS to a directory on it; skipped
// otherwise) with SPOOL_MAX_BYTES far larger than the disk, so that the
// preallocation and then the records hit ENOSPC. Every append answered
// nil must come back after a kill (crash copy). Then, as the runbook says,
// room is made on the disk (a filler file is deleted) and GoTrack
// restarted on it: the sink must be able to read and ack everything.
//
// always/262144 failed on spoolperf about one run in two (interval never,
// 0 of 6) before preallocation was skipped below preallocMinFree of free
// space (4 of 4 runs pass now on a 48 MiB ext4 loop; 4 of 4 passed there
// without that guard too, so these runs do not prove it): with less than preallocBytes of room, the restart's
// preallocation writes zeros until ENOSPC and truncates them again, and
// ext4 reuses the truncated blocks only once its journal commits, so the
// sink's first cursor write meets ENOSPC ("buffer acknowledgement not
// saved" ERROR in production, duplicates, no loss).
func TestReviewRealDiskFull(t *testing.T) {
	root := os.Getenv("SPOOL_REVIEW_SMALLFS")
	if root == "" {
		t.Skip("SPOOL_REVIEW_SMALLFS not set")
	}
	for name, mode := range map[string]Sync{"always": {Always: true}, "interval": {Interval: 100e6}} {
		for _, room := range []int{256 << 10, 1<<20 + 2<<10} {
			t.Run(name+"/"+strconv.Itoa(room), func(t *testing.T) { testRealDiskFull(t, root, room, mode) })
		}
	}
}

func testRealDiskFull(t *testing.T, root string, room int, mode Sync) {
	dir, err := os.MkdirTemp(root, "spool")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	filler := filepath.Join(root, "filler")
	if err := os.WriteFile(filler, make([]byte, room), 0o640); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filler)
	logs := &logCount{}
	s := open(t, dir, Options{MaxBytes: 1 << 30, SegmentBytes: 64 << 20, Log: slog.New(logs), Sync: mode})
	events := sinktest.Events(100000)
	accepted := 0
	for i := 0; i+10 <= len(events); i += 10 {
		err := s.Append(events[i : i+10])
		if err == nil {
			if accepted != i {
				t.Fatalf("append %d accepted after a refusal", i)
			}
			accepted = i + 10
			continue
		}
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("append %d: %v", i, err)
		}
		if i > accepted+1000 {
			break
		}
	}
	killed := crashCopy(t, dir)
	logs.mu.Lock()
	t.Logf("%d events accepted on the full disk; log:\n%s", accepted, logs.lines.String())
	logs.mu.Unlock()
	s.Close()
	reopenAndCheck(t, killed, events[:accepted])
	os.Remove(filler) // make room, as the runbook says
	syscall.Sync()    // ext4 reuses freed blocks only once the journal commits
	reopenAndCheck(t, dir, events[:accepted], mode)
}

// TestReviewZeroBytesInRecordsBeforePreallocatedZeros: a newest segment
// whose last records hold zero bytes of their own (a placeholder, whose
// payload is one zero byte, as a repair leaves; a length field whose high
// bytes are zero) and then preallocated zeros: the zeros rule strips only
// what follows the last valid record, so every record, placeholder
// included, keeps its number and nothing is counted.
func TestReviewZeroBytesInRecordsBeforePreallocatedZeros(t *testing.T) {
	dir := t.TempDir()
	events := sinktest.Events(20)
	seg := append(encodeRecords(events[:10]), placeholder...)
	seg = append(seg, placeholder...)
	seg = append(seg, encodeRecords(events[10:])...)
	seg = append(seg, placeholder...)                             // ends in a zero byte of its own
	seg = append(seg, make([]byte, 1<<20-len(seg)%allocAlign)...) // preallocation ends on an allocAlign boundary
	if err := os.WriteFile(filepath.Join(dir, segmentName(0)), seg, 0o640); err != nil {
		t.Fatal(err)
	}
	m, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
	s := open(t, dir, Options{Metrics: m})
	defer s.Close()
	if s.next != 23 {
		t.Errorf("next %d, want 23: 20 events and 3 placeholders", s.next)
	}
	if got := drain(t, s, "log"); !slices.Equal(ids(got), ids(events)) {
		t.Errorf("read %d events, want the 20", len(got))
	}
	if v := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.corrupt); v != 0 {
		t.Errorf("%v torn or corrupt", v)
	}
}

// TestReviewRestartWithSmallerMaxBytes: a spool killed with a preallocated
// segment is restarted with SPOOL_MAX_BYTES below what its records take.
// It opens, delivers everything, refuses with ErrFull until the sink has
// caught up, and then preallocates no further than the new MaxBytes.
func TestReviewRestartWithSmallerMaxBytes(t *testing.T) {
	testSmallMaxBytes(t, 128<<10, true)
}

// TestReviewMinimumMaxBytesDrainsAndAccepts failed on main and on spoolperf
// before segments were capped at a quarter of MaxBytes (see Open)
// (not caused by the preallocation): at SPOOL_MAX_BYTES=65536, the minimum
// config accepts, SegmentBytes is 64 KiB too, so the active segment fills
// the whole quota without ever reaching its size to be closed; it is never
// deleted, and the spool answers ErrFull for good although its sink has
// acknowledged every event (until a restart closes the segment).
func TestReviewMinimumMaxBytesDrainsAndAccepts(t *testing.T) {
	testSmallMaxBytes(t, 64<<10, false)
}

func testSmallMaxBytes(t *testing.T, maxBytes int64, crashed bool) {
	events := sinktest.Events(600)
	dir := t.TempDir()
	start := 0
	if crashed {
		dir, _ = crashedWithPreallocation(t, events[:200])
		start = 200
	}
	s := open(t, dir, Options{MaxBytes: maxBytes})
	defer s.Close()
	r := s.Reader("log")
	if crashed {
		if err := s.Append(events[200:201]); !errors.Is(err, ErrFull) {
			t.Errorf("append over the new MaxBytes: %v, want ErrFull", err)
		}
	}
	delivered := readAll(t, r, start, true)
	s.deleteAcked()
	for i := start; i < len(events); i++ {
		err := s.Append(events[i : i+1])
		if errors.Is(err, ErrFull) {
			if r.Lag() == 0 {
				t.Fatalf("append %d: ErrFull with every event acknowledged (%d bytes held)", i, s.snapshot().bytes)
			}
			delivered = append(delivered, readAll(t, r, int(r.Lag()), true)...)
			s.deleteAcked()
			i--
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		paths, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
		for _, p := range paths {
			st, _ := os.Stat(p)
			n += st.Size()
		}
		if n > maxBytes {
			t.Fatalf("after append %d the segments take %d bytes, over MaxBytes %d", i, n, maxBytes)
		}
	}
	delivered = append(delivered, readAll(t, r, int(r.Lag()), true)...)
	if !slices.Equal(ids(delivered), ids(events)) {
		t.Errorf("delivered %d events, want the %d appended, in order", len(delivered), len(events))
	}
}
