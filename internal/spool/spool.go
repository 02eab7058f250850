// Package spool is GoTrack's durable log: every accepted event is appended
// to it before the client is answered, and each sink reads it through a
// cursor of its own, so that a crash or a sink down for hours costs disk,
// not events or memory.
//
// The spool is a directory of segment files, seg-<first sequence>.log, each
// a run of records:
//
//	length  uint32, little endian: bytes of payload
//	crc     uint32, little endian: CRC-32C of payload
//	payload the event's JSON
//
// Under Sync.Always the active segment is followed by up to a MiB of zeros,
// preallocated so that rounds written into them can be fdatasynced (see
// preallocate); a record's length is never zero, so the zeros are no
// record, and a segment is cut back to its records when it is closed.
//
// Records are numbered by position: a segment's records are numbered from
// the sequence in its name. Each reader keeps the number of the next record
// it has to deliver in cursor.<name>. A segment is deleted once every cursor
// has passed its last record.
//
// One process at a time: Open takes an exclusive flock on the directory. A
// record whose payload is one zero byte is a placeholder, written by
// recovery in place of a damaged record so that the others keep their
// numbers; copies of damaged segments, as recovery found them, are kept
// under quarantine/.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// Sync says when appended records are synced to disk.
type Sync struct {
	Always   bool          // group commit: Append returns once its records are synced
	Interval time.Duration // otherwise, synced at least this often
}

// ParseSync parses "always" or "interval:100ms".
func ParseSync(s string) (Sync, error) {
	if s == "always" {
		return Sync{Always: true}, nil
	}
	if v, ok := strings.CutPrefix(s, "interval:"); ok {
		d, err := time.ParseDuration(v)
		if err == nil && d > 0 && d <= time.Minute {
			return Sync{Interval: d}, nil
		}
	}
	return Sync{}, fmt.Errorf("unknown spool fsync %q (want always or interval:DURATION, such as interval:100ms)", s)
}

// Options configure a Spool.
type Options struct {
	Dir          string
	Sync         Sync
	MaxBytes     int64 // disk the segments may use; Append fails with ErrFull past it
	SegmentBytes int64 // a segment is closed past this size; default min(64 MiB, MaxBytes/8), see Open
	Readers      []string
	Metrics      *Metrics
	Log          *slog.Logger

	fs fileSystem // the file layer; osFS unless a test injects faults
}

// ErrFull is returned by Append when the events would take the spool past
// its MaxBytes.
var ErrFull = errors.New("spool: full (SPOOL_MAX_BYTES)")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("spool: closed")

// ErrFailed is wrapped by the error Append returns once a write or fsync
// has failed: the spool then refuses every event until a restart.
var ErrFailed = errors.New("spool: write or fsync failed; refusing events until restart")

const headerLen = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segment is one file of the spool.
type segment struct {
	base    uint64    // sequence of its first record
	count   uint64    // records in it
	size    int64     // bytes of records in it
	alloc   int64     // the active segment's preallocated end (see preallocate); 0 when none
	noAlloc bool      // preallocation failed in this segment: rounds append and fsync
	lowDisk bool      // preallocation was skipped for want of room (see preallocMinFree), and logged
	firstAt time.Time // when its first record was received, for the age metric
	path    string
}

func (s *segment) end() uint64 { return s.base + s.count }

// Spool is the durable log. Append is safe for concurrent use.
type Spool struct {
	opts Options
	m    *Metrics
	log  *slog.Logger
	fs   fileSystem
	lock *os.File // holds the flock on Dir until Close

	mu      sync.Mutex // guards the fields below
	segs    []*segment // ordered by base; the last is the active one
	active  file
	next    uint64 // sequence of the next record appended
	visible uint64 // records in the segment files, which readers may read
	bytes   int64  // in all segments, and pending

	// Under Sync.Always appends queue their records here and the syncer
	// writes them all with one write before its fsync.
	pending      []byte
	pendingCount uint64
	spare        []byte
	round        *commit // the group-commit round the pending records are in
	refused      refusals
	closed       bool
	readers      map[string]*Reader
	notify       chan struct{} // closed and replaced when records are appended
	bufs         sync.Pool
	syncer       *syncer
	repairMu     sync.Mutex         // one repairClosed at a time; guards the two maps
	repaired     map[uint64]bool    // segments repairClosed repaired, by base
	retried      map[repairKey]bool // readers repairClosed let read a segment again

	// ring holds the events of the latest appends by sequence, so that a
	// reader keeping up takes them as they are, neither reading the file
	// nor decoding JSON. A reader further behind reads the file.
	ring []ringEntry
}

