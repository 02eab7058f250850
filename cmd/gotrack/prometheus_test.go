package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/testkit"
	"github.com/gotrack/gotrack/internal/testpki"
)

// securePKI writes a CA, a server certificate, a client certificate for
// "prometheus" and a bearer token into dir, and returns the gotrack
// environment that requires them.
type securePKI struct {
	ca                          *testpki.CA
	caFile, clientCrt, clientKy string
	tokenFile, token            string
	client                      tls.Certificate
	env                         []string
}

func newSecurePKI(t *testing.T) *securePKI {
	dir := t.TempDir()
	s := &securePKI{ca: testpki.NewCA(t, "gotrack test CA"), token: "prom-bearer-token-0123456789"}
	cert, key := s.ca.Server(t, "gotrack").Write(t, dir, "server")
	leaf := s.ca.Client(t, "prometheus")
	s.client = leaf.TLS
	s.clientCrt, s.clientKy = leaf.Write(t, dir, "client")
	s.caFile = filepath.Join(dir, "ca.crt")
	testpki.WriteFile(t, s.caFile, s.ca.CertPEM)
	s.tokenFile = filepath.Join(dir, "token")
	testpki.WriteFile(t, s.tokenFile, []byte(s.token+"\n"))
	s.env = []string{
		"METRICS_ENABLED=true", "METRICS_ADDR=127.0.0.1:0",
		"METRICS_TLS_CERT=" + cert, "METRICS_TLS_KEY=" + key,
		"METRICS_CLIENT_CA=" + s.caFile, "METRICS_CLIENT_ALLOWED_SANS=prometheus",
		"METRICS_BEARER_TOKEN_FILE=" + s.tokenFile,
	}
	return s
}

func (s *securePKI) httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool, Certificates: []tls.Certificate{s.client}},
	}}
}

func (s *securePKI) scrape(t *testing.T, metricsURL string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", metricsURL, nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %s", resp.StatusCode, b)
	}
	return b
}

