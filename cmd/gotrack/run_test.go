package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/testpki"
)

// runInProcess starts run with env and returns the metrics URL once it
// serves, and a stop function that cancels it and returns run's error.
func runInProcess(t *testing.T, env map[string]string) (metricsURL string, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	full := map[string]string{
		"SERVER_ADDR":      "127.0.0.1:0",
		"LOG_PATH":         filepath.Join(dir, "events.ndjson"),
		"DEAD_LETTER_PATH": filepath.Join(dir, "dead.ndjson"),
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return full[k] }, io.Discard, &stderr) }()
	deadline := time.After(10 * time.Second)
	for {
		if _, m, ok := startedLine(stderr.String()); ok {
			return m, func() error { cancel(); return <-done }
		}
		select {
		case err := <-done:
			cancel()
			return "", func() error { return err }
		case <-deadline:
			cancel()
			t.Fatalf("run did not start:\n%s", stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestMetricsConfigMatrix drives the real run function through each
// security mode of the metrics listener, and through the refusals.
func TestMetricsConfigMatrix(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "matrix CA")
	cert, key := ca.Server(t, "gotrack").Write(t, dir, "server")
	caFile := filepath.Join(dir, "ca.crt")
	testpki.WriteFile(t, caFile, ca.CertPEM)
	emptyCA := filepath.Join(dir, "empty.crt")
	testpki.WriteFile(t, emptyCA, []byte("no certificates here\n"))
	good := ca.Client(t, "prometheus").TLS
	token := filepath.Join(dir, "token")
	testpki.WriteFile(t, token, []byte("matrix-token-0123456789"))
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), 10)
	htpasswd := filepath.Join(dir, "htpasswd")
	testpki.WriteFile(t, htpasswd, []byte("prom:"+string(hash)+"\n"))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	tlsClient := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool, Certificates: certs}}}
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	on := map[string]string{"METRICS_ENABLED": "true", "METRICS_ADDR": "127.0.0.1:0"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range on {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	for _, tc := range []struct {
		name    string
		env     map[string]string
		refusal string // the start error must mention this; "" means it must start
		client  *http.Client
		auth    []string // header name and value that authenticate
		scheme  string
	}{
		{name: "disabled by default", env: map[string]string{}},
		{name: "plain on loopback", env: with(), client: plain, scheme: "http"},
		{name: "TLS", env: with("METRICS_TLS_CERT", cert, "METRICS_TLS_KEY", key, "METRICS_REQUIRE_TLS", "true"),
			client: tlsClient(), scheme: "https"},
		{name: "mTLS and bearer", env: with("METRICS_TLS_CERT", cert, "METRICS_TLS_KEY", key, "METRICS_CLIENT_CA", caFile,
			"METRICS_BEARER_TOKEN_FILE", token), client: tlsClient(good), auth: []string{"Authorization", "Bearer matrix-token-0123456789"}, scheme: "https"},
		{name: "basic auth", env: with("METRICS_BASIC_AUTH_FILE", htpasswd), client: plain,
			auth: []string{"Authorization", "Basic cHJvbTpwdw=="}, scheme: "http"},
		{name: "public without TLS or auth", env: with("METRICS_ADDR", "0.0.0.0:0"), refusal: "scrapers are not authenticated"},
		{name: "TLS required but missing", env: with("METRICS_REQUIRE_TLS", "true"), refusal: "METRICS_REQUIRE_TLS=true"},
		{name: "unusable certificate", env: with("METRICS_TLS_CERT", caFile, "METRICS_TLS_KEY", key, "METRICS_REQUIRE_TLS", "true"),
			refusal: "METRICS_TLS_CERT and METRICS_TLS_KEY"},
		{name: "empty client CA", env: with("METRICS_TLS_CERT", cert, "METRICS_TLS_KEY", key, "METRICS_CLIENT_CA", emptyCA),
			refusal: "no PEM certificate"},
		{name: "address taken", env: with("METRICS_ADDR", taken.Addr().String()), refusal: "METRICS_ADDR=" + taken.Addr().String() + " is already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metricsURL, stop := runInProcess(t, tc.env)
			if tc.refusal != "" {
				err := stop()
				if err == nil || !strings.Contains(err.Error(), tc.refusal) {
					t.Fatalf("run = %v, want a refusal mentioning %q", err, tc.refusal)
				}
				return
			}
			defer func() {
				if err := stop(); err != nil {
					t.Errorf("run returned %v after a clean stop", err)
				}
			}()
			if tc.client == nil {
				if metricsURL != "disabled" {
					t.Errorf("metrics = %q, want disabled", metricsURL)
				}
				return
			}
			if !strings.HasPrefix(metricsURL, tc.scheme+"://127.0.0.1:") {
				t.Fatalf("metrics URL %q, want scheme %s on loopback", metricsURL, tc.scheme)
			}
			req, _ := http.NewRequest("GET", metricsURL, nil)
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if tc.auth != nil {
				if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("without credentials: %d, want 401 with WWW-Authenticate", resp.StatusCode)
				}
				req.Header.Set(tc.auth[0], tc.auth[1])
				if resp, err = tc.client.Do(req); err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			if resp.StatusCode != 200 {
				t.Errorf("scrape: %d, want 200", resp.StatusCode)
			}
		})
	}
}

// TestTypoHintWithInvalidConfig: a misspelt required setting (PG_DNS for
// PG_DSN) makes the configuration invalid, and the report must still name
// the typo, which is the one hint the operator needs.
func TestTypoHintWithInvalidConfig(t *testing.T) {
	t.Setenv("PG_DNS", "postgres://u@127.0.0.1/db")
	env := map[string]string{"OUTPUTS": "postgres"}
	var stderr syncBuffer
	err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, &stderr)
	if err == nil {
		t.Fatal("run started without PG_DSN")
	}
	out := err.Error() + "\n" + stderr.String()
	if !strings.Contains(out, "PG_DNS") || !strings.Contains(out, "did you mean PG_DSN?") {
		t.Fatalf("no typo hint for PG_DNS; error and stderr:\n%s", out)
	}
}
