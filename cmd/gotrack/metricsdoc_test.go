package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// notExposedInGolden are the metrics METRICS.md documents that the run
// behind testdata/exposition.txt does not expose, and why.
var notExposedInGolden = map[string]string{
	"gotrack_auth_failures_total":                   "registered under AUTH_MODE=key only",
	"gotrack_rate_limited_total":                    "registered with a rate limit only",
	"gotrack_geoip_reloads_total":                   "registered with GEOIP_DB or GEOIP_ASN_DB only",
	"gotrack_replay_events":                         "pushed by gotrack replay, never served",
	"gotrack_replay_duration_seconds":               "pushed by gotrack replay, never served",
	"gotrack_replay_last_success_timestamp_seconds": "pushed by gotrack replay, never served",
}

// docMetric is one metric as METRICS.md documents it.
type docMetric struct {
	typ    string // "" when documented in prose, outside a table
	labels []string
}

// TestMetricsDocumented keeps METRICS.md and the exposition in step: every
// family the binary exposes (testdata/exposition.txt, which
// TestExpositionGolden keeps equal to what the binary serves) has a row in
// METRICS.md with its type and label names, or is named in its prose
// (gotrack_build_info, and franz-go's gotrack_kafka_* under their own
// heading); and every metric in a METRICS.md table is exposed, or is in
// notExposedInGolden with the reason.
func TestMetricsDocumented(t *testing.T) {
	doc := documentedMetrics(t, "../../METRICS.md")
	golden, err := os.ReadFile(goldenExposition)
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]docMetric{}
	for line := range strings.Lines(string(golden)) {
		line = strings.TrimSpace(line)
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			exposed[f[2]] = docMetric{typ: f[3]}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels, _ := strings.Cut(strings.TrimSuffix(line, "}"), "{")
		m := exposed[name]
		if labels != "" {
			m.labels = strings.Split(labels, ",")
		}
		exposed[name] = m
	}
	if len(exposed) < 30 {
		t.Fatalf("read %d families from %s; the format changed?", len(exposed), goldenExposition)
	}

	for name, e := range exposed {
		d, ok := doc[name]
		switch {
		case !ok && strings.HasPrefix(name, "gotrack_kafka_"):
			// franz-go's metrics, documented together under their heading.
		case !ok:
			t.Errorf("%s is exposed but METRICS.md does not document it", name)
		case d.typ != "" && d.typ != e.typ:
			t.Errorf("%s: METRICS.md says %s, the exposition %s", name, d.typ, e.typ)
		case !slices.Equal(sorted(d.labels), sorted(e.labels)):
			t.Errorf("%s: METRICS.md gives labels %v, the exposition %v", name, d.labels, e.labels)
		}
	}
	for name, d := range doc {
		if _, ok := exposed[name]; ok || d.typ == "" {
			continue
		}
		if _, ok := notExposedInGolden[name]; !ok {
			t.Errorf("METRICS.md documents %s, which the binary does not expose (or add it to notExposedInGolden, saying why)", name)
		}
	}
	for name := range notExposedInGolden {
		if _, ok := doc[name]; !ok {
			t.Errorf("notExposedInGolden lists %s, which METRICS.md does not document", name)
		}
		if _, ok := exposed[name]; ok {
			t.Errorf("notExposedInGolden lists %s, which the exposition has: remove it from the list", name)
		}
	}
}

var (
	ticked    = regexp.MustCompile("`([a-z_]+)`")
	proseName = regexp.MustCompile("`((?:gotrack|promhttp)_[a-z_]+)(?:\\{([a-z_,]*)\\})?`")
)

// documentedMetrics reads the metrics of path's tables (rows of metric
// names, type, label names) and those its prose names in backquotes.
func documentedMetrics(t *testing.T, path string) map[string]docMetric {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]docMetric{}
	for line := range strings.Lines(string(b)) {
		cells := strings.Split(line, "|")
		if len(cells) >= 5 && strings.HasPrefix(line, "| `") {
			typ := strings.TrimSpace(cells[2])
			var labels []string
			for _, m := range ticked.FindAllStringSubmatch(cells[3], -1) {
				labels = append(labels, m[1])
			}
			for _, m := range ticked.FindAllStringSubmatch(cells[1], -1) {
				doc[m[1]] = docMetric{typ: typ, labels: labels}
			}
			continue
		}
		for _, m := range proseName.FindAllStringSubmatch(line, -1) {
			if _, ok := doc[m[1]]; ok {
				continue
			}
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			doc[m[1]] = docMetric{labels: labels}
		}
	}
	if len(doc) < 30 {
		t.Fatalf("read %d metrics from %s; the format changed?", len(doc), path)
	}
	return doc
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
