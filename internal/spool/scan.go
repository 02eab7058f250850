package spool

import (
	"encoding/binary"
	"hash/crc32"
)

// A placeholder is a record whose payload is one zero byte, which no event
// is. When recovery skips damaged records in the middle of a segment, it
// writes one placeholder for each record the damage took, so that every
// later record keeps its sequence number and the readers' cursors keep
// pointing at the records they pointed at. Readers skip placeholders.
var placeholder = append(binary.LittleEndian.AppendUint32(
	binary.LittleEndian.AppendUint32(nil, 1), crc32.Checksum([]byte{0}, crcTable)), 0)

// isPlaceholder reports whether a record's payload is a placeholder's.
func isPlaceholder(payload []byte) bool { return len(payload) == 1 && payload[0] == 0 }

// damage is a stretch of a segment that holds no readable record.
type damage struct {
	off, end int    // bytes [off, end) of the segment
	records  uint64 // records it is taken to have held: at least 1, but for what a closed segment cannot have held (see assign)
	exact    bool   // the damaged record's length was intact: exactly one record
	// cut: zeros in the newest segment's preallocated space where pages
	// of a round never reached the disk before a power loss: a write cut
	// short, of records never acknowledged (see cutShort), not damage.
	cut bool
}

// allocAlign is what preallocation rounds a segment's end to (see
// Spool.preallocate): a newest segment whose size is a multiple of it may
// end in preallocated zeros; one whose size is not was never
// preallocated, and zeros at its end are a torn tail.
const allocAlign = 64 << 10

// pageSize is the unit in which a write reaches the disk, or does not.
const pageSize = 4096

// preallocated reports whether a newest segment of size bytes may end in
// preallocated space.
func preallocated(size int) bool { return size > 0 && size%allocAlign == 0 }

// cutShort reports whether the damaged stretch [off, end) of a newest
// segment of len(b) bytes is a round's write cut short by a power loss in
// preallocated space rather than damage: the segment was preallocated, the
// stretch lies in its last preallocBytes (where the only round not yet
// synced can be), and it holds a run of at least headerLen zero bytes that
// ends at a page boundary or where the stretch ends: the zeros written
// there before the round, where a page of the round never reached the
// disk (the bytes around the run are the rest of a record such a page
// cut). A disk losing a page of synced records there looks the same; that
// cannot be told apart, and is counted as a torn tail is.
func cutShort(b []byte, off, end int) bool {
	if !preallocated(len(b)) || off < len(b)-preallocBytes {
		return false
	}
	run := 0
	for p := off; p < end; p++ {
		if b[p] != 0 {
			run = 0
			continue
		}
		if run++; run >= headerLen && ((p+1)%pageSize == 0 || p+1 == end) {
			return true
		}
	}
	return false
}

// scanned is what a segment holds, record by record.
type scanned struct {
	records      uint64 // whole, valid records, placeholders included
	placeholders uint64
	minPayload   int      // the smallest payload of a valid, non-empty record; 0 when none
	damaged      []damage // followed by a valid record, or in a closed segment
	tail         int      // where the newest segment's tail begins: what follows its last valid record; len(b) when none
	zeros        int      // where the zero bytes that end the tail begin: space preallocated and never written; len(b) when none
}

// torn is the bytes of the tail that are not preallocated zeros: a write
// that a crash cut short.
func (sc *scanned) torn() int { return sc.zeros - sc.tail }

// cut returns the bytes of the damaged stretches that are writes cut
// short, and whether every damaged stretch is one.
func (sc *scanned) cut() (n int, only bool) {
	only = true
	for _, d := range sc.damaged {
		if d.cut {
			n += d.end - d.off
		} else {
			only = false
		}
	}
	return n, only
}

// total is the records the segment numbers: its valid records and those the
// damaged stretches held.
func (sc *scanned) total() uint64 {
	n := sc.records
	for _, d := range sc.damaged {
		n += d.records
	}
	return n
}

// recordAt returns the length of the payload of the valid record at off.
// An empty payload is never written, so a run of zero bytes, as a damaged
// disk block reads, is not taken for records.
func recordAt(b []byte, off int) (n int, ok bool) {
	if len(b)-off < headerLen {
		return 0, false
	}
	n = int(binary.LittleEndian.Uint32(b[off:]))
	if n == 0 || n > len(b)-off-headerLen {
		return 0, false
	}
	return n, crc32.Checksum(b[off+headerLen:off+headerLen+n], crcTable) == binary.LittleEndian.Uint32(b[off+4:])
}

// eventAt reports whether a valid record holding a JSON object starts at
// off: what resynchronisation looks for, checking the first payload byte
// before the CRC so that scanning damaged bytes stays cheap.
func eventAt(b []byte, off int) bool {
	if len(b)-off < headerLen+1 || b[off+headerLen] != '{' {
		return false
	}
	_, ok := recordAt(b, off)
	return ok
}

func isRecord(b []byte, off int) bool {
	_, ok := recordAt(b, off)
	return ok
}

