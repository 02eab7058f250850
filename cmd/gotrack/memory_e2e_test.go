package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/ingest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// peakRSSLimit is the floor issue 11 sets for the stalled-body attacks.
const peakRSSLimit = 256 << 20

// TestMemoryBoundedUnderStalledBodies is the attack of issue 11 on a real
// gotrack process, with the default limits: many connections send a body
// and stall. The process's peak RSS (VmHWM, its own, as it runs apart from
// the test) must stay under 256 MiB, the requests beyond
// MAX_INFLIGHT_BYTES must be shed with 503 and counted, and /healthz and
// pixels from other clients must keep being answered meanwhile.
func TestMemoryBoundedUnderStalledBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,500 connections; not in -short")
	}
	const maxBody = 1 << 20 // MAX_BODY_BYTES's default
	// A gzip member of about 1 KB that inflates to just under MAX_BODY_BYTES.
	var inflated bytes.Buffer
	inflated.WriteString(`{"type":"attack","title":"`)
	inflated.WriteString(strings.Repeat("a", maxBody-64))
	inflated.WriteString(`"}`)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(inflated.Bytes())
	zw.Close()

	for _, tc := range []struct {
		name  string
		conns int
		head  string // request headers; the body follows, then the client stalls
		body  []byte
	}{
		// Content-Length promises more than is sent, so that the server,
		// having inflated the whole member, waits for the rest.
		{"gzip", 1500, "Content-Encoding: gzip\r\nContent-Length: " + strconv.Itoa(gz.Len()+100) + "\r\n", gz.Bytes()},
		{"plain", 300, "Content-Length: " + strconv.Itoa(maxBody) + "\r\n", inflated.Bytes()[:maxBody-48<<10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raiseFileLimit(t, uint64(tc.conns)+256)
			p := startGotrack(t, "METRICS_ENABLED=true", "METRICS_ADDR="+freePort(t))
			req := []byte("POST /collect HTTP/1.1\r\nHost: gotrack\r\nContent-Type: application/json\r\n" + tc.head + "\r\n")

			// finished counts the requests that got an answer or lost their
			// connection (a shed request's client may see a reset instead
			// of the 503, if it is still writing when the server closes).
			var finished, shed atomic.Int64
			var wg sync.WaitGroup
			conns := make(chan net.Conn, tc.conns)
			t.Cleanup(func() {
				close(conns)
				for c := range conns {
					c.Close()
				}
				wg.Wait()
			})
			dials := make(chan struct{}, 64) // dial in parallel, but not all at once
			for range tc.conns {
				dials <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", p.ingest)
					<-dials
					if err != nil {
						t.Errorf("dial: %v", err)
						return
					}
					conns <- c
					c.Write(req)
					c.Write(tc.body) // fails when the server has shed the request and closed
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					finished.Add(1)
					if err != nil {
						return
					}
					if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
						shed.Add(1)
					}
				}()
			}

			// Wait until every request is either finished or held by the
			// server in full: held bodies sit in buffers of the largest
			// class, MAX_BODY_BYTES+1 bytes, each charged to the budget.
			var held, inflight int64
			if !testkit.Wait(2*time.Minute, func() bool {
				inflight = metricValue(t, p.metrics, "gotrack_inflight_body_bytes")
				held = inflight / (maxBody + 1)
				return inflight%(maxBody+1) == 0 && finished.Load()+held == int64(tc.conns)
			}) {
				t.Fatalf("the attack did not settle: %d finished, %d bytes in flight", finished.Load(), inflight)
			}

			// Other clients are served while the bodies are held.
			for i := range 20 {
				if code, body := httpGet(t, "http://"+p.ingest+"/healthz"); code != http.StatusOK {
					t.Fatalf("/healthz during the attack: %d %s", code, body)
				}
				if code, _ := httpGet(t, fmt.Sprintf("http://%s/px.gif?e=during_attack&uid=v%d", p.ingest, i)); code != http.StatusOK {
					t.Fatalf("/px.gif during the attack: %d", code)
				}
			}

			hwm := peakRSS(t, p.cmd.Process.Pid)
			shedMetric := metricValue(t, p.metrics, `gotrack_requests_shed_total{reason="inflight_bytes"}`)
			t.Logf("%s: %d connections, %d bodies held, %d finished (%d shed with 503, %d counted); peak RSS %.1f MiB",
				tc.name, tc.conns, held, finished.Load(), shed.Load(), shedMetric, float64(hwm)/(1<<20))
			if shed.Load() == 0 || shedMetric < shed.Load() {
				t.Errorf("%d requests shed with 503 + Retry-After, %d counted in gotrack_requests_shed_total", shed.Load(), shedMetric)
			}
			if hwm > peakRSSLimit {
				t.Errorf("peak RSS %d MiB, want at most %d MiB", hwm>>20, peakRSSLimit>>20)
			}
		})
	}
}

// peakRSS reads VmHWM, the peak resident set size, of process pid.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM: %v", err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// metricValue scrapes url and returns the value of the sample named by
// series (name, with its labels as exposed, if any); 0 when absent.
func metricValue(t *testing.T, url, series string) int64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return int64(f)
		}
	}
	return 0
}

// raiseFileLimit raises this process's soft limit on open files to at
// least n, as far as the hard limit allows, and skips the test if it
// cannot open n.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d files this test needs", lim.Max, n)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryBoundedUnderStalledHeaders backs MAX_CONNECTIONS' default: as
// many connections as it allows each send 30 KiB of headers, just under
// the 32 KiB limit, and stall. Peak RSS must stay under 256 MiB.
func TestMemoryBoundedUnderStalledHeaders(t *testing.T) {
	if testing.Short() {
		t.Skip("opens MAX_CONNECTIONS (1,024) connections; not in -short")
	}
	const conns = ingest.DefaultMaxConnections
	raiseFileLimit(t, conns+256)
	p := startGotrack(t)
	_, port, _ := net.SplitHostPort(p.ingest)
	req := []byte("GET /px.gif HTTP/1.1\r\nHost: gotrack\r\nX-Pad: " + strings.Repeat("p", 30<<10) + "\r\n")

	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	for range conns {
		c, err := net.Dial("tcp", p.ingest)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
	}
	// Every byte sent has been read by the server (or its connection
	// closed) once no server-side socket has bytes waiting.
	var waiting int
	if !testkit.Wait(2*time.Minute, func() bool { waiting = unreadSockets(t, port); return waiting == 0 }) {
		t.Fatalf("%d connections still have unread bytes", waiting)
	}
	hwm := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("%d connections with 30 KiB of headers each: peak RSS %.1f MiB", conns, float64(hwm)/(1<<20))
	if hwm > peakRSSLimit {
		t.Errorf("peak RSS %d MiB, want at most %d MiB", hwm>>20, peakRSSLimit>>20)
	}
}

// unreadSockets counts the TCP sockets on local port port (the server's
// side) with bytes in their receive queue, from /proc/net/tcp and tcp6.
func unreadSockets(t *testing.T, port string) int {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf(":%04X", p)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			fields := strings.Fields(line)
			if len(fields) < 5 || !strings.HasSuffix(fields[1], suffix) {
				continue
			}
			_, rx, _ := strings.Cut(fields[4], ":") // tx_queue:rx_queue
			if strings.Trim(rx, "0") != "" {
				n++
			}
		}
	}
	return n
}
