package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gotrack/gotrack/internal/buffer"
	"github.com/gotrack/gotrack/internal/event"
)

// Reader is one sink's view of the spool, and the durable buffer.Buffer the
// pipeline's worker reads: it reads records from its cursor on, and Ack
// moves the cursor past what the sink has written. A Reader is used by one
// goroutine; Lag and Cursor are safe to call from any.
type Reader struct {
	s          *Spool
	name       string
	cursorPath string
	cursorFile *os.File      // the cursor, open for writing in place after its first persist
	cursor     atomic.Uint64 // the next record to deliver
	inflightAt atomic.Int64  // received_at (unix ns) of the oldest record read and not acked; 0 when none

	pos     uint64 // the next record to read
	skipped uint64 // records read since the last Ack that were no events (placeholders, damage)
	f       *os.File
	limit   recordBytes // reads f no further than its records
	br      *bufio.Reader
	seg     segment // the segment f reads, as last looked up
	segLast bool    // whether seg was the active segment then
	payload []byte
}

func (s *Spool) openReader(name string) (*Reader, error) {
	if name == "" || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("spool: bad reader name %q", name)
	}
	r := &Reader{s: s, name: name, cursorPath: filepath.Join(s.opts.Dir, "cursor."+name)}
	oldest := s.next
	if len(s.segs) > 0 {
		oldest = s.segs[0].base
	}
	cursor := oldest // a missing cursor replays all that is left: duplicates, never loss
	b, err := os.ReadFile(r.cursorPath)
	switch {
	case err == nil:
		v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			s.log.Warn("spool: unreadable cursor; replaying from the oldest record", "reader", name)
		} else {
			cursor = max(v, oldest)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("spool: cursor %s: %w", name, err)
	}
	if cursor > s.next {
		s.next, s.visible = cursor, cursor // every segment was acknowledged and deleted
	}
	r.cursor.Store(cursor)
	r.pos = cursor
	if pending := s.next - cursor; pending > 0 {
		s.m.recovered.WithLabelValues(name).Add(float64(pending))
		s.log.Info("spool: replaying events the sink had not acknowledged", "sink", name, "events", pending)
	}
	return r, nil
}

// Cursor returns the sequence of the next record the sink has to take.
func (r *Reader) Cursor() uint64 { return r.cursor.Load() }

// Lag returns the records appended that the sink has not acknowledged.
func (r *Reader) Lag() uint64 {
	r.s.mu.Lock()
	next := r.s.next
	r.s.mu.Unlock()
	return next - min(next, r.Cursor())
}

// Capacity implements buffer.Buffer: the spool is bounded by bytes
// (SPOOL_MAX_BYTES), not by a count of events.
func (r *Reader) Capacity() int { return 0 }

// Durable implements buffer.Buffer: what is not acknowledged is read again
// after a restart.
func (r *Reader) Durable() bool { return true }

var _ buffer.Buffer = (*Reader)(nil)

