package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Report is what Verify found in a spool directory.
type Report struct {
	Dir         string
	Segments    []SegmentReport
	Cursors     []CursorReport
	Next        uint64   // the sequence after the last record
	Quarantined int      // files under quarantine/, kept by earlier recoveries
	Problems    []string // damage, one line each; empty when the spool is sound
	Notes       []string // what is odd but not damage
}

// SegmentReport is one segment file.
type SegmentReport struct {
	Name         string
	Base         uint64 // sequence of its first record
	Records      uint64 // the sequences it numbers, placeholders and damaged records included
	Placeholders uint64 // records an earlier recovery found damaged
	Damaged      []Span
	TornBytes    int // a torn tail of the newest segment, which the next start cuts
	Preallocated int // zeros after the newest segment's records: space preallocated for records and never written, which the next start cuts too
}

// Span is a damaged stretch of a segment.
type Span struct {
	Offset, Length int
	Records        uint64 // records it is taken to have held; see the README
}

// CursorReport is one sink's cursor.
type CursorReport struct {
	Sink   string
	Cursor uint64 // the next record the sink has to take
	Lag    uint64 // records after the cursor
}

// Verify checks every segment and cursor in dir without changing anything,
// as Open would find them. It takes a shared lock on dir, so it fails with
// ErrLocked while GoTrack runs on it (and GoTrack does not start while it
// runs). The error is about reading the spool; damage is in the report.
func Verify(dir string) (*Report, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("spool: %s is not a directory", dir)
	}
	lock, err := lockDir(dir, false)
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	rep := &Report{Dir: dir}
	paths, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	bases, err := segmentBases(paths)
	if err != nil {
		return nil, err
	}
	oldest := uint64(0)
	for i, p := range paths {
		var expect uint64
		if i+1 < len(paths) {
			expect = bases[i+1] - bases[i]
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		sc := scanSegment(b, i == len(paths)-1, expect)
		sr := SegmentReport{Name: filepath.Base(p), Base: bases[i], Records: sc.total(), Placeholders: sc.placeholders,
			TornBytes: sc.torn(), Preallocated: len(b) - sc.zeros}
		for _, d := range sc.damaged {
			sr.Damaged = append(sr.Damaged, Span{Offset: d.off, Length: d.end - d.off, Records: d.records})
			if d.off == d.end {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: the file ends at byte %d, cut short (%s lost)", sr.Name, d.off, plural(d.records, "record")))
				continue
			}
			if d.cut {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: bytes %d to %d are a write a crash cut short in preallocated space (%s never acknowledged lost; the next start counts it as a torn tail)", sr.Name, d.off, d.end, plural(d.records, "record")))
				continue
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: bytes %d to %d are damaged (%s lost)", sr.Name, d.off, d.end, plural(d.records, "record")))
		}
		if sr.TornBytes > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: torn tail of %d bytes after the last whole record", sr.Name, sr.TornBytes))
		}
		if sr.Preallocated > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %d bytes of preallocated space after the last record, never written (GoTrack did not stop cleanly); the next start cuts them", sr.Name, sr.Preallocated))
		}
		if expect > 0 && sr.Records > expect {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d records overlap the next segment, which starts at %d", sr.Name, sr.Records, bases[i+1]))
		}
		if i == 0 {
			oldest = sr.Base
		}
		rep.Next = max(rep.Next, sr.Base+sr.Records)
		rep.Segments = append(rep.Segments, sr)
	}
	if q, err := os.ReadDir(filepath.Join(dir, "quarantine")); err == nil {
		rep.Quarantined = len(q)
	}

	cursors, err := filepath.Glob(filepath.Join(dir, "cursor.*"))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	slices.Sort(cursors)
	for _, p := range cursors {
		name := strings.TrimPrefix(filepath.Base(p), "cursor.")
		if strings.HasSuffix(name, ".tmp") {
			continue // a rename that a crash interrupted; Open ignores it too
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("cursor of %s is unreadable (%q): the sink would get the whole spool again", name, b))
			continue
		}
		cr := CursorReport{Sink: name, Cursor: v, Lag: rep.Next - min(rep.Next, v)}
		// Neither is damage by itself: the next start moves on from a cursor
		// past the end, and a sink no longer in OUTPUTS leaves its cursor
		// behind while the others' segments are deleted.
		switch {
		case v > rep.Next:
			rep.Notes = append(rep.Notes, fmt.Sprintf("cursor of %s is at %d, past the last record (%d): a torn tail held records it had taken", name, v, rep.Next))
		case len(rep.Segments) > 0 && v < oldest:
			rep.Notes = append(rep.Notes, fmt.Sprintf("cursor of %s is at %d, before the oldest record (%d): a sink no longer in OUTPUTS, or segments were deleted by hand", name, v, oldest))
		}
		rep.Cursors = append(rep.Cursors, cr)
	}
	return rep, nil
}

// Damaged reports whether Verify found any damage.
func (r *Report) Damaged() bool { return len(r.Problems) > 0 }

// Print writes the report for a person to read.
func (r *Report) Print(w io.Writer) {
	var records, placeholders uint64
	for _, s := range r.Segments {
		records += s.Records
		placeholders += s.Placeholders
	}
	fmt.Fprintf(w, "spool %s: %s, %s (%s for records lost earlier), next sequence %d\n",
		r.Dir, plural(uint64(len(r.Segments)), "segment"), plural(records, "record"), plural(placeholders, "placeholder"), r.Next)
	for _, s := range r.Segments {
		state := "ok"
		if len(s.Damaged) > 0 || s.TornBytes > 0 {
			state = fmt.Sprintf("DAMAGED: %s, torn tail of %s", plural(uint64(len(s.Damaged)), "corrupt span"), plural(uint64(s.TornBytes), "byte"))
		}
		fmt.Fprintf(w, "  %s  first %d, %s, %s: %s\n", s.Name, s.Base, plural(s.Records, "record"), plural(s.Placeholders, "placeholder"), state)
		for _, d := range s.Damaged {
			fmt.Fprintf(w, "    corrupt span: bytes %d to %d, %s lost\n", d.Offset, d.Offset+d.Length, plural(d.Records, "record"))
		}
	}
	for _, c := range r.Cursors {
		fmt.Fprintf(w, "  sink %s: cursor %d, lag %s\n", c.Sink, c.Cursor, plural(c.Lag, "event"))
	}
	if r.Quarantined > 0 {
		fmt.Fprintf(w, "  quarantine/: %s of segments as earlier recoveries found them\n", plural(uint64(r.Quarantined), "copy"))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
	if !r.Damaged() {
		fmt.Fprintln(w, "no damage found")
	}
}

// ErrDamaged is returned by callers of Verify that turn damage into an error.
var ErrDamaged = errors.New("spool: damage found")

func plural(n uint64, one string) string {
	switch {
	case n == 1:
		return "1 " + one
	case one == "copy":
		return fmt.Sprintf("%d copies", n)
	}
	return fmt.Sprintf("%d %ss", n, one)
}
