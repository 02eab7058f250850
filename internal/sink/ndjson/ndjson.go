// Package ndjson is the sink that appends events to a file, one JSON object
// per line.
package ndjson

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// FsyncPolicy says when written batches are synced to disk.
type FsyncPolicy string

// The fsync policies.
const (
	FsyncBatch    FsyncPolicy = "batch"    // after every batch, before it counts as written
	FsyncInterval FsyncPolicy = "interval" // at most once per Options.FsyncInterval
	FsyncNever    FsyncPolicy = "never"    // left to the operating system
)

// ParseFsyncPolicy parses one of the policy names.
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch p := FsyncPolicy(s); p {
	case FsyncBatch, FsyncInterval, FsyncNever:
		return p, nil
	}
	return "", fmt.Errorf("unknown fsync policy %q (want batch, interval or never)", s)
}

// Stdout is the path that makes the sink write to its Stdout writer.
const Stdout = "-"

// Options configure a Sink.
type Options struct {
	Path          string        // the file; Stdout for standard output
	Fsync         FsyncPolicy   // default FsyncBatch
	FsyncInterval time.Duration // for FsyncInterval; default 1s
	RotateBytes   int64         // rotate before a batch would grow the file past this; 0 never
	Backups       int           // rotated files kept as Path.1 ... Path.N, 0 to MaxBackups
	// BatchSize, when not 0, is this sink's batch policy in events, which
	// the pipeline follows rather than its own: each batch is one write
	// and, under FsyncBatch, one fsync, which costs far more than the
	// write at high rates. 0 leaves the pipeline's batch size.
	BatchSize int
	Stdout    io.Writer // used when Path is Stdout; default os.Stdout
}

// MaxBackups is the most rotated files Options.Backups may keep.
const MaxBackups = 1000

// DefaultBatchSize is the batch size GoTrack's configuration gives the log
// sink (LOG_BATCH_SIZE) unless told otherwise: four times the pipeline's
// 500, so a quarter of the fsyncs under FsyncBatch.
const DefaultBatchSize = 2000

// MaxBatchSize is the largest Options.BatchSize.
const MaxBatchSize = 1_000_000

// Validate reports every problem with o, each a *sink.OptionError, joined.
// Open calls it; zero values that have a default are valid.
func (o Options) Validate() error {
	errs := sink.NewOptionErrors("ndjson")
	if o.Path == "" {
		errs.Add("{Path} is empty; want a file path, or - for standard output")
	}
	if o.Fsync != "" {
		if _, err := ParseFsyncPolicy(string(o.Fsync)); err != nil {
			errs.Add("{Fsync}: " + err.Error())
		}
	}
	if o.FsyncInterval < 0 {
		errs.Add("{FsyncInterval} is negative; want a positive duration, or 0 for 1s")
	}
	if o.RotateBytes < 0 {
		errs.Add("{RotateBytes} is negative; want 0 (never rotate) or a positive size")
	}
	if o.BatchSize < 0 || o.BatchSize > MaxBatchSize {
		errs.Add(fmt.Sprintf("{BatchSize}=%d is out of range; want 0 (the pipeline's) to %d", o.BatchSize, MaxBatchSize))
	}
	if o.Backups < 0 || o.Backups > MaxBackups {
		errs.Add(fmt.Sprintf("{Backups}=%d is out of range; want 0 to %d", o.Backups, MaxBackups))
	}
	return errs.Err()
}

// Sink appends events to a file. Each batch is one write; a batch that fails
// part way is cut back off the file, so that a retry never leaves a torn or
// doubled line.
type Sink struct {
	opts Options

	// lock, a one-slot semaphore, guards the fields below. It is a channel
	// so that Close can give up waiting for it when its context ends
	// while a write is stuck on a slow disk.
	lock     chan struct{}
	closing  atomic.Bool // Close was called; writes fail from then on
	closed   bool
	f        *os.File  // nil for Stdout, or after a failed reopen or rotation
	w        io.Writer // the standard output writer when Path is Stdout
	size     int64
	buf      []byte
	lastSync time.Time
}