func sendEvents(t *testing.T, ingest string, n int) {
	t.Helper()
	for i := range n {
		var (
			resp *http.Response
			err  error
		)
		if i%2 == 0 {
			resp, err = http.Get(fmt.Sprintf("http://%s/px.gif?e=view&p.i=%d", ingest, i))
		} else {
			resp, err = http.Post("http://"+ingest+"/collect", "application/json", strings.NewReader(`[{"type":"a"},{"type":"b"}]`))
		}
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("event %d: status %d", i, resp.StatusCode)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPrometheusScrapesOverMTLS has a real Prometheus scrape GoTrack over
// mTLS with a bearer token, then reads up and the ingested counter back
// through Prometheus's HTTP API and compares it with the NDJSON file.
func TestPrometheusScrapesOverMTLS(t *testing.T) {
	promBin := requireTool(t, "prometheus")
	pki := newSecurePKI(t)
	p := startGotrack(t, append(pki.env, "FLUSH_INTERVAL=10ms")...)
	u, err := url.Parse(p.metrics)
	if err != nil || u.Scheme != "https" {
		t.Fatalf("metrics URL %q, want https", p.metrics)
	}
	sendEvents(t, p.ingest, 100) // 50 pixels and 50 collects of 2: 150 events
	testkit.Eventually(t, "150 events in the file", func() bool { return len(readEventsQuiet(p.path("events.ndjson"))) == 150 })

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: gotrack
    scheme: https
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: %s
    tls_config:
      ca_file: %s
      cert_file: %s
      key_file: %s
      server_name: localhost
    static_configs:
      - targets: ["%s"]
`, pki.tokenFile, pki.caFile, pki.clientCrt, pki.clientKy, u.Host)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	testpki.WriteFile(t, cfgPath, []byte(cfg))
	promAddr := freePort(t)
	var promLog syncBuffer
	prom := exec.Command(promBin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus logs:\n%s", promLog.String())
		}
	})

	query := func(q string) (float64, bool) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) != 1 {
			return 0, false
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil
	}
	var up, ingested float64
	testkit.Wait(60*time.Second, func() bool { // the check below says what was seen
		var ok1, ok2 bool
		up, ok1 = query(`up{job="gotrack"}`)
		ingested, ok2 = query(`gotrack_events_ingested_total{job="gotrack",sink="log"}`)
		return ok1 && ok2 && up == 1 && ingested == 150
	})
	lines := len(readEvents(t, p.path("events.ndjson")))
	if up != 1 || int(ingested) != lines {
		t.Fatalf("through Prometheus: up=%v ingested=%v; the file holds %d events", up, ingested, lines)
	}
	checkDashboardQueries(t, promAddr)
	p.stop(t)
}

// checkDashboardQueries runs every query of the Grafana dashboard through
// the real Prometheus, so that a dashboard with a broken query fails here.
func checkDashboardQueries(t *testing.T, promAddr string) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/grafana/gotrack.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	n := 0
	for _, panel := range dash.Panels {
		for _, target := range panel.Targets {
			// Grafana's variables, as it expands them with "All" selected.
			expr := strings.NewReplacer("$job", ".+", "$instance", ".+", "$__rate_interval", "1m").Replace(target.Expr)
			resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(expr))
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Status, Error string }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Status != "success" {
				t.Errorf("dashboard panel %q: query %q: %s", panel.Title, target.Expr, r.Error)
			}
			n++
		}
	}
	if n == 0 {
		t.Error("the dashboard has no queries")
	}
}

// TestExpositionPassesPromtool checks the whole exposition, after some
// traffic, with promtool check metrics, and that random paths add no series.
func TestExpositionPassesPromtool(t *testing.T) {
	promtool := requireTool(t, "promtool")
	pki := newSecurePKI(t)
	p := startGotrack(t, append(pki.env, "FLUSH_INTERVAL=10ms")...)
	sendEvents(t, p.ingest, 20)
	testkit.Eventually(t, "the events to be written", func() bool { return len(readEventsQuiet(p.path("events.ndjson"))) == 30 })
	for i := range 5 { // a few unknown paths first, so the "other" series exist
		resp, err := http.Get(fmt.Sprintf("http://%s/warm/%d", p.ingest, i))
		if err == nil {
			resp.Body.Close()
		}
	}
	before := pki.scrape(t, p.metrics)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(before)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	for _, name := range []string{
		"gotrack_events_ingested_total", "gotrack_sink_errors_total", "gotrack_queue_depth", "gotrack_batch_flush_latency_seconds_bucket",
		"gotrack_http_requests_total", "gotrack_http_duration_seconds_bucket", "gotrack_http_requests_in_flight",
		"gotrack_events_received_total", "gotrack_events_dropped_total", "gotrack_queue_capacity", "gotrack_batch_size_events_bucket",
		"gotrack_sink_retries_total", "gotrack_sink_up", "gotrack_sink_last_success_timestamp_seconds", "gotrack_build_info",
		"go_goroutines", "process_resident_memory_bytes", "promhttp_metric_handler_requests_total",
		"gotrack_requests_shed_total", "gotrack_inflight_body_bytes",
	} {
		if !bytes.Contains(before, []byte("\n"+name)) {
			t.Errorf("exposition lacks %s", name)
		}
	}

	// 5,000 requests to random paths leave the number of series unchanged.
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 5000 {
		resp, err := client.Get(fmt.Sprintf("http://%s/r/%x/%d?x=%d", p.ingest, time.Now().UnixNano(), i, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	after := pki.scrape(t, p.metrics)
	if nb, na := seriesCount(before), seriesCount(after); nb != na {
		t.Errorf("series count went from %d to %d after 5,000 random paths", nb, na)
	}
	p.stop(t)
}

// seriesCount counts the sample lines of an exposition, leaving out the
// promhttp handler's own counters, which count scrapes.
func seriesCount(exposition []byte) int {
	n := 0
	for line := range strings.Lines(string(exposition)) {
		if line != "" && line[0] != '#' {
			n++
		}
	}
	return n
}

func TestAlertRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "../../deploy/prometheus/alerts.yml"},
		{"test", "rules", "../../deploy/prometheus/alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := os.Stat("../../deploy/prometheus/prometheus.yml"); err == nil {
		out, err := exec.Command(promtool, "check", "config", "--syntax-only", "../../deploy/prometheus/prometheus.yml").CombinedOutput()
		if err != nil {
			t.Errorf("promtool check config: %v\n%s", err, out)
		}
	}
}
