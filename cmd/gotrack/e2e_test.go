package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/config"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestGracefulStopLosesNothing loads the binary from concurrent clients
// with 2,000 pixel and 2,000 collect events, sends SIGTERM while requests are
// still arriving, and checks that every event answered 2xx is in the NDJSON
// file exactly once, and that every line fits the schema.
func TestGracefulStopLosesNothing(t *testing.T) {
	p := startGotrack(t, "LOG_FORMAT=json", "IP_MODE=truncate")
	base := "http://" + p.ingest
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

	const perKind = 2000
	var (
		next     atomic.Int64 // request number; even numbers are pixels, odd ones collects
		done     atomic.Int64
		mu       sync.Mutex
		accepted = map[string]bool{}
		refused  atomic.Int64
		wg       sync.WaitGroup
	)
	send := func(n int64) {
		id := event.NewID(time.Now())
		var (
			resp *http.Response
			err  error
		)
		if n%2 == 0 {
			q := url.Values{"e": {"pageview"}, "url": {fmt.Sprintf("https://shop.example/p/%d?token=x", n)},
				"uid": {"v" + fmt.Sprint(n%50)}, "eid": {id}, "p.n": {fmt.Sprint(n)}}
			resp, err = client.Get(base + "/px.gif?" + q.Encode())
		} else {
			body := fmt.Sprintf(`{"event_id":%q,"type":"click","url":"https://shop.example/","props":{"n":%d}}`, id, n)
			resp, err = client.Post(base+"/collect", "application/json", strings.NewReader(body))
		}
		if err != nil {
			refused.Add(1)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			mu.Lock()
			accepted[id] = true
			mu.Unlock()
		} else {
			refused.Add(1)
		}
	}
	for range 16 {
		wg.Go(func() {
			for {
				n := next.Add(1) - 1
				if n >= 2*perKind {
					return
				}
				send(n)
				done.Add(1)
			}
		})
	}
	// SIGTERM while the last quarter is still being sent.
	for done.Load() < 3*perKind/2 {
		time.Sleep(time.Millisecond)
	}
	p.signal(t, syscall.SIGTERM)
	wg.Wait()
	p.wait(t)

	// The pixel answers 200 even when it drops an event; with DNT off,
	// valid events and room in the queue, none is dropped here, so a 2xx
	// pixel event must be stored too.
	ids := readEvents(t, p.path("events.ndjson"))
	for id := range accepted {
		if ids[id] != 1 {
			t.Errorf("event %s was answered 2xx but is stored %d times", id, ids[id])
		}
	}
	if len(ids) != len(accepted) {
		t.Errorf("file holds %d events, %d were answered 2xx", len(ids), len(accepted))
	}
	if len(accepted) < 3*perKind/2 {
		t.Errorf("only %d events were accepted before the stop", len(accepted))
	}
	t.Logf("accepted %d, refused or cut off by the stop %d", len(accepted), refused.Load())
	if !strings.Contains(p.stderr.String(), `"msg":"sink delivered","sink":"log","events":`) {
		t.Errorf("no delivery summary in the logs")
	}
}

func TestSanitizedAndPrivate(t *testing.T) {
	p := startGotrack(t, "IP_MODE=drop")
	resp, err := http.Get("http://" + p.ingest + "/px.gif?url=" + url.QueryEscape("https://a.example/?q=1&password=hunter2&email=a@b.c"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.stop(t)
	b, _ := os.ReadFile(p.path("events.ndjson"))
	if !bytes.Contains(b, []byte(`"url":"https://a.example/?q=1"`)) || bytes.Contains(b, []byte("hunter2")) || bytes.Contains(b, []byte(`"ip"`)) {
		t.Errorf("stored event is not sanitised: %s", b)
	}
	if strings.Contains(p.stderr.String(), "hunter2") {
		t.Error("a secret reached the logs")
	}
}

// TestSIGHUPReopens moves the file away as logrotate does, sends SIGHUP,
// and checks that later events land in a new file at LOG_PATH.
func TestSIGHUPReopens(t *testing.T) {
	p := startGotrack(t, "FLUSH_INTERVAL=5ms")
	hit := func(n int) {
		for i := range n {
			resp, err := http.Get(fmt.Sprintf("http://%s/px.gif?e=hup&p.i=%d", p.ingest, i))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	hit(3)
	testkit.Eventually(t, "the first events to be written", func() bool { return len(readEventsQuiet(p.path("events.ndjson"))) == 3 })
	if err := os.Rename(p.path("events.ndjson"), p.path("events.ndjson.1")); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	testkit.Eventually(t, "the reopen", func() bool { return strings.Contains(p.stderr.String(), "reopened on SIGHUP") })
	hit(2)
	p.stop(t)
	if old, cur := readEvents(t, p.path("events.ndjson.1")), readEvents(t, p.path("events.ndjson")); len(old) != 3 || len(cur) != 2 {
		t.Errorf("after SIGHUP: %d events in the moved file, %d in the new one; want 3 and 2", len(old), len(cur))
	}
}

func readEventsQuiet(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func TestBadConfigListsEveryProblem(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := map[string]string{"QUEUE_SIZE": "-1", "IP_MODE": "hash", "OUTPUTS": "log,mystery"}
	err := run(t.Context(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
	if err == nil {
		t.Fatal("run started with a bad configuration")
	}
	for _, want := range []string{"QUEUE_SIZE", "IP_HASH_SECRET", "mystery"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SERVER_ADDR (default :19890)", "OUTPUTS (default log)", "METRICS_ENABLED (default false)", "QUEUE_FULL_POLICY"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("-h output lacks %q", want)
		}
	}
}

// TestHelpListsCommands checks that -h lists every subcommand with its line
// of help, and that each one listed is one run knows.
func TestHelpListsCommands(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"-h"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	help := stdout.String()
	for _, c := range commands {
		if !strings.Contains(help, "  "+c.Name+"  ") || !strings.Contains(help, c.Help+"\n") {
			t.Errorf("-h does not list %q with its help:\n%s", c.Name, help)
		}
		args := append(strings.Fields(strings.Split(c.Name, " [")[0]), "-h")
		err := run(t.Context(), args, func(string) string { return "" }, io.Discard, io.Discard)
		if err != nil && strings.Contains(err.Error(), "unknown command") {
			t.Errorf("-h lists %q, which run does not know: %v", c.Name, err)
		}
	}
	for _, want := range []string{"serve", "replay", "version"} {
		if !slices.ContainsFunc(commands, func(c config.Command) bool { return strings.HasPrefix(c.Name, want) }) {
			t.Errorf("-h does not list %s", want)
		}
	}
}

// TestTypoWarned starts the binary with a misspelt setting and checks the
// warning names the setting meant.
func TestTypoWarned(t *testing.T) {
	p := startGotrack(t, "SPOOL_DIRR=/nonexistent", "PG_MAJOR=16")
	p.stop(t)
	logs := p.stderr.String()
	if !strings.Contains(logs, "SPOOL_DIRR is not a GoTrack setting and is ignored; did you mean SPOOL_DIR?") {
		t.Errorf("no warning about SPOOL_DIRR:\n%s", logs)
	}
	if strings.Contains(logs, "PG_MAJOR") {
		t.Errorf("PG_MAJOR, the postgres image's, was taken for a typo:\n%s", logs)
	}
}
