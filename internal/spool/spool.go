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
// Records are numbered by position: a segment's records are numbered from
// the sequence in its name. Each reader keeps the number of the next record
// it has to deliver in cursor.<name>. A segment is deleted once every cursor
// has passed its last record.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
	SegmentBytes int64 // a segment is closed past this size; default min(64 MiB, MaxBytes/8)
	Readers      []string
	Metrics      *Metrics
	Log          *slog.Logger
}

// ErrFull is returned by Append when the events would take the spool past
// its MaxBytes.
var ErrFull = errors.New("spool: full (SPOOL_MAX_BYTES)")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("spool: closed")

const headerLen = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segment is one file of the spool.
type segment struct {
	base    uint64    // sequence of its first record
	count   uint64    // records in it
	size    int64     // bytes in it
	firstAt time.Time // when its first record was received, for the age metric
	path    string
}

func (s *segment) end() uint64 { return s.base + s.count }

// Spool is the durable log. Append is safe for concurrent use.
type Spool struct {
	opts Options
	m    *Metrics
	log  *slog.Logger

	mu      sync.Mutex // guards the fields below
	segs    []*segment // ordered by base; the last is the active one
	active  *os.File
	next    uint64 // sequence of the next record appended
	visible uint64 // records in the segment files, which readers may read
	bytes   int64  // in all segments, and pending

	// Under Sync.Always appends queue their records here and the syncer
	// writes them all with one write before its fsync.
	pending      []byte
	pendingCount uint64
	spare        []byte
	roundDone    chan struct{} // closed when the pending records are on disk
	closed       bool
	readers      map[string]*Reader
	notify       chan struct{} // closed and replaced when records are appended
	bufs         sync.Pool
	syncer       *syncer

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

// Open recovers the spool in opts.Dir, creating it when missing: it checks
// every record, cuts a torn or corrupt tail off the segment that holds it,
// reads the readers' cursors, and starts a new active segment.
func Open(o Options) (*Spool, error) {
	if o.MaxBytes <= 0 {
		return nil, errors.New("spool: MaxBytes must be positive")
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = min(64<<20, max(o.MaxBytes/8, 64<<10))
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = newUnregisteredMetrics()
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{opts: o, m: o.Metrics, log: o.Log, readers: map[string]*Reader{}, notify: make(chan struct{}),
		ring: make([]ringEntry, ringSize), roundDone: make(chan struct{})}
	s.bufs.New = func() any { return new([]byte) }
	if err := s.recover(); err != nil {
		return nil, err
	}
	for _, name := range o.Readers {
		r, err := s.openReader(name)
		if err != nil {
			return nil, err
		}
		s.readers[name] = r
	}
	s.visible = s.next
	s.deleteAcked()
	if err := s.newSegment(); err != nil {
		return nil, err
	}
	s.syncer = startSyncer(s)
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
	slices.Sort(paths) // the zero-padded names sort by base
	for _, p := range paths {
		base, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "seg-"), ".log"), 10, 64)
		if err != nil {
			return fmt.Errorf("spool: unexpected file %s", p)
		}
		seg, err := s.scanSegment(p, base)
		if err != nil {
			return err
		}
		if seg.count == 0 {
			os.Remove(p)
			continue
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
		s.next = max(s.next, seg.end())
	}
	return nil
}

// scanSegment checks a segment record by record and truncates it at the
// first record that is incomplete or fails its CRC: what a crash in the
// middle of a write leaves behind.
func (s *Spool) scanSegment(path string, base uint64) (*segment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	seg := &segment{base: base, path: path}
	off := 0
	for off < len(b) {
		if len(b)-off < headerLen {
			break
		}
		n := int(binary.LittleEndian.Uint32(b[off:]))
		sum := binary.LittleEndian.Uint32(b[off+4:])
		if n > len(b)-off-headerLen || crc32.Checksum(b[off+headerLen:off+headerLen+n], crcTable) != sum {
			break
		}
		if seg.count == 0 {
			if e, err := event.Decode(b[off+headerLen : off+headerLen+n]); err == nil {
				seg.firstAt = e.ReceivedAt
			}
		}
		seg.count++
		off += headerLen + n
	}
	if off < len(b) {
		if err := os.Truncate(path, int64(off)); err != nil {
			return nil, fmt.Errorf("spool: truncate %s: %w", path, err)
		}
		s.m.truncatedBytes.Add(float64(len(b) - off))
		s.m.truncations.Inc()
		s.log.Warn("spool: cut a torn or corrupt tail off a segment", "segment", filepath.Base(path),
			"kept_records", seg.count, "cut_bytes", len(b)-off)
	}
	seg.size = int64(off)
	if seg.firstAt.IsZero() {
		seg.firstAt = time.Now()
	}
	return seg, nil
}