type ringEntry struct {
	seq uint64
	e   *event.Event
}

// ringSize bounds the events the ring keeps alive.
const ringSize = 8192

// preallocBytes is how far ahead of its records the active segment is
// preallocated under Sync.Always; see preallocate.
const preallocBytes = 1 << 20

// preallocMinFree is the room the file system must have left for the
// spool to preallocate: on a nearly full disk (a restart after it filled,
// say) the zeros would take the last room the cursors and the records
// need, and each commit fsyncs instead.
const preallocMinFree = 8 << 20

// Open locks the spool in opts.Dir, creating it when missing, and recovers
// it: it checks every record, keeps a copy of each damaged segment under
// quarantine/, replaces the damaged records in the middle of a segment by
// placeholders (so every other record keeps its sequence number), cuts a
// torn tail off the newest segment, reads the readers' cursors, and starts
// a new active segment. It fails with ErrLocked when another process holds
// the directory.
func Open(o Options) (*Spool, error) {
	if o.MaxBytes <= 0 {
		return nil, errors.New("spool: MaxBytes must be positive")
	}
	if !o.Sync.Always && o.Sync.Interval <= 0 {
		return nil, errors.New("spool: Sync wants Always or a positive Interval")
	}
	if o.SegmentBytes <= 0 {
		// An eighth of MaxBytes, at most 64 MiB, at least 64 KiB, but never
		// more than a quarter of MaxBytes (nor under 4 KiB): the active
		// segment is deleted only once it is closed, so a segment as large
		// as MaxBytes would fill the spool and never drain (the smallest
		// SPOOL_MAX_BYTES, 64 KiB, makes segments of 16 KiB).
		o.SegmentBytes = min(64<<20, max(o.MaxBytes/8, min(64<<10, o.MaxBytes/4), 4<<10))
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = newUnregisteredMetrics()
	}
	if o.fs == nil {
		o.fs = osFS{}
	}
	if err := o.fs.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := lockDir(o.Dir, true)
	if err != nil {
		return nil, err
	}
	s := &Spool{opts: o, m: o.Metrics, log: o.Log, fs: o.fs, lock: lock, readers: map[string]*Reader{}, notify: make(chan struct{}),
		ring: make([]ringEntry, ringSize), round: newCommit(),
		repaired: map[uint64]bool{}, retried: map[repairKey]bool{}}
	s.refused.every = refusalLogEvery
	s.bufs.New = func() any { return new([]byte) }
	fail := func(err error) (*Spool, error) {
		for _, r := range s.readers {
			r.closeFile()
		}
		if s.active != nil {
			s.active.Close()
		}
		lock.Close()
		return nil, err
	}
	if err := s.recover(); err != nil {
		return fail(err)
	}
	for _, name := range o.Readers {
		r, err := s.openReader(name)
		if err != nil {
			return fail(err)
		}
		s.readers[name] = r
	}
	s.visible = s.next
	s.deleteAcked()
	if err := s.newSegment(); err != nil {
		return fail(err)
	}
	startSyncer(s)
	s.m.setState(s)
	return s, nil
}

func segmentName(base uint64) string { return fmt.Sprintf("seg-%020d.log", base) }

// recover scans the segments on disk.
func (s *Spool) recover() error {
	paths, err := filepath.Glob(filepath.Join(s.opts.Dir, "seg-*.log"))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	bases, err := segmentBases(paths)
	if err != nil {
		return err
	}
	for i, p := range paths {
		var expect uint64
		if i+1 < len(paths) {
			expect = bases[i+1] - bases[i]
		}
		seg, err := s.recoverSegment(p, bases[i], i == len(paths)-1, expect)
		if err != nil {
			return err
		}
		if seg.count == 0 {
			s.fs.Remove(p)
			continue
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
		s.next = max(s.next, seg.end())
	}
	return nil
}

// segmentBases sorts the segment paths by name, which sorts them by first
// sequence, and returns each one's first sequence.
func segmentBases(paths []string) ([]uint64, error) {
	slices.Sort(paths) // the zero-padded names sort by base
	bases := make([]uint64, len(paths))
	for i, p := range paths {
		base, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "seg-"), ".log"), 10, 64)
		if err != nil || (i > 0 && base < bases[i-1]) {
			return nil, fmt.Errorf("spool: unexpected file %s", p)
		}
		bases[i] = base
	}
	return bases, nil
}

