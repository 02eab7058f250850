package httpmetrics

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /px.gif", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("gif")) })
	mux.HandleFunc("POST /items/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	return mux
}

func newMetrics(t *testing.T, reg prometheus.Registerer) *Metrics {
	t.Helper()
	m, err := New(reg, Opts{
		Namespace:      "test",
		RequestsLabels: []Label{Endpoint, Method, Status},
		DurationLabels: []Label{Endpoint, Method},
		Routes: []Route{
			{Pattern: "GET /px.gif", Statuses: []int{200}},
			{Pattern: "POST /items/{id}", Statuses: []int{202}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLabelsByPattern(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newMetrics(t, reg).Wrap(newMux())
	for _, req := range []*http.Request{
		httptest.NewRequest("GET", "/px.gif?a=1", nil),
		httptest.NewRequest("HEAD", "/px.gif", nil),
		httptest.NewRequest("POST", "/items/123", nil),
		httptest.NewRequest("POST", "/items/456", nil),
		httptest.NewRequest("GET", "/nope", nil),
		httptest.NewRequest("BREW", "/px.gif", nil),
	} {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	want := `
# HELP test_http_requests_total HTTP requests served.
# TYPE test_http_requests_total counter
test_http_requests_total{endpoint="/items/{id}",method="POST",status="202"} 2
test_http_requests_total{endpoint="/px.gif",method="GET",status="200"} 1
test_http_requests_total{endpoint="/px.gif",method="HEAD",status="200"} 1
test_http_requests_total{endpoint="other",method="GET",status="404"} 1
test_http_requests_total{endpoint="other",method="OTHER",status="405"} 1
# HELP test_http_requests_in_flight HTTP requests being served now.
# TYPE test_http_requests_in_flight gauge
test_http_requests_in_flight 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "test_http_requests_total", "test_http_requests_in_flight"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestCardinalityBounded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newMetrics(t, reg).Wrap(newMux())
	warm := func() {
		for _, p := range []string{"/a", "/px.gif"} {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
		}
	}
	warm()
	before, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	methods := []string{"GET", "POST"}
	for i := range 5000 {
		path := fmt.Sprintf("/%x/%d?q=%d", rand.Uint64(), i, i)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(methods[i%2], path, nil))
	}
	// The only new label set is POST on "other" with 404: one counter and
	// one histogram. Random paths add nothing.
	after, _ := testutil.GatherAndCount(reg)
	if after != before+2 {
		t.Errorf("series grew from %d to %d after 5000 random paths", before, after)
	}
	for i := range 5000 {
		path := fmt.Sprintf("/%x/%d", rand.Uint64(), i)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(methods[i%2], path, nil))
	}
	if again, _ := testutil.GatherAndCount(reg); again != after {
		t.Errorf("series grew from %d to %d on a second round of random paths", after, again)
	}
}

func TestUnknownLabel(t *testing.T) {
	if _, err := New(prometheus.NewRegistry(), Opts{RequestsLabels: []Label{"path"}}); err == nil {
		t.Error("New accepted a raw-path label")
	}
}

// TestPreinitialisedRouteAllocs: a request to a pre-initialised route takes
// its series as they are, without building label values: the middleware's
// one allocation is the status recorder.
func TestPreinitialisedRouteAllocs(t *testing.T) {
	m, err := New(prometheus.NewRegistry(), Opts{
		RequestsLabels: []Label{Endpoint, Method, Status},
		DurationLabels: []Label{Endpoint, Method},
		Routes:         []Route{{Pattern: "GET /px.gif", Statuses: []int{200}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /px.gif", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	h := m.Wrap(mux)
	req := httptest.NewRequest("GET", "/px.gif?e=x", nil)
	w := &nopWriter{h: http.Header{}}
	if allocs := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, req) }); allocs > 1 {
		t.Errorf("a request to a pre-initialised route allocates %v times, want 1", allocs)
	}
}
