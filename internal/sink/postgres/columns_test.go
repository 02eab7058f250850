package postgres

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/pipeline/pipelinetest"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// alter runs ALTER TABLE table change.
func alter(t *testing.T, table, change string) {
	t.Helper()
	if _, err := pgtest.Conn(t).Exec(context.Background(), `ALTER TABLE `+pgx.Identifier{table}.Sanitize()+` `+change); err != nil {
		t.Fatalf("ALTER TABLE %s: %v", change, err)
	}
}

// wrongRows counts the rows of table whose columns do not hold their
// event as written: the payload parsed as JSON names another event_id,
// or the time, type or source differ from the payload's. A payload that
// is not JSON at all fails the test.
func wrongRows(t *testing.T, table string) int {
	t.Helper()
	const payload = "payload::text::jsonb"
	var n int
	if err := pgtest.Conn(t).QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()+`
		WHERE `+payload+`->>'event_id' IS DISTINCT FROM event_id::text
		   OR `+payload+`->>'type' IS DISTINCT FROM type::text
		   OR `+payload+`->>'source' IS DISTINCT FROM source
		   OR (`+payload+`->>'received_at')::timestamptz IS DISTINCT FROM received_at::timestamptz`).Scan(&n); err != nil {
		t.Fatalf("read the rows back: %v", err)
	}
	return n
}