// recoverSegment checks a segment record by record (see scanSegment) and
// repairs it when it has to: it first keeps a copy of the damaged file
// under quarantine/, then writes the repaired segment beside it and renames
// it over the original, so a crash during recovery leaves one or the other.
// expect is the number of records the segment numbers when a later segment
// tells it, and 0 for the newest.
func (s *Spool) recoverSegment(path string, base uint64, newest bool, expect uint64) (*segment, error) {
	b, err := s.fs.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	sc := scanSegment(b, newest, expect)
	seg := &segment{base: base, path: path, count: sc.total()}
	cut := sc.torn()
	switch {
	case len(sc.damaged) == 0 && cut == 0 && sc.tail < len(b):
		// Only preallocated zeros follow the last record: the process
		// stopped without closing the spool. Nothing was lost.
		if err := s.truncateSync(path, int64(sc.tail)); err != nil {
			return nil, err
		}
		s.log.Info("spool: cut the preallocated space after the newest segment's last record (GoTrack did not stop cleanly)",
			"segment", filepath.Base(path), "kept_records", seg.count, "cut_bytes", len(b)-sc.tail)
		b = b[:sc.tail]
	case len(sc.damaged) > 0 || cut > 0:
		// A torn tail, and a round cut short in preallocated space (see
		// cutShort), cost a copy of the torn bytes, not of the whole
		// segment: the rest of the segment is as it was, and what the round
		// cut short left is zeros. Damage costs a copy of the whole segment.
		// Neither copy keeps the preallocated zeros that end a newest
		// segment.
		cutBytes, onlyCut := sc.cut()
		var q string
		if !onlyCut || cut > 0 {
			kept, suffix := b[:sc.zeros], ""
			if onlyCut {
				kept, suffix = b[sc.tail:sc.zeros], ".tail"
			}
			if q, err = s.quarantine(path, suffix, kept); err != nil {
				return nil, err
			}
		}
		if len(sc.damaged) == 0 {
			if err := s.truncateSync(path, int64(sc.tail)); err != nil {
				return nil, err
			}
			b = b[:sc.tail]
		} else {
			fixed := repair(b, sc)
			tmp := path + ".repair"
			if err := writeFileSync(s.fs, tmp, fixed); err != nil {
				s.fs.Remove(tmp)
				return nil, fmt.Errorf("spool: repair %s: %w", path, err)
			}
			if err := s.fs.Rename(tmp, path); err != nil {
				s.fs.Remove(tmp)
				return nil, fmt.Errorf("spool: repair %s: %w", path, err)
			}
			b = fixed
		}
		if err := s.fs.SyncDir(s.opts.Dir); err != nil {
			return nil, fmt.Errorf("spool: sync directory: %w", err)
		}
		s.countDamage(path, sc, q)
		if cut > 0 {
			s.m.truncatedBytes.Add(float64(cut))
			s.m.truncations.Inc()
			s.log.Warn("spool: cut a torn tail off the newest segment, as a crash in the middle of a write leaves",
				"segment", filepath.Base(path), "kept_records", seg.count, "cut_bytes", cut, "copy", q)
		}
		if cutBytes > 0 {
			var lost uint64
			for _, d := range sc.damaged {
				if d.cut {
					lost += d.records
				}
			}
			s.m.truncatedBytes.Add(float64(cutBytes))
			s.m.truncations.Inc()
			s.log.Warn("spool: skipped a write a crash cut short in the newest segment's preallocated space: records of a round not yet synced, never acknowledged; the records around them keep their numbers",
				"segment", filepath.Base(path), "placeholders", lost, "cut_bytes", cutBytes)
		}
	}
	seg.size = int64(len(b))
	for off := 0; off < int(seg.size); {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if p := b[off+headerLen : off+headerLen+n]; !isPlaceholder(p) {
			if e, err := event.Decode(p); err == nil {
				seg.firstAt = e.ReceivedAt
			}
			break
		}
		off += headerLen + n
	}
	if seg.firstAt.IsZero() {
		seg.firstAt = time.Now()
	}
	return seg, nil
}

