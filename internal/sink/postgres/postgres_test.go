package postgres

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/pipeline/pipelinetest"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

func open(t *testing.T, table string) *Sink {
	t.Helper()
	s, err := Open(t.Context(), Options{DSN: pgtest.DSN(t), Table: table, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func payloads(t *testing.T, table string) [][]byte {
	t.Helper()
	rows, err := pgtest.Conn(t).Query(context.Background(), `SELECT payload::text FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		out = append(out, []byte(p))
	}
	return out
}

func TestConformance(t *testing.T) {
	var table string
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T) sink.Sink {
			table = pgtest.Table(t)
			return open(t, table)
		},
		Stored: func(t *testing.T) [][]byte { return payloads(t, table) },
		Poison: poison,
		// The table gone for a while: a retryable error, not a rejection.
		Break: func(t *testing.T, _ sink.Sink) func() {
			c := pgtest.Conn(t)
			rename := func(from, to string) {
				if _, err := c.Exec(t.Context(), `ALTER TABLE `+pgx.Identifier{from}.Sanitize()+` RENAME TO `+pgx.Identifier{to}.Sanitize()); err != nil {
					t.Fatal(err)
				}
			}
			rename(table, table+"_away")
			return func() { rename(table+"_away", table) }
		},
		// A table locked by another transaction: every COPY waits.
		Stall: func(t *testing.T) (sink.Sink, <-chan struct{}, func()) {
			table := pgtest.Table(t)
			s := open(t, table)
			tx, err := pgtest.Conn(t).Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(t.Context(), `LOCK TABLE `+pgx.Identifier{table}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			// Stuck once a session waits for the lock.
			stuck := make(chan struct{})
			watch := pgtest.Conn(t)
			go func() {
				defer close(stuck)
				for range 3000 {
					var n int
					if err := watch.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE NOT granted`).Scan(&n); err != nil || n > 0 {
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
			var once sync.Once
			return s, stuck, func() { once.Do(func() { tx.Rollback(context.Background()) }) }
		},
	})
}

func TestTenThousandEventsWithColumns(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	events := sinktest.Events(10000)
	for i := 0; i < len(events); i += 500 {
		if err := s.WriteBatch(t.Context(), events[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, err := pgtest.Conn(t).Query(context.Background(),
		`SELECT event_id::text, received_at, type, source, payload->>'event_id' FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*event.Event{}
	for _, e := range events {
		byID[e.EventID] = e
	}
	n := 0
	for rows.Next() {
		var id, typ, source, payloadID string
		var at time.Time
		if err := rows.Scan(&id, &at, &typ, &source, &payloadID); err != nil {
			t.Fatal(err)
		}
		e := byID[id]
		if e == nil || !at.Equal(e.ReceivedAt.Truncate(time.Microsecond)) || typ != e.Type || source != string(e.Source) || payloadID != id {
			t.Fatalf("row %s %v %s %s %s does not match its event %+v", id, at, typ, source, payloadID, e)
		}
		n++
	}
	if n != 10000 {
		t.Fatalf("table holds %d rows, want 10000", n)
	}
	// The schema is as documented, with a BRIN index on received_at.
	var idx string
	if err := pgtest.Conn(t).QueryRow(context.Background(),
		`SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%brin%'`, table).Scan(&idx); err != nil {
		t.Fatalf("no BRIN index: %v", err)
	}
}

func TestDuplicatesInOneBatch(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	events := sinktest.Events(10)
	batch := append(append([]*event.Event{}, events...), events[:5]...)
	if err := s.WriteBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), events); err != nil { // a replay
		t.Fatal(err)
	}
	s.Close(t.Context())
	if ids := pgtest.IDs(t, table); len(ids) != 10 {
		t.Errorf("%d rows, want 10", len(ids))
	}
}

func TestMigrationIsIdempotent(t *testing.T) {
	table := pgtest.Table(t)
	open(t, table).Close(t.Context())
	open(t, table).Close(t.Context()) // a second start finds the schema in place
	var n int
	if err := pgtest.Conn(t).QueryRow(context.Background(),
		`SELECT count(*) FROM gotrack_schema_migrations WHERE table_name = $1`, pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) {
		t.Errorf("%d migration rows, want %d", n, len(migrations))
	}
}

// poison is an event PostgreSQL refuses: jsonb has no place for \u0000.
func poison() *event.Event {
	e := sinktest.Events(1)[0]
	e.Props = json.RawMessage(`{"bad":"nul \u0000 here"}`)
	e.Seal()
	return e
}

func TestPoisonEventIsPermanent(t *testing.T) {
	s := open(t, pgtest.Table(t))
	defer s.Close(t.Context())
	err := s.WriteBatch(t.Context(), []*event.Event{poison()})
	if !sink.IsPermanent(err) || sink.ErrorType(err) != sink.ErrRejected {
		t.Fatalf("poison write = %v, want a permanent rejection", err)
	}
}

func TestPoisonIsDeadLetteredAndTheRestWritten(t *testing.T) {
	table := pgtest.Table(t)
	f := pipelinetest.Start(t, "postgres", open(t, table), pipeline.Options{BatchSize: 100, FlushInterval: time.Hour})
	events := sinktest.Events(99)
	bad := poison()
	batch := append(append(append([]*event.Event{}, events[:40]...), bad), events[40:]...)
	if err := f.Pipe.Submit(batch); err != nil {
		t.Fatal(err)
	}
	f.Close(t, 30*time.Second)
	ids := pgtest.IDs(t, table)
	if len(ids) != 99 || ids[bad.EventID] != 0 {
		t.Errorf("table holds %d rows (poison: %d), want the 99 good ones", len(ids), ids[bad.EventID])
	}
	b, err := os.ReadFile(f.Dead)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 1 ||
		!strings.Contains(lines[0], bad.EventID) || !strings.Contains(lines[0], `"sink":"postgres"`) || !strings.Contains(lines[0], "22P05") {
		t.Errorf("dead-letter file:\n%s", b)
	}
}

// TestServerRestartMidStream stops the server while events flow, checks
// that the sink is reported down and the queue keeps its bound, starts the
// server again, and checks that every event is in the table once.
func TestServerRestartMidStream(t *testing.T) {
	pgtest.Controllable(t)
	table := pgtest.Table(t)
	s := open(t, table)
	f := pipelinetest.Start(t, "postgres", s, pipeline.Options{QueueSize: 20000, BatchSize: 200, FlushInterval: 10 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, PingInterval: 100 * time.Millisecond})
	events := sinktest.Events(6000)
	var wg sync.WaitGroup
	stopped := make(chan struct{})
	wg.Go(func() {
		for i, e := range events {
			if i == 2000 {
				<-stopped // the rest arrive while the server is down, then after
			}
			if err := f.Pipe.Submit([]*event.Event{e}); err != nil {
				t.Errorf("Submit %d: %v", i, err)
				return
			}
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	testkit.Eventually(t, "some events to be written", func() bool { return f.Pipe.Stats()[0].Delivered >= 1000 })
	pgtest.Stop(t)
	close(stopped)
	testkit.Eventually(t, "the sink to be reported down", func() bool { ready, _ := f.Pipe.Ready(); return !ready })
	time.Sleep(300 * time.Millisecond) // let writes fail and retry against the stopped server
	pgtest.Start(t)
	wg.Wait()
	f.Close(t, 60*time.Second)
	ids := pgtest.IDs(t, table)
	for _, e := range events {
		if ids[e.EventID] != 1 {
			t.Fatalf("event %s is in the table %d times", e.EventID, ids[e.EventID])
		}
	}
	if st := f.Pipe.Stats()[0]; st.DeadLettered != 0 {
		t.Errorf("%d events dead-lettered during a restart", st.DeadLettered)
	}
}

func TestOpenFailsClearly(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Replace(dsn, cfg.Password, "not-the-password", 1)
	_, err = Open(t.Context(), Options{DSN: wrong, Table: "events", ConnectTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") || strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("wrong password: %v", err)
	}
	_, err = Open(t.Context(), Options{DSN: "postgres://u:secretpw@[::1", Table: "events"})
	if err == nil || !strings.Contains(err.Error(), "DSN is not valid") || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("malformed DSN: %v", err)
	}
	_, err = Open(t.Context(), Options{DSN: dsn, Table: "events; DROP TABLE x"})
	if err == nil || !strings.Contains(err.Error(), "is not an identifier") {
		t.Errorf("bad table name: %v", err)
	}
}

// TestParallelParts: the pipeline spreads a batch large enough over
// PG_PARALLEL connections, each part in its own transaction. A clean batch
// is written in full; in one with a poison event, the other parts commit
// once and that event alone is dead-lettered; the clean batch delivered
// again counts every event of every part as a duplicate, none as ingested.
func TestParallelParts(t *testing.T) {
	table := pgtest.Table(t)
	s, err := Open(t.Context(), Options{DSN: pgtest.DSN(t), Table: table, MaxConns: 4, Parallel: 3, BatchSize: 3 * MinPart})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Policy(); p.MaxInFlight != 3 || p.MinPart != MinPart || p.BatchEvents != 3*MinPart || !p.Idempotent {
		t.Fatalf("Policy() = %+v", p)
	}
	// A batch is read when 3*MinPart events are buffered, so each Submit
	// below is one batch of three parts.
	f := pipelinetest.Start(t, "postgres", s, pipeline.Options{QueueSize: 4 * 3 * MinPart, FlushInterval: time.Hour})
	clean := sinktest.Events(3 * MinPart)
	bad := poison()
	dirty := append(sinktest.Events(3*MinPart-1), bad)
	taken := int64(0)
	for _, batch := range [][]*event.Event{clean, dirty, clean} {
		if err := f.Pipe.Submit(batch); err != nil {
			t.Fatal(err)
		}
		taken += int64(len(batch))
		testkit.Eventually(t, "the batch to be written", func() bool {
			st := f.Pipe.Stats()[0]
			return st.Delivered+st.DeadLettered >= taken
		})
	}
	f.Close(t, 60*time.Second)
	ids := pgtest.IDs(t, table)
	if len(ids) != len(clean)+len(dirty)-1 || ids[bad.EventID] != 0 {
		t.Errorf("table holds %d rows (poison %d), want %d", len(ids), ids[bad.EventID], len(clean)+len(dirty)-1)
	}
	if st := f.Pipe.Stats()[0]; st.DeadLettered != 1 || st.Delivered != int64(2*len(clean)+len(dirty)-1) {
		t.Errorf("%d delivered, %d dead-lettered; want %d and 1", st.Delivered, st.DeadLettered, 2*len(clean)+len(dirty)-1)
	}
	if got, want := counter(t, f, "gotrack_events_ingested_total"), float64(len(clean)+len(dirty)-1); got != want {
		t.Errorf("ingested %v, want %v: the committed parts of the poisoned batch were written again", got, want)
	}
	if got, want := counter(t, f, "gotrack_events_duplicate_total"), float64(len(clean)); got != want {
		t.Errorf("duplicates %v, want the clean batch's %v", got, want)
	}
}

// counter returns the value of the pipeline's counter name for the sink.
func counter(t *testing.T, f *pipelinetest.Fixture, name string) float64 {
	t.Helper()
	mfs, err := f.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestValidate(t *testing.T) {
	if err := (Options{DSN: "postgres://localhost/db", Table: "events"}).WithDefaults().Validate(); err != nil {
		t.Errorf("Validate of the defaults = %v", err)
	}
	err := Options{DSN: "postgres://u:secretpw@[::1", Table: "a.b.c", MaxConns: -1, Parallel: 65,
		BatchSize: 2_000_000, BatchBytes: 10, ConnectTimeout: time.Millisecond}.Validate()
	for _, want := range []string{"DSN is not valid", `Table="a.b.c" is not an identifier`, "MaxConns=-1 is out of range; want 1 to 1000",
		"Parallel=65 is out of range; want 1 to 64", "BatchSize=2000000 is out of range", "BatchBytes=10 is out of range; want 1024 to",
		"ConnectTimeout=1ms is out of range; want 1s to 10m"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "secretpw") {
		t.Errorf("Validate echoes the DSN's password: %v", err)
	}
	if err := (Options{Table: "events"}).WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "postgres: DSN is not set") {
		t.Errorf("Validate without a DSN = %v", err)
	}
}
