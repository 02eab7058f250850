package ingest

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/source"
)

// newAuth returns an AUTH_MODE=key authenticator of the sources file
// content, on the clock now (nil: time.Now), its metrics on reg (nil: a
// registry of its own).
func newAuth(t testing.TB, content string, now func() time.Time, reg prometheus.Registerer) *source.Auth {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sources.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := source.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	auth, err := source.New(source.Options{Mode: source.ModeKey, Path: path, Set: set, SignatureTolerance: 5 * time.Minute, Now: now},
		reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return auth
}

// secretFile writes a signing secret and returns its path.
func secretFile(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("a-signing-secret-long-enough\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
