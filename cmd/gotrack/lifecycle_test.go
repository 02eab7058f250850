package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/spool"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestFailedStartClosesEverything fails a start after each step in turn
// and checks that whatever was opened is closed again: the sinks, the
// spool, and both listeners' ports.
func TestFailedStartClosesEverything(t *testing.T) {
	for _, failAt := range startSteps {
		t.Run(strings.ReplaceAll(failAt, " ", "_"), func(t *testing.T) {
			dir := t.TempDir()
			ingestAddr, metricsAddr := freePort(t), freePort(t)
			env := map[string]string{
				"SERVER_ADDR":      ingestAddr,
				"LOG_PATH":         filepath.Join(dir, "events.ndjson"),
				"DEAD_LETTER_PATH": filepath.Join(dir, "dead.ndjson"),
				"SPOOL_DIR":        filepath.Join(dir, "spool"),
				"METRICS_ENABLED":  "true",
				"METRICS_ADDR":     metricsAddr,
			}
			var (
				outputs []pipeline.Output
				sp      *spool.Spool
				reached []string
			)
			errStep := errors.New("injected failure")
			hooks := startHooks{
				fail: func(step string) error {
					reached = append(reached, step)
					if step == failAt {
						return errStep
					}
					return nil
				},
				opened: func(o []pipeline.Output, s *spool.Spool) { outputs, sp = o, s },
			}
			err := serve(t.Context(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard, nil, hooks)
			if !errors.Is(err, errStep) {
				t.Fatalf("serve = %v, want the injected failure after %q (steps reached: %v)", err, failAt, reached)
			}
			if len(outputs) != 1 {
				t.Fatalf("no sink was opened")
			}
			if werr := outputs[0].Sink.WriteBatch(t.Context(), sinktest.Events(1)); werr == nil {
				t.Error("the log sink still writes after the failed start: it was not closed")
			}
			if sp != nil {
				if aerr := sp.Append(sinktest.Events(1)); !errors.Is(aerr, spool.ErrClosed) {
					t.Errorf("spool Append after the failed start = %v, want ErrClosed", aerr)
				}
				// Another process could take the spool over now (its lock is free).
				again, oerr := spool.Open(spool.Options{Dir: env["SPOOL_DIR"], Sync: spool.Sync{Always: true}, MaxBytes: 1 << 20, Readers: []string{"log"}})
				if oerr != nil {
					t.Errorf("the spool cannot be opened again after the failed start: %v", oerr)
				} else if cerr := again.Close(); cerr != nil {
					t.Error(cerr)
				}
			} else if failAt != "sinks" && failAt != "pipeline metrics" {
				t.Error("the spool was not reported opened")
			}
			for _, addr := range []string{ingestAddr, metricsAddr} {
				ln, lerr := net.Listen("tcp", addr)
				if lerr != nil {
					t.Errorf("%s is still bound after the failed start: %v", addr, lerr)
					continue
				}
				ln.Close()
			}
		})
	}
}

// TestSIGHUPDuringSlowStart sends SIGHUP while the start waits for a
// PostgreSQL server that does not answer: GoTrack must not die of it (the
// signal's default action), and goes on to report the real problem.
func TestSIGHUPDuringSlowStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept() // accept, then say nothing
		if err == nil {
			accepted <- c
		}
	}()
	dir := t.TempDir()
	cmd := exec.Command(binPath)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"SERVER_ADDR=127.0.0.1:0",
		"LOG_PATH=" + filepath.Join(dir, "events.ndjson"),
		"DEAD_LETTER_PATH=" + filepath.Join(dir, "dead.ndjson"),
		"OUTPUTS=log,postgres",
		"PG_DSN=postgres://gotrack@" + ln.Addr().String() + "/gotrack?sslmode=disable",
		"PG_CONNECT_TIMEOUT=3s",
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var conn net.Conn
	select {
	case conn = <-accepted: // the start is now waiting on "PostgreSQL"
		defer conn.Close()
	case err := <-exited:
		t.Fatalf("gotrack exited before connecting: %v\n%s", err, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatal("gotrack did not connect to the silent server")
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("gotrack exited with %v, want a failed start (exit 1)", err)
		}
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Fatalf("gotrack was killed by %v during its start", ws.Signal())
		}
		if !strings.Contains(stderr.String(), "open sink postgres") {
			t.Errorf("gotrack did not report the slow server:\n%s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gotrack did not give up on the silent server")
	}
}

