package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/gotrack/gotrack/internal/replay"
	"github.com/gotrack/gotrack/internal/testkit"
)

// selectorUse is one vector selector of a PromQL expression: the metric
// name and the text of its label matchers ("" when it has none).
type selectorUse struct {
	Name     string
	Matchers string
}

// promqlKeywords are the words of PromQL that are not metric names when
// they are not followed by "(": aggregators (sum by (x) (...)), binary
// operators and modifiers, and the number literals inf and nan.
var promqlKeywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true,
}

// labelListKeywords are followed by a parenthesised list of label names,
// which are not metric names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlSelectors extracts the vector selectors of a PromQL expression. It
// is a careful scanner rather than Prometheus's parser (a heavy
// dependency): it skips strings, durations and subqueries in brackets,
// numbers, function calls, keywords and the label lists of by, without,
// on, ignoring and group_left/right, and reads the metric name from
// {__name__="..."} when the selector has no name before its braces.
func promqlSelectors(expr string) ([]selectorUse, error) {
	var uses []selectorUse
	s := expr
	i := 0
	skipSpace := func(j int) int {
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r') {
			j++
		}
		return j
	}
	// closing returns the index just past the bracket closing the one at
	// j, skipping strings.
	closing := func(j int, open, close byte) (int, error) {
		depth := 0
		for k := j; k < len(s); k++ {
			switch c := s[k]; c {
			case '"', '\'', '`':
				end := strings.IndexByte(s[k+1:], c)
				for c != '`' && end > 0 && s[k+end] == '\\' { // an escaped quote
					next := strings.IndexByte(s[k+end+2:], c)
					if next < 0 {
						end = -1
						break
					}
					end += next + 1
				}
				if end < 0 {
					return 0, fmt.Errorf("unterminated string in %q", expr)
				}
				k += end + 1
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return k + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			// label_replace and the like: not needed by the shipped
			// queries, so refused rather than half understood.
			return nil, fmt.Errorf("a string outside a selector in %q", expr)
		case c == '[':
			end, err := closing(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{': // a selector without a name: {__name__="x", ...}
			end, err := closing(i, '{', '}')
			if err != nil {
				return nil, err
			}
			m := s[i+1 : end-1]
			name := nameMatcher(m)
			if name == "" {
				return nil, fmt.Errorf("a selector without a metric name in %q", expr)
			}
			uses = append(uses, selectorUse{name, m})
			i = end
		case '0' <= c && c <= '9' || c == '.' && i+1 < len(s) && '0' <= s[i+1] && s[i+1] <= '9':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			next := skipSpace(j)
			switch {
			case labelListKeywords[strings.ToLower(word)] && next < len(s) && s[next] == '(':
				end, err := closing(next, '(', ')')
				if err != nil {
					return nil, err
				}
				i = end
			case next < len(s) && s[next] == '(': // a function call or aggregation
				i = j
			case promqlKeywords[strings.ToLower(word)]:
				i = j
			default:
				u := selectorUse{Name: word}
				i = j
				if next < len(s) && s[next] == '{' {
					end, err := closing(next, '{', '}')
					if err != nil {
						return nil, err
					}
					u.Matchers = s[next+1 : end-1]
					i = end
				}
				uses = append(uses, u)
			}
		default:
			i++
		}
	}
	return uses, nil
}

// nameMatcher returns the value of an exact __name__="..." matcher.
func nameMatcher(matchers string) string {
	for m := range strings.SplitSeq(matchers, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(m), "=")
		if ok && strings.TrimSpace(k) == "__name__" && !strings.HasPrefix(v, "~") {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

func TestPromQLSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (job, instance) (rate(a_total{job=~"$job"}[5m])) == 0 and on (job, instance) gotrack:up`, []string{"a_total", "gotrack:up"}},
		{`histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))`, []string{"x_bucket"}},
		{`expiry - time() < 14 * 86400`, []string{"expiry"}},
		{`up offset 5m > bool 1e3`, []string{"up"}},
		{`max by (instance, sink) (a / b) > 0.8`, []string{"a", "b"}},
		{`x{l="a}b{c", m='(y)'}`, []string{"x"}},
		{`{__name__="y", l="v"}`, []string{"y"}},
		{`a * on (job) group_left(version) z`, []string{"a", "z"}},
		{`sum without (le) (q) / sum(r) by (s)`, []string{"q", "r"}},
		{`sum(rate(a[5m:1m]))`, []string{"a"}},
		{`label_replace(up, "x", "$1", "job", "(.*)")`, nil}, // strings outside a selector: refused below
	} {
		uses, err := promqlSelectors(tc.expr)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: no error for strings outside selectors", tc.expr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, u := range uses {
			got = append(got, u.Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: names %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// prometheusOwnSeries are series Prometheus makes itself, which no target
// exposes: the synthetic series of every scrape and the alert state.
var prometheusOwnSeries = map[string]bool{
	"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
	"ALERTS": true, "ALERTS_FOR_STATE": true,
}

// exposedNames returns the metric names (of sample lines, so histograms
// give _bucket, _sum and _count) of a text exposition.
func exposedNames(exposition []byte, into map[string]bool) {
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end > 0 {
			into[line[:end]] = true
		}
	}
}

// shippedQuery is one PromQL expression of the dashboard or the rules.
type shippedQuery struct {
	where, expr string
	dashboard   bool
}

func shippedQueries(t *testing.T) (queries []shippedQuery, recorded map[string]bool) {
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
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, shippedQuery{"dashboard panel " + p.Title, tg.Expr, true})
		}
	}
	b, err = os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Record, Expr, For string
				Labels, Annotations      map[string]string
			}
		}
	}
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	recorded = map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
				queries = append(queries, shippedQuery{"recording rule " + r.Record, r.Expr, false})
			} else {
				queries = append(queries, shippedQuery{"alert " + r.Alert, r.Expr, false})
			}
		}
	}
	if len(queries) < 20 {
		t.Fatalf("only %d queries found in the dashboard and the rules", len(queries))
	}
	return queries, recorded
}

// TestDashboardAndAlertsQueryExposedMetrics fails when a dashboard panel or
// an alert queries a metric that GoTrack does not expose. The names come
// from a real GoTrack run with every feature that adds metrics (TLS, mTLS,
// a bearer token, the spool), scraped after traffic, and from a real
// Pushgateway after `gotrack replay`'s push; Prometheus's own series are an
// explicit list. It also checks that every selector of every panel uses the
// job and instance variables.
func TestDashboardAndAlertsQueryExposedMetrics(t *testing.T) {
	queries, recorded := shippedQueries(t)

	pki := newSecurePKI(t)
	p := startGotrack(t, append(pki.env, "FLUSH_INTERVAL=10ms", "SPOOL_DIR="+filepath.Join(t.TempDir(), "spool"))...)
	sendEvents(t, p.ingest, 20)
	testkit.Eventually(t, "the events to be written", func() bool { return len(readEventsQuiet(p.path("events.ndjson"))) == 30 })
	exposed := map[string]bool{}
	exposedNames(pki.scrape(t, p.metrics), exposed)
	p.stop(t)
	// Without a spool, the in-memory queues expose their capacity instead.
	q := startGotrack(t, "FLUSH_INTERVAL=10ms", "METRICS_ENABLED=true", "METRICS_ADDR=127.0.0.1:0")
	sendEvents(t, q.ingest, 20)
	testkit.Eventually(t, "the events to be written", func() bool { return len(readEventsQuiet(q.path("events.ndjson"))) == 30 })
	_, body := httpGet(t, q.metrics)
	exposedNames([]byte(body), exposed)
	q.stop(t)

	gw := startPushgateway(t)
	if err := replay.Push(replay.PushOptions{URL: gw}, replay.Counts{Replayed: 1}, time.Second, true); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(gw + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	pushedNames := map[string]bool{}
	exposedNames(b, pushedNames)
	for name := range pushedNames {
		if strings.HasPrefix(name, "gotrack_replay_") {
			exposed[name] = true
		}
	}

	var missing []string
	for _, q := range queries {
		uses, err := promqlSelectors(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(uses) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		for _, u := range uses {
			if !exposed[u.Name] && !prometheusOwnSeries[u.Name] && !recorded[u.Name] {
				missing = append(missing, fmt.Sprintf("%s queries %s, which GoTrack does not expose", q.where, u.Name))
			}
			if q.dashboard && (!strings.Contains(u.Matchers, `job=~"$job"`) || !strings.Contains(u.Matchers, `instance=~"$instance"`)) {
				t.Errorf("%s: %s{%s} does not use the $job and $instance variables", q.where, u.Name, u.Matchers)
			}
		}
	}
	sort.Strings(missing)
	for _, m := range slices.Compact(missing) {
		t.Error(m)
	}
}

// TestEveryAlertIsUnitTested fails when an alert of alerts.yml has no
// firing case in alerts_test.yml, which promtool test rules runs.
func TestEveryAlertIsUnitTested(t *testing.T) {
	b, err := os.ReadFile("../../deploy/prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	queries, _ := shippedQueries(t)
	n := 0
	for _, q := range queries {
		if name, ok := strings.CutPrefix(q.where, "alert "); ok {
			n++
			if !fires[name] {
				t.Errorf("alerts_test.yml never sees %s fire", name)
			}
		}
	}
	if n < 14 {
		t.Errorf("only %d alerts in alerts.yml", n)
	}
}
