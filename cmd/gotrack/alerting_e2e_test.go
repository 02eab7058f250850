package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/replay"
	"github.com/gotrack/gotrack/internal/testkit"
	"github.com/gotrack/gotrack/internal/testpki"
)

// startServer runs a server a test needs (Prometheus, Alertmanager, the
// Pushgateway) with its logs kept for a failure report, and stops it when
// the test ends: SIGTERM, so that it writes its state as it would in
// production, then SIGKILL after 10s. Its state must live in the test's
// temporary directory (issue 17): args must say where, since the Debian
// packages default to /var/lib/prometheus, shared by every run.
func startServer(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, logs.String())
		}
	})
}

// waitReady polls url until it answers 200.
func waitReady(t *testing.T, what, url string) {
	t.Helper()
	var err error
	if !testkit.Wait(testkit.Patience, func() bool {
		var resp *http.Response
		if resp, err = http.Get(url); err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatalf("%s never got ready at %s (last error %v)", what, url, err)
	}
}

// shippedRulesFastFor returns the shipped alert rules with every `for:`
// shortened to 1s, so that an end-to-end test sees an alert fire in seconds.
// Everything else, the expressions above all, is the shipped text.
func shippedRulesFastFor(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	forLine := regexp.MustCompile(`(?m)^(\s+for:)\s+\S+\s*$`)
	if n := len(forLine.FindAll(b, -1)); n < 5 {
		t.Fatalf("found %d `for:` lines in alerts.yml; has its layout changed?", n)
	}
	return forLine.ReplaceAll(b, []byte("${1} 1s"))
}

// webhookAlert is one alert of an Alertmanager webhook notification.
type webhookAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// alertSink is the webhook receiver: it keeps every alert Alertmanager
// delivered.
type alertSink struct {
	mu     sync.Mutex
	alerts []webhookAlert
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var n struct {
		Alerts []webhookAlert `json:"alerts"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&n); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.alerts = append(s.alerts, n.Alerts...)
	s.mu.Unlock()
}

// firing returns the first firing alert delivered with the given labels.
func (s *alertSink) firing(labels map[string]string) (webhookAlert, bool) {
	return s.delivered("firing", labels)
}

// delivered returns the first alert delivered with the status ("firing"
// or "resolved") and the labels.
func (s *alertSink) delivered(status string, labels map[string]string) (webhookAlert, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
next:
	for _, a := range s.alerts {
		if a.Status != status {
			continue
		}
		for k, v := range labels {
			if a.Labels[k] != v {
				continue next
			}
		}
		return a, true
	}
	return webhookAlert{}, false
}

func (s *alertSink) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n []string
	for _, a := range s.alerts {
		n = append(n, a.Labels["alertname"]+"/"+a.Status)
	}
	return n
}

// TestAlertsReachAlertmanager proves the shipped alert rules end to end: a
// real Prometheus scrapes GoTrack under a job not called "gotrack" and
// evaluates the shipped rules (their `for:` shortened), a real Alertmanager
// routes what fires to a webhook in this test. Stopping PostgreSQL (a
// cluster of the test's own) under
// traffic must deliver GoTrackSinkDown, and starting it again its
// resolution; stopping GoTrack, GoTrackDown; and a failed `gotrack replay`
// pushed to a Pushgateway scraped by the shipped job, GoTrackReplayFailed.
func TestAlertsReachAlertmanager(t *testing.T) {
	promBin := requireTool(t, "prometheus")
	amBin := requireTool(t, "prometheus-alertmanager")
	pgtest.Controllable(t) // a cluster of its own, stopped below
	table := pgtest.Table(t)
	dir := t.TempDir()

	hooks := &alertSink{}
	hook := httptest.NewServer(hooks)
	t.Cleanup(hook.Close)

	amAddr := freePort(t)
	amCfg := fmt.Sprintf(`route:
  receiver: test
  group_by: [alertname, job, instance, sink]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: %s
        send_resolved: true
`, hook.URL)
	testpki.WriteFile(t, filepath.Join(dir, "alertmanager.yml"), []byte(amCfg))
	startServer(t, "alertmanager", amBin,
		"--config.file="+filepath.Join(dir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(dir, "alertmanager-data"),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=", // no gossip: a single, private instance
		"--log.level=warn")
	waitReady(t, "Alertmanager", "http://"+amAddr+"/-/ready")

	p := startGotrack(t, "OUTPUTS=postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table,
		"METRICS_ENABLED=true", "METRICS_ADDR=127.0.0.1:0",
		"FLUSH_INTERVAL=10ms", "RETRY_MAX_BACKOFF=200ms", "ENQUEUE_TIMEOUT=20ms")
	metrics, err := url.Parse(p.metrics)
	if err != nil {
		t.Fatal(err)
	}

	gw := startPushgateway(t)
	testpki.WriteFile(t, filepath.Join(dir, "alerts.yml"), shippedRulesFastFor(t))
	promCfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["%s"]
scrape_configs:
  - job_name: collector
    static_configs:
      - targets: ["%s"]
  - %s
`, amAddr, metrics.Host, shippedPushgatewayJob(t, strings.TrimPrefix(gw, "http://")))
	testpki.WriteFile(t, filepath.Join(dir, "prometheus.yml"), []byte(promCfg))
	promAddr := freePort(t)
	startServer(t, "prometheus", promBin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+promAddr,
		"--rules.alert.resend-delay=1s",
		"--log.level=warn")
	waitReady(t, "Prometheus", "http://"+promAddr+"/-/ready")

	// Traffic until the test says stop: a /collect of 5 events every 20ms,
	// whatever the answer (503 once the queue is full).
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	traffic.Add(1)
	go func() {
		defer traffic.Done()
		client := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := client.Post("http://"+p.ingest+"/collect", "application/json",
				strings.NewReader(`[{"type":"a"},{"type":"b"},{"type":"c"},{"type":"d"},{"type":"e"}]`))
			if err == nil {
				resp.Body.Close()
			}
		}
	}()
	stopTraffic := sync.OnceFunc(func() { close(stop); traffic.Wait() })
	t.Cleanup(stopTraffic)

	waitStatus := func(what, status string, labels map[string]string) webhookAlert {
		t.Helper()
		var a webhookAlert
		if !testkit.Wait(45*time.Second, func() (ok bool) { a, ok = hooks.delivered(status, labels); return ok }) {
			t.Fatalf("%s: no %s alert %v reached the webhook; it got %v", what, status, labels, hooks.names())
		}
		return a
	}
	waitAlert := func(what string, labels map[string]string) webhookAlert {
		t.Helper()
		return waitStatus(what, "firing", labels)
	}
	// Prometheus must know the target as GoTrack's (gotrack_build_info seen)
	// before the outage, or gotrack:up would not select it.
	waitForQuery(t, promAddr, `gotrack:up{job="collector"} == 1`)

	restart := pgtest.Outage(t)
	a := waitAlert("PostgreSQL stopped", map[string]string{"alertname": "GoTrackSinkDown", "job": "collector", "sink": "postgres", "instance": metrics.Host})
	if !strings.HasSuffix(a.Annotations["runbook_url"], "docs/runbook.md#gotracksinkdown") {
		t.Errorf("GoTrackSinkDown's runbook_url = %q", a.Annotations["runbook_url"])
	}
	restart()
	// Traffic goes on: the next write succeeds and the alert resolves.
	waitStatus("PostgreSQL restarted", "resolved", map[string]string{"alertname": "GoTrackSinkDown", "job": "collector", "sink": "postgres"})
	stopTraffic()

	if _, ok := hooks.firing(map[string]string{"alertname": "GoTrackDown"}); ok {
		t.Fatal("GoTrackDown fired while GoTrack was running")
	}
	p.stop(t)
	a = waitAlert("GoTrack stopped", map[string]string{"alertname": "GoTrackDown", "job": "collector", "instance": metrics.Host})
	if !strings.HasSuffix(a.Annotations["runbook_url"], "docs/runbook.md#gotrackdown") {
		t.Errorf("GoTrackDown's runbook_url = %q", a.Annotations["runbook_url"])
	}

	// A failed replay run, pushed as `gotrack replay` pushes it, reaches the
	// Alertmanager through the shipped Pushgateway scrape job.
	if err := replay.Push(replay.PushOptions{URL: gw}, replay.Counts{Replayed: 10, Failed: 2}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	waitAlert("a failed replay pushed", map[string]string{"alertname": "GoTrackReplayFailed", "job": "gotrack_replay"})
}

// shippedPushgatewayJob returns the Pushgateway scrape job of the shipped
// prometheus.yml, as one line of YAML (JSON), pointed at target.
func shippedPushgatewayJob(t *testing.T, target string) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []map[string]any `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, job := range cfg.ScrapeConfigs {
		if job["job_name"] == "pushgateway" {
			job["static_configs"] = []any{map[string]any{"targets": []string{target}}}
			j, err := json.Marshal(job)
			if err != nil {
				t.Fatal(err)
			}
			return string(j)
		}
	}
	t.Fatal("the shipped prometheus.yml has no pushgateway job")
	return ""
}

// waitForQuery waits until an instant query through Prometheus's API
// returns at least one series.
func waitForQuery(t *testing.T, promAddr, q string) {
	t.Helper()
	testkit.Eventually(t, "Prometheus to answer "+q, func() bool {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&r)
		return len(r.Data.Result) > 0
	})
}

// TestPushgatewayStartsEmpty pushes a series to one test Pushgateway, stops
// it gracefully (when it writes its persistence file), and checks that the
// next test's Pushgateway does not have it: each keeps its state in its
// own test's temporary directory (issue 17).
func TestPushgatewayStartsEmpty(t *testing.T) {
	const series = "gotrack_test_leak_probe"
	t.Run("push", func(t *testing.T) {
		gw := startPushgateway(t)
		req, _ := http.NewRequest("PUT", gw+"/metrics/job/gotrack_test", strings.NewReader(series+" 1\n"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("push: %d", resp.StatusCode)
		}
		if _, ok := pushed(t, gw, series+`{instance="",job="gotrack_test"}`); !ok {
			t.Fatal("the pushed series is not there")
		}
	})
	gw := startPushgateway(t)
	if v, ok := pushed(t, gw, series+`{instance="",job="gotrack_test"}`); ok {
		t.Fatalf("a new Pushgateway holds %s = %s, pushed by an earlier one", series, v)
	}
}