// TestDrainDelay: during SHUTDOWN_DRAIN_DELAY /readyz answers 503 while
// /collect is still served; then GoTrack stops and has delivered every
// event it accepted.
func TestDrainDelay(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"SERVER_ADDR":          "127.0.0.1:0",
		"LOG_PATH":             filepath.Join(dir, "events.ndjson"),
		"DEAD_LETTER_PATH":     filepath.Join(dir, "dead.ndjson"),
		"SHUTDOWN_DRAIN_DELAY": "2s",
		"SHUTDOWN_TIMEOUT":     "20s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, &stderr) }()
	var in string
	testkit.Eventually(t, "the start", func() bool {
		var ok bool
		in, _, ok = startedLine(stderr.String())
		return ok
	})
	base := "http://" + in
	if code, _ := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d before the stop, want 200", code)
	}
	cancel() // as SIGTERM does
	testkit.Eventually(t, "/readyz to turn 503", func() bool { code, _ := httpGet(t, base+"/readyz"); return code == http.StatusServiceUnavailable })
	sendEvents(t, in, 5) // 7 events, still served during the delay
	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d during the drain delay, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the ingest listener still answers after the stop")
	}
	if got := len(readEvents(t, env["LOG_PATH"])); got != 7 {
		t.Errorf("the log holds %d events, want the 7 sent during the drain delay", got)
	}
}

// TestFullDiskExitsNonZero: with the event log and the dead-letter file on
// a full device (/dev/full answers every write with ENOSPC), a graceful
// stop cannot save the queued events: GoTrack logs how many it lost and
// exits non-zero.
func TestFullDiskExitsNonZero(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	p := startGotrack(t, "LOG_PATH=/dev/full", "DEAD_LETTER_PATH=/dev/full", "SHUTDOWN_TIMEOUT=2s", "RETRY_MAX_BACKOFF=50ms")
	sendEvents(t, p.ingest, 5) // 7 events
	p.signal(t, syscall.SIGTERM)
	select {
	case err := <-p.exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("gotrack exited with %v, want exit status 1\n%s", err, p.stderr)
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("gotrack did not stop:\n%s", p.stderr)
	}
	logs := p.stderr.String()
	if !strings.Contains(logs, `"msg":"acknowledged events were lost: neither delivered nor dead-lettered","events":7`) {
		t.Errorf("the logs do not give the number lost (7):\n%s", logs)
	}
	if !strings.Contains(logs, "gotrack: ") || !strings.Contains(logs[strings.LastIndex(logs, "gotrack: "):], "7 acknowledged events lost") {
		t.Errorf("the exit error does not name the loss:\n%s", logs)
	}
	if strings.Contains(logs, `"dead_lettered":7`) {
		t.Errorf("events that could not be written are reported dead-lettered:\n%s", logs)
	}
}

// TestDrainDelayWithinTimeout: SHUTDOWN_TIMEOUT bounds the whole stop, so
// a drain delay that does not fit in it is refused at start.
func TestDrainDelayWithinTimeout(t *testing.T) {
	env := map[string]string{"SHUTDOWN_DRAIN_DELAY": "30s", "SHUTDOWN_TIMEOUT": "30s", "SERVER_ADDR": "127.0.0.1:0"}
	err := run(t.Context(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SHUTDOWN_DRAIN_DELAY=30s is not shorter than SHUTDOWN_TIMEOUT=30s") {
		t.Fatalf("run = %v, want the drain delay refused", err)
	}
}

// TestStalledRequestDoesNotEatTheDrain: a client that stalls in the middle
// of a /collect body when SIGTERM comes must not keep the ingest listener's
// shutdown waiting until the deadline, leaving the pipeline no time: the
// events already acknowledged, which the sink (on a full device) cannot
// take, still reach the dead-letter file instead of being lost. The
// stalled request was never acknowledged, so cutting it off loses nothing.
func TestStalledRequestDoesNotEatTheDrain(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	p := startGotrack(t, "LOG_PATH=/dev/full", "SHUTDOWN_TIMEOUT=4s", "RETRY_MAX_BACKOFF=50ms",
		"METRICS_ENABLED=true", "METRICS_ADDR="+freePort(t))
	sendEvents(t, p.ingest, 5) // 7 events
	c, err := net.Dial("tcp", p.ingest)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":"); err != nil {
		t.Fatal(err)
	}
	for metricValue(t, p.metrics, "gotrack_inflight_body_bytes") == 0 { // the handler is reading the body
		time.Sleep(10 * time.Millisecond)
	}
	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(40 * time.Second):
		t.Fatalf("gotrack did not stop:\n%s", p.stderr)
	}
	logs := p.stderr.String()
	if strings.Contains(logs, "acknowledged events were lost") || !strings.Contains(logs, `"dead_lettered":7`) {
		t.Errorf("a stalled request cost the drain its time: want the 7 events dead-lettered, none lost:\n%s", logs)
	}
	if n := len(readDeadLetters(t, p.path("dead.ndjson"))); n != 7 {
		t.Errorf("%d dead letters, want 7", n)
	}
}

