package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWorkIsCounted(t *testing.T) {
	o, err := parseFlags([]string{"-min-sleep", "0", "-max-sleep", "1ms", "-error-rate", "0.5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	h, err := newHandler(o, reg)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[int]int{}
	for range 200 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/work", nil))
		codes[w.Code]++
	}
	if codes[200] == 0 || codes[500] == 0 || codes[200]+codes[500] != 200 {
		t.Fatalf("status codes %v, want a mix of 200 and 500", codes)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body := w.Body.String()
	for _, want := range []string{
		`myapp_processed_ops_total{status="200"} ` + strconv.Itoa(codes[200]),
		`myapp_processed_ops_total{status="500"} ` + strconv.Itoa(codes[500]),
		"myapp_request_duration_seconds_count 200",
		"# TYPE myapp_request_duration_seconds histogram",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if n, _ := testutil.GatherAndCount(reg, "myapp_processed_ops_total"); n != 2 {
		t.Errorf("%d status series, want 2 (the /metrics scrape is not counted)", n)
	}
}

// TestRuntimeAndProcessMetrics: the registry run uses serves the Go runtime
// and process series that seed 003's promhttp.Handler() would have, and the
// scrape handler's own.
func TestRuntimeAndProcessMetrics(t *testing.T) {
	h, err := newHandler(options{}, newRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		"\ngo_goroutines ", "\ngo_memstats_alloc_bytes ", "\ngo_gc_duration_seconds{",
		"\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ",
		"\npromhttp_metric_handler_requests_total{",
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("/metrics lacks %q", strings.TrimPrefix(want, "\n"))
		}
	}
}

func TestFlagsValidated(t *testing.T) {
	for _, args := range [][]string{{"-error-rate", "2"}, {"-min-sleep", "2s", "-max-sleep", "1s"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestSleepsWithinRange(t *testing.T) {
	o := options{minSleep: 5 * time.Millisecond, maxSleep: 6 * time.Millisecond}
	h, _ := newHandler(o, prometheus.NewRegistry())
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/work", nil))
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.HasPrefix(body, "worked for 5ms") && !strings.HasPrefix(body, "worked for 6ms") {
		t.Errorf("got %d %q", w.Code, w.Body)
	}
}