// truncateSync cuts the end off a segment and syncs the cut before
// anything relies on it: once a newer segment exists, trailing bytes that
// came back after a power loss would be damage in a closed segment.
func (s *Spool) truncateSync(path string, size int64) error {
	if err := s.fs.Truncate(path, size); err != nil {
		return fmt.Errorf("spool: truncate %s: %w", path, err)
	}
	f, err := s.fs.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("spool: truncate %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: truncate %s: %w", path, err)
	}
	return nil
}

// countDamage counts and logs the records a repair replaced by
// placeholders, if any.
func (s *Spool) countDamage(path string, sc scanned, copyPath string) {
	var lost uint64
	var spans []string
	for _, d := range sc.damaged {
		if d.cut { // a write cut short, counted as a torn tail by the caller
			continue
		}
		lost += d.records
		spans = append(spans, fmt.Sprintf("%d-%d", d.off, d.end))
	}
	if spans == nil {
		return
	}
	s.m.corrupt.Add(float64(lost))
	s.log.Error("spool: skipped damaged records in a segment; the records around them are kept",
		"segment", filepath.Base(path), "records_lost", lost, "damaged_bytes", strings.Join(spans, ","),
		"kept_records", sc.records-sc.placeholders, "copy", copyPath)
}

// repairClosed repairs a closed segment in which the named reader found
// damage while running, as recovery does at start: a copy under
// quarantine/, a placeholder for each damaged record, every other record
// kept under its number. It reports whether the reader should reopen the
// segment and read on at the same record: the repair succeeded, now or
// when another reader found the damage first. Otherwise (an active or
// deleted segment, a read error rather than damaged bytes, a failed repair,
// or a second call for the same reader and segment, so that a disk
// returning different bytes on each read cannot loop) the reader skips the
// rest of the segment, as before.
func (s *Spool) repairClosed(reader string, base uint64) bool {
	s.repairMu.Lock()
	defer s.repairMu.Unlock()
	key := repairKey{reader, base}
	if s.retried[key] {
		return false
	}
	s.retried[key] = true
	if s.repaired[base] {
		return true
	}
	s.mu.Lock()
	i := slices.IndexFunc(s.segs, func(g *segment) bool { return g.base == base })
	if i < 0 || i == len(s.segs)-1 {
		s.mu.Unlock()
		return false
	}
	path, count := s.segs[i].path, s.segs[i].count
	s.mu.Unlock()

	b, err := s.fs.ReadFile(path)
	if err != nil {
		return false
	}
	sc := scanSegment(b, false, count)
	if len(sc.damaged) == 0 || sc.total() != count {
		return false
	}
	q, err := s.quarantine(path, "", b)
	if err != nil {
		s.log.Error("spool: cannot repair a damaged segment", "segment", filepath.Base(path), "err", err)
		return false
	}
	fixed := repair(b, sc)
	tmp := path + ".repair"
	if err := writeFileSync(s.fs, tmp, fixed); err != nil {
		s.fs.Remove(tmp)
		s.log.Error("spool: cannot repair a damaged segment", "segment", filepath.Base(path), "err", err)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Under mu, so that deleteAcked cannot remove the segment in between
	// and the rename bring it back.
	i = slices.IndexFunc(s.segs, func(g *segment) bool { return g.base == base })
	if i < 0 {
		s.fs.Remove(tmp)
		return false
	}
	if err := s.fs.Rename(tmp, path); err != nil {
		s.fs.Remove(tmp)
		s.log.Error("spool: cannot repair a damaged segment", "segment", filepath.Base(path), "err", err)
		return false
	}
	if err := s.fs.SyncDir(s.opts.Dir); err != nil {
		s.log.Error("spool: sync directory after a repair", "err", err)
	}
	s.bytes += int64(len(fixed)) - s.segs[i].size
	s.segs[i].size = int64(len(fixed))
	s.repaired[base] = true
	s.countDamage(path, sc, q)
	return true
}

type repairKey struct {
	reader string
	base   uint64
}

// quarantine keeps a copy of a damaged segment, as it was found, under
// Dir/quarantine/ for an operator to inspect (b is the whole segment, or
// with suffix ".tail" the torn tail about to be cut), and returns its path.
// The copy is synced before recovery touches the segment. Quarantined copies are
// not counted in MaxBytes and are never deleted by GoTrack.
func (s *Spool) quarantine(path, suffix string, b []byte) (string, error) {
	dir := filepath.Join(s.opts.Dir, "quarantine")
	if err := s.fs.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("spool: quarantine: %w", err)
	}
	q := filepath.Join(dir, fmt.Sprintf("%s%s.%s", filepath.Base(path), suffix, time.Now().UTC().Format("20060102T150405.000000000Z")))
	if err := writeFileSync(s.fs, q, b); err != nil {
		return "", fmt.Errorf("spool: quarantine %s: %w", filepath.Base(path), err)
	}
	if err := s.fs.SyncDir(dir); err != nil {
		return "", fmt.Errorf("spool: quarantine: %w", err)
	}
	return q, nil
}

