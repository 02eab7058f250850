package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestLogAndPostgresHoldTheSameEvents runs the binary with both sinks and
// compares the event ids in the NDJSON file and the table.
func TestLogAndPostgresHoldTheSameEvents(t *testing.T) {
	table := pgtest.Table(t)
	p := startGotrack(t, "OUTPUTS=log,postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table)
	sendEvents(t, p.ingest, 400) // 200 pixels, 200 collects of 2
	p.stop(t)
	inFile := readEvents(t, p.path("events.ndjson"))
	inTable := pgtest.IDs(t, table)
	if len(inFile) != 600 || !maps.Equal(inFile, inTable) {
		t.Errorf("file holds %d events, table %d; the sets differ", len(inFile), len(inTable))
	}
}

// TestFullQueueFlushedOnSIGTERM stops PostgreSQL, fills the sink's queue
// until /collect answers 503, starts the server again and at once sends
// SIGTERM: every event answered 202 must reach the table.
func TestFullQueueFlushedOnSIGTERM(t *testing.T) {
	pgtest.Controllable(t)
	table := pgtest.Table(t)
	p := startGotrack(t, "OUTPUTS=postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table,
		"QUEUE_SIZE=2000", "MAX_BATCH_EVENTS=100", "BATCH_SIZE=100", "PG_BATCH_SIZE=100", "ENQUEUE_TIMEOUT=20ms", "RETRY_MAX_BACKOFF=200ms")
	restart := pgtest.Outage(t)
	var accepted []string
	full := false
	for i := 0; i < 100 && !full; i++ {
		var body bytes.Buffer
		body.WriteByte('[')
		ids := make([]string, 50)
		for j := range ids {
			ids[j] = event.NewID(time.Now())
			if j > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"event_id":%q,"type":"fill"}`, ids[j])
		}
		body.WriteByte(']')
		resp, err := http.Post("http://"+p.ingest+"/collect", "application/json", &body)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 202:
			accepted = append(accepted, ids...)
		case 503:
			full = resp.Header.Get("Retry-After") != ""
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if !full {
		t.Fatal("the queue never filled while PostgreSQL was down")
	}
	if code, body := httpGet(t, "http://"+p.ingest+"/readyz"); code != 503 || !strings.Contains(body, "postgres") {
		t.Errorf("readyz with PostgreSQL down and a full queue: %d %s", code, body)
	}
	restart()
	p.signal(t, syscall.SIGTERM)
	p.wait(t)
	requireOnceInTable(t, table, accepted)
	t.Logf("%d events queued while PostgreSQL was down, all flushed on SIGTERM", len(accepted))
}

func TestWrongPostgresPasswordFailsAtStart(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"OUTPUTS": "log,postgres", "PG_DSN": strings.Replace(dsn, cfg.Password, "wrong-password", 1),
		"LOG_PATH": t.TempDir() + "/e.ndjson", "SERVER_ADDR": "127.0.0.1:0", "PG_CONNECT_TIMEOUT": "5s"}
	var stderr bytes.Buffer
	err = run(t.Context(), nil, func(k string) string { return env[k] }, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") || strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("run = %v, want a refusal naming the authentication failure without the password", err)
	}
}

// TestDuplicatesCountedApart sends events whose event_id the table already
// holds, and one repeated within a request: gotrack_events_ingested_total
// must count the rows newly written, gotrack_events_duplicate_total the
// rest.
func TestDuplicatesCountedApart(t *testing.T) {
	table := pgtest.Table(t)
	p := startGotrack(t, "OUTPUTS=postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table, "FLUSH_INTERVAL=10ms",
		"METRICS_ENABLED=true", "METRICS_ADDR=127.0.0.1:0")
	a, b, c := event.NewID(time.Now()), event.NewID(time.Now()), event.NewID(time.Now())
	counts := func() (ingested, duplicates float64) {
		_, body := httpGet(t, p.metrics)
		return sample(t, body, `gotrack_events_ingested_total{sink="postgres"}`), sample(t, body, `gotrack_events_duplicate_total{sink="postgres"}`)
	}
	post := func(ids ...string) {
		var body bytes.Buffer
		body.WriteByte('[')
		for i, id := range ids {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"event_id":%q,"type":"dup"}`, id)
		}
		body.WriteByte(']')
		resp, err := http.Post("http://"+p.ingest+"/collect", "application/json", &body)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for _, step := range []struct {
		send          []string
		ingested, dup float64
	}{
		{[]string{a, b}, 2, 0},
		{[]string{a}, 2, 1},       // the case: 3 events for 2 rows
		{[]string{c, c, b}, 3, 3}, // c is new once; its repeat and b are duplicates
	} {
		post(step.send...)
		testkit.Eventually(t, "the batch to be written", func() bool {
			i, d := counts()
			return i+d >= step.ingested+step.dup
		})
		if i, d := counts(); i != step.ingested || d != step.dup {
			t.Errorf("after sending %d events: ingested %v, duplicates %v; want %v and %v", len(step.send), i, d, step.ingested, step.dup)
		}
	}
	p.stop(t)
	if rows := pgtest.IDs(t, table); len(rows) != 3 {
		t.Errorf("table holds %d rows, want 3", len(rows))
	}
}

// sample returns the value of the series named exactly by series (name and
// labels) in an exposition, failing the test when it is missing.
func sample(t *testing.T, exposition, series string) float64 {
	t.Helper()
	for line := range strings.Lines(exposition) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("exposition lacks %s", series)
	return 0
}
