package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite testdata/exposition.txt from the running binary")

// goldenExposition is the file that pins what dashboards and alerts depend
// on: every metric's name, type, help and label names, not their values.
const goldenExposition = "testdata/exposition.txt"

// TestExpositionGolden runs the binary with every sink (log, PostgreSQL,
// Kafka on kfake), the spool, Kafka client metrics and a TLS metrics
// listener with a bearer token, delivers a few events, checks the scrape
// with the real promtool, and compares its shape, with that of a run
// without the spool, with testdata. A renamed
// metric, help text or label shows up as a diff in review; run
// `go test ./cmd/gotrack -run ExpositionGolden -update` to accept it.
func TestExpositionGolden(t *testing.T) {
	promtool := testkit.RequireTool(t, "promtool")
	table := pgtest.Table(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "gotrack.events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pki := newSecurePKI(t)
	p := startGotrack(t, append(pki.env, "OUTPUTS=log,postgres,kafka", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table,
		"KAFKA_BROKERS="+strings.Join(c.ListenAddrs(), ","), "KAFKA_CLIENT_METRICS=true",
		"SPOOL_DIR="+filepath.Join(t.TempDir(), "spool"), "FLUSH_INTERVAL=10ms")...)
	sendEvents(t, p.ingest, 4) // 6 events
	var text []byte
	testkit.Eventually(t, "every sink to write the events", func() bool {
		text = pki.scrape(t, p.metrics)
		for _, s := range []string{"log", "postgres", "kafka"} {
			if !bytes.Contains(text, []byte(`gotrack_events_ingested_total{sink="`+s+`"} 6`)) {
				return false
			}
		}
		return true
	})
	p.stop(t)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// Without the spool, the in-memory queues expose their capacity instead.
	q := startGotrack(t, append(pki.env, "OUTPUTS=log")...)
	memory := pki.scrape(t, q.metrics)
	q.stop(t)

	got := shape(t, text, memory)
	if *update {
		if err := os.WriteFile(goldenExposition, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(goldenExposition)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the exposition differs from %s; if the change is meant, run go test ./cmd/gotrack -run ExpositionGolden -update\n%s",
			goldenExposition, lineDiff(string(want), string(got)))
	}
}

// shape reduces expositions to their families' names, types, help and
// label names, sorted, each family once. The Go runtime's and the process's own metrics
// (go_*, process_*) are left out: they belong to client_golang and change
// with the Go version. So are franz-go's per-broker series
// (gotrack_kafka_* with labels), which come and go with connections; its
// unlabelled gauges stay.
func shape(t *testing.T, expositions ...[]byte) []byte {
	t.Helper()
	families := map[string]*dto.MetricFamily{}
	for _, e := range expositions {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fs, err := parser.TextToMetricFamilies(bytes.NewReader(e))
		if err != nil {
			t.Fatal(err)
		}
		for name, mf := range fs {
			if _, ok := families[name]; !ok {
				families[name] = mf
			}
		}
	}
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, name := range names {
		mf := families[name]
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		labels := labelNames(mf)
		if strings.HasPrefix(name, "gotrack_kafka_") && len(labels) > 0 {
			continue
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, mf.GetHelp(), name, strings.ToLower(mf.GetType().String()))
		if len(labels) > 0 {
			fmt.Fprintf(&b, "%s{%s}\n", name, strings.Join(labels, ","))
		} else {
			fmt.Fprintf(&b, "%s\n", name)
		}
	}
	return b.Bytes()
}

func labelNames(mf *dto.MetricFamily) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if !slices.Contains(out, l.GetName()) {
				out = append(out, l.GetName())
			}
		}
	}
	slices.Sort(out)
	return out
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