// newSegment closes the active segment, if any, and starts another at
// visible, the next record to reach a file. It is called with mu held, or
// before the spool is shared.
func (s *Spool) newSegment() error {
	if s.active != nil {
		if err := s.active.Sync(); err != nil {
			return fmt.Errorf("spool: sync segment: %w", err)
		}
		s.active.Close()
		s.active = nil
	}
	seg := &segment{base: s.visible, path: filepath.Join(s.opts.Dir, segmentName(s.visible)), firstAt: time.Now()}
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("spool: create segment: %w", err)
	}
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		// A segment that recovery found empty of whole records but not of bytes.
		f.Truncate(0)
	}
	if err := syncDir(s.opts.Dir); err != nil {
		f.Close()
		return err
	}
	s.active = f
	if len(s.segs) > 0 && s.segs[len(s.segs)-1].base == seg.base {
		s.segs[len(s.segs)-1] = seg // an empty predecessor with the same base
	} else {
		s.segs = append(s.segs, seg)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: sync directory: %w", err)
	}
	return nil
}

// Append adds events to the spool. Under Sync.Always it returns only once
// they are written and synced: concurrent appends share one write and one
// fsync (group commit). Otherwise it writes them at once, so that they
// survive the process being killed, and they are synced on the interval.
// It returns ErrFull, without adding anything, when the events would take
// the spool past MaxBytes.
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

	if err := s.syncer.failed(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
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
		round := s.roundDone
		s.mu.Unlock()
		s.m.appended.Add(float64(len(events)))
		return s.syncer.wait(round)
	}

	seg := s.segs[len(s.segs)-1]
	if seg.size > 0 && seg.size+int64(len(buf)) > s.opts.SegmentBytes {
		if err := s.newSegment(); err != nil {
			s.mu.Unlock()
			return err
		}
		seg = s.segs[len(s.segs)-1]
	}
	if _, err := s.active.Write(buf); err != nil {
		// Cut the partial write back off, so the segment stays whole.
		s.active.Truncate(seg.size)
		s.mu.Unlock()
		return fmt.Errorf("spool: append: %w", err)
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

// flushPending is one group-commit round: it takes the queued records,
// writes them with one write, syncs the segment, makes the records visible
// to readers, wakes the appends of the round, and closes the segment if it
// has grown past SegmentBytes. Only the syncer calls it. It returns the
// sequence up to which records are on disk, whether more were queued
// meanwhile, and the round's channel, which the caller closes once it has
// recorded the outcome.
func (s *Spool) flushPending() (upto uint64, more bool, round chan struct{}, err error) {
	s.mu.Lock()
	if s.pendingCount == 0 {
		defer s.mu.Unlock()
		return s.visible, false, nil, nil // nobody waits on an empty round: keep it and the buffers as they are
	}
	// The two buffers alternate: appends fill one while this round writes
	// the other, which becomes the spare again at the end of the round.
	buf, count := s.pending, s.pendingCount
	round = s.roundDone
	s.pending, s.pendingCount, s.roundDone = s.spare[:0], 0, make(chan struct{})
	f, seg := s.active, s.segs[len(s.segs)-1]
	s.mu.Unlock()

	if _, err = f.Write(buf); err != nil {
		f.Truncate(seg.size)
	}
	if err == nil {
		start := time.Now()
		err = f.Sync()
		s.m.fsync.Observe(time.Since(start).Seconds())
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.spare = buf
	if err != nil {
		s.bytes -= int64(len(buf))
		return s.visible, false, round, fmt.Errorf("spool: write and sync: %w", err)
	}
	if seg.count == 0 {
		seg.firstAt = time.Now()
	}
	seg.size += int64(len(buf))
	seg.count += count
	s.visible += count
	s.wake()
	if seg.size >= s.opts.SegmentBytes {
		if err := s.newSegment(); err != nil {
			return s.visible, false, round, err
		}
	}
	return s.visible, s.pendingCount > 0, round, nil
}

// Full reports whether the spool has no room for another event.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes+4096 > s.opts.MaxBytes
}

// Failed returns the error that stopped the spool, after a write or fsync
// failed.
func (s *Spool) Failed() error { return s.syncer.failed() }

// Reader returns the reader named at Open.
func (s *Spool) Reader(name string) *Reader { return s.readers[name] }

// state is a snapshot for the metrics.
type state struct {
	bytes    int64
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
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
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
		errs = append(errs, s.active.Sync(), s.active.Close())
		s.active = nil
	}
	return errors.Join(errs...)
}
