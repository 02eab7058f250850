package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// faultFS is the real file system with faults a test arms: the next
// writes, fsyncs or renames of files whose path contains match fail, as a
// failing or full disk makes them fail.
type faultFS struct {
	osFS
	mu        sync.Mutex
	match     string
	write     error         // writes fail with it
	short     bool          // and first write half of their bytes, as a disk filling up does
	sync      error         // fsyncs fail with it
	rename    error         // renames fail with it
	gate      chan struct{} // when set, a failing write waits for it to close
	failed    int           // faults made
	datasyncs int           // Datasync calls, failed or not
	free      int64         // when positive, the room FreeBytes reports
	entered   chan struct{} // closed when a failing write reaches the gate
}

func (f *faultFS) arm(fn func(f *faultFS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	fl, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: fl, fs: f, name: name}, nil
}

func (f *faultFS) FreeBytes(dir string) (int64, error) {
	f.mu.Lock()
	free := f.free
	f.mu.Unlock()
	if free > 0 {
		return free, nil
	}
	return f.osFS.FreeBytes(dir)
}

func (f *faultFS) Rename(oldpath, newpath string) error {
	f.mu.Lock()
	err := f.rename
	if err != nil && strings.Contains(oldpath, f.match) {
		f.failed++
		f.mu.Unlock()
		return err
	}
	f.mu.Unlock()
	return f.osFS.Rename(oldpath, newpath)
}

// faultFile is a file of faultFS. It forwards every operation the spool
// makes, Datasync included, with the same faults: the writes of records
// (Write) and of preallocated zeros (WriteAt) fail alike, and so do fsync
// and fdatasync, so that the fault tests fail what production calls.
type faultFile struct {
	file
	fs   *faultFS
	name string
}

// writeFault returns the armed write fault for this file, if any, and
// counts it; it waits at the gate, when one is set.
func (f *faultFile) writeFault() (short bool, err error) {
	f.fs.mu.Lock()
	err, short, gate, entered := f.fs.write, f.fs.short, f.fs.gate, f.fs.entered
	if err == nil || !strings.Contains(f.name, f.fs.match) {
		f.fs.mu.Unlock()
		return false, nil
	}
	f.fs.failed++
	f.fs.gate, f.fs.entered = nil, nil
	f.fs.mu.Unlock()
	if gate != nil {
		close(entered)
		<-gate
	}
	return short, err
}

func (f *faultFile) Write(b []byte) (int, error) {
	short, err := f.writeFault()
	if err == nil {
		return f.file.Write(b)
	}
	n := 0
	if short {
		n, _ = f.file.Write(b[:len(b)/2])
	}
	return n, err
}

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	short, err := f.writeFault()
	if err == nil {
		return f.file.WriteAt(b, off)
	}
	n := 0
	if short {
		n, _ = f.file.WriteAt(b[:len(b)/2], off)
	}
	return n, err
}

// syncFault returns the armed sync fault for this file, if any, and counts
// it.
func (f *faultFile) syncFault(datasync bool) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if datasync {
		f.fs.datasyncs++
	}
	if err := f.fs.sync; err != nil && strings.Contains(f.name, f.fs.match) {
		f.fs.failed++
		return err
	}
	return nil
}

func (f *faultFile) Sync() error {
	if err := f.syncFault(false); err != nil {
		return err
	}
	return f.file.Sync()
}

func (f *faultFile) Datasync() error {
	if err := f.syncFault(true); err != nil {
		return err
	}
	if d, ok := f.file.(datasyncer); ok {
		return d.Datasync()
	}
	return f.file.Sync()
}

// logCount counts log records by level.
type logCount struct {
	mu     sync.Mutex
	errors int
	lines  bytes.Buffer
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Level >= slog.LevelError {
		l.errors++
	}
	l.lines.WriteString(r.Level.String() + " " + r.Message + "\n")
	return nil
}
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCount) WithGroup(string) slog.Handler      { return l }

func (l *logCount) errorCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errors
}

