// Package postgres is the sink that writes events to a PostgreSQL table,
// idempotently by event_id: retries and replays never duplicate a row.
//
// A batch is written in one transaction by binary COPY, encoded by the
// sink itself (see copy.go) for the column types the server reports in
// that transaction, so that a change of the table's columns while GoTrack
// runs is met at the next batch. New events, the usual case, are copied
// straight into the table. When any event_id is
// already there, the primary key makes that COPY fail and roll back whole,
// and the batch is then copied into a temporary staging table and moved
// over with INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// Options configure a Sink. Zero numbers take the defaults below.
type Options struct {
	DSN      string // libpq URL or key=value string
	Table    string // "events" or "schema.events"; see ValidTable
	MaxConns int32  // pool size, 1 to 1000; default 4
	// Parallel is how many connections one batch is spread over, each
	// writing a part of at least MinPart events in its own transaction,
	// when another full batch is buffered behind it (a backlog); 1 to 64,
	// default min(2, MaxConns). The pipeline does the spreading (see
	// Policy). Parts commit independently, which is safe because every
	// write is idempotent by event_id.
	Parallel       int
	ConnectTimeout time.Duration // for connecting and migrating at Open, 1s to 10m; default 10s

	// BatchSize and BatchBytes are this sink's batch policy, which the
	// pipeline applies in place of its own (see Policy): PostgreSQL writes
	// far faster in large batches. 1 to 1,000,000 events and 1 KiB to 1 GiB.
	BatchSize, BatchBytes int

	// Logger receives a warning when the table's column types change the
	// sink's encoding; nil discards it.
	Logger *slog.Logger
}

// The defaults of Options.
const (
	DefaultMaxConns       = 4
	DefaultParallel       = 2
	DefaultConnectTimeout = 10 * time.Second
	DefaultBatchSize      = 5000
	DefaultBatchBytes     = 8 << 20
)

// WithDefaults returns o with every zero number set to its default.
func (o Options) WithDefaults() Options {
	o.MaxConns = cmp.Or(o.MaxConns, DefaultMaxConns)
	o.Parallel = cmp.Or(o.Parallel, DefaultParallel)
	o.ConnectTimeout = cmp.Or(o.ConnectTimeout, DefaultConnectTimeout)
	o.BatchSize = cmp.Or(o.BatchSize, DefaultBatchSize)
	o.BatchBytes = cmp.Or(o.BatchBytes, DefaultBatchBytes)
	return o
}

