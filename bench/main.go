// Command bench is GoTrack's load benchmark. It builds gotrack and a bare
// net/http baseline, runs the same load against each in alternation
// (baseline, gotrack, baseline, gotrack, ...), and reports requests and
// events per second, the ratio to the baseline pair by pair, latency, CPU
// per 1,000 events, peak RSS, and loss: every 2xx the load generator counted
// against the events found in each sink after a graceful stop.
//
//	go run ./bench                                 # scenarios pixel, collect and spool
//	bench/run.sh -scenarios pixel,collect,postgres # also starts a throwaway PostgreSQL
//	go run ./bench -scenarios kafka                # starts kfake (bench/kfake) for each run
//
// The kafka scenario also compares the sink's records per second with a
// plain franz-go producer writing the same records to the same kfake.
//
// It prints a Markdown table and writes the same results as JSON (-json).
// The README's Performance section is that output:
//
//	bench/run.sh -scenarios ... -json bench/readme.json -readme README.md
//
// and TestREADMEIsBenchOutput keeps the two equal.
// The exit status is non-zero when any event is unaccounted for.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

type options struct {
	scenarios []string
	runs      int
	conns     int
	duration  time.Duration
	jsonPath  string
	workDir   string
	perfDir   string   // when set, perf record profiles gotrack during each run
	kfakeBin  string   // bench/kfake, built for the kafka scenario
	readme    string   // when set, the README whose Performance section gets the results
	env       []string // extra KEY=VALUE settings for gotrack, after the scenario's
}

func main() {
	var o options
	var scenarios string
	flag.StringVar(&scenarios, "scenarios", "pixel,collect,spool", "comma list of: "+strings.Join(scenarioNames(), ", "))
	flag.IntVar(&o.runs, "runs", 3, "runs of each server per scenario (at least 3 for a median)")
	flag.IntVar(&o.conns, "conns", 64, "concurrent connections")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "load time per run")
	flag.StringVar(&o.jsonPath, "json", "bench/results/latest.json", "where to write the results as JSON")
	flag.StringVar(&o.perfDir, "perf", "", "record a perf profile of gotrack during each run into this directory (needs perf)")
	flag.StringVar(&o.readme, "readme", "", "write the results into this README's Performance section (between its bench markers)")
	flag.Func("env", "KEY=VALUE: an extra setting for gotrack in every scenario, after the scenario's own (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		o.env = append(o.env, v)
		return nil
	})
	render := flag.String("render", "", "run nothing: write the results in this JSON file (from -json) into -readme")
	flag.Parse()
	o.scenarios = strings.Split(scenarios, ",")
	if *render != "" {
		rep, err := readReport(*render)
		if err == nil {
			err = writeReadme(o.readme, rep)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
