package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/sink/ndjson"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.ServerAddr != ":19890", len(c.Outputs) != 1 || c.Outputs[0] != "log", c.Log.Path != "./events.ndjson":
		t.Errorf("ingest defaults wrong: %+v", c)
	case c.Log.Fsync != ndjson.FsyncBatch, c.MaxBodyBytes != 1<<20, c.MaxBatchEvents != 500:
		t.Errorf("limits wrong: %+v", c)
	case !c.Privacy.RespectDNT, c.Privacy.IPMode != event.IPTruncate, c.Privacy.TrustProxy, len(c.Privacy.SanitizeParams) == 0:
		t.Errorf("privacy defaults wrong: %+v", c.Privacy)
	case c.Pipeline.QueueSize != 10000, c.Pipeline.BatchSize != 500, c.Pipeline.BatchBytes != 1<<20,
		c.Pipeline.FlushInterval != 200*time.Millisecond, c.Pipeline.FullPolicy != pipeline.Block,
		c.Pipeline.EnqueueTimeout != 100*time.Millisecond, c.ShutdownTimeout != 30*time.Second:
		t.Errorf("pipeline defaults wrong: %+v", c.Pipeline)
	case c.Metrics.Enabled, c.Metrics.Addr != "127.0.0.1:9090":
		t.Errorf("metrics defaults wrong: %+v", c.Metrics)
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	_, err := Load(env(
		"OUTPUTS", "log,s3,log",
		"QUEUE_SIZE", "ten",
		"FLUSH_INTERVAL", "fast",
		"IP_MODE", "hash",
		"DNT_RESPECT", "maybe",
		"TRUSTED_PROXIES", "10.0.0.0/8,nonsense",
		"METRICS_ENABLED", "true",
		"METRICS_ADDR", "0.0.0.0:9090",
		"METRICS_TLS_CERT", "/nonexistent/cert.pem",
	))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load = %v, want a *config.Error", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`unknown sink "s3"`, `names "log" twice`, `QUEUE_SIZE="ten"`, `FLUSH_INTERVAL="fast"`,
		"IP_MODE=hash needs IP_HASH_SECRET", `DNT_RESPECT="maybe"`, "nonsense",
		"TRUSTED_PROXIES is set but TRUST_PROXY is false",
		"METRICS_TLS_CERT and METRICS_TLS_KEY must be set together", "METRICS_TLS_CERT: open /nonexistent/cert.pem",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if len(ce.Problems) < 10 {
		t.Errorf("%d problems reported, want every one:\n%s", len(ce.Problems), msg)
	}
}

func TestSecretNotEchoed(t *testing.T) {
	_, err := Load(env("IP_MODE", "hash", "IP_HASH_SECRET", "hunter2"))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Load = %v; a short secret must be refused without being echoed", err)
	}
}

func TestMetricsExposure(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		ok   bool
	}{
		{"loopback plain", []string{"METRICS_ADDR", "127.0.0.1:9191"}, true},
		{"localhost plain", []string{"METRICS_ADDR", "localhost:9191"}, true},
		{"ipv6 loopback", []string{"METRICS_ADDR", "[::1]:9191"}, true},
		{"all interfaces plain", []string{"METRICS_ADDR", ":9191"}, false},
		{"public plain", []string{"METRICS_ADDR", "0.0.0.0:9191"}, false},
		{"public with token", []string{"METRICS_ADDR", "0.0.0.0:9191", "METRICS_BEARER_TOKEN_FILE", token}, true},
		{"public, explicitly insecure", []string{"METRICS_ADDR", "0.0.0.0:9191", "METRICS_ALLOW_INSECURE", "true"}, true},
		{"require TLS without cert", []string{"METRICS_REQUIRE_TLS", "true"}, false},
		{"mTLS without TLS", []string{"METRICS_CLIENT_CA", token}, false},
		{"same port as ingest", []string{"METRICS_ADDR", ":19890"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(env(append(tc.env, "METRICS_ENABLED", "true")...))
			if (err == nil) != tc.ok {
				t.Errorf("Load = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestMetricsTLSAloneIsNotAuth: TLS without client authentication on a
// non-loopback address is refused, and the refusal names every way out.
func TestMetricsTLSAloneIsNotAuth(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsOnly := []string{"METRICS_ENABLED", "true", "METRICS_ADDR", "0.0.0.0:9443", "METRICS_TLS_CERT", file, "METRICS_TLS_KEY", file}
	_, err := Load(env(tlsOnly...))
	if err == nil {
		t.Fatal("TLS without client authentication on 0.0.0.0 was accepted")
	}
	for _, want := range []string{"METRICS_CLIENT_CA", "METRICS_BEARER_TOKEN_FILE", "METRICS_BASIC_AUTH_FILE", "METRICS_ALLOW_INSECURE=true", "127.0.0.1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not name %s: %v", want, err)
		}
	}
	for _, extra := range [][]string{
		{"METRICS_CLIENT_CA", file},
		{"METRICS_BASIC_AUTH_FILE", file},
		{"METRICS_ALLOW_INSECURE", "true"},
	} {
		if _, err := Load(env(append(extra, tlsOnly...)...)); err != nil {
			t.Errorf("TLS with %s=%s: %v", extra[0], extra[1], err)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the README's configuration table")

// TestREADMETable keeps the README's configuration table, between its
// config:start and config:end markers, equal to what `gotrack -h` prints.
func TestREADMETable(t *testing.T) {
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- config:start -->\n", "<!-- config:end -->"
	before, rest, ok1 := strings.Cut(string(readme), begin)
	_, after, ok2 := strings.Cut(rest, end)
	if !ok1 || !ok2 {
		t.Fatalf("README.md lacks the %q and %q markers", begin, end)
	}
	want := before + begin + Markdown() + end + after
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(readme) != want {
		t.Errorf("README.md's configuration table is out of date; run go test ./internal/config -run README -update")
	}
}

// TestBadValueIsNotCrossCheckedAsZero: a MAX_INFLIGHT_BYTES that does not
// parse is reported once, for what it is, not a second time as
// "MAX_INFLIGHT_BYTES=0 must be larger than MAX_BODY_BYTES", a value the
// operator never set.
func TestBadValueIsNotCrossCheckedAsZero(t *testing.T) {
	_, err := Load(env("MAX_INFLIGHT_BYTES", "1000"))
	if err == nil {
		t.Fatal("MAX_INFLIGHT_BYTES=1000 accepted")
	}
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || strings.Contains(err.Error(), "MAX_INFLIGHT_BYTES=0") {
		t.Errorf("want one problem, about the value given:\n%s", err)
	}
}