// Validate reports every problem with o, each a *sink.OptionError, joined.
// A malformed DSN is reported without being echoed, since it may hold a
// password. Validate does not connect; Open does.
func (o Options) Validate() error {
	errs := sink.NewOptionErrors("postgres")
	if o.DSN == "" {
		errs.Add("{DSN} is not set; want a libpq URL (postgres://user@host/db) or key=value string (host=... dbname=...)")
	} else if _, err := pgxpool.ParseConfig(o.DSN); err != nil {
		// The parse error can quote the DSN, password and all; say only what is wrong.
		errs.Add("{DSN} is not valid; want a libpq URL (postgres://user@host/db) or key=value string (host=... dbname=...)")
	}
	if !ValidTable(o.Table) {
		errs.Add(fmt.Sprintf("{Table}=%q is not an identifier; want letters, digits and _, optionally schema.table", o.Table))
	}
	between := func(name string, v, lo, hi int64) {
		if v < lo || v > hi {
			errs.Add(fmt.Sprintf("{%s}=%d is out of range; want %d to %d", name, v, lo, hi))
		}
	}
	between("MaxConns", int64(o.MaxConns), 1, 1000)
	between("Parallel", int64(o.Parallel), 1, 64)
	between("BatchSize", int64(o.BatchSize), 1, 1_000_000)
	between("BatchBytes", int64(o.BatchBytes), 1024, 1<<30)
	if d := o.ConnectTimeout; d < time.Second || d > 10*time.Minute {
		errs.Add(fmt.Sprintf("{ConnectTimeout}=%s is out of range; want 1s to 10m", d))
	}
	return errs.Err()
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// ValidTable reports whether name is a plain identifier, optionally
// schema-qualified. Table names are quoted as identifiers, never spliced
// into SQL raw; this check keeps them readable too.
func ValidTable(name string) bool { return tableName.MatchString(name) }

// MinPart is the fewest events worth a connection of their own. The
// server's CPU per event falls with the size of a COPY's transaction
// (PostgreSQL 15 under callgrind, pixel events with the default
// enrichment: 96.7k instructions per event in COPYs of 1,000, 92.5k of
// 2,500, 88.2k of 5,000), and concurrent parts cost it more still: their
// UUIDv7 ranges interleave in the primary key, whose pages then split in
// the middle rather than at the right edge. Parts of 2,500 written two at
// a time left the index a third larger (8.5 against 6.3 MB for 205k
// events) and took about a tenth more server CPU per event than COPYs of
// 5,000 one at a time. So a batch is spread only in a backlog, which
// parallel parts clear faster: when it is full and another full batch
// waits behind it (sink.Policy.PartsOnBacklog). Otherwise it is written
// whole.
const MinPart = DefaultBatchSize / 2

// staging is the per-connection temporary table each batch is copied into.
const staging = "gotrack_staging"

var stagingCopy = copySQL(pgx.Identifier{staging})

// Sink writes events to PostgreSQL. WriteBatch is safe for concurrent use,
// each call on a connection of its own.
type Sink struct {
	pool     *pgxpool.Pool
	table    pgx.Identifier
	insert   string
	policy   sink.Policy
	copy     string // the COPY into the table
	describe string // a SELECT of the columns copy names, described in each transaction, never run
	log      *slog.Logger
	kind     atomic.Int32 // the payloadKind of the latest transaction, to log a change once
}

// Open connects, applies the schema migrations, and returns the sink. It
// fails with Validate's error when o, with its defaults, is not valid. A
// wrong DSN, an unreachable server or bad credentials fail here, so that
// GoTrack refuses to start rather than queue events it can never write.
func Open(ctx context.Context, o Options) (*Sink, error) {
	o = o.WithDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.Parallel = min(o.Parallel, int(o.MaxConns))
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, errors.New("postgres: the DSN is not valid") // Validate said more
	}
	cfg.MaxConns = o.MaxConns
	// The server casts the staging table's timestamptz to a received_at of
	// type timestamp or date in the session's time zone; pgx encodes the
	// COPY's in UTC, the events' zone. The same zone for both (a startup
	// parameter, which PgBouncer keeps per client too).
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, `CREATE TEMPORARY TABLE IF NOT EXISTS `+staging+` (
			event_id uuid, received_at timestamptz, type text, source text, payload jsonb
		) ON COMMIT DELETE ROWS`)
		return err
	}
	s := &Sink{table: pgx.Identifier(strings.Split(o.Table, ".")), policy: sink.Policy{
		BatchEvents: o.BatchSize, BatchBytes: o.BatchBytes,
		MaxInFlight: o.Parallel, MinPart: MinPart, PartsOnBacklog: true, Idempotent: true,
	}}
	t := s.table.Sanitize()
	s.copy, s.describe = copySQL(s.table), describeSQL(s.table)
	s.log = o.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	cols := strings.Join(columns, ", ")
	s.insert = `INSERT INTO ` + t + ` (` + cols + `) SELECT ` + cols + ` FROM ` + staging + ` ON CONFLICT (event_id) DO NOTHING`

	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := migrate(ctx, s.pool, s.table); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres: migrate %s: %w", t, err)
	}
	var sd *pgconn.StatementDescription
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) (err error) {
		// Describing takes the table's lock, which an ALTER TABLE rewriting
		// a large table may hold for long: rather than fail to start, start
		// with the encoding unknown, for the first batch to describe.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '1s'`); err != nil {
			return err
		}
		sd, err = tx.Conn().PgConn().Prepare(ctx, "", s.describe, nil)
		return err
	})
	var pe *pgconn.PgError
	switch {
	case err == nil:
		s.kind.Store(int32(kindOf(sd.Fields)))
	case errors.As(err, &pe) && pe.Code == lockNotAvailable:
		s.kind.Store(int32(unknownKind))
	default:
		s.pool.Close()
		return nil, fmt.Errorf("postgres: read the columns of %s: %w", t, err)
	}
	return s, nil
}

// Policy declares the sink's batch limits, its writes in flight (parts of
// at least MinPart events on connections of their own, in a backlog only)
// and that it is idempotent.
func (s *Sink) Policy() sink.Policy { return s.policy }

// WriteBatch is WriteBatchDedup without the count of duplicates.
func (s *Sink) WriteBatch(ctx context.Context, batch []*event.Event) error {
	_, err := s.WriteBatchDedup(ctx, batch)
	return err
}

// WriteBatchDedup writes the batch in one transaction and returns how many
// of its events were not written because their event_id was in the table
// already, or twice in the batch. It first COPYs straight into the events
// table, the fast path for the usual batch of new events; when any event_id
// is already there (a retry or a replay), the primary key refuses the COPY,
// the transaction rolls back whole, and the batch is written again through
// the staging table with ON CONFLICT DO NOTHING, whose row count is the
// number of new events. The error is permanent when the batch was rejected
// for its content; the pipeline then isolates the offending events.
func (s *Sink) WriteBatchDedup(ctx context.Context, batch []*event.Event) (duplicates int, err error) {
	if len(batch) == 0 {
		return 0, nil
	}
	err = s.copyTx(ctx, batch)
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &pe) || pe.Code != uniqueViolation {
		return 0, classify(fmt.Sprintf("copy %d events", len(batch)), err)
	}
	var inserted int64
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if err := copyBinary(ctx, tx.Conn().PgConn(), stagingCopy, payloadJSONB, nil, batch); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, s.insert)
		inserted = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, classify(fmt.Sprintf("copy %d events through staging", len(batch)), err)
	}
	return len(batch) - int(inserted), nil
}