// scanSegment reads a segment record by record. A record that is not valid
// starts a damaged stretch, which ends at the next valid record: where its
// length field says the record ends, when that is a valid record, or else
// the first offset after it that holds one (a flipped bit in a length field
// hides where the next record starts). In the newest segment, a damaged
// stretch that no valid record follows is a torn tail, what a crash in the
// middle of a write leaves; in a closed segment, which was synced before it
// was closed, it is damage like any other.
//
// The zero bytes that end a newest segment's tail, when its size is a
// multiple of allocAlign, are space preallocated for records (see
// Spool.preallocate) that none was written into before the process
// stopped: cut, but not counted as torn. Zeros that end a segment of any
// other size were never preallocated (SPOOL_FSYNC=interval, or the first
// round before preallocation): a write the crash cut short, counted as a
// torn tail. Zeros followed by a valid record in the newest segment's
// preallocated space are a round whose pages reached the disk in part
// (see cutShort), counted as a torn tail is; anywhere else they are damage,
// and so are a closed segment's trailing zeros, since the preallocated end
// is cut, and the cut synced, before the next segment is created.
//
// expect is the number of records the segment numbers, when known (the
// next segment's first sequence minus this one's), and 0 otherwise. It
// sets how many records the damaged stretches whose length field was
// damaged are taken to have held; see assign.
func scanSegment(b []byte, newest bool, expect uint64) scanned {
	sc := scanned{tail: len(b), zeros: len(b)}
	off := 0
	for off < len(b) {
		if n, ok := recordAt(b, off); ok {
			sc.records++
			if isPlaceholder(b[off+headerLen : off+headerLen+n]) {
				sc.placeholders++
			} else if sc.minPayload == 0 || n < sc.minPayload {
				sc.minPayload = n
			}
			off += headerLen + n
			continue
		}
		d := damage{off: off, records: 1}
		if len(b)-off >= headerLen {
			if end := off + headerLen + int(binary.LittleEndian.Uint32(b[off:])); end > off+headerLen && end <= len(b) && (end == len(b) && !newest || isRecord(b, end)) {
				d.end, d.exact = end, true
			}
		}
		if !d.exact {
			for p := off + 1; p < len(b); p++ {
				if eventAt(b, p) {
					d.end = p
					break
				}
			}
		}
		if d.end == 0 { // no valid record after it
			if newest {
				sc.tail, sc.zeros = off, len(b)
				for preallocated(len(b)) && sc.zeros > off && b[sc.zeros-1] == 0 {
					sc.zeros--
				}
				break
			}
			d.end = len(b)
		}
		d.cut = newest && cutShort(b, d.off, d.end)
		sc.damaged = append(sc.damaged, d)
		off = d.end
	}
	sc.assign(expect)
	return sc
}

// assign sets how many records each damaged stretch whose length field was
// damaged held. A stretch can only be counted too many, never too few:
// counted too few, the records after it would take lower sequence numbers
// and a reader's cursor past them would skip records; counted too many,
// such a reader reads a few records again, which at-least-once delivery
// allows. In a closed segment, the next segment's first sequence says how
// many records are missing in all, and the first such stretch takes what
// the others do not (so records between stretches, too, can only move to
// higher numbers). In the newest segment nothing says it: each stretch is
// taken to have held as many records as the smallest record seen fits in
// it. A stretch of B bytes holds at most B/9 records, but for what a
// closed segment still misses after that: records cut off its end.
func (sc *scanned) assign(expect uint64) {
	first := -1
	for i := range sc.damaged {
		d := &sc.damaged[i]
		if d.exact {
			continue
		}
		limit := uint64(max(1, (d.end-d.off)/(headerLen+1)))
		if expect == 0 {
			d.records = min(limit, uint64(max(1, (d.end-d.off)/(headerLen+max(1, sc.minPayload)))))
		}
		if first < 0 {
			first = i
		}
	}
	if expect == 0 {
		return
	}
	// A closed segment numbers exactly expect records: the next segment's
	// first record comes right after. Damage counted past that (bytes after
	// the last record that held none, such as zeros a file was padded with)
	// would push the segment's end into the next one and hide its first
	// records from readers: such stretches hold fewer, down to none, the
	// last ones first. A stretch whose length field was intact (exact) held
	// one record, unless even one per stretch is more than expect allows.
	for i := len(sc.damaged) - 1; i >= 0 && sc.total() > expect; i-- {
		if d := &sc.damaged[i]; !d.exact || sc.records+uint64(len(sc.damaged)) > expect {
			d.records -= min(d.records, sc.total()-expect)
		}
	}
	if have := sc.total(); first >= 0 && expect > have {
		d := &sc.damaged[first]
		d.records = min(uint64(max(1, (d.end-d.off)/(headerLen+1))), d.records+expect-have)
	}
	// Records still missing were cut off the end of the file (a truncated
	// copy, a damaged file system): no bytes of theirs are left to bound
	// them, and the file may even end on a record boundary. They are lost
	// at the end, where the segment's last stretch (or an empty one) takes
	// them, so that they are counted and the records keep their numbers.
	if have := sc.total(); expect > have {
		if n := len(sc.damaged); n > 0 && sc.damaged[n-1].end == sc.tail {
			sc.damaged[n-1].records += expect - have
		} else {
			sc.damaged = append(sc.damaged, damage{off: sc.tail, end: sc.tail, records: expect - have})
		}
	}
}

// repair returns the segment with each damaged stretch replaced by one
// placeholder per record it held, and the torn tail cut.
func repair(b []byte, sc scanned) []byte {
	out := make([]byte, 0, sc.tail)
	off := 0
	for _, d := range sc.damaged {
		out = append(out, b[off:d.off]...)
		for range d.records {
			out = append(out, placeholder...)
		}
		off = d.end
	}
	return append(out, b[off:sc.tail]...)
}
