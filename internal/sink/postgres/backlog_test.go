package postgres

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/pipeline/pipelinetest"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestPartsOnlyInBacklog: a full batch alone in the queue is written whole,
// in one transaction; one with another full batch queued behind it is
// spread over PG_PARALLEL connections, a transaction each. A lock on the
// table holds the first batch's COPY while the others queue.
func TestPartsOnlyInBacklog(t *testing.T) {
	table := pgtest.Table(t)
	s, err := Open(t.Context(), Options{DSN: pgtest.DSN(t), Table: table, MaxConns: 4, Parallel: 3, BatchSize: 3 * MinPart})
	if err != nil {
		t.Fatal(err)
	}
	f := pipelinetest.Start(t, "postgres", s, pipeline.Options{QueueSize: 4 * 3 * MinPart, FlushInterval: time.Hour})
	c := pgtest.Conn(t)
	lock, err := c.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(t.Context())
	if _, err := lock.Exec(t.Context(), `LOCK TABLE `+pgx.Identifier{table}.Sanitize()+` IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	all := sinktest.Events(3 * 3 * MinPart)
	batches := [][]*event.Event{all[:3*MinPart], all[3*MinPart : 6*MinPart], all[6*MinPart:]}
	if err := f.Pipe.Submit(batches[0]); err != nil {
		t.Fatal(err)
	}
	waiting := pgtest.Conn(t)
	testkit.Eventually(t, "the first batch's COPY waiting for the lock", func() bool {
		var n int
		err := waiting.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE relation = $1::regclass AND NOT granted`, table).Scan(&n)
		return err == nil && n > 0
	})
	for _, b := range batches[1:] {
		if err := f.Pipe.Submit(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := lock.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.Close(t, 60*time.Second)
	for i, want := range []int{1, 3, 1} {
		ids := make([]string, len(batches[i]))
		for k, e := range batches[i] {
			ids[k] = e.EventID
		}
		var rows, txs int
		if err := c.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT xmin::text) FROM `+pgx.Identifier{table}.Sanitize()+
			` WHERE event_id = ANY($1::uuid[])`, ids).Scan(&rows, &txs); err != nil {
			t.Fatal(err)
		}
		if rows != len(ids) || txs != want {
			t.Errorf("batch %d: %d rows in %d transactions, want %d in %d", i+1, rows, txs, len(ids), want)
		}
	}
}
