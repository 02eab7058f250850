package telemetry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/gotrack/gotrack/internal/testkit"
	"github.com/gotrack/gotrack/internal/testpki"
)

// TestRightPasswordDuringFlood is the attack of issue 11: 32 workers send
// wrong passwords as fast as the listener answers, and the real scraper,
// whose password is not cached yet (a fresh server), must still get in,
// each attempt within a one-second client timeout. Every right attempt uses
// a user of its own, so none of them is helped by the success cache.
func TestRightPasswordDuringFlood(t *testing.T) {
	const users = 6
	dir := t.TempDir()
	var lines []string
	for i := range users + 1 {
		// Cost 4 keeps the race detector's bcrypt near 10 ms; two slots
		// are still far fewer than 32 workers, so the flood saturates them.
		h, err := bcrypt.GenerateFromPassword(fmt.Appendf(nil, "right-%d", i), 4)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("prom%d:%s", i, h))
	}
	file := filepath.Join(dir, "htpasswd")
	testpki.WriteFile(t, file, []byte(strings.Join(lines, "\n")+"\n"))

	for _, tc := range []struct {
		name     string
		from     string // the flood's source address
		distinct bool   // a new guess every time, rather than one wrong password over and over
	}{
		{"one wrong password, same client address", "127.0.0.1", false},
		{"new guesses, another client address", "127.0.0.2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.BasicAuthFile = file
			m, reg := start(t, cfg)
			url := "http://" + m.Addr() + "/metrics"

			flood := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				MaxIdleConnsPerHost: 32,
				DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.from)}}).DialContext,
			}}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for w := range 32 {
				wg.Go(func() {
					for n := 0; ctx.Err() == nil; n++ {
						pass := "wrong"
						if tc.distinct {
							pass = fmt.Sprintf("guess-%d-%d", w, n)
						}
						req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
						req.SetBasicAuth("prom0", pass)
						if resp, err := flood.Do(req); err == nil {
							resp.Body.Close()
							if resp.StatusCode == 200 {
								t.Errorf("a wrong password got 200")
							}
						}
					}
				})
			}
			t.Cleanup(func() { cancel(); wg.Wait(); flood.CloseIdleConnections() })

			refused := func() float64 {
				return seriesValue(t, reg, "gotrack_metrics_auth_failures_total", "invalid") +
					seriesValue(t, reg, "gotrack_metrics_auth_failures_total", "busy")
			}
			testkit.Eventually(t, "the flood to get going", func() bool { return refused() >= 64 })

			scraper := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for i := 1; i <= users; i++ {
				before := refused()
				req, _ := http.NewRequest("GET", url, nil)
				req.SetBasicAuth(fmt.Sprintf("prom%d", i), fmt.Sprintf("right-%d", i))
				resp, err := scraper.Do(req)
				if err != nil {
					t.Errorf("right password %d during the flood: %v", i, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("right password %d during the flood: %d, want 200", i, resp.StatusCode)
				}
				testkit.Eventually(t, "the flood to go on", func() bool { return refused() > before+8 })
			}
		})
	}
}

// seriesValue returns the counter of name whose only label has the value
// label.
func seriesValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s}", name, label)
	return 0
}
