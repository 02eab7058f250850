// Package nginx holds the test of deploy/nginx/gotrack-metrics.conf: the
// shipped file, run by a real nginx in front of a real GoTrack metrics
// listener.
package nginx

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/config"
	"github.com/gotrack/gotrack/internal/telemetry"
	"github.com/gotrack/gotrack/internal/testkit"
	"github.com/gotrack/gotrack/internal/testpki"
)

// TestNginxBasicAuthProxy: with the shipped configuration, the right
// password scrapes GoTrack's metrics through nginx; a wrong password, an
// unknown user or none gets 401 and never reaches GoTrack; a burst of
// requests is cut off with 429.
func TestNginxBasicAuthProxy(t *testing.T) {
	bin := nginxPath(t)
	dir := t.TempDir()

	reg := telemetry.NewRegistry()
	gotrack := startMetrics(t, reg)

	ca := testpki.NewCA(t, "proxy CA")
	cert, key := ca.Server(t, "gotrack-metrics").Write(t, dir, "proxy")
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse"), 10)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "htpasswd")
	// htpasswd -B writes the $2y$ prefix.
	testpki.WriteFile(t, users, []byte("prometheus:"+strings.Replace(string(hash), "$2a$", "$2y$", 1)+"\n"))

	port := freePort(t)
	shipped, err := os.ReadFile("gotrack-metrics.conf")
	if err != nil {
		t.Fatal(err)
	}
	site := string(shipped)
	for _, r := range [][2]string{
		{"server 127.0.0.1:9090;", "server " + gotrack + ";"},
		{"listen 9443 ssl;", "listen 127.0.0.1:" + port + " ssl;"},
		{"/etc/nginx/tls/gotrack-metrics.crt;", cert + ";"},
		{"/etc/nginx/tls/gotrack-metrics.key;", key + ";"},
		{"auth_basic_user_file /etc/nginx/gotrack-metrics.htpasswd;", "auth_basic_user_file " + users + ";"},
	} {
		if strings.Count(site, r[0]) != 1 {
			t.Fatalf("gotrack-metrics.conf no longer holds %q exactly once; update this test", r[0])
		}
		site = strings.Replace(site, r[0], r[1], 1)
	}
	testpki.WriteFile(t, filepath.Join(dir, "gotrack-metrics.conf"), []byte(site))
	startNginx(t, bin, dir)

	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, DisableKeepAlives: true,
	}}
	url := "https://127.0.0.1:" + port
	scrape := func(path string, auth ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+path, nil)
		if len(auth) == 2 {
			req.SetBasicAuth(auth[0], auth[1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	code, body, _ := scrape("/metrics", "prometheus", "correct horse")
	if code != 200 || !strings.Contains(body, "gotrack_build_info{") {
		t.Fatalf("right password: %d, want 200 with GoTrack's metrics; body starts %.200q", code, body)
	}
	for _, tc := range []struct {
		name string
		auth []string
	}{
		{"wrong password", []string{"prometheus", "battery staple"}},
		{"unknown user", []string{"root", "correct horse"}},
		{"no credentials", nil},
	} {
		code, body, hdr := scrape("/metrics", tc.auth...)
		if code != 401 || strings.Contains(body, "gotrack_") {
			t.Errorf("%s: %d, want 401 without metrics", tc.name, code)
		}
		if got := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
			t.Errorf("%s: WWW-Authenticate %q, want a Basic challenge", tc.name, got)
		}
	}
	if code, _, _ := scrape("/healthz", "prometheus", "correct horse"); code != 404 {
		t.Errorf("/healthz through the proxy: %d, want 404: it proxies /metrics only", code)
	}
	// Only the one authenticated scrape reached GoTrack. promhttp counts a
	// scrape just after writing it, so wait for that first.
	testkit.Wait(testkit.Patience, func() bool { return scrapesServed(t, reg) >= 1 }) // the check below fails if not
	if got := scrapesServed(t, reg); got != 1 {
		t.Errorf("GoTrack served %v scrapes, want 1: refused requests must not reach it", got)
	}

	// Requests are rate-limited per address (5 a second, burst 10) before
	// nginx's blocking bcrypt. The burst sends no password, so that nginx
	// answers each at once (a wrong one would cost a bcrypt each, slow on a
	// busy machine): 200 such requests on one connection would have to take
	// over 38 s to stay under the limit.
	fast := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	limited := false
	for range 200 {
		resp, err := fast.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Error("200 requests in a row were never answered 429")
	}
}

// nginxPath finds nginx, which Debian installs in /usr/sbin, often not on a
// user's PATH. Missing, it fails the test under scripts/test.sh or CI
// (which install it) and skips it elsewhere.
func nginxPath(t *testing.T) string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	if os.Getenv("CI") != "" || os.Getenv("GOTRACK_TEST_STRICT") != "" {
		t.Fatal("nginx is not installed; scripts/test.sh installs it")
	}
	t.Skip("nginx is not installed (run scripts/test.sh, which installs it); skipping outside CI")
	return ""
}

// startMetrics starts GoTrack's metrics listener on loopback without
// authentication, as behind the proxy, and returns its address.
func startMetrics(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	cfg := config.Metrics{Enabled: true, Addr: "127.0.0.1:0", MaxScrapes: 4, ScrapeTimeout: 5 * time.Second}
	m, err := telemetry.NewMetricsServer(cfg, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
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
	return m.Addr()
}

// startNginx runs nginx in the foreground with dir as its prefix: its
// configuration, pid file, logs and temporary files all stay in dir. It is
// stopped when the test ends.
func startNginx(t *testing.T, bin, dir string) {
	t.Helper()
	userLine := ""
	if os.Geteuid() == 0 {
		// As root, nginx's workers would switch to nobody, who cannot read
		// the test's private files.
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		userLine = "user " + u.Username + ";"
	}
	conf := fmt.Sprintf(`%s
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
worker_processes 1;
events { worker_connections 64; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/gotrack-metrics.conf;
}
`, userLine, dir)
	main := filepath.Join(dir, "nginx.conf")
	testpki.WriteFile(t, main, []byte(conf))
	args := []string{"-p", dir, "-c", main, "-e", filepath.Join(dir, "error.log")}
	if out, err := exec.Command(bin, append(args, "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append(args, "-g", "daemon off;")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT) // graceful: workers finish and exit
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Error("nginx did not stop on SIGQUIT within 10s; killed it")
		}
	})
	// Ready once it accepts connections on the port of the site.
	addr := listenAddr(t, dir)
	testkit.Eventually(t, "nginx to listen", func() bool {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %v\n%s", err, log)
		default:
		}
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	for _, f := range []string{"nginx.pid", "error.log", "access.log", "client_body", "proxy"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("nginx keeps %s outside the test's directory: %v", f, err)
		}
	}
}

// listenAddr returns the address in the site's listen line.
func listenAddr(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "gotrack-metrics.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "listen" {
			return f[1]
		}
	}
	t.Fatal("no listen line")
	return ""
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// scrapesServed returns GoTrack's count of /metrics requests answered 200.
func scrapesServed(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "promhttp_metric_handler_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == "200" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal(`no promhttp_metric_handler_requests_total{code="200"}`)
	return 0
}
