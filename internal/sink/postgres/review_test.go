package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// exec runs sql on a connection of its own, with %t replaced by the quoted table.
func exec(t *testing.T, table, sql string) {
	t.Helper()
	sql = strings.ReplaceAll(sql, "%t", pgx.Identifier{table}.Sanitize())
	if _, err := pgtest.Conn(t).Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestReviewPayloadArrayNotMisencoded: after ALTER COLUMN payload TYPE
// jsonb[], the slow path has pgx encode json.RawMessage ([]byte) into a
// jsonb[] column: each byte of the JSON becomes a jsonb number. Either the
// write must fail (retryably) or the array's element must be the event.
func TestReviewPayloadArrayNotMisencoded(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	exec(t, table, `ALTER TABLE %t ALTER COLUMN payload TYPE jsonb[] USING ARRAY[payload]`)
	events := sinktest.Events(3)
	if err := s.WriteBatch(t.Context(), events); err != nil {
		return // refusing the type is fine
	}
	var n int
	var first string
	if err := pgtest.Conn(t).QueryRow(context.Background(), `SELECT array_length(payload, 1), payload[1]::text FROM `+
		pgx.Identifier{table}.Sanitize()+` WHERE event_id = $1`, events[0].EventID).Scan(&n, &first); err != nil {
		t.Fatal(err)
	}
	if n != 1 || !strings.Contains(first, events[0].EventID) {
		t.Errorf("payload jsonb[] written with %d elements, the first %.40q; want the event as its one element, or a retryable error", n, first)
	}
}

// TestReviewSchemaRejectionIsNotPermanent: a change of the table that
// rejects every event alike (a NOT NULL column the sink does not write, an
// event_id column too short for any UUID) is not the events' fault. The
// README promises "no batch is refused or dead-lettered for the change
// itself"; a permanent error makes the pipeline bisect every batch down to
// single events and dead-letter the whole stream.
func TestReviewSchemaRejectionIsNotPermanent(t *testing.T) {
	for _, tc := range []struct{ name, sql string }{
		{"column added NOT NULL without default", `ALTER TABLE %t ADD COLUMN tenant int NOT NULL`},
		{"event_id varchar(10)", `ALTER TABLE %t ALTER COLUMN event_id TYPE varchar(10)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := pgtest.Table(t)
			s := open(t, table)
			defer s.Close(t.Context())
			exec(t, table, tc.sql)
			err := s.WriteBatch(t.Context(), sinktest.Events(10))
			if err == nil || sink.IsPermanent(err) {
				t.Errorf("write after %s = %v (permanent %v); want a retryable error", tc.name, err, sink.IsPermanent(err))
			}
		})
	}
}

// TestReviewReceivedAtAsText: after ALTER COLUMN received_at TYPE text, the
// slow path writes time.Time.String() ("2026-11-22 12:00:00 +0000 UTC"),
// which PostgreSQL cannot parse back as a timestamptz, while the staging
// path writes PostgreSQL's own format. The stored text should parse as
// the event's time.
func TestReviewReceivedAtAsText(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	exec(t, table, `ALTER TABLE %t ALTER COLUMN received_at TYPE text`)
	events := sinktest.Events(3)
	if err := s.WriteBatch(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := pgtest.Conn(t).QueryRow(context.Background(), `SELECT received_at FROM `+pgx.Identifier{table}.Sanitize()+
		` WHERE event_id = $1`, events[1].EventID).Scan(&got); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	if err := pgtest.Conn(t).QueryRow(context.Background(), `SELECT $1::text::timestamptz`, got).Scan(&at); err != nil || !at.Equal(events[1].ReceivedAt) {
		t.Errorf("received_at stored as %q, which reads back as %v, %v; want %v", got, at, err, events[1].ReceivedAt)
	}
}

// TestReviewTimestampPathsAgree: after ALTER COLUMN received_at TYPE
// timestamp (without time zone), the COPY path stores the UTC wall clock
// (pgx drops the zone) and the staging path the server's cast, in the
// session's TimeZone. With a server TimeZone other than UTC the two paths
// store the same instant differently.
func TestReviewTimestampPathsAgree(t *testing.T) {
	table := pgtest.Table(t)
	dsn := pgtest.DSN(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	s, err := Open(t.Context(), Options{DSN: dsn + sep + "timezone=America/New_York", Table: table, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(t.Context())
	exec(t, table, `ALTER TABLE %t ALTER COLUMN received_at TYPE timestamp`)
	events := sinktest.Events(4)
	if err := s.WriteBatch(t.Context(), events[:2]); err != nil { // COPY path
		t.Fatal(err)
	}
	if _, err := s.WriteBatchDedup(t.Context(), events); err != nil { // staging path for events[2:]
		t.Fatal(err)
	}
	var offsets int
	if err := pgtest.Conn(t).QueryRow(context.Background(), `SELECT count(DISTINCT received_at - (payload->>'received_at')::timestamptz AT TIME ZONE 'UTC') FROM `+
		pgx.Identifier{table}.Sanitize()).Scan(&offsets); err != nil {
		t.Fatal(err)
	}
	if offsets != 1 {
		t.Errorf("received_at differs from the event's UTC time by %d different offsets; the COPY and staging paths disagree", offsets)
	}
}

// TestReviewOpenDuringLongALTER: Open now describes the table, which takes
// its AccessShare lock; an ALTER TABLE rewriting a large table holds
// AccessExclusive for as long as the rewrite takes, so GoTrack cannot
// start (Open times out after ConnectTimeout) where it used to start and
// retry its writes. Before the merge, Open read pg_attribute, which takes
// no lock on the table.
func TestReviewOpenDuringLongALTER(t *testing.T) {
	table := pgtest.Table(t)
	open(t, table).Close(t.Context()) // migrate
	locker := pgtest.Conn(t)
	if _, err := locker.Exec(t.Context(), `BEGIN; LOCK TABLE `+pgx.Identifier{table}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	defer locker.Exec(context.Background(), "ROLLBACK")
	s, err := Open(t.Context(), Options{DSN: pgtest.DSN(t), Table: table, MaxConns: 2, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Errorf("Open while an ALTER TABLE holds the table's lock = %v; want the sink open, its writes retried", err)
		return
	}
	defer s.Close(t.Context())
	if _, err := locker.Exec(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), sinktest.Events(3)); err != nil {
		t.Fatalf("write once the lock is released = %v", err)
	}
	if got := payloadKind(s.kind.Load()); got != payloadJSONB {
		t.Errorf("encoding %s after the first write, want %s", got, payloadJSONB)
	}
}

// TestReviewLockUpgrade: a transaction that has described the table (holding
// AccessShare) and then COPYs (RowExclusive) while an ALTER TABLE waits for
// AccessExclusive is granted its RowExclusive ahead of the waiter: no
// deadlock, and the ALTER runs after the commit.
func TestReviewLockUpgrade(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	c, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	pc := c.Conn().PgConn()
	cols, err := s.begin(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	admin := pgtest.Conn(t)
	go func() {
		_, err := admin.Exec(context.Background(), `ALTER TABLE `+pgx.Identifier{table}.Sanitize()+` ALTER COLUMN payload TYPE json`)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // the ALTER is queued for the lock
	select {
	case err := <-done:
		t.Fatalf("ALTER did not wait: %v", err)
	default:
	}
	if err := copyBinary(t.Context(), pc, s.copy, kindOf(cols), nil, sinktest.Events(5)); err != nil {
		t.Fatalf("COPY with an ALTER queued = %v", err)
	}
	if _, err := pc.Exec(t.Context(), "commit").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReviewCommitFails: a deferred constraint trigger failing at COMMIT
// returns the error, leaves the connection idle (not in a transaction) and
// usable; a backend that dies during the COPY is reported as unavailable.
func TestReviewCommitFails(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	exec(t, table, `CREATE OR REPLACE FUNCTION rv_fail() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'no' USING ERRCODE = 'P0001'; END$$;
		CREATE CONSTRAINT TRIGGER rv_fail AFTER INSERT ON %t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rv_fail()`)
	err := s.WriteBatch(t.Context(), sinktest.Events(3))
	if err == nil || sink.IsPermanent(err) || !strings.Contains(err.Error(), "P0001") {
		t.Fatalf("write with a commit that fails = %v", err)
	}
	exec(t, table, `DROP TRIGGER rv_fail ON %t`)
	for range 4 { // every pooled connection is usable
		if err := s.WriteBatch(t.Context(), sinktest.Events(3)); err != nil {
			t.Fatalf("write after the failed commit = %v", err)
		}
	}
	exec(t, table, `CREATE OR REPLACE FUNCTION rv_die() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END$$;
		CREATE TRIGGER rv_die BEFORE INSERT ON %t FOR EACH ROW EXECUTE FUNCTION rv_die()`)
	err = s.WriteBatch(t.Context(), sinktest.Events(3))
	if err == nil || sink.ErrorType(err) != sink.ErrUnavailable {
		t.Errorf("write whose backend dies = %v (type %s), want unavailable", err, sink.ErrorType(err))
	}
	exec(t, table, `DROP TRIGGER rv_die ON %t`)
	if err := s.WriteBatch(t.Context(), sinktest.Events(3)); err != nil {
		t.Fatalf("write after the backend died = %v", err)
	}
	if st := s.pool.Stat(); st.AcquiredConns() != 0 {
		t.Errorf("%d connections still acquired", st.AcquiredConns())
	}
}

// TestReviewCancelWhileDescribing: a write whose context ends while its
// BEGIN+describe waits for a lock returns promptly, and the pool hands out
// no connection left in a transaction.
func TestReviewCancelWhileDescribing(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	locker := pgtest.Conn(t)
	if _, err := locker.Exec(t.Context(), `BEGIN; LOCK TABLE `+pgx.Identifier{table}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.WriteBatch(ctx, sinktest.Events(3))
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("write under a lock with a 300ms context = %v after %v", err, time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) && sink.ErrorType(err) != sink.ErrUnavailable {
		t.Logf("error: %v (type %s)", err, sink.ErrorType(err))
	}
	if _, err := locker.Exec(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := s.WriteBatch(t.Context(), sinktest.Events(3)); err != nil {
			t.Fatalf("write after the cancelled one = %v", err)
		}
	}
}

// TestReviewInsertOnlyRole: a role with INSERT on the table, and no
// SELECT, opens the sink and writes new events; the describe-only Parse
// of the SELECT checks no privilege.
func TestReviewInsertOnlyRole(t *testing.T) {
	table := pgtest.Table(t)
	open(t, table).Close(t.Context()) // migrate as the superuser
	q := pgx.Identifier{table}.Sanitize()
	admin := pgtest.Conn(t)
	for _, sql := range []string{
		`DROP ROLE IF EXISTS rv_ins`,
		`CREATE ROLE rv_ins LOGIN PASSWORD 'rv_ins'`,
		`GRANT INSERT ON ` + q + ` TO rv_ins`,
		`GRANT SELECT ON gotrack_schema_migrations TO rv_ins`,
		`GRANT CREATE ON SCHEMA public TO rv_ins`, // migrate's CREATE TABLE IF NOT EXISTS needs it, before and after the merge
	} {
		if _, err := admin.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), `REVOKE ALL ON `+q+` FROM rv_ins`)
		admin.Exec(context.Background(), `REVOKE ALL ON gotrack_schema_migrations FROM rv_ins`)
		admin.Exec(context.Background(), `REVOKE ALL ON SCHEMA public FROM rv_ins`)
		admin.Exec(context.Background(), `DROP ROLE rv_ins`)
	})
	cfg, err := pgx.ParseConfig(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	dsn := strings.Replace(pgtest.DSN(t), "postgres:"+cfg.Password+"@", "rv_ins:rv_ins@", 1)
	s, err := Open(t.Context(), Options{DSN: dsn, Table: table, MaxConns: 2})
	if err != nil {
		t.Fatalf("Open as an INSERT-only role: %v", err)
	}
	defer s.Close(t.Context())
	events := sinktest.Events(10)
	if err := s.WriteBatch(t.Context(), events); err != nil {
		t.Fatalf("write as an INSERT-only role: %v", err)
	}
	// The staging path's ON CONFLICT (event_id) needs SELECT on event_id:
	// so before the merge too.
	dups, err := s.WriteBatchDedup(t.Context(), events[:5])
	t.Logf("duplicates as an INSERT-only role = %d, %v", dups, err)
	exec(t, table, `ALTER TABLE %t ENABLE ROW LEVEL SECURITY`)
	err = s.WriteBatch(t.Context(), sinktest.Events(3))
	t.Logf("with row-level security: %v (permanent %v)", err, sink.IsPermanent(err))
}

// TestReviewServerErrorQuotesEventData: the converter keeps pgx's values
// out of its errors, but the server's own message can quote one: an enum
// that lacks an event's type. The error, permanent, is logged by the
// pipeline and written as the dead-letter cause. Pre-existing (the
// pre-merge fast path sent the same text to the same column).
func TestReviewServerErrorQuotesEventData(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	exec(t, table, `DROP TYPE IF EXISTS rv_kind3 CASCADE; CREATE TYPE rv_kind3 AS ENUM ('signup'); DELETE FROM %t; ALTER TABLE %t ALTER COLUMN type TYPE rv_kind3 USING type::rv_kind3`)
	err := s.WriteBatch(t.Context(), sinktest.Events(3))
	t.Logf("write = %v (permanent %v)", err, sink.IsPermanent(err))
	if err != nil && strings.Contains(err.Error(), "pageview") {
		t.Errorf("the error quotes an event's type: %v", err)
	}
}