// Read returns the next records, at most maxEvents and about maxBytes: it
// waits until at least one is there (or stop is closed), then gathers what
// arrives within wait of the first. It returns nil once stop is closed and
// nothing is left to read.
func (r *Reader) Read(maxEvents, maxBytes int, wait time.Duration, stop <-chan struct{}) ([]*event.Event, error) {
	var (
		batch []*event.Event
		size  int
		timer *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(batch) < maxEvents && size < maxBytes {
		r.s.mu.Lock()
		next, notify, closed := r.s.visible, r.s.notify, r.s.closed
		for r.pos < next && len(batch) < maxEvents && size < maxBytes {
			ent := r.s.ring[r.pos%ringSize]
			if ent.e == nil || ent.seq != r.pos {
				break // not in the ring: read it from the file
			}
			if len(batch) == 0 && r.inflightAt.Load() == 0 {
				r.inflightAt.Store(ent.e.ReceivedAt.UnixNano())
			}
			batch = append(batch, ent.e)
			size += ent.e.Size()
			r.pos++
			r.closeFile() // its position is behind now; reopened if ever needed
		}
		r.s.mu.Unlock()
		if len(batch) >= maxEvents || size >= maxBytes {
			break
		}
		if r.pos < next {
			before := r.pos
			e, err := r.readOne()
			if err != nil {
				return batch, err
			}
			if e == nil {
				r.skipped += r.pos - before // the next Ack moves the cursor past them too
				continue                    // skipped a corrupt stretch
			}
			if len(batch) == 0 && r.inflightAt.Load() == 0 {
				r.inflightAt.Store(e.ReceivedAt.UnixNano())
			}
			batch = append(batch, e)
			size += e.Size()
			continue
		}
		if closed {
			break
		}
		if len(batch) == 0 {
			select {
			case <-notify:
			case <-stop:
				return nil, nil
			}
			continue
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-notify:
		case <-timer.C:
			return batch, nil
		case <-stop:
			return batch, nil
		}
	}
	return batch, nil
}

// readOne reads the record at pos. It returns a nil event when it had to
// skip records it could not read.
func (r *Reader) readOne() (*event.Event, error) {
	if r.f == nil || r.pos >= r.seg.end() {
		if err := r.locate(); err != nil {
			return nil, err
		}
		if r.pos < r.seg.base { // records lost to a truncated segment: skip them
			r.pos = r.seg.base
			return nil, nil
		}
	}
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
		return r.skipSegment(fmt.Errorf("read record header: %w", err))
	}
	n := int(binary.LittleEndian.Uint32(hdr[:]))
	if cap(r.payload) < n {
		r.payload = make([]byte, n)
	}
	p := r.payload[:n]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return r.skipSegment(fmt.Errorf("read record: %w", err))
	}
	if crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
		return r.skipSegment(errors.New("record fails its CRC"))
	}
	r.pos++
	if isPlaceholder(p) {
		return nil, nil // a record recovery found damaged, and counted then
	}
	e, err := event.Decode(p)
	if err != nil {
		r.s.m.corrupt.Inc()
		r.s.log.Error("spool: record is not an event; skipped", "reader", r.name, "err", err)
		return nil, nil
	}
	return e, nil
}

// skipSegment gives up on the rest of a segment that cannot be read, so one
// damaged file does not stop the sink for good.
func (r *Reader) skipSegment(cause error) (*event.Event, error) {
	lost := r.seg.end() - r.pos
	if r.segLast {
		// The active segment is being written: the record may be there in a
		// moment. Look again rather than skip.
		r.closeFile()
		return nil, nil
	}
	if r.s.repairClosed(r.name, r.seg.base) {
		r.closeFile() // reopened on the repaired file, at the same record
		return nil, nil
	}
	r.s.m.corrupt.Add(float64(lost))
	r.s.log.Error("spool: skipping the unreadable rest of a segment", "reader", r.name,
		"segment", filepath.Base(r.seg.path), "records", lost, "err", cause)
	r.pos = r.seg.end()
	r.closeFile()
	return nil, nil
}

// locate opens the segment holding pos and moves to the record.
func (r *Reader) locate() error {
	seg, last, ok := r.s.segmentFor(r.pos)
	if !ok {
		return errors.New("spool: no segment")
	}
	if r.f != nil && seg.base == r.seg.base {
		r.limit.left += seg.size - r.seg.size
		r.seg, r.segLast = seg, last // the active segment grew
		return nil
	}
	r.closeFile()
	f, err := os.Open(seg.path)
	if err != nil {
		return fmt.Errorf("spool: open segment: %w", err)
	}
	r.f, r.seg, r.segLast = f, seg, last
	r.limit = recordBytes{f: f, left: seg.size}
	r.br = bufio.NewReaderSize(&r.limit, 256<<10)
	for skip := r.pos; skip > seg.base && skip > 0; skip-- { // skip records already delivered
		var hdr [headerLen]byte
		if _, err := io.ReadFull(r.br, hdr[:]); err != nil {
			return fmt.Errorf("spool: seek in segment: %w", err)
		}
		if _, err := r.br.Discard(int(binary.LittleEndian.Uint32(hdr[:]))); err != nil {
			return fmt.Errorf("spool: seek in segment: %w", err)
		}
	}
	return nil
}

