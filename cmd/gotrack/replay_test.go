package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

func startPushgateway(t *testing.T) string {
	t.Helper()
	bin := requireTool(t, "prometheus-pushgateway")
	addr := freePort(t)
	// Debian's Pushgateway persists to /var/lib/prometheus/pushgateway.data
	// unless told otherwise, which leaks pushes from one run into the next.
	startServer(t, "pushgateway", bin, "--web.listen-address="+addr,
		"--persistence.file="+filepath.Join(t.TempDir(), "pushgateway.data"))
	testkit.Eventually(t, "the Pushgateway", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return "http://" + addr
}

// pushed reads one series of job gotrack_replay back from the Pushgateway.
func pushed(t *testing.T, gw, series string) (string, bool) {
	t.Helper()
	resp, err := http.Get(gw + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if name, value, ok := strings.Cut(strings.TrimSpace(line), " "); ok && name == series {
			return value, true
		}
	}
	return "", false
}

// TestReplayDeadLetters replays a dead-letter file into PostgreSQL twice:
// its events are in the table once, bad lines are reported with their file
// and line and fail the run, lines for another sink are skipped, and the
// run's metrics reach a real Pushgateway.
func TestReplayDeadLetters(t *testing.T) {
	table := pgtest.Table(t)
	gw := startPushgateway(t)
	dir := t.TempDir()
	events := sinktest.Events(300)
	var buf bytes.Buffer
	for i, e := range events {
		fmt.Fprintf(&buf, `{"sink":"postgres","reason":"shutdown","error":"x","failed_at":"2026-11-22T00:00:00Z","event":%s}`+"\n", e.JSON())
		switch i {
		case 10:
			buf.WriteString("{not json\n")
		case 20:
			buf.WriteString("\n")
		case 30:
			buf.WriteString(`{"type":"no id"}` + "\n")
		case 40:
			fmt.Fprintf(&buf, `{"sink":"kafka","reason":"rejected","event":%s}`+"\n", sinktest.Events(1)[0].JSON())
		}
	}
	file := filepath.Join(dir, "dead-letter.ndjson")
	os.WriteFile(file, buf.Bytes(), 0o640)
	env := map[string]string{"OUTPUTS": "postgres", "PG_DSN": pgtest.DSN(t), "PG_TABLE": table, "PUSHGATEWAY_URL": gw,
		"DEAD_LETTER_PATH": file, "LOG_PATH": filepath.Join(dir, "events.ndjson")}
	getenv := func(k string) string { return env[k] }

	for round := 1; round <= 2; round++ {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"replay", file}, getenv, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "2 lines or events failed") {
			t.Fatalf("round %d: replay = %v, want a failure for the 2 bad lines\n%s", round, err, stderr.String())
		}
		for _, want := range []string{"dead-letter.ndjson:12:", "dead-letter.ndjson:34:"} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("round %d: stderr does not report %s:\n%s", round, want, stderr.String())
			}
		}
		if !strings.Contains(stderr.String(), "replay: 100% of") { // plain progress lines when not a terminal
			t.Errorf("round %d: no final progress line:\n%s", round, stderr.String())
		}
		if !strings.Contains(stdout.String(), "300 replayed, 2 failed, 1 skipped") {
			t.Errorf("round %d: summary %q", round, stdout.String())
		}
		if ids := pgtest.IDs(t, table); len(ids) != 300 {
			t.Fatalf("round %d: table holds %d events, want 300", round, len(ids))
		}
	}
	for series, want := range map[string]string{
		`gotrack_replay_events{instance="",job="gotrack_replay",result="replayed"}`: "300",
		`gotrack_replay_events{instance="",job="gotrack_replay",result="failed"}`:   "2",
		`gotrack_replay_events{instance="",job="gotrack_replay",result="skipped"}`:  "1",
	} {
		if got, ok := pushed(t, gw, series); !ok || got != want {
			t.Errorf("Pushgateway %s = %q, want %s", series, got, want)
		}
	}
	if _, ok := pushed(t, gw, `gotrack_replay_last_success_timestamp_seconds{instance="",job="gotrack_replay"}`); ok {
		t.Error("a failed run pushed a last-success time")
	}

	// A clean file succeeds, and stamps the last success.
	clean := filepath.Join(dir, "clean.ndjson")
	var cb bytes.Buffer
	for _, e := range sinktest.Events(50) {
		cb.Write(e.JSON())
		cb.WriteByte('\n')
	}
	os.WriteFile(clean, cb.Bytes(), 0o640)
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"replay", "--sink", "postgres", clean}, getenv, &stdout, io.Discard); err != nil {
		t.Fatalf("clean replay: %v", err)
	}
	v, ok := pushed(t, gw, `gotrack_replay_last_success_timestamp_seconds{instance="",job="gotrack_replay"}`)
	var ts float64
	fmt.Sscan(v, &ts)
	if !ok || time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last success %q after a clean run", v)
	}
	if got, _ := pushed(t, gw, `gotrack_replay_events{instance="",job="gotrack_replay",result="failed"}`); got != "0" {
		t.Errorf("failed = %s after a clean run, want 0", got)
	}
	if ids := pgtest.IDs(t, table); len(ids) != 350 {
		t.Errorf("table holds %d events, want 350", len(ids))
	}
}

// TestReplayStopsOnSignal: main catches SIGINT and SIGTERM into ctx, so
// replay must stop when ctx ends, or Ctrl-C does nothing at all. With ctx
// already cancelled, replay reads no line, says it was interrupted, and
// fails.
func TestReplayStopsOnSignal(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.ndjson")
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, `{"event_id":"0190f0f0-0000-7000-8000-%012x","received_at":"2026-11-22T12:00:00Z","type":"pageview","url":"https://example.com/","source":"pixel"}`+"\n", i)
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "events.ndjson")
	env := map[string]string{"LOG_PATH": out, "DEAD_LETTER_PATH": filepath.Join(dir, "dead.ndjson")}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr strings.Builder
	err := run(ctx, []string{"replay", in}, func(k string) string { return env[k] }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("replay with ctx cancelled: err = %v; stdout:\n%s", err, stdout.String())
	}
	if data, _ := os.ReadFile(out); strings.Count(string(data), "\n") == 1000 {
		t.Fatalf("replay went on after ctx ended: every event was written")
	}
}