// Open opens (creating if needed) the file for appending. It fails with
// Validate's error when opts are not valid.
func Open(opts Options) (*Sink, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Fsync == "" {
		opts.Fsync = FsyncBatch
	}
	if opts.FsyncInterval <= 0 {
		opts.FsyncInterval = time.Second
	}
	s := &Sink{opts: opts, lock: make(chan struct{}, 1)}
	if opts.Path == Stdout {
		s.w = opts.Stdout
		if s.w == nil {
			s.w = os.Stdout
		}
		return s, nil
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sink) open() error {
	f, err := os.OpenFile(s.opts.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("ndjson: open: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("ndjson: stat: %w", err)
	}
	s.f, s.size = f, st.Size()
	return nil
}

// unlock releases the lock. A write that held it past a Close that gave
// up waiting finishes that Close.
func (s *Sink) unlock() {
	if s.closing.Load() && !s.closed {
		_ = s.closeLocked()
	}
	<-s.lock
}

// lockCtx takes the lock, or gives up when ctx ends first.
func (s *Sink) lockCtx(ctx context.Context) error {
	select {
	case s.lock <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Policy declares the sink not idempotent: a batch retried after a failure
// reported late (a timeout) is appended again; and its batch size,
// Options.BatchSize, when set.
func (s *Sink) Policy() sink.Policy { return sink.Policy{BatchEvents: s.opts.BatchSize} }

// WriteBatch appends the batch in one write and syncs it under the policy.
// It returns ctx's error, having written nothing, when ctx ends before it
// could start; a write under way is not interrupted.
func (s *Sink) WriteBatch(ctx context.Context, batch []*event.Event) error {
	if len(batch) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ndjson: %w", err)
	}
	if s.closing.Load() {
		return errors.New("ndjson: sink is closed")
	}
	if err := s.lockCtx(ctx); err != nil {
		return fmt.Errorf("ndjson: %w", err)
	}
	defer s.unlock()
	buf := s.buf[:0]
	for _, e := range batch {
		buf = append(buf, e.JSON()...)
		buf = append(buf, '\n')
	}
	s.buf = buf
	switch {
	case s.closed:
		return errors.New("ndjson: sink is closed")
	case s.w != nil:
		if _, err := s.w.Write(buf); err != nil {
			return fmt.Errorf("ndjson: write %d events: %w", len(batch), err)
		}
		return nil
	case s.f == nil:
		// A reopen or rotation failed earlier; try again rather than give up.
		if err := s.open(); err != nil {
			return err
		}
	}
	if s.opts.RotateBytes > 0 && s.size > 0 && s.size+int64(len(buf)) > s.opts.RotateBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if n, err := s.f.Write(buf); err != nil {
		if n > 0 {
			// Take the partial batch back off, so that the retry writes it whole.
			if terr := s.f.Truncate(s.size); terr != nil {
				err = errors.Join(err, fmt.Errorf("truncate after a short write: %w", terr))
			}
		}
		return fmt.Errorf("ndjson: write %d events: %w", len(batch), err)
	}
	s.size += int64(len(buf))
	return s.syncLocked(false)
}

func (s *Sink) syncLocked(force bool) error {
	switch {
	case s.f == nil:
		return nil
	case s.opts.Fsync == FsyncNever && !force:
		return nil
	case s.opts.Fsync == FsyncInterval && !force && time.Since(s.lastSync) < s.opts.FsyncInterval:
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("ndjson: fsync: %w", err)
	}
	s.lastSync = time.Now()
	return nil
}

// rotate renames Path to Path.1, shifting older backups up and removing the
// one past Backups, then opens a new Path.
func (s *Sink) rotate() error {
	if err := s.syncLocked(true); err != nil {
		return err
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("ndjson: close for rotation: %w", err)
	}
	s.f = nil
	p := s.opts.Path
	if s.opts.Backups <= 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ndjson: rotate: %w", err)
		}
	} else {
		_ = os.Remove(p + "." + strconv.Itoa(s.opts.Backups))
		for i := s.opts.Backups - 1; i >= 1; i-- {
			from := p + "." + strconv.Itoa(i)
			if err := os.Rename(from, p+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("ndjson: rotate: %w", err)
			}
		}
		if err := os.Rename(p, p+".1"); err != nil {
			return fmt.Errorf("ndjson: rotate: %w", err)
		}
	}
	return s.open()
}

// Reopen closes the file and opens Path again, for logrotate's move-and-HUP.
func (s *Sink) Reopen() error {
	s.lock <- struct{}{}
	defer s.unlock()
	if s.closed || s.w != nil {
		return nil
	}
	if s.f == nil {
		return s.open()
	}
	syncErr := s.syncLocked(true)
	closeErr := s.f.Close()
	s.f = nil
	if err := s.open(); err != nil {
		return errors.Join(syncErr, closeErr, err)
	}
	return errors.Join(syncErr, closeErr)
}

// Close syncs and closes the file. When ctx ends while a write holds the
// file, Close returns ctx's error without waiting for it, and the write
// closes the file when it returns. Writes fail once Close was called.
func (s *Sink) Close(ctx context.Context) error {
	s.closing.Store(true)
	if err := s.lockCtx(ctx); err != nil {
		return fmt.Errorf("ndjson: close: a write is still under way: %w", err)
	}
	defer s.unlock()
	return s.closeLocked()
}

func (s *Sink) closeLocked() error {
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := errors.Join(s.syncLocked(true), s.f.Close())
	s.f = nil
	if err != nil {
		return fmt.Errorf("ndjson: close: %w", err)
	}
	return nil
}