// TestColumnTypeChanges changes the table's column types between batches,
// as an operator may while GoTrack runs, and writes a batch after each
// change: every batch is written, each row holds its event (jsonb's
// version byte never lands in a text or json payload, nor a UUID's bytes
// in a text event_id), and the encoding follows the table back to the
// fast path, with one warning logged per change of encoding. Writing some
// events again, through the staging table, counts them as duplicates. A
// column renamed or dropped, or of a type the events cannot be converted
// to, is a retryable error, without event data, until the table is mended.
func TestColumnTypeChanges(t *testing.T) {
	table := pgtest.Table(t)
	var logs bytes.Buffer
	s, err := Open(t.Context(), Options{DSN: pgtest.DSN(t), Table: table, MaxConns: 4,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(t.Context())
	written, changes, kind := 0, 0, payloadJSONB
	write := func(step string, want payloadKind) {
		t.Helper()
		events := sinktest.Events(100)
		if err := s.WriteBatch(t.Context(), events); err != nil {
			t.Fatalf("after %s: write = %v", step, err)
		}
		written += len(events)
		if got := payloadKind(s.kind.Load()); got != want {
			t.Errorf("after %s: encoding %s, want %s", step, got, want)
		}
		if want != kind {
			kind = want
			changes++
		}
		if dups, err := s.WriteBatchDedup(t.Context(), events[:10]); err != nil || dups != 10 {
			t.Errorf("after %s: writing 10 events again = %d duplicates, %v; want 10", step, dups, err)
		}
		if n := wrongRows(t, table); n != 0 {
			t.Fatalf("after %s: %d rows do not hold their event", step, n)
		}
		if ids := pgtest.IDs(t, table); len(ids) != written {
			t.Fatalf("after %s: %d rows, want %d", step, len(ids), written)
		}
	}
	write("open", payloadJSONB)
	domain := pgx.Identifier{table + "_payload"}.Sanitize()
	admin := pgtest.Conn(t)
	if _, err := admin.Exec(t.Context(), `CREATE DOMAIN `+domain+` AS jsonb CHECK (VALUE ? 'event_id')`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(context.Background(), `DROP DOMAIN IF EXISTS `+domain) })
	for _, step := range []struct {
		change string
		want   payloadKind
	}{
		{"ALTER COLUMN payload TYPE json", payloadJSON},
		{"ALTER COLUMN payload TYPE jsonb", payloadJSONB},
		{"ALTER COLUMN payload TYPE text", slowPath}, // jsonb's version byte is valid text
		// Types changed while the columns already need converting: a
		// description cached per connection, as pgx.CopyFrom keeps, would
		// send a UUID's 16 bytes to a text event_id (sometimes valid UTF-8).
		{"ALTER COLUMN event_id TYPE text", slowPath},
		{"ALTER COLUMN event_id TYPE uuid USING event_id::uuid", slowPath},
		{"ALTER COLUMN payload TYPE jsonb USING payload::jsonb", payloadJSONB},
		// A domain is described as its base type, whose binary format the
		// domain's receive function reads before it checks the value.
		{"ALTER COLUMN payload TYPE " + domain, payloadJSONB},
		{"ALTER COLUMN payload TYPE jsonb", payloadJSONB},
		{"ALTER COLUMN type TYPE varchar(20)", slowPath},
		{"ALTER COLUMN type TYPE text", payloadJSONB},
	} {
		alter(t, table, step.change)
		write(step.change, step.want)
	}

	// A column gone, or of a type the events cannot be converted to: an
	// error that says so and is retried, not a rejection that dead-letters.
	for _, tc := range []struct {
		change, want, undo string
		during             payloadKind // the encoding the failed write picked
	}{
		{"RENAME COLUMN source TO origin", `column "source" does not exist`, "RENAME COLUMN origin TO source", payloadJSONB},
		{"DROP COLUMN source", `column "source" does not exist`, "ADD COLUMN source text", payloadJSONB},
		{"ALTER COLUMN received_at TYPE bigint USING 0", "the received_at cannot be converted to the type of its column, int8", "ALTER COLUMN received_at TYPE timestamptz USING now()", slowPath},
	} {
		alter(t, table, tc.change)
		err = s.WriteBatch(t.Context(), sinktest.Events(10))
		if err == nil || sink.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "2026") {
			t.Fatalf("write after %s = %v, want a retryable error saying %s, without the events' values", tc.change, err, tc.want)
		}
		if tc.during != kind {
			kind = tc.during
			changes++
		}
		alter(t, table, tc.undo)
		if !strings.HasPrefix(tc.change, "RENAME") { // the rows lost the column's values
			if _, err := pgtest.Conn(t).Exec(t.Context(), `TRUNCATE `+pgx.Identifier{table}.Sanitize()); err != nil {
				t.Fatal(err)
			}
			written = 0
		}
		write(tc.undo, payloadJSONB)
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != changes || !strings.Contains(lines[0], "level=WARN") ||
		!strings.Contains(lines[0], `encoding="binary COPY, payload json"`) || !strings.Contains(lines[0], `was="binary COPY, payload jsonb"`) {
		t.Errorf("logged %d lines, want a warning for each of the %d changes of encoding:\n%s", len(lines), changes, logs.String())
	}
	if strings.Contains(logs.String(), "pageview") {
		t.Errorf("the log holds event data:\n%s", logs.String())
	}
}

// TestColumnTypeChangeWhileWriting changes the payload's type from jsonb
// to json, to text and back to jsonb while the pipeline writes a stream in
// a backlog, two parts of a batch at a time. Every event ends up in the
// table once, holding its event; only the two poisoned events, written
// while the payload is jsonb, are dead-lettered, each alone.
func TestColumnTypeChangeWhileWriting(t *testing.T) {
	table := pgtest.Table(t)
	var logs syncBuffer
	s, err := Open(t.Context(), Options{DSN: pgtest.DSN(t), Table: table, MaxConns: 4, Parallel: 2,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	const total = 60000
	w := &counted{Sink: s}
	f := pipelinetest.Start(t, "postgres", w, pipeline.Options{QueueSize: total + 10, FlushInterval: 10 * time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	events := sinktest.Events(total)
	first, last := poison(), poison()
	events[10], events[total-10] = first, last
	var wg sync.WaitGroup
	submit := func(part []*event.Event) {
		for i := 0; i < len(part); i += 500 {
			if err := f.Pipe.Submit(part[i:min(i+500, len(part))]); err != nil {
				t.Errorf("Submit: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	submit(events[:5000])
	testkit.Eventually(t, "the first poisoned event to be dead-lettered", func() bool { return f.Pipe.Stats()[0].DeadLettered == 1 })
	wg.Go(func() { submit(events[5000 : total-5000]) })
	for i, change := range []string{"ALTER COLUMN payload TYPE json", "ALTER COLUMN payload TYPE text",
		"ALTER COLUMN payload TYPE jsonb USING payload::jsonb"} {
		// Each change waits for the writes in flight, and the next ones
		// for it: so each lands between two batches of the stream.
		at := int64(10000 * (i + 1))
		testkit.Eventually(t, "events to be written", func() bool { return f.Pipe.Stats()[0].Delivered >= at })
		alter(t, table, change)
	}
	wg.Wait()
	submit(events[total-5000:])
	f.Close(t, 60*time.Second)

	ids := pgtest.IDs(t, table)
	for _, e := range events {
		want := 1
		if e == first || e == last {
			want = 0
		}
		if ids[e.EventID] != want {
			t.Fatalf("event %s is in the table %d times, want %d", e.EventID, ids[e.EventID], want)
		}
	}
	if n := wrongRows(t, table); n != 0 {
		t.Errorf("%d rows do not hold their event", n)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 3 {
		t.Errorf("%d warnings, want one for each change of the payload's type:\n%s", n, logs.String())
	}
	if w.most.Load() < 2 {
		t.Errorf("at most %d writes at once; the test means to change the table under parts written together", w.most.Load())
	}
	if st := f.Pipe.Stats()[0]; st.DeadLettered != 2 || st.Delivered != total-2 {
		t.Errorf("%d delivered, %d dead-lettered; want %d and 2", st.Delivered, st.DeadLettered, total-2)
	}
	b, err := os.ReadFile(f.Dead)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 2 ||
		!strings.Contains(lines[0], first.EventID) || !strings.Contains(lines[1], last.EventID) {
		t.Errorf("dead-letter file, want the two poisoned events:\n%.2000s", b)
	}
}

// counted is a Sink that counts its most writes at once.
type counted struct {
	*Sink
	now, most atomic.Int64
}

func (c *counted) WriteBatch(ctx context.Context, batch []*event.Event) error {
	_, err := c.WriteBatchDedup(ctx, batch)
	return err
}

func (c *counted) WriteBatchDedup(ctx context.Context, batch []*event.Event) (int, error) {
	n := c.now.Add(1)
	defer c.now.Add(-1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
	return c.Sink.WriteBatchDedup(ctx, batch)
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestBeginLocksTheColumns: once a transaction's columns are described,
// an ALTER TABLE waits for it to end, so the COPY meets the types
// described.
func TestBeginLocksTheColumns(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	c, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	cols, err := s.begin(t.Context(), c.Conn().PgConn())
	if err != nil || kindOf(cols) != payloadJSONB {
		t.Fatalf("begin = %v, %v; want the columns of the migrations", cols, err)
	}
	other := pgtest.Conn(t)
	if _, err := other.Exec(t.Context(), `SET lock_timeout = '200ms'`); err != nil {
		t.Fatal(err)
	}
	_, err = other.Exec(t.Context(), `ALTER TABLE `+pgx.Identifier{table}.Sanitize()+` ALTER COLUMN payload TYPE json`)
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "55P03" {
		t.Fatalf("ALTER TABLE during the transaction = %v, want it to wait for the lock (55P03 after lock_timeout)", err)
	}
	if _, err := c.Exec(t.Context(), "rollback"); err != nil {
		t.Fatal(err)
	}
	alter(t, table, "ALTER COLUMN payload TYPE json")
}