// TestWriteAndSyncFailuresAreSticky makes a segment write or fsync fail in
// each sync mode: the append that hit it and every later one fail with
// ErrFailed, even once the disk is fine again; readiness says so; the lag
// does not count refused events; and a restart recovers exactly the events
// that were accepted, with the partial write cut off.
func TestWriteAndSyncFailuresAreSticky(t *testing.T) {
	modes := map[string]Sync{"always": {Always: true}, "interval": {Interval: time.Hour}}
	faults := map[string]func(f *faultFS){
		"EIO on write":        func(f *faultFS) { f.write = syscall.EIO },
		"ENOSPC, short write": func(f *faultFS) { f.write, f.short = syscall.ENOSPC, true },
		"EIO on fsync":        func(f *faultFS) { f.sync = syscall.EIO },
	}
	for mname, mode := range modes {
		for fname, fault := range faults {
			t.Run(mname+"/"+fname, func(t *testing.T) {
				dir := t.TempDir()
				fsys := &faultFS{match: "seg-"}
				reg := prometheus.NewPedanticRegistry()
				m, _ := NewMetrics(reg, []string{"log"})
				s := open(t, dir, Options{Sync: mode, Metrics: m, fs: fsys})
				events := sinktest.Events(30)
				if err := s.Append(events[:10]); err != nil {
					t.Fatal(err)
				}
				fsys.arm(fault)
				accepted := 10
				err := s.Append(events[10:15])
				if mname == "interval" && fname == "EIO on fsync" {
					// The write succeeds and is answered; the interval fsync fails later.
					if err != nil {
						t.Fatal(err)
					}
					accepted = 15
					s.syncer.syncActive()
					err = s.Append(events[15:20])
				}
				if !errors.Is(err, ErrFailed) {
					t.Fatalf("append on a failing disk: %v, want ErrFailed", err)
				}
				fsys.arm(func(f *faultFS) { f.write, f.short, f.sync = nil, false, nil })
				if err := s.Append(events[20:25]); !errors.Is(err, ErrFailed) {
					t.Errorf("append once the disk is fine again: %v, want the sticky ErrFailed", err)
				}
				if s.Failed() == nil {
					t.Error("Failed() = nil: readiness would say ready while every append fails")
				}
				if lag := s.Reader("log").Lag(); lag != uint64(accepted) {
					t.Errorf("lag %d, want %d: refused events are counted", lag, accepted)
				}
				if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP gotrack_spool_lag_events Events in the spool the sink has not acknowledged.
# TYPE gotrack_spool_lag_events gauge
gotrack_spool_lag_events{sink="log"} `+strconv.Itoa(accepted)+`
# HELP gotrack_spool_appended_events_total Events appended to the spool (stored; refused appends are not counted).
# TYPE gotrack_spool_appended_events_total counter
gotrack_spool_appended_events_total `+strconv.Itoa(accepted)+`
`), "gotrack_spool_lag_events", "gotrack_spool_appended_events_total"); err != nil {
					t.Error(err)
				}
				s.Close()

				m2, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
				s = open(t, dir, Options{Metrics: m2})
				defer s.Close()
				got := readAll(t, s.Reader("log"), accepted, true)
				for i, e := range got {
					if e.EventID != events[i].EventID {
						t.Fatalf("recovered event %d is %s, want %s", i, e.EventID, events[i].EventID)
					}
				}
				if lag := s.Reader("log").Lag(); lag != 0 {
					t.Errorf("%d more events recovered than were accepted", lag)
				}
				if v := testutil.ToFloat64(m2.truncations) + testutil.ToFloat64(m2.corrupt); v != 0 {
					t.Errorf("recovery found %v torn or corrupt records: the refused write was not cut off", v)
				}
			})
		}
	}
}

// TestFailedRoundRefusesQueuedAppends fails a group commit while other
// appends are queued behind it: all of them fail, and none stays counted
// in the spool.
func TestFailedRoundRefusesQueuedAppends(t *testing.T) {
	fsys := &faultFS{match: "seg-"}
	s := open(t, t.TempDir(), Options{fs: fsys})
	defer s.Close()
	events := sinktest.Events(40)
	s.Append(events[:10])
	bytesBefore := s.snapshot().bytes
	gate, entered := make(chan struct{}), make(chan struct{})
	fsys.arm(func(f *faultFS) { f.write, f.gate, f.entered = syscall.EIO, gate, entered })

	errs := make(chan error, 3)
	go func() { errs <- s.Append(events[10:20]) }()
	<-entered // the round writing events 10-19 is in its write
	go func() { errs <- s.Append(events[20:30]) }()
	go func() { errs <- s.Append(events[30:40]) }()
	var queued uint64
	if !testkit.Wait(testkit.Patience, func() bool {
		s.mu.Lock()
		queued = s.pendingCount
		s.mu.Unlock()
		return queued == 20
	}) {
		t.Fatalf("%d events queued behind the failing round, want 20", queued)
	}
	close(gate)
	for range 3 {
		if err := <-errs; !errors.Is(err, ErrFailed) {
			t.Errorf("append: %v, want ErrFailed", err)
		}
	}
	st := s.snapshot()
	if st.next != 10 || st.bytes != bytesBefore || s.Reader("log").Lag() != 10 {
		t.Errorf("after the failed round: next %d, bytes %d (was %d), lag %d; want the 10 accepted events only",
			st.next, st.bytes, bytesBefore, s.Reader("log").Lag())
	}
}

// TestRefusalsAreLoggedRateLimited: a full disk refuses every request, and
// must not log an ERROR line for each.
func TestRefusalsAreLoggedRateLimited(t *testing.T) {
	for _, mode := range []Sync{{Always: true}, {Interval: time.Hour}} {
		logs := &logCount{}
		fsys := &faultFS{match: "seg-"}
		s := open(t, t.TempDir(), Options{Sync: mode, fs: fsys, Log: slog.New(logs)})
		fsys.arm(func(f *faultFS) { f.write, f.short = syscall.ENOSPC, true })
		events := sinktest.Events(1)
		for range 200 {
			if err := s.Append(events); !errors.Is(err, ErrFailed) {
				t.Fatalf("append on a full disk: %v", err)
			}
		}
		s.Close()
		// One line for the failure, one for the first refusals; the next
		// would come 10 s later.
		if n := logs.errorCount(); n < 1 || n > 2 {
			t.Errorf("%+v: %d ERROR lines for 200 refused appends, want at most 2:\n%s", mode, n, logs.lines.String())
		}
	}
}

// TestRecoveryFaults: a failure while recovery repairs a segment (the
// quarantine copy or the rename of the repaired file) fails Open and leaves
// the damaged segment as it was, so that the next start can try again.
func TestRecoveryFaults(t *testing.T) {
	for name, fault := range map[string]func(f *faultFS){
		"quarantine copy: ENOSPC": func(f *faultFS) { f.match, f.write, f.short = "/quarantine/", syscall.ENOSPC, true },
		"repaired file: fsync":    func(f *faultFS) { f.match, f.sync = ".repair", syscall.EIO },
		"rename over original":    func(f *faultFS) { f.match, f.rename = ".repair", syscall.EIO },
	} {
		t.Run(name, func(t *testing.T) {
			dir, events := closedSegment(t, 200)
			seg := filepath.Join(dir, segmentName(0))
			b, _ := os.ReadFile(seg)
			b[len(b)/4] ^= 0x10
			os.WriteFile(seg, b, 0o640)

			fsys := &faultFS{}
			fsys.arm(fault)
			if _, err := Open(Options{Dir: dir, MaxBytes: 64 << 20, Readers: []string{"log"}, Sync: Sync{Always: true}, fs: fsys}); err == nil {
				t.Fatal("Open succeeded although the repair failed")
			}
			if fsys.failed == 0 {
				t.Fatal("the fault was never hit")
			}
			if after, _ := os.ReadFile(seg); !bytes.Equal(after, b) {
				t.Fatal("the damaged segment was changed although its repair failed")
			}
			if leftover, _ := filepath.Glob(filepath.Join(dir, "*.repair")); len(leftover) > 0 {
				t.Errorf("left behind %v", leftover)
			}
			s := open(t, dir, Options{}) // the disk is fine again: the repair goes through, lock released
			defer s.Close()
			if got := readAll(t, s.Reader("log"), len(events)-1, true); len(got) != len(events)-1 {
				t.Errorf("read %d events after the repair, want %d", len(got), len(events)-1)
			}
		})
	}
}

// TestFaultFileReachesFdatasync: under Sync.Always the rounds written into
// preallocated space are synced with fdatasync, and faultFile forwards it,
// so that the fault tests above fail the sync production makes rather
// than an fsync it no longer calls.
func TestFaultFileReachesFdatasync(t *testing.T) {
	fsys := &faultFS{match: "seg-"}
	s := open(t, t.TempDir(), Options{fs: fsys})
	defer s.Close()
	events := sinktest.Events(30)
	for i := 0; i < len(events); i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.datasyncs == 0 {
		t.Error("no round was synced with fdatasync through faultFile: the fault tests miss the production sync")
	}
}

// TestNoPreallocationOnNearlyFullDisk: restarted on a disk with less than
// preallocMinFree left, the spool writes no zeros ahead of its records
// (they would take the room the records and the cursors need), logs it
// once, and syncs each round with fsync; once there is room again, it
// preallocates.
func TestNoPreallocationOnNearlyFullDisk(t *testing.T) {
	dir := t.TempDir()
	fsys := &faultFS{match: "seg-", free: 2 << 20}
	logs := &logCount{}
	s := open(t, dir, Options{fs: fsys, Log: slog.New(logs)})
	defer s.Close()
	events := sinktest.Events(40)
	for i := 0; i < 20; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	seg := *s.segs[len(s.segs)-1]
	s.mu.Unlock()
	if st, err := os.Stat(seg.path); err != nil || seg.alloc != 0 || st.Size() != seg.size {
		t.Errorf("on a disk with 2 MiB free: preallocated to %d, file %v bytes for %d of records (%v); want no zeros",
			seg.alloc, st.Size(), seg.size, err)
	}
	fsys.mu.Lock()
	datasyncs := fsys.datasyncs
	fsys.mu.Unlock()
	if datasyncs != 0 {
		t.Errorf("%d rounds synced with fdatasync without preallocated space", datasyncs)
	}
	if n := strings.Count(logs.lines.String(), "WARN spool: the disk is nearly full"); n != 1 {
		t.Errorf("%d WARN lines for the nearly full disk, want 1:\n%s", n, logs.lines.String())
	}

	fsys.arm(func(f *faultFS) { f.free = 0 }) // room again
	for i := 20; i < 40; i += 10 {
		if err := s.Append(events[i : i+10]); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	alloc := s.segs[len(s.segs)-1].alloc
	s.mu.Unlock()
	if alloc == 0 {
		t.Error("not preallocated once the disk had room again")
	}
}