func readDeadLetters(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestStuckSinkQueueDeadLettered: the event log is a named pipe that
// nobody reads, so the NDJSON sink's write blocks for good. At SIGTERM the
// stuck write's batch and the whole queue behind it still reach the
// (working) dead-letter file within SHUTDOWN_TIMEOUT: nothing is lost.
func TestStuckSinkQueueDeadLettered(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "events.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no named pipes:", err)
	}
	// Hold the read end open without reading: writes fill the pipe, then block.
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The takeover gets the last 5% of SHUTDOWN_TIMEOUT to dead-letter
	// 10,050 events (3 MB and an fsync): 400 ms with 8s, which a busy
	// machine's disk needs; 150 ms with 3s was not always enough.
	p := startGotrack(t, "LOG_PATH="+fifo, "SHUTDOWN_TIMEOUT=8s", "QUEUE_SIZE=20000")
	body := strings.Repeat(`{"type":"a"},`, 49) + `{"type":"a"}`
	const requests = 201 // 10,050 events
	for i := range requests {
		resp, err := http.Post("http://"+p.ingest+"/collect", "application/json", strings.NewReader("["+body+"]"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	p.signal(t, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("gotrack did not stop within its 8s SHUTDOWN_TIMEOUT (and far beyond):\n%s", p.stderr)
	}
	logs := p.stderr.String()
	if strings.Contains(logs, "acknowledged events were lost") {
		t.Errorf("events were lost although the dead-letter file works:\n%s", logs)
	}
	if n := len(readDeadLetters(t, p.path("dead.ndjson"))); n != 10050 {
		t.Errorf("%d dead letters, want all 10050 events the stuck sink did not confirm", n)
	}
}

// TestGOMAXPROCS: unless the operator sets GOMAXPROCS, gotrack runs two
// more scheduler processors than the Go default, so that a goroutine in
// fsync does not leave a core idle; an operator's GOMAXPROCS is kept, and
// GOMAXPROCS=0 (which Go ignores) keeps Go's default.
func TestGOMAXPROCS(t *testing.T) {
	// The default is taken from the runtime, not from this process's
	// setting: tests that call serve in this process have raised it, and
	// go test -cpu or a GOMAXPROCS for the tests change it too. The
	// children get no GOMAXPROCS unless a case sets one.
	cur := runtime.GOMAXPROCS(0)
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(cur)
	started := func(env ...string) int {
		p := startGotrack(t, env...)
		for line := range strings.Lines(p.stderr.String()) {
			var l struct {
				Msg   string `json:"msg"`
				Procs int    `json:"gomaxprocs"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "gotrack started" {
				return l.Procs
			}
		}
		t.Fatalf("no started line:\n%s", p.stderr)
		return 0
	}
	want := def + 2
	if def < runtime.NumCPU() { // a CPU quota: Go's default is kept
		want = def
	}
	if got := started(); got != want {
		t.Errorf("GOMAXPROCS unset: gotrack runs %d processors, want %d (Go's default %d, %d CPUs)", got, want, def, runtime.NumCPU())
	}
	if got := started("GOMAXPROCS=3"); got != 3 {
		t.Errorf("GOMAXPROCS=3: gotrack runs %d processors", got)
	}
	if got := started("GOMAXPROCS=0"); got != def {
		t.Errorf("GOMAXPROCS=0: gotrack runs %d processors, want Go's default %d", got, def)
	}
}
