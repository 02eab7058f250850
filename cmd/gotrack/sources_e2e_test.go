package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gotrack/gotrack/internal/testkit"
)

// TestSourcesReloadE2E runs gotrack with AUTH_MODE=key, checks a 401 and a
// 202 with the source_id stored, then reloads SOURCES_FILE on SIGHUP: a
// good file swaps the keys, a bad one keeps them and says why.
func TestSourcesReloadE2E(t *testing.T) {
	dir := t.TempDir()
	sources := filepath.Join(dir, "sources.yaml")
	write := func(s string) {
		if err := os.WriteFile(sources, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("sources:\n  - id: first\n    write_keys: [wk_first_1]\n")
	p := startGotrackIn(t, dir, "AUTH_MODE=key", "SOURCES_FILE="+sources, "FLUSH_INTERVAL=5ms")
	post := func(key string) int {
		t.Helper()
		r, _ := http.NewRequest("POST", "http://"+p.ingest+"/collect", strings.NewReader(`{"type":"e2e"}`))
		r.Header.Set("Content-Type", "application/json")
		if key != "" {
			r.SetBasicAuth(key, "")
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(""); got != http.StatusUnauthorized {
		t.Fatalf("no key: %d", got)
	}
	if got := post("wk_first_1"); got != http.StatusAccepted {
		t.Fatalf("good key: %d", got)
	}

	write("sources:\n  - id: second\n    write_keys: [wk_second_1]\n")
	p.signal(t, syscall.SIGHUP)
	testkit.Eventually(t, "the reload", func() bool { return strings.Contains(p.stderr.String(), "sources reloaded") })
	if got := post("wk_first_1"); got != http.StatusUnauthorized {
		t.Errorf("a key of the old file after the reload: %d", got)
	}
	if got := post("wk_second_1"); got != http.StatusAccepted {
		t.Errorf("a key of the new file after the reload: %d", got)
	}

	write("sources:\n  - id: second\n    write_keys: [wk_second_1]\n  - id: second\n    write_keys: [wk_third_11]\n")
	p.signal(t, syscall.SIGHUP)
	testkit.Eventually(t, "the failed reload", func() bool { return strings.Contains(p.stderr.String(), "sources reload failed") })
	if got := post("wk_second_1"); got != http.StatusAccepted {
		t.Errorf("a bad file lost the previous keys: %d", got)
	}
	p.stop(t)
	if !strings.Contains(p.stderr.String(), "duplicate id") {
		t.Errorf("the failed reload does not say why")
	}
	for _, key := range []string{"wk_first_1", "wk_second_1", "wk_third_11"} {
		if strings.Contains(p.stderr.String(), key) {
			t.Errorf("a key reached the logs: %s", key)
		}
	}
	events := readEvents(t, p.path("events.ndjson"))
	b, _ := os.ReadFile(p.path("events.ndjson"))
	if len(events) != 3 || strings.Count(string(b), `"source_id":"first"`) != 1 || strings.Count(string(b), `"source_id":"second"`) != 2 {
		t.Errorf("stored events:\n%s", b)
	}
}
