package telemetry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/config"
	"github.com/gotrack/gotrack/internal/testkit"
	"github.com/gotrack/gotrack/internal/testpki"
)

// logBuffer collects JSON log lines from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the lines logged at level whose message contains msg.
func (l *logBuffer) records(t *testing.T, level, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["level"] == level && strings.Contains(rec["msg"].(string), msg) {
			out = append(out, rec)
		}
	}
	return out
}

func startLogged(t *testing.T, cfg config.Metrics) (*MetricsServer, *prometheus.Registry, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	reg := NewRegistry()
	m, err := NewMetricsServer(cfg, reg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return m, reg, logs
}

// TestClientCertRejectionsCountedAndLogged: every mTLS handshake refused
// (no certificate, another CA, a SAN off the list) is counted under
// reason="client_cert" and logged at WARN, without naming the client; a good
// certificate is not.
func TestClientCertRejectionsCountedAndLogged(t *testing.T) {
	p := newPKI(t)
	cfg := baseConfig()
	cfg.TLSCert, cfg.TLSKey, cfg.ClientCA = p.cert, p.key, p.caFile
	cfg.ClientAllowedSANs = []string{"prometheus.monitoring"}
	m, reg, logs := startLogged(t, cfg)
	url := "https://" + m.Addr() + "/metrics"

	for _, c := range []*http.Client{client(p.ca.Pool), client(p.ca.Pool, p.alien.TLS), client(p.ca.Pool, p.wrongSAN.TLS)} {
		if _, _, err := get(t, c, url); err == nil {
			t.Fatal("a bad client certificate was accepted")
		}
	}
	if code, _, err := get(t, client(p.ca.Pool, p.good.TLS), url); err != nil || code != 200 {
		t.Fatalf("good certificate: %d %v", code, err)
	}
	// The server counts a rejection as its handshake fails, which the client
	// may see a moment earlier.
	testkit.Eventually(t, "3 rejections counted", func() bool {
		return seriesValue(t, reg, "gotrack_metrics_auth_failures_total", "client_cert") >= 3
	})
	if got := seriesValue(t, reg, "gotrack_metrics_auth_failures_total", "client_cert"); got != 3 {
		t.Errorf("client_cert failures = %v, want 3", got)
	}
	recs := logs.records(t, "WARN", "client certificate rejected")
	if len(recs) == 0 {
		t.Fatal("no WARN line for a rejected client certificate")
	}
	if kind := recs[0]["kind"]; kind != "missing" {
		t.Errorf("first rejection logged as kind %v, want missing", kind)
	}
	for _, rec := range recs {
		line, _ := json.Marshal(rec)
		for _, private := range []string{"127.0.0.1", "intruder.example", "other CA"} {
			if strings.Contains(string(line), private) {
				t.Errorf("the log names the client (%s): %s", private, line)
			}
		}
	}
}

// TestSometimes: one event per interval gets through, and the next one
// that does says how many were held back.
func TestSometimes(t *testing.T) {
	now := time.Unix(1000, 0)
	s := &sometimes{interval: time.Minute, now: func() time.Time { return now }}
	if ok, n := s.allow(); !ok || n != 0 {
		t.Fatalf("first event: %v %d", ok, n)
	}
	for range 5 {
		now = now.Add(10 * time.Second)
		if ok, _ := s.allow(); ok {
			t.Fatal("an event within the interval got through")
		}
	}
	now = now.Add(11 * time.Second)
	if ok, n := s.allow(); !ok || n != 5 {
		t.Fatalf("after the interval: %v %d, want true 5", ok, n)
	}
}

// TestCertExpiryExported: the gauge is the served certificate's NotAfter,
// and follows a rotation.
func TestCertExpiryExported(t *testing.T) {
	p := newPKI(t)
	cfg := baseConfig()
	cfg.TLSCert, cfg.TLSKey = p.cert, p.key
	m, reg, _ := startLogged(t, cfg)
	served := func() time.Time {
		t.Helper()
		conn, err := tls.Dial("tcp", m.Addr(), &tls.Config{RootCAs: p.ca.Pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].NotAfter
	}
	if got, want := gaugeValue(t, reg, "gotrack_metrics_tls_cert_expiry_timestamp_seconds"), served(); got != float64(want.Unix()) {
		t.Errorf("expiry gauge = %v, want %d", got, want.Unix())
	}
	later := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	next := p.ca.ServerValid(t, "gotrack-rotated", time.Now().Add(-time.Hour), later)
	testpki.WriteFile(t, p.cert, next.CertPEM)
	testpki.WriteFile(t, p.key, next.KeyPEM)
	bump(t, p.cert, p.key)
	if got := served(); !got.Equal(later) {
		t.Fatalf("the rotated certificate is not served: NotAfter %v", got)
	}
	if got := gaugeValue(t, reg, "gotrack_metrics_tls_cert_expiry_timestamp_seconds"); got != float64(later.Unix()) {
		t.Errorf("after rotation the expiry gauge = %v, want %d", got, later.Unix())
	}
}

// TestInvalidCertificateWarned: an expired certificate at start, and a
// not-yet-valid one on reload, are served (the operator may have nothing
// better) but each is logged at WARN; a valid one is not.
func TestInvalidCertificateWarned(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	expired := p.ca.ServerValid(t, "gotrack", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	cfg := baseConfig()
	cfg.TLSCert, cfg.TLSKey = expired.Write(t, dir, "server")
	m, _, logs := startLogged(t, cfg)
	if n := len(logs.records(t, "WARN", "has expired")); n != 1 {
		t.Errorf("%d WARN lines about the expired certificate at start, want 1", n)
	}
	handshake := func() {
		t.Helper()
		// The client does not verify: it only makes the server look at its files.
		conn, err := tls.Dial("tcp", m.Addr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	early := p.ca.ServerValid(t, "gotrack", time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour))
	testpki.WriteFile(t, cfg.TLSCert, early.CertPEM)
	testpki.WriteFile(t, cfg.TLSKey, early.KeyPEM)
	bump(t, cfg.TLSCert, cfg.TLSKey)
	handshake()
	if n := len(logs.records(t, "WARN", "not valid yet")); n != 1 {
		t.Errorf("%d WARN lines about the not-yet-valid certificate on reload, want 1", n)
	}
	good := p.ca.Server(t, "gotrack")
	testpki.WriteFile(t, cfg.TLSCert, good.CertPEM)
	testpki.WriteFile(t, cfg.TLSKey, good.KeyPEM)
	at := time.Now().Add(10 * time.Second)
	for _, f := range []string{cfg.TLSCert, cfg.TLSKey} {
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
	handshake()
	if n := len(logs.records(t, "INFO", "reloaded")); n != 2 {
		t.Fatalf("%d reloads logged, want 2", n)
	}
	if n := len(logs.records(t, "WARN", "metrics TLS certificate")); n != 2 {
		t.Errorf("%d certificate WARN lines after a valid reload, want still 2", n)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestCheckClientKinds: each way a client certificate can fail gets its own
// kind for the log, and the checks run in verifyClient, not in crypto/tls.
func TestCheckClientKinds(t *testing.T) {
	p := newPKI(t)
	expired := p.ca.ServerValid(t, "prometheus.monitoring", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	state := func(l *testpki.Leaf) tls.ConnectionState {
		if l == nil {
			return tls.ConnectionState{}
		}
		c, err := x509.ParseCertificate(l.TLS.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	sans := verifySANs([]string{"prometheus.monitoring"})
	for _, tc := range []struct {
		name string
		leaf *testpki.Leaf
		want string
	}{
		{"none", nil, "missing"},
		{"another CA", p.alien, "untrusted"},
		{"expired", expired, "expired"},
		{"SAN off the list", p.wrongSAN, "san_not_allowed"},
		{"good", p.good, ""},
	} {
		kind, err := checkClient(state(tc.leaf), p.ca.Pool, sans)
		if kind != tc.want || (err == nil) != (tc.want == "") {
			t.Errorf("%s: kind %q, err %v; want kind %q", tc.name, kind, err, tc.want)
		}
	}
}