const (
	uniqueViolation  = "23505"
	lockNotAvailable = "55P03"
)

// notNullViolation is never an event's fault: the sink sends no NULL, so
// the column is one it does not write, added NOT NULL without a default.
// Permanent, it would dead-letter every event; retried, it waits for the
// table to be mended.
const notNullViolation = "23502"

// copyTx copies batch into the table in a transaction of its own, encoded
// for the column types the server describes at its start (see begin).
func (s *Sink) copyTx(ctx context.Context, batch []*event.Event) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release() // the pool closes a connection left in a transaction
	pc := c.Conn().PgConn()
	err = func() error {
		cols, err := s.begin(ctx, pc)
		if err != nil {
			return err
		}
		kind := kindOf(cols)
		if old := payloadKind(s.kind.Swap(int32(kind))); old != kind && old != unknownKind {
			s.log.Warn("postgres table's column types changed; the sink's encoding follows",
				"table", s.table.Sanitize(), "encoding", kind.String(), "was", old.String())
		}
		var types *converter
		if kind == slowPath {
			if types, err = newConverter(c.Conn().TypeMap(), cols); err != nil {
				return err
			}
		}
		if err := copyBinary(ctx, pc, s.copy, kind, types, batch); err != nil {
			return err
		}
		res, err := pc.Exec(ctx, "commit").ReadAll()
		if err == nil && len(res) == 1 && res[0].CommandTag.String() == "ROLLBACK" {
			err = pgx.ErrTxCommitRollback
		}
		return err
	}()
	if err != nil && !pc.IsClosed() && pc.TxStatus() != 'I' {
		pc.Exec(context.WithoutCancel(ctx), "rollback").ReadAll()
	}
	return err
}

// begin starts a transaction on c and, in the same round trip, has the
// server describe (parse, not run) a SELECT of the columns the COPY names,
// returning their descriptions. Parsing takes the table's lock until the
// transaction ends, so the types are the ones the COPY meets: an ALTER
// TABLE committed before is seen, and one after waits for the commit. A
// column gone fails here, as a retryable error naming it.
func (s *Sink) begin(ctx context.Context, c *pgconn.PgConn) ([]pgconn.FieldDescription, error) {
	p := c.StartPipeline(ctx)
	p.SendQueryParams("begin", nil, nil, nil, nil)
	p.SendPrepare("", s.describe, nil)
	err := p.Sync()
	var sd *pgconn.StatementDescription
	for err == nil && sd == nil {
		var r any
		if r, err = p.GetResults(); err == nil && r == nil {
			err = errors.New("no description of the columns")
		}
		sd, _ = r.(*pgconn.StatementDescription)
	}
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("describe the columns %s: %w", strings.Join(columns, ", "), err)
	}
	return sd.Fields, nil
}

// tx runs f in a transaction and commits it.
func (s *Sink) tx(ctx context.Context, f func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func uuidBytes(s string) (pgtype.UUID, error) {
	var u pgtype.UUID
	if err := u.Scan(s); err != nil {
		return u, sink.Permanent(fmt.Errorf("event_id %q: %w", s, err))
	}
	return u, nil
}

// classify wraps err with the operation, marking content errors permanent
// and connection failures as the server being unavailable.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		wrapped := fmt.Errorf("postgres: %s: %w", op, withoutValues(pe))
		switch {
		case strings.HasPrefix(pe.Code, "22"), // data exception: invalid text, bad JSON escape, out of range
			strings.HasPrefix(pe.Code, "23") && pe.Code != notNullViolation, // integrity constraint violation
			pe.Code == "54000": // program limit exceeded, such as a row too large
			return sink.Permanent(wrapped)
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57P"): // connection, shutdown
			return sink.Unavailable(wrapped)
		}
		return wrapped // serialization failures, deadlocks, missing table: worth retrying
	}
	wrapped := fmt.Errorf("postgres: %s: %w", op, err)
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return sink.Unavailable(wrapped)
	}
	if sink.IsPermanent(err) {
		return err
	}
	return wrapped
}

// quoted is a double-quoted span of a server message.
var quoted = regexp.MustCompile(`"[^"]*"`)

// withoutValues is a copy of the server's error without the parts that can
// quote event data, which would reach the logs and the dead-letter file:
// the detail, hint and context fields always (a unique violation's detail
// quotes the key), and, for a data exception (class 22, such as an enum
// refusing an event's type), the double-quoted spans of the message. Other
// messages quote only names (`column "source" does not exist`) and stay.
func withoutValues(pe *pgconn.PgError) *pgconn.PgError {
	c := *pe
	c.Detail, c.Hint, c.Where, c.InternalQuery = "", "", "", ""
	if strings.HasPrefix(c.Code, "22") {
		c.Message = quoted.ReplaceAllString(c.Message, `"…"`)
	}
	return &c
}

// Ping reports whether the server answers.
func (s *Sink) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use until ctx ends.
func (s *Sink) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.pool.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres: close: %w", ctx.Err())
	}
}
