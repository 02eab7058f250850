package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoadCountsEveryResponse checks that the generator counts exactly the
// responses the server sent, split by status, including the ones under way
// when the time is up.
func TestLoadCountsEveryResponse(t *testing.T) {
	var served, accepted atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		time.Sleep(time.Millisecond)
		if n%3 == 0 {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		accepted.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	req := []byte("POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	r := runLoad(addr, req, 8, 200*time.Millisecond)
	if r.Errors != 0 || r.Requests != served.Load() || r.OK != accepted.Load() || r.OK == 0 || r.OK == r.Requests {
		t.Errorf("generator counted %d requests, %d OK, %d errors; server served %d, accepted %d",
			r.Requests, r.OK, r.Errors, served.Load(), accepted.Load())
	}
	if r.Latency.total != r.Requests || r.Latency.quantile(0.5) < time.Millisecond {
		t.Errorf("latency histogram has %d samples, p50 %v", r.Latency.total, r.Latency.quantile(0.5))
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * 10 * time.Microsecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 5 * time.Millisecond, 0.99: 9900 * time.Microsecond} {
		got := h.quantile(q)
		if got < want*97/100 || got > want*103/100 {
			t.Errorf("quantile(%v) = %v, want about %v", q, got, want)
		}
	}
}
