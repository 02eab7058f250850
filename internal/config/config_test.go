package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/sink/ndjson"
	"github.com/gotrack/gotrack/internal/testpki"
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

// TestEveryProblemAtOnce gives Load several problems of each kind: values
// that do not parse, values that do not fit together, sink options, and
// files whose content is wrong. One error must list them all.
func TestEveryProblemAtOnce(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	shortToken := file("token", "t0ken")
	htpasswd := file("htpasswd", "alice:plaintext-password\n")
	garbage := file("garbage.pem", "not PEM at all")
	emptyPassword := file("sasl-password", "")
	_, err := Load(env(
		"OUTPUTS", "log,s3,log,postgres,kafka",
		"QUEUE_SIZE", "ten",
		"FLUSH_INTERVAL", "fast",
		"IP_MODE", "hash",
		"DNT_RESPECT", "maybe",
		"TRUSTED_PROXIES", "10.0.0.0/8,nonsense",
		"CORS_ORIGINS", "https://ok.example,example.com,https://x.example/path,https://y.example:443,http://[::1]:8080",
		"METRICS_ENABLED", "true",
		"METRICS_ADDR", "0.0.0.0:9090",
		"METRICS_TLS_CERT", garbage,
		"METRICS_TLS_KEY", garbage,
		"METRICS_CLIENT_CA", garbage,
		"METRICS_BEARER_TOKEN_FILE", shortToken,
		"METRICS_BASIC_AUTH_FILE", htpasswd,
		"PG_DSN", "postgres://u:secretpw@[::1",
		"PG_PARALLEL", "100",
		"KAFKA_BROKERS", "broker-without-port",
		"KAFKA_TLS_CA", garbage,
		"KAFKA_SASL_MECHANISM", "PLAIN",
		"KAFKA_SASL_USER", "gotrack",
		"KAFKA_SASL_PASSWORD_FILE", emptyPassword,
	))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load = %v, want a *config.Error", err)
	}
	msg := err.Error()
	for _, want := range []string{
		// the environment
		`unknown sink "s3"`, `names "log" twice`, `QUEUE_SIZE="ten"`, `FLUSH_INTERVAL="fast"`,
		"IP_MODE=hash needs IP_HASH_SECRET", `DNT_RESPECT="maybe"`, "nonsense",
		"TRUSTED_PROXIES is set but TRUST_PROXY is false",
		`(environment): has entries that are not origins: example.com, https://x.example/path, https://y.example:443; want`,
		"PG_PARALLEL=100 is out of range; want 1 to 64",
		`KAFKA_BROKERS entry "broker-without-port" is not host:port`,
		// the files
		"METRICS_TLS_CERT and METRICS_TLS_KEY: tls: failed to find any PEM data",
		"METRICS_CLIENT_CA: " + garbage + " holds no PEM certificate",
		"METRICS_BEARER_TOKEN_FILE: the token in " + shortToken + " is shorter than 16 characters",
		`METRICS_BASIC_AUTH_FILE: line 1: user "alice" does not have a bcrypt hash`,
		"PG_DSN is not valid",
		"KAFKA_TLS_CA: " + garbage + " holds no PEM certificate",
		"KAFKA_SASL_PASSWORD_FILE: " + emptyPassword + " is empty",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, " option ") {
		t.Errorf("a sink option is not mapped to its setting's name:\n%s", msg)
	}
	if strings.Contains(msg, "secretpw") {
		t.Errorf("the error echoes PG_DSN's password:\n%s", msg)
	}
	if len(ce.Problems) < 18 {
		t.Errorf("%d problems reported, want every one:\n%s", len(ce.Problems), msg)
	}
}

// TestEveryErrorSaysWhatIsAllowed sets each setting, in turn, to a value
// that is wrong for any setting, and checks that every problem reported
// about it says what it wants.
func TestEveryErrorSaysWhatIsAllowed(t *testing.T) {
	base := []string{"OUTPUTS", "log,postgres,kafka", "PG_DSN", "postgres://localhost/db", "KAFKA_BROKERS", "127.0.0.1:9092",
		"METRICS_ENABLED", "true"}
	for _, s := range settings(&Config{}) {
		for _, bogus := range []string{"%bogus value%", "-1"} {
			kv := append(slices.Clone(base), s.name, bogus)
			_, err := Load(env(kv...))
			var ce *Error
			if !errors.As(err, &ce) {
				continue // a free-form setting that takes anything
			}
			for _, p := range ce.Problems {
				if strings.HasPrefix(p.Error(), s.name) && !strings.Contains(p.Error(), "want ") {
					t.Errorf("%s=%q: the problem does not say what is allowed: %v", s.name, bogus, p)
				}
			}
		}
	}
}

func TestMessages(t *testing.T) {
	for _, tc := range []struct{ env, want []string }{
		{[]string{"LOG_LEVEL", "verbose"}, []string{"(1 problem):", `LOG_LEVEL="verbose" (environment): want debug, info, warn or error`}},
		{[]string{"SHUTDOWN_TIMEOUT", "200ms"}, []string{"want a duration from 1s to 1h, such as 5s"}},
		{[]string{"SHUTDOWN_TIMEOUT", "0", "LOG_FORMAT", "xml"}, []string{"(2 problems):"}},
	} {
		_, err := Load(env(tc.env...))
		if err == nil {
			t.Errorf("%v: Load succeeded", tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error does not say %q:\n%v", tc.env, w, err)
			}
		}
	}
}

