package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/config"
	"github.com/gotrack/gotrack/internal/testpki"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func baseConfig() config.Metrics {
	return config.Metrics{Enabled: true, Addr: "127.0.0.1:0", MaxScrapes: 4, ScrapeTimeout: 5 * time.Second, TLSReloadInterval: 0}
}

func start(t *testing.T, cfg config.Metrics) (*MetricsServer, *prometheus.Registry) {
	t.Helper()
	reg := NewRegistry()
	m, err := NewMetricsServer(cfg, reg, discard)
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
	return m, reg
}

func client(roots *x509.CertPool, certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: certs, ClientSessionCache: tls.NewLRUClientSessionCache(4)},
		DisableKeepAlives: true,
	}}
}

func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestPlainOnLoopback(t *testing.T) {
	m, _ := start(t, baseConfig())
	c := &http.Client{Timeout: 5 * time.Second}
	code, body, err := get(t, c, "http://"+m.Addr()+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	for _, want := range []string{"gotrack_build_info{", "go_goroutines", "process_cpu_seconds_total", "promhttp_metric_handler_requests_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	if code, _, _ := get(t, c, "http://"+m.Addr()+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	for _, path := range []string{"/", "/debug/pprof/", "/px.gif", "/metrics/x"} {
		if code, _, _ := get(t, c, "http://"+m.Addr()+path); code != 404 {
			t.Errorf("%s: %d, want 404: the metrics listener serves /metrics and /healthz only", path, code)
		}
	}
}

type pki struct {
	ca, other             *testpki.CA
	cert, key, caFile     string
	good, wrongSAN, alien *testpki.Leaf
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	p := &pki{ca: testpki.NewCA(t, "scrape CA"), other: testpki.NewCA(t, "other CA")}
	p.cert, p.key = p.ca.Server(t, "gotrack").Write(t, dir, "server")
	p.caFile = filepath.Join(dir, "ca.crt")
	testpki.WriteFile(t, p.caFile, p.ca.CertPEM)
	p.good = p.ca.Client(t, "prometheus.monitoring")
	p.wrongSAN = p.ca.Client(t, "intruder.example")
	p.alien = p.other.Client(t, "prometheus.monitoring")
	return p
}

func TestTLSAndMTLS(t *testing.T) {
	p := newPKI(t)
	cfg := baseConfig()
	cfg.TLSCert, cfg.TLSKey, cfg.ClientCA = p.cert, p.key, p.caFile
	cfg.ClientAllowedSANs = []string{"prometheus.monitoring"}
	m, _ := start(t, cfg)
	url := "https://" + m.Addr() + "/metrics"

	t.Run("plain HTTP client fails", func(t *testing.T) {
		code, body, err := get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+m.Addr()+"/metrics")
		if err == nil && (code == 200 || strings.Contains(body, "gotrack_")) {
			t.Fatalf("plain HTTP got %d with metrics", code)
		}
	})
	t.Run("no client certificate fails the handshake", func(t *testing.T) {
		if _, _, err := get(t, client(p.ca.Pool), url); err == nil {
			t.Fatal("request without a client certificate succeeded")
		}
	})
	t.Run("certificate from another CA is rejected", func(t *testing.T) {
		if _, _, err := get(t, client(p.ca.Pool, p.alien.TLS), url); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("SAN not on the allow-list is rejected", func(t *testing.T) {
		if _, _, err := get(t, client(p.ca.Pool, p.wrongSAN.TLS), url); err == nil {
			t.Fatal("a certificate with a SAN off the allow-list was accepted")
		}
	})
	t.Run("good certificate gets 200, also on a resumed session", func(t *testing.T) {
		c := client(p.ca.Pool, p.good.TLS)
		for i := range 2 {
			resp, err := c.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if i == 1 && !resp.TLS.DidResume {
				t.Log("second connection did not resume its session")
			}
			if resp.TLS.Version < tls.VersionTLS12 {
				t.Errorf("TLS version %x below 1.2", resp.TLS.Version)
			}
		}
	})
	t.Run("TLS 1.1 is refused", func(t *testing.T) {
		c := client(p.ca.Pool, p.good.TLS)
		c.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS11
		if _, _, err := get(t, c, url); err == nil {
			t.Fatal("a TLS 1.1 client was served")
		}
	})
}

func TestCertificateRotation(t *testing.T) {
	p := newPKI(t)
	cfg := baseConfig()
	cfg.TLSCert, cfg.TLSKey = p.cert, p.key
	m, reg := start(t, cfg)
	serialSeen := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", m.Addr(), &tls.Config{RootCAs: p.ca.Pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serialSeen()

	next := p.ca.Server(t, "gotrack-rotated")
	testpki.WriteFile(t, p.cert, next.CertPEM)
	testpki.WriteFile(t, p.key, next.KeyPEM)
	bump(t, p.cert, p.key)
	rotated := serialSeen()
	if rotated == first {
		t.Fatal("the rotated certificate is not served")
	}

	// A half-written pair keeps the last good one in service, and is counted.
	testpki.WriteFile(t, p.cert, next.CertPEM[:len(next.CertPEM)/2])
	bump(t, p.cert)
	if got := serialSeen(); got != rotated {
		t.Errorf("after a bad reload the server presents %s, want the last good %s", got, rotated)
	}
	if got := counterValue(t, reg, "gotrack_metrics_tls_reload_failures_total"); got != 1 {
		t.Errorf("reload failures = %v, want 1", got)
	}
}

// bump moves the files' modification times on, so that a change is seen
// even on a file system with coarse timestamps.
func bump(t *testing.T, paths ...string) {
	t.Helper()
	at := time.Now().Add(time.Duration(len(paths)) * time.Second)
	for _, p := range paths {
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func htpasswd(t *testing.T, dir, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), 10)
	if err != nil {
		t.Fatal(err)
	}
	// htpasswd -nBC 10 writes the $2y$ prefix.
	line := user + ":" + strings.Replace(string(h), "$2a$", "$2y$", 1) + "\n"
	path := filepath.Join(dir, "htpasswd")
	testpki.WriteFile(t, path, []byte("# scrapers\n"+line))
	return path
}

func TestBearerAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	testpki.WriteFile(t, token, []byte("s3cret-token-0123456789\n"))
	cfg := baseConfig()
	cfg.BearerTokenFile = token
	cfg.BasicAuthFile = htpasswd(t, dir, "prom", "correct horse")
	m, reg := start(t, cfg)
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + m.Addr() + "/metrics"

	req, _ := http.NewRequest("GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || len(resp.Header.Values("WWW-Authenticate")) != 2 {
		t.Errorf("no credentials: %d, WWW-Authenticate %v", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"right token", []string{"Authorization", "Bearer s3cret-token-0123456789"}, 200},
		{"wrong token", []string{"Authorization", "Bearer s3cret-token-012345678"}, 401},
		{"right password", []string{"Authorization", basic("prom", "correct horse")}, 200},
		{"right password, cached", []string{"Authorization", basic("prom", "correct horse")}, 200},
		{"wrong password", []string{"Authorization", basic("prom", "battery staple")}, 401},
		{"unknown user", []string{"Authorization", basic("root", "correct horse")}, 401},
	} {
		code, _, err := get(t, c, url, tc.hdr...)
		if err != nil || code != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, code, err, tc.want)
		}
	}
	if code, _, _ := get(t, c, "http://"+m.Addr()+"/healthz"); code != 200 {
		t.Errorf("/healthz must stay open to probes, got %d", code)
	}
	if got := testutil.ToFloat64(mustVec(t, reg)); got != 3 {
		t.Errorf("invalid-credential failures = %v, want 3", got)
	}
}

