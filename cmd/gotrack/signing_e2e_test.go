package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gotrack/gotrack/internal/testkit"
)

// docExample returns the fenced block that follows the marker
// <!-- signing-example:NAME --> in docs/sources.md.
func docExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/sources.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- signing-example:"+name+" -->\n```"+name+"\n")
	code, _, ok2 := strings.Cut(rest, "\n```\n")
	if !ok || !ok2 {
		t.Fatalf("docs/sources.md has no %s signing example", name)
	}
	return code + "\n"
}

// TestSigningExamplesE2E runs the shell (openssl) and Go signing examples
// of docs/sources.md against gotrack with a signing source, and checks
// that each request is accepted and stored with its source_id.
func TestSigningExamplesE2E(t *testing.T) {
	openssl := testkit.RequireTool(t, "openssl")
	_ = testkit.RequireTool(t, "curl")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to run the Go example")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "backend.secret")
	os.WriteFile(secret, []byte("a-signing-secret-of-some-length\n"), 0o600)
	sources := filepath.Join(dir, "sources.yaml")
	os.WriteFile(sources, []byte("sources:\n  - id: backend\n    write_keys: [wk_backend_1]\n    signing_secret_file: "+secret+"\n"), 0o600)
	p := startGotrackIn(t, dir, "AUTH_MODE=key", "SOURCES_FILE="+sources, "FLUSH_INTERVAL=5ms")
	env := append(os.Environ(), "GOTRACK_URL=http://"+p.ingest, "WRITE_KEY=wk_backend_1", "SECRET_FILE="+secret,
		"PATH="+filepath.Dir(openssl)+string(os.PathListSeparator)+os.Getenv("PATH"))

	sh := exec.Command("sh", "-eu", "-c", docExample(t, "sh"))
	sh.Env = env
	out, err := sh.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"accepted":1`) {
		t.Fatalf("shell example: %v\n%s", err, out)
	}

	main := filepath.Join(dir, "sign", "main.go")
	os.MkdirAll(filepath.Dir(main), 0o755)
	os.WriteFile(main, []byte(docExample(t, "go")), 0o644)
	run := exec.Command(goTool, "run", main)
	run.Env = env
	out, err = run.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "202 Accepted" {
		t.Fatalf("Go example: %v\n%s", err, out)
	}
	p.stop(t)
	b, _ := os.ReadFile(p.path("events.ndjson"))
	if strings.Count(string(b), `"source_id":"backend"`) != 2 {
		t.Errorf("stored events:\n%s", b)
	}
}