// TestEmptyIsUnset: an empty value takes the default, as the README says.
func TestEmptyIsUnset(t *testing.T) {
	c, err := Load(env("LOG_PATH", "", "KAFKA_TOPIC", "", "DEAD_LETTER_PATH", "", "QUEUE_SIZE", ""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Path != "./events.ndjson" || c.Kafka.Topic != "gotrack.events" || c.DeadLetterPath != "./dead-letter.ndjson" || c.Pipeline.QueueSize != 10000 {
		t.Errorf("empty values did not take the defaults: %+v", c)
	}
}

func TestSinkOptionsFromSettings(t *testing.T) {
	c, err := Load(env("OUTPUTS", "postgres,kafka", "PG_DSN", "postgres://localhost/db", "PG_BATCH_SIZE", "7000",
		"PG_BATCH_BYTES", "2048", "KAFKA_BROKERS", "127.0.0.1:9092", "QUEUE_SIZE", "8000"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Postgres.BatchSize != 7000 || c.Postgres.BatchBytes != 2048 || c.Kafka.MaxBufferedRecords != 8000 {
		t.Errorf("sink options wrong: postgres %+v, kafka %+v", c.Postgres, c.Kafka)
	}
	if c.Postgres.Validate() != nil || c.Kafka.Validate() != nil || c.Log.Validate() != nil {
		t.Errorf("Load returned options their sinks refuse")
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
	ca := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, ca, testpki.NewCA(t, "test CA").CertPEM)
	if err := os.WriteFile(token, []byte("a-token-of-24-characters"), 0o600); err != nil {
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
		{"mTLS without TLS", []string{"METRICS_CLIENT_CA", ca}, false},
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
	ca := testpki.NewCA(t, "test CA")
	cert, key := ca.Server(t, "localhost").Write(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.CertPEM)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	testpki.WriteFile(t, htpasswd, []byte("alice:"+string(hash)+"\n"))
	tlsOnly := []string{"METRICS_ENABLED", "true", "METRICS_ADDR", "0.0.0.0:9443", "METRICS_TLS_CERT", cert, "METRICS_TLS_KEY", key}
	_, err = Load(env(tlsOnly...))
	if err == nil {
		t.Fatal("TLS without client authentication on 0.0.0.0 was accepted")
	}
	for _, want := range []string{"METRICS_CLIENT_CA", "METRICS_BEARER_TOKEN_FILE", "METRICS_BASIC_AUTH_FILE", "METRICS_ALLOW_INSECURE=true", "127.0.0.1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not name %s: %v", want, err)
		}
	}
	for _, extra := range [][]string{
		{"METRICS_CLIENT_CA", caFile},
		{"METRICS_BASIC_AUTH_FILE", htpasswd},
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

func TestTypos(t *testing.T) {
	got := Typos([]string{
		"SPOOL_DIRR=/var/lib/gotrack", "PG_DNS=postgres://x", "spool_dir=/var/lib/gotrack", "METRICS_ENABLE=true", "KAFKA_BROKER=k:9092",
		"SPOOL_DIR=/var/lib/gotrack", "OUTPUTS=log", // settings
		"PATH=/usr/bin", "HOME=/root", "LOGNAME=root", "SPOOLER=x", // no GoTrack prefix
		"PG_MAJOR=16", "PG_TEST_DSN=postgres://t", "KAFKA_HEAP_OPTS=-Xmx1G", "KAFKA_CFG_NODE_ID=1", "SERVER_NAME=example", // foreign
	})
	want := []string{
		"KAFKA_BROKER is not a GoTrack setting and is ignored; did you mean KAFKA_BROKERS?",
		"METRICS_ENABLE is not a GoTrack setting and is ignored; did you mean METRICS_ENABLED?",
		"PG_DNS is not a GoTrack setting and is ignored; did you mean PG_DSN?",
		"SPOOL_DIRR is not a GoTrack setting and is ignored; did you mean SPOOL_DIR?",
		"spool_dir is not a GoTrack setting and is ignored; did you mean SPOOL_DIR?",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Typos =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestLogBatchSize: the log sink batches LOG_BATCH_SIZE events, 2000 when
// unset but never more than QUEUE_SIZE then; a value set larger than
// QUEUE_SIZE is refused, as BATCH_SIZE's is, but only when the log sink
// is in OUTPUTS, as PG_BATCH_SIZE's is only for postgres.
func TestLogBatchSize(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{nil, ndjson.DefaultBatchSize},
		{[]string{"QUEUE_SIZE", "1000"}, 1000},
		{[]string{"LOG_BATCH_SIZE", "300"}, 300},
		{[]string{"LOG_BATCH_SIZE", "800", "QUEUE_SIZE", "800", "BATCH_SIZE", "100"}, 800},
	} {
		c, err := Load(env(tc.env...))
		if err != nil {
			t.Errorf("Load(%q): %v", tc.env, err)
			continue
		}
		if c.Log.BatchSize != tc.want {
			t.Errorf("Load(%q): log batch size %d, want %d", tc.env, c.Log.BatchSize, tc.want)
		}
	}
	if _, err := Load(env("OUTPUTS", "kafka", "KAFKA_BROKERS", "127.0.0.1:9092", "QUEUE_SIZE", "1000", "LOG_BATCH_SIZE", "5000")); err != nil {
		t.Errorf("LOG_BATCH_SIZE larger than QUEUE_SIZE without the log sink: %v", err)
	}
	for _, tc := range [][]string{{"LOG_BATCH_SIZE", "1001", "QUEUE_SIZE", "1000"}, {"LOG_BATCH_SIZE", "0"}, {"LOG_BATCH_SIZE", "x"}} {
		if _, err := Load(env(tc...)); err == nil || !strings.Contains(err.Error(), "LOG_BATCH_SIZE") {
			t.Errorf("Load(%q) = %v, want an error naming LOG_BATCH_SIZE", tc, err)
		}
	}
}
