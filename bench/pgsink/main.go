// Command pgsink measures the PostgreSQL sink against its practical limit:
// it writes N new events through postgres.Sink in batches, driven by the
// pipeline as GoTrack drives it (so a large batch is spread over the
// sink's PG_PARALLEL connections), then the same events again as a replay
// would (every one a conflict), then COPYs the same rows in one stream into
// an unindexed table, and prints the rates.
//
//	go run ./bench/pgsink -dsn "$PG_TEST_DSN" -events 1000000 -batch 500
//
// bench/run.sh pg starts a throwaway server and runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/sink/postgres"
)

func main() {
	dsn := flag.String("dsn", os.Getenv("PG_TEST_DSN"), "PostgreSQL DSN")
	n := flag.Int("events", 1_000_000, "events to write")
	batch := flag.Int("batch", 500, "events per sink batch (BATCH_SIZE)")
	flag.Parse()
	if err := run(*dsn, *n, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "pgsink:", err)
		os.Exit(1)
	}
}

// writeAll opens the sink and delivers events to it through a pipeline in
// batches of batch events, and returns the time it took, the sink's close
// included.
func writeAll(ctx context.Context, dsn, table string, events []*event.Event, batch int) (time.Duration, error) {
	s, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Table: table, BatchSize: batch, BatchBytes: 1 << 30})
	if err != nil {
		return 0, err
	}
	reg := prometheus.NewRegistry()
	m, err := pipeline.NewMetrics(reg, []string{"postgres"})
	if err != nil {
		return 0, err
	}
	dead := deadletter.New(os.DevNull)
	p, err := pipeline.New([]pipeline.Output{{Name: "postgres", Sink: s}},
		pipeline.Options{QueueSize: 4 * batch, BatchSize: batch, BatchBytes: 1 << 30, FlushInterval: 10 * time.Millisecond,
			EnqueueTimeout: time.Minute}, m, reg, dead, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, err
	}
	start := time.Now()
	p.Start()
	for i := 0; i < len(events); i += batch {
		if err := p.Submit(events[i:min(i+batch, len(events))]); err != nil {
			return 0, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if st := p.Stats()[0]; st.Delivered != int64(len(events)) {
		return 0, fmt.Errorf("the pipeline delivered %d events of %d (%d dead-lettered)", st.Delivered, len(events), st.DeadLettered)
	}
	return took, nil
}

// pixelEvents makes events shaped like pixel traffic: about 330 bytes of JSON each.
func pixelEvents(n int) []*event.Event {
	at := time.Now().UTC()
	out := make([]*event.Event, n)
	for i := range out {
		e := &event.Event{
			EventID: event.NewID(at), ReceivedAt: at.Add(time.Duration(i) * time.Microsecond), Type: "pageview",
			URL: fmt.Sprintf("https://shop.example/products/%d?utm_source=news", i%5000), Referrer: "https://www.example.org/",
			VisitorID: fmt.Sprintf("v%07d", i%200000), SessionID: fmt.Sprintf("s%07d", i%50000),
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
			IP:        "203.0.113.0", Props: json.RawMessage(`{"plan":"pro"}`), Source: event.SourcePixel,
		}
		e.Seal()
		out[i] = e
	}
	return out
}

func run(dsn string, n, batch int) error {
	if dsn == "" {
		return fmt.Errorf("no DSN: pass -dsn or set PG_TEST_DSN")
	}
	ctx := context.Background()
	events := pixelEvents(n)
	suffix := fmt.Sprint(time.Now().UnixNano())
	sinkTable, plainTable := "bench_sink_"+suffix, "bench_plain_"+suffix
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	defer conn.Exec(ctx, "DROP TABLE IF EXISTS "+sinkTable+", "+plainTable)

	sinkTime, err := writeAll(ctx, dsn, sinkTable, events, batch)
	if err != nil {
		return err
	}
	// The same events again, as a replay would send them: every one is a
	// conflict, so every batch takes the staging path.
	replayTime, err := writeAll(ctx, dsn, sinkTable, events, batch)
	if err != nil {
		return err
	}

	if _, err := conn.Exec(ctx, `CREATE TABLE `+plainTable+` (event_id uuid, received_at timestamptz, type text, source text, payload jsonb)`); err != nil {
		return err
	}
	start := time.Now()
	_, err = conn.CopyFrom(ctx, pgx.Identifier{plainTable}, []string{"event_id", "received_at", "type", "source", "payload"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) {
			e := events[i]
			var id pgtype.UUID
			if err := id.Scan(e.EventID); err != nil {
				return nil, err
			}
			return []any{id, e.ReceivedAt, e.Type, string(e.Source), json.RawMessage(e.JSON())}, nil
		}))
	if err != nil {
		return err
	}
	copyTime := time.Since(start)

	var rows int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+sinkTable).Scan(&rows); err != nil {
		return err
	}
	if rows != n {
		return fmt.Errorf("the sink table holds %d rows, want %d", rows, n)
	}
	sinkRate, copyRate := float64(n)/sinkTime.Seconds(), float64(n)/copyTime.Seconds()
	fmt.Printf("| path | events | batch | seconds | events/s |\n|---|---|---|---|---|\n")
	fmt.Printf("| postgres.Sink, new events (COPY into the table; PK + BRIN) | %d | %d | %.2f | %.0f |\n", n, batch, sinkTime.Seconds(), sinkRate)
	fmt.Printf("| postgres.Sink, replay of the same events (staging + ON CONFLICT DO NOTHING) | %d | %d | %.2f | %.0f |\n",
		n, batch, replayTime.Seconds(), float64(n)/replayTime.Seconds())
	fmt.Printf("| plain COPY into an unindexed table | %d | all | %.2f | %.0f |\n", n, copyTime.Seconds(), copyRate)
	fmt.Printf("\nsink / plain COPY = %.0f%%\n", 100*sinkRate/copyRate)
	return nil
}
