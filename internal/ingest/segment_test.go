package ingest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestSegmentSharesInflightBudget checks that the Segment API's bodies
// count against MAX_INFLIGHT_BYTES with /collect's.
func TestSegmentSharesInflightBudget(t *testing.T) {
	f := newFixture(t, event.Policy{}, Options{MaxBodyBytes: 64 << 10, MaxInflightBytes: 100 << 10})
	addr := f.serve(t)

	// A stalled batch holds its largest possible body, MAX_BODY_BYTES here.
	body := `{"batch":[{"type":"track","event":"x","userId":"u"}]}`
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)-1])
	testkit.Eventually(t, "a stalled batch to hold some of MAX_INFLIGHT_BYTES", func() bool { return budgetUsed(t, f) > 0 })
	if used := budgetUsed(t, f); used != 64<<10 {
		t.Errorf("a batch holds %v bytes of the budget, want %d", used, 64<<10)
	}

	// /collect and another batch no longer fit.
	if resp, b := rawRequest(t, addr, "POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000\r\n\r\n"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/collect over budget: %d %s", resp.StatusCode, b)
	}
	resp, b := rawRequest(t, addr, "POST /v1/b HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Errorf("/v1/b over budget: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	if v := testutil.ToFloat64(mustCounter(t, f.reg, "gotrack_requests_shed_total", ShedInflightBytes)); v != 2 {
		t.Errorf("gotrack_requests_shed_total = %v, want 2", v)
	}

	io.WriteString(stalled, body[len(body)-1:])
	resp, err = http.ReadResponse(bufio.NewReader(stalled), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stalled batch, completed: %v %v", resp, err)
	}
	if used := budgetUsed(t, f); used != 0 {
		t.Errorf("%v bytes still charged after every request ended", used)
	}
}