// newSegment closes the active segment, if any, and starts another at
// visible, the next record to reach a file. It is called with mu held, or
// before the spool is shared.
func (s *Spool) newSegment() error {
	if s.active != nil {
		// A closed segment ends at its last record, so that recovery only
		// ever finds preallocated zeros at the end of the newest segment.
		// Preallocation stops at SegmentBytes, which the segment has
		// reached when it is closed, so there are none to cut unless that
		// changes; if there are, the cut is synced before the next segment
		// exists.
		if err := s.cutAlloc(); err != nil {
			return fmt.Errorf("spool: cut the preallocated end of a segment: %w", err)
		}
		if err := s.active.Sync(); err != nil {
			return fmt.Errorf("spool: sync segment: %w", err)
		}
		s.active.Close()
		s.active = nil
	}
	seg := &segment{base: s.visible, path: filepath.Join(s.opts.Dir, segmentName(s.visible)), firstAt: time.Now()}
	// Under Sync.Always the syncer writes each round at the file's offset,
	// which is the end of the records: preallocated zeros (written with
	// WriteAt, which leaves the offset alone) lie after it, so O_APPEND
	// would write past them.
	flag := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if s.opts.Sync.Always {
		flag = os.O_WRONLY | os.O_CREATE
	}
	f, err := s.fs.OpenFile(seg.path, flag, 0o640)
	if err != nil {
		return fmt.Errorf("spool: create segment: %w", err)
	}
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		// A segment that recovery found empty of whole records but not of bytes.
		f.Truncate(0)
	}
	if err := s.fs.SyncDir(s.opts.Dir); err != nil {
		f.Close()
		return fmt.Errorf("spool: sync directory: %w", err)
	}
	s.active = f
	if len(s.segs) > 0 && s.segs[len(s.segs)-1].base == seg.base {
		s.segs[len(s.segs)-1] = seg // an empty predecessor with the same base
	} else {
		s.segs = append(s.segs, seg)
	}
	return nil
}