func mustVec(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "gotrack_metrics_auth_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "invalid" {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x", Help: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatal("no auth failure series")
	return nil
}

func basic(user, pass string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// TestPasswordFloodCannotStallScrapes takes every bcrypt slot, as a flood
// of guesses would, and checks that a scraper whose password is cached still
// gets in at once, that a guess already refused is refused again without
// waiting for a slot, that a new guess gives up when its request does, and
// that the flood leaves the cached entry alone.
func TestPasswordFloodCannotStallScrapes(t *testing.T) {
	dir := t.TempDir()
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f", Help: "f"}, []string{"reason"})
	a, err := newAuthenticator("", htpasswd(t, dir, "prom", "pw"), failures)
	if err != nil {
		t.Fatal(err)
	}
	req := func(user, pass string) *http.Request {
		r, _ := http.NewRequest("GET", "/metrics", nil)
		r.SetBasicAuth(user, pass)
		r.RemoteAddr = "192.0.2.1:1234"
		return r
	}
	if why := a.check(req("prom", "pw")); why != "" {
		t.Fatalf("first check: %q", why)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { a.check(req("prom", "guess")) })
	}
	wg.Wait()
	for range bcryptSlots { // a flood in progress holds every slot
		if !a.gate.acquire(context.Background(), "flood") {
			t.Fatal("no free slot")
		}
	}
	if why := a.check(req("prom", "pw")); why != "" {
		t.Errorf("cached scraper refused during a flood: %q", why)
	}
	if why := a.check(req("prom", "guess")); why != "invalid" {
		t.Errorf("a guess already refused, during a flood: %q, want invalid", why)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if why := a.check(req("prom", "guess2").WithContext(ctx)); why != "busy" {
		t.Errorf("new guess whose request ended during a flood: %q, want busy", why)
	}
	if len(a.cache) != 1 {
		t.Errorf("cache holds %d entries, want 1", len(a.cache))
	}
}

func TestStartupRefusals(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty-ca.pem")
	testpki.WriteFile(t, empty, []byte("not a certificate\n"))
	short := filepath.Join(dir, "short-token")
	testpki.WriteFile(t, short, []byte("abc"))
	plain := filepath.Join(dir, "htpasswd-plain")
	testpki.WriteFile(t, plain, []byte("prom:plaintext\n"))
	p := newPKI(t)
	for _, tc := range []struct {
		name string
		mod  func(*config.Metrics)
		want string
	}{
		{"empty CA bundle", func(c *config.Metrics) { c.TLSCert, c.TLSKey, c.ClientCA = p.cert, p.key, empty }, "holds no PEM certificate"},
		{"cert and key mismatch", func(c *config.Metrics) { c.TLSCert, c.TLSKey = p.cert, p.caFile }, "METRICS_TLS_CERT and METRICS_TLS_KEY"},
		{"short token", func(c *config.Metrics) { c.BearerTokenFile = short }, "shorter than 16"},
		{"plaintext htpasswd", func(c *config.Metrics) { c.BasicAuthFile = plain }, "bcrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.mod(&cfg)
			_, err := NewMetricsServer(cfg, NewRegistry(), discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewMetricsServer = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := baseConfig()
	cfg.Addr = ln.Addr().String()
	m, err := NewMetricsServer(cfg, NewRegistry(), discard)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start()
	if err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("Start on a taken port = %v, want an error naming METRICS_ADDR", err)
	}
}

// TestSANCheckRunsOnResumedSessions proves the allow-list hook runs on a
// resumed TLS session too, where VerifyPeerCertificate would be skipped.
func TestSANCheckRunsOnResumedSessions(t *testing.T) {
	p := newPKI(t)
	var calls, resumed atomic.Int32
	check := verifySANs([]string{"prometheus.monitoring"})
	srvCfg := &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{mustPair(t, p.cert, p.key)},
		ClientCAs: p.ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			calls.Add(1)
			if cs.DidResume {
				resumed.Add(1)
			}
			return check(cs)
		},
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Write([]byte("x")) // lets the client read its session ticket
				c.Close()
			}()
		}
	}()
	cache := tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: p.ca.Pool, ServerName: "localhost",
			Certificates: []tls.Certificate{p.good.TLS}, ClientSessionCache: cache})
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		io.ReadAll(conn)
		if i == 1 && !conn.ConnectionState().DidResume {
			t.Fatal("the second connection did not resume its session; the test proves nothing")
		}
		conn.Close()
	}
	if calls.Load() != 2 || resumed.Load() != 1 {
		t.Errorf("the SAN check ran %d times (%d on a resumed session), want 2 and 1", calls.Load(), resumed.Load())
	}
}

func mustPair(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}
