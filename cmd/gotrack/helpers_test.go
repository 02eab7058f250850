package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// binPath is the gotrack binary built once for the end-to-end tests.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gotrack-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "gotrack")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build gotrack: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startedLine finds the "gotrack started" log line in JSON logs.
func startedLine(logs string) (ingest, metrics string, ok bool) {
	for line := range strings.Lines(logs) {
		var l struct {
			Msg     string `json:"msg"`
			Ingest  string `json:"ingest_addr"`
			Metrics string `json:"metrics"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "gotrack started" {
			return l.Ingest, l.Metrics, true
		}
	}
	return "", "", false
}

// proc is a gotrack process started by a test.
type proc struct {
	cmd     *exec.Cmd
	stderr  *syncBuffer
	dir     string
	ingest  string // host:port
	metrics string // URL of /metrics, or "disabled"
	exited  chan error
}

// startGotrack runs the binary with env on top of sane test defaults (a
// free loopback port, files in a temporary directory) and waits until it
// is serving.
func startGotrack(t *testing.T, env ...string) *proc {
	t.Helper()
	return startGotrackIn(t, t.TempDir(), env...)
}

// startGotrackIn is startGotrack with the files in dir, so that a second
// process can take over the first one's spool and files.
func startGotrackIn(t *testing.T, dir string, env ...string) *proc {
	t.Helper()
	vars := []string{
		"PATH=" + os.Getenv("PATH"),
		"SERVER_ADDR=127.0.0.1:0",
		"LOG_PATH=" + filepath.Join(dir, "events.ndjson"),
		"DEAD_LETTER_PATH=" + filepath.Join(dir, "dead.ndjson"),
		"SHUTDOWN_TIMEOUT=20s",
	}
	p := &proc{stderr: &syncBuffer{}, dir: dir, exited: make(chan error, 1)}
	p.cmd = exec.Command(binPath)
	p.cmd.Env = append(vars, env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("gotrack logs:\n%s", p.stderr)
		}
	})
	deadline := time.After(15 * time.Second)
	for {
		if in, m, ok := startedLine(p.stderr.String()); ok {
			p.ingest, p.metrics = in, m
			return p
		}
		select {
		case err := <-p.exited:
			t.Fatalf("gotrack exited before serving: %v\n%s", err, p.stderr)
		case <-deadline:
			t.Fatalf("gotrack did not start in time:\n%s", p.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	p.wait(t)
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

func (p *proc) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("gotrack exited with %v:\n%s", err, p.stderr)
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("gotrack did not stop in time:\n%s", p.stderr)
	}
}

func (p *proc) path(name string) string { return filepath.Join(p.dir, name) }

// readEvents reads an NDJSON event file, checks every line against the
// event schema, and counts the event ids.
func readEvents(t *testing.T, path string) map[string]int {
	t.Helper()
	schema := loadSchema(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(sc.Bytes()))
		if err != nil {
			t.Fatalf("%s line %d is not JSON: %v", path, n, err)
		}
		if err := schema.Validate(v); err != nil {
			t.Fatalf("%s line %d breaks the event schema: %v\n%s", path, n, err, sc.Bytes())
		}
		e, err := event.Decode(sc.Bytes())
		if err != nil {
			t.Fatalf("%s line %d: %v", path, n, err)
		}
		ids[e.EventID]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

var (
	schemaOnce sync.Once
	schema     *jsonschema.Schema
	schemaErr  error
)

func loadSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		schema, schemaErr = c.Compile("../../docs/event.schema.json")
	})
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schema
}

// requireTool is testkit.RequireTool: a missing tool skips the test only
// outside CI and scripts/test.sh, and fails it there.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	return testkit.RequireTool(t, name)
}

// httpGet fetches url and returns the status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// requireOnceInTable fails unless each id is in the PostgreSQL table
// exactly once.
func requireOnceInTable(t *testing.T, table string, ids []string) {
	t.Helper()
	stored := pgtest.IDs(t, table)
	for _, id := range ids {
		if stored[id] != 1 {
			t.Fatalf("event %s was answered 2xx but is in the table %d times (%d of %d stored)", id, stored[id], len(stored), len(ids))
		}
	}
}