// Append adds events to the spool. Under Sync.Always it returns only once
// they are written and synced: concurrent appends share one write and one
// fdatasync or fsync (group commit, see syncRound). Otherwise it writes them at once, so that they
// survive the process being killed, and they are synced on the interval.
// It returns ErrFull, without adding anything, when the events would take
// the spool past MaxBytes. In either mode, once a write or fsync has failed
// it returns an error wrapping ErrFailed, and adds nothing, until the spool
// is opened again.
func (s *Spool) Append(events []*event.Event) error {
	if len(events) == 0 {
		return nil
	}
	bp := s.bufs.Get().(*[]byte)
	buf := (*bp)[:0]
	for _, e := range events {
		j := e.JSON()
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(j)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(j, crcTable))
		buf = append(buf, j...)
	}
	defer func() {
		if cap(buf) <= 1<<20 {
			*bp = buf
			s.bufs.Put(bp)
		}
	}()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if err := s.syncer.failed(); err != nil {
		s.mu.Unlock()
		s.refused.note(s.log, len(events), err)
		return err
	}
	if s.bytes+int64(len(buf)) > s.opts.MaxBytes {
		s.mu.Unlock()
		return ErrFull
	}
	if s.opts.Sync.Always {
		for i, e := range events {
			seq := s.next + uint64(i)
			s.ring[seq%ringSize] = ringEntry{seq: seq, e: e}
		}
		s.pending = append(s.pending, buf...)
		s.pendingCount += uint64(len(events))
		s.next += uint64(len(events))
		s.bytes += int64(len(buf))
		round := s.round
		s.mu.Unlock()
		if err := s.syncer.wait(round); err != nil {
			s.refused.note(s.log, len(events), err)
			return err
		}
		return nil // counted in appended by flushPending, once per round
	}

	seg := s.segs[len(s.segs)-1]
	if seg.size > 0 && seg.size+int64(len(buf)) > s.opts.SegmentBytes {
		if err := s.newSegment(); err != nil {
			err = s.syncer.fail(err)
			s.mu.Unlock()
			s.refused.note(s.log, len(events), err)
			return err
		}
		seg = s.segs[len(s.segs)-1]
	}
	if n, err := s.active.Write(buf); err != nil || n < len(buf) {
		if err == nil {
			err = io.ErrShortWrite
		}
		// Cut the partial write back off, so the segment stays whole, and
		// stop: the same must happen as when an fsync fails (see fail).
		s.active.Truncate(seg.size)
		err = s.syncer.fail(fmt.Errorf("append: %w", err))
		s.mu.Unlock()
		s.refused.note(s.log, len(events), err)
		return err
	}
	if seg.count == 0 {
		seg.firstAt = events[0].ReceivedAt
	}
	for i, e := range events {
		seq := s.next + uint64(i)
		s.ring[seq%ringSize] = ringEntry{seq: seq, e: e}
	}
	seg.size += int64(len(buf))
	seg.count += uint64(len(events))
	s.bytes += int64(len(buf))
	s.next += uint64(len(events))
	s.visible = s.next
	s.wake()
	s.mu.Unlock()

	s.m.appended.Add(float64(len(events)))
	return nil
}

// wake tells waiting readers that records became visible. mu is held.
func (s *Spool) wake() {
	close(s.notify)
	s.notify = make(chan struct{})
}

// commit is one group-commit round: done is closed once the round's
// records are on disk, or refused, and err says which.
type commit struct {
	done chan struct{}
	err  error
}

func newCommit() *commit { return &commit{done: make(chan struct{})} }

