package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// loader sends pixel and collect events with client-made ids from several
// goroutines until stopped, and remembers the ids answered 2xx.
type loader struct {
	mu       sync.Mutex
	accepted map[string]bool
	refused  atomic.Int64
	sent     atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(base string, workers int) *loader {
	l := &loader{accepted: map[string]bool{}, stop: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second}
	for w := range workers {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := event.NewID(time.Now())
				var (
					resp *http.Response
					err  error
				)
				if (n+w)%2 == 0 {
					resp, err = client.Get(base + "/px.gif?" + url.Values{"e": {"view"}, "eid": {id}, "uid": {fmt.Sprint(w)}}.Encode())
				} else {
					resp, err = client.Post(base+"/collect", "application/json", strings.NewReader(fmt.Sprintf(`{"event_id":%q,"type":"click"}`, id)))
				}
				l.sent.Add(1)
				if err != nil {
					l.refused.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// The pixel answers 200 even when it drops an event; the
				// tests that use the pixel keep the spool from filling.
				if resp.StatusCode/100 == 2 {
					l.mu.Lock()
					l.accepted[id] = true
					l.mu.Unlock()
				} else {
					l.refused.Add(1)
				}
			}
		})
	}
	return l
}

func (l *loader) finish() map[string]bool {
	close(l.stop)
	l.wg.Wait()
	return l.accepted
}

func (l *loader) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// TestCrashLosesNothing kills the binary with SIGKILL under load and
// restarts it on the same spool: every event answered 2xx must reach the
// NDJSON file. The NDJSON sink may repeat an event after a crash (it wrote
// the batch, the cursor did not move), so repeats are allowed.
func TestCrashLosesNothing(t *testing.T) {
	dir := t.TempDir()
	env := []string{"SPOOL_DIR=" + dir + "/spool", "SPOOL_FSYNC=always", "FLUSH_INTERVAL=20ms"}
	p := startGotrackIn(t, dir, env...)
	l := startLoad("http://"+p.ingest, 16)
	testkit.Eventually(t, "load to build up", func() bool { return l.count() >= 1500 })
	p.signal(t, syscall.SIGKILL)
	<-p.exited
	accepted := l.finish()

	p2 := startGotrackIn(t, dir, env...)
	testkit.Eventually(t, "the replay", func() bool { return strings.Contains(p2.stderr.String(), `"msg":"gotrack started"`) })
	p2.stop(t)
	stored := readEvents(t, p2.path("events.ndjson"))
	dupes := 0
	for id := range accepted {
		switch n := stored[id]; {
		case n == 0:
			t.Fatalf("event %s was answered 2xx before the crash and is not in the file (%d accepted, %d stored)",
				id, len(accepted), len(stored))
		case n > 1:
			dupes++
		}
	}
	t.Logf("%d events answered 2xx before SIGKILL, all stored after restart (%d repeated)", len(accepted), dupes)
}

// TestPostgresOutageWithSpool stops PostgreSQL under load: the NDJSON sink
// keeps flowing, and once PostgreSQL is back the table holds every event
// answered 2xx exactly once.
func TestPostgresOutageWithSpool(t *testing.T) {
	pgtest.Controllable(t)
	table := pgtest.Table(t)
	dir := t.TempDir()
	p := startGotrackIn(t, dir, "OUTPUTS=log,postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table,
		"SPOOL_DIR="+dir+"/spool", "FLUSH_INTERVAL=20ms", "RETRY_MAX_BACKOFF=200ms", "PG_BATCH_SIZE=500")
	l := startLoad("http://"+p.ingest, 8)
	testkit.Eventually(t, "load to build up", func() bool { return l.count() >= 500 })
	restart := pgtest.Outage(t)
	before := len(readEventsQuiet(p.path("events.ndjson")))
	testkit.Eventually(t, "events to keep reaching the file during the outage", func() bool {
		return len(readEventsQuiet(p.path("events.ndjson"))) >= before+1000
	})
	restart()
	time.Sleep(300 * time.Millisecond)
	accepted := l.finish()
	testkit.Eventually(t, "the table to catch up", func() bool { return len(pgtest.IDs(t, table)) >= len(accepted) })
	p.stop(t)
	requireOnceInTable(t, table, slices.Collect(maps.Keys(accepted)))
	t.Logf("%d events answered 2xx across the outage; each in the table once", len(accepted))
}

// TestSpoolQuotaGives503 fills a small spool while PostgreSQL is down:
// /collect must answer 503 rather than lose events, and /readyz must say
// why; once PostgreSQL is back, every event answered 202 is delivered.
func TestSpoolQuotaGives503(t *testing.T) {
	pgtest.Controllable(t)
	table := pgtest.Table(t)
	dir := t.TempDir()
	p := startGotrackIn(t, dir, "OUTPUTS=postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table,
		"SPOOL_DIR="+dir+"/spool", "SPOOL_MAX_BYTES=262144", "RETRY_MAX_BACKOFF=200ms")
	restart := pgtest.Outage(t)
	var accepted []string
	full := false
	for i := 0; i < 5000 && !full; i++ {
		id := event.NewID(time.Now())
		resp, err := http.Post("http://"+p.ingest+"/collect", "application/json",
			strings.NewReader(fmt.Sprintf(`{"event_id":%q,"type":"fill","title":%q}`, id, strings.Repeat("t", 200))))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 202:
			accepted = append(accepted, id)
		case 503:
			full = resp.Header.Get("Retry-After") != "" && strings.Contains(string(body), "spool is full")
		default:
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	if !full {
		t.Fatalf("no 503 after %d events into a 256 KiB spool", len(accepted))
	}
	if code, body := httpGet(t, "http://"+p.ingest+"/readyz"); code != 503 || !strings.Contains(body, "spool is full") {
		t.Errorf("readyz with a full spool: %d %s", code, body)
	}
	restart()
	testkit.Eventually(t, "the table to catch up", func() bool { return len(pgtest.IDs(t, table)) >= len(accepted) })
	p.stop(t)
	requireOnceInTable(t, table, accepted)
	t.Logf("%d events accepted into a 256 KiB spool before the 503s; all delivered", len(accepted))
}