// recordBytes reads a segment no further than the records it held when
// last looked up (left is what remains of them). The active segment's
// preallocated zeros lie after its records: read ahead into the buffer,
// they would stand there for the records written over them later.
type recordBytes struct {
	f    *os.File
	left int64
}

func (l *recordBytes) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.f.Read(p)
	l.left -= int64(n)
	return n, err
}

func (r *Reader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f, r.br = nil, nil
	}
}

// Ack records that the sink has taken the n records read since the last
// Ack, persists the cursor, and lets the spool delete what no sink needs.
// The cursor also passes the records Read skipped (placeholders, damage),
// so n must be every event Read returned since the last Ack or Rewind.
func (r *Reader) Ack(n int) error {
	cursor := r.cursor.Add(uint64(n) + r.skipped)
	r.skipped = 0
	r.inflightAt.Store(0)
	if err := r.persist(cursor); err != nil {
		return err
	}
	r.s.deleteAcked()
	return nil
}

// cursorLen is the size of a persisted cursor: 20 digits, zero-padded (the
// widest uint64), and a newline.
const cursorLen = 20 + 1

// persist writes the cursor. The first write in a process replaces the file
// with a rename, so a crash leaves the old or the new one whatever was
// there before; it also makes the file exactly cursorLen bytes. Every later
// write overwrites those bytes in place through a file kept open: one
// pwrite rather than a create, a write, a close and a rename (about 1 µs of
// CPU against 70 to 300 µs on ext4, see BenchmarkAck; the pipeline acks
// every batch). In place is as safe: each write has the same length at
// offset 0, so the file's size never changes and its bytes lie in one
// sector; a process that dies leaves the old cursor or the new one, never
// a mix. The cursor is not fsynced, in either form: a cursor that goes back
// after a power loss replays events (duplicates), it never skips them, and
// one left unreadable replays from the oldest record.
func (r *Reader) persist(cursor uint64) error {
	var digits [cursorLen - 1]byte
	v := strconv.AppendUint(digits[:0], cursor, 10)
	b := [cursorLen]byte{cursorLen - 1: '\n'}
	for i := range cursorLen - 1 - len(v) {
		b[i] = '0'
	}
	copy(b[cursorLen-1-len(v):], v)
	if r.cursorFile != nil {
		if _, err := r.cursorFile.WriteAt(b[:], 0); err != nil {
			return fmt.Errorf("spool: cursor: %w", err)
		}
		return nil
	}
	tmp := r.cursorPath + ".tmp"
	if err := os.WriteFile(tmp, b[:], 0o640); err != nil {
		return fmt.Errorf("spool: cursor: %w", err)
	}
	if err := os.Rename(tmp, r.cursorPath); err != nil {
		return fmt.Errorf("spool: cursor: %w", err)
	}
	f, err := os.OpenFile(r.cursorPath, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("spool: cursor: %w", err)
	}
	r.cursorFile = f
	return nil
}

// Rewind makes the next Read start again at the cursor: what was read and
// not acknowledged is read again.
func (r *Reader) Rewind() {
	r.pos = r.cursor.Load()
	r.skipped = 0
	r.inflightAt.Store(0)
	r.closeFile()
}

func (r *Reader) close() error {
	r.closeFile()
	err := r.persist(r.cursor.Load())
	if r.cursorFile != nil {
		err = errors.Join(err, r.cursorFile.Close())
		r.cursorFile = nil
	}
	return err
}