// flushPending is one group-commit round: it takes the queued records,
// writes them with one write, syncs the segment, makes the records visible
// to readers, and closes the segment if it has grown past SegmentBytes.
// Only the syncer calls it. It returns the sequence up to which records are
// on disk, whether more were queued meanwhile, and the round, which the
// caller completes (closes) once it has recorded the outcome.
//
// When the write or the fsync fails, the failure becomes sticky (see
// syncer.fail) and the round's records are refused, and so are those queued
// behind them: none of them is counted in the spool any more, so neither
// the lag nor what is left at shutdown includes events whose clients were
// told they were not stored.
func (s *Spool) flushPending() (upto uint64, more bool, round *commit) {
	s.mu.Lock()
	if s.pendingCount == 0 {
		defer s.mu.Unlock()
		return s.visible, false, nil // nobody waits on an empty round: keep it and the buffers as they are
	}
	// The two buffers alternate: appends fill one while this round writes
	// the other, which becomes the spare again at the end of the round.
	buf, count := s.pending, s.pendingCount
	round = s.round
	s.pending, s.pendingCount, s.round = s.spare[:0], 0, newCommit()
	f, seg := s.active, s.segs[len(s.segs)-1]
	within := seg.size+int64(len(buf)) <= seg.alloc
	s.mu.Unlock()

	// A failure of the syncer's own preallocation is sticky too: nothing
	// queued since is written.
	err := s.syncer.failed()
	if err == nil {
		var n int
		n, err = f.Write(buf)
		if err == nil && n < len(buf) {
			err = io.ErrShortWrite
		}
	}
	if err == nil {
		start := time.Now()
		err = syncRound(f, within)
		s.m.fsync.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		// Refused records must not come back at the next start: cut them
		// off. If even that fails, recovery finds them whole or torn; whole,
		// they are delivered although their clients were answered 503 (a
		// duplicate of the retry, never a loss).
		f.Truncate(seg.size)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.spare = buf
	if err != nil {
		seg.alloc = 0 // cut with the refused records
		round.err = s.syncer.fail(fmt.Errorf("write and sync: %w", err))
		s.bytes -= int64(len(buf))
		s.refuseQueued(round.err)
		return s.visible, false, round
	}
	if seg.count == 0 {
		seg.firstAt = time.Now()
	}
	seg.size += int64(len(buf))
	seg.count += count
	s.visible += count
	s.m.appended.Add(float64(count)) // before the round's appends return
	s.wake()
	if seg.size >= s.opts.SegmentBytes {
		if err := s.newSegment(); err != nil {
			// This round's records are on disk; what comes after is refused.
			s.refuseQueued(s.syncer.fail(err))
			return s.visible, false, round
		}
	}
	return s.visible, s.pendingCount > 0, round
}

// syncRound makes a round's write durable. A write that stayed within the
// segment's preallocated bytes (within) is synced with fdatasync: those
// bytes had been written, as zeros, and fsynced before any record went
// into them, so the file's size and its blocks on disk already cover the
// write, which changed only data and the modification time. fdatasync may
// leave the time behind, and nothing reads it: recovery reads records. It
// skips the inode write that fsync makes after a write that grows the
// file: on ext4 without a journal, on 2 shared cores, a round of 45 pixel
// events took 165 µs rather than 255 µs, and 80 µs of CPU rather than 134
// (BenchmarkSyncKinds).
// Every other write grew the file (the first round of a spool before its
// first preallocation, a round larger than what is left, a segment whose
// preallocation failed) and is synced with fsync, as is every write to a
// file that cannot fdatasync. On a copy-on-write file system (btrfs, ZFS)
// an overwrite does get new blocks; fdatasync still flushes whatever
// metadata reading the data back needs (POSIX, and fdatasync(2) on Linux,
// require it), so it is as durable there, only not faster.
func syncRound(f file, within bool) error {
	if d, ok := f.(datasyncer); ok && within {
		return d.Datasync()
	}
	return f.Sync()
}

// preallocate extends the active segment with zeros once fewer than
// preallocBytes/2 are left after its records: up to preallocBytes after
// them, no further than SegmentBytes, and no further than MaxBytes leaves
// room for beside every record held or queued, so that the spool's files
// never take more than MaxBytes. The zeros are written and fsynced before
// any record goes into them (see syncRound), with plain writes rather than
// fallocate, so that their blocks are allocated and written on every file
// system (ext4 turns fallocated space into written space on the first
// write into it, a metadata change that fdatasync would have to flush).
//
// On a file system with less than preallocMinFree left (statfs) it
// preallocates nothing, and tries again after the next round.
//
// A failed write of zeros cuts them off again and leaves the segment to
// append and fsync as without preallocation; a failed fsync is sticky, as
// any other (see syncer.fail). Only the syncer calls it, under Sync.Always,
// between rounds: it is the only writer of the active segment then.
func (s *Spool) preallocate(zeros []byte) {
	s.mu.Lock()
	if s.closed || s.active == nil || s.syncer.failed() != nil {
		s.mu.Unlock()
		return
	}
	f, seg := s.active, s.segs[len(s.segs)-1]
	from := max(seg.alloc, seg.size)
	to := min(seg.size+preallocBytes, s.opts.SegmentBytes, seg.size+s.opts.MaxBytes-s.bytes)
	to -= to % allocAlign // recovery tells a preallocated segment by its size (see preallocated)
	if seg.noAlloc || from-seg.size >= preallocBytes/2 || to <= from {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()

	if free, err := s.fs.FreeBytes(s.opts.Dir); err == nil && free < preallocMinFree {
		s.mu.Lock()
		warn := !seg.lowDisk
		seg.lowDisk = true
		s.mu.Unlock()
		if warn {
			s.log.Warn("spool: the disk is nearly full; the active segment is not preallocated and its writes are synced with fsync",
				"segment", filepath.Base(seg.path), "free_bytes", free)
		}
		return
	}

	// Each write ends on an allocAlign boundary, so that a crash in
	// between leaves a size recovery takes for a preallocated one.
	var err error
	for off := from; off < to && err == nil; {
		n := min(int64(len(zeros)), to-off, allocAlign-off%allocAlign)
		_, err = f.WriteAt(zeros[:n], off)
		off += n
	}
	if err != nil {
		f.Truncate(from)
		s.mu.Lock()
		seg.noAlloc = true
		s.mu.Unlock()
		s.log.Warn("spool: cannot preallocate the active segment; its writes are synced with fsync until the next segment",
			"segment", filepath.Base(seg.path), "err", err)
		return
	}
	// Not in gotrack_spool_fsync_seconds, which is one round per sample.
	if err = f.Sync(); err != nil {
		f.Truncate(from)
		s.syncer.fail(fmt.Errorf("sync preallocated space: %w", err))
		return
	}
	s.mu.Lock()
	seg.alloc = to
	s.mu.Unlock()
}

// cutAlloc cuts the active segment's preallocated zeros off, if it has
// any, so that it ends at its last record. Its callers hold mu, or have
// the spool to themselves (Open, Close).
func (s *Spool) cutAlloc() error {
	seg := s.segs[len(s.segs)-1]
	if seg.alloc <= seg.size {
		return nil
	}
	if err := s.active.Truncate(seg.size); err != nil {
		return err
	}
	seg.alloc = 0
	return nil
}

// refuseQueued refuses the records queued for the next round, after a
// failure: it uncounts them and wakes their appends with err. mu is held,
// and no round is writing.
func (s *Spool) refuseQueued(err error) {
	s.bytes -= int64(len(s.pending))
	s.pending, s.pendingCount = s.pending[:0], 0
	s.next = s.visible
	queued := s.round
	s.round = newCommit()
	queued.err = err
	close(queued.done)
}

// Full reports whether the spool is too full to promise room for another
// request: less than Margin bytes are left. Readiness uses it, so that
// /readyz turns false while requests of ordinary size still fit, rather
// than once they start failing with ErrFull.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes+s.Margin() > s.opts.MaxBytes
}

// Margin is the room below which Full reports true: 1/64 of MaxBytes, at
// least 8 MiB (eight /collect bodies of the default MAX_BODY_BYTES, each of
// which makes records of about its own size) but at most a quarter of
// MaxBytes, so that a small spool is not always full.
func (s *Spool) Margin() int64 {
	return min(s.opts.MaxBytes/4, max(8<<20, s.opts.MaxBytes/64))
}

// Failed returns the error that stopped the spool, after a write or fsync
// failed.
func (s *Spool) Failed() error { return s.syncer.failed() }

// Reader returns the reader named at Open.
func (s *Spool) Reader(name string) *Reader { return s.readers[name] }

// state is a snapshot for the metrics.
type state struct {
	bytes    int64 // of records, held or queued: not the preallocated zeros (see preallocate)
	segments int
	next     uint64
	oldestAt time.Time
}

func (s *Spool) snapshot() state {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := state{bytes: s.bytes, segments: len(s.segs), next: s.next}
	lowest := s.next
	for _, r := range s.readers {
		lowest = min(lowest, r.Cursor())
	}
	if lowest < s.next {
		for _, seg := range s.segs {
			if lowest < seg.end() {
				st.oldestAt = seg.firstAt
				break
			}
		}
	}
	return st
}

// deleteAcked removes the closed segments every reader has passed.
func (s *Spool) deleteAcked() {
	s.mu.Lock()
	defer s.mu.Unlock()
	lowest := s.next
	for _, r := range s.readers {
		lowest = min(lowest, r.Cursor())
	}
	for len(s.segs) > 1 && s.segs[0].end() <= lowest {
		seg := s.segs[0]
		if err := s.fs.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("spool: delete segment", "segment", filepath.Base(seg.path), "err", err)
			return
		}
		s.bytes -= seg.size
		s.segs = s.segs[1:]
	}
}

// segmentFor returns the segment holding seq, or the first one after it,
// and whether it is the active one.
func (s *Spool) segmentFor(seq uint64) (seg segment, active, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, g := range s.segs {
		if seq < g.end() || i == len(s.segs)-1 {
			return *g, i == len(s.segs)-1, true
		}
	}
	return segment{}, false, false
}

// Close syncs and closes the active segment. Readers must be done.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.wake()
	s.mu.Unlock()
	s.syncer.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, r := range s.readers {
		errs = append(errs, r.close())
	}
	if s.active != nil {
		if s.syncer.failed() == nil {
			// The active segment ends at its last record, as a closed one.
			errs = append(errs, s.cutAlloc())
			errs = append(errs, s.active.Sync())
		}
		errs = append(errs, s.active.Close())
		s.active = nil
	}
	errs = append(errs, s.lock.Close()) // releases the flock
	return errors.Join(errs...)
}
