package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(xs []float64, format string) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", median(xs), slices.Min(xs), slices.Max(xs))
}

func pick(runs []runResult, server string, f func(runResult) float64) []float64 {
	var out []float64
	for _, r := range runs {
		if r.Server == server {
			out = append(out, f(r))
		}
	}
	return out
}

func printMarkdown(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nMachine: %s, %s CPUs, %s, %s, kernel %s, %s. Load: %d connections, %s per run, runs alternating baseline and gotrack.\n\n",
		rep.Machine["cpu"], rep.Machine["cpus"], rep.Machine["memory"], rep.Machine["os"], rep.Machine["kernel"], rep.Machine["go"],
		rep.Conns, rep.Duration)
	fmt.Fprintln(w, "| scenario | server | req/s, median (min–max) | events/s, median | gotrack / baseline, pair by pair | p50 ms | p99 ms | CPU s / 1k events | peak RSS MiB | events 2xx → stored |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, sr := range rep.Scenarios {
		for _, server := range []string{"baseline", "gotrack"} {
			ratio, stored := "", ""
			if server == "gotrack" {
				ratio = spread(pctOf(sr.Ratios), "%.0f%%")
				var exp, got []string
				for _, r := range sr.Runs {
					if r.Server != "gotrack" {
						continue
					}
					exp = append(exp, fmt.Sprint(r.Expected))
					var parts []string
					for _, s := range slices.Sorted(maps.Keys(r.Stored)) {
						parts = append(parts, fmt.Sprintf("%s %d", s, r.Stored[s]))
					}
					got = append(got, strings.Join(parts, ", "))
				}
				stored = "lost 0"
				if sr.Lost > 0 || sr.Surplus > 0 {
					stored = fmt.Sprintf("**LOST %d, surplus %d**", sr.Lost, sr.Surplus)
				}
				stored += fmt.Sprintf(" (last run: %s → %s)", exp[len(exp)-1], got[len(got)-1])
				if cu := pick(sr.Runs, "gotrack", func(r runResult) float64 { return r.CatchUpSeconds }); slices.Max(cu) > 0 {
					what := "table"
					if _, ok := sr.Runs[len(sr.Runs)-1].Stored["kafka"]; ok {
						what = "topic"
					}
					stored += fmt.Sprintf("; %s caught up %.2fs (max %.2fs) after the load", what, median(cu), slices.Max(cu))
				}
				if sp := pick(sr.Runs, "gotrack", func(r runResult) float64 { return float64(r.SpansReceived) }); slices.Max(sp) > 0 {
					stored += fmt.Sprintf("; OTLP spans received (last run): %.0f", sp[len(sp)-1])
				}
			}
			fmt.Fprintf(w, "| %s | %s | %s | %.0f | %s | %.2f | %.2f | %.3f | %.0f | %s |\n", sr.Name, server,
				spread(pick(sr.Runs, server, func(r runResult) float64 { return r.RPS }), "%.0f"),
				median(pick(sr.Runs, server, func(r runResult) float64 { return r.EPS })), ratio,
				median(pick(sr.Runs, server, func(r runResult) float64 { return r.P50ms })),
				median(pick(sr.Runs, server, func(r runResult) float64 { return r.P99ms })),
				median(pick(sr.Runs, server, func(r runResult) float64 { return r.CPUPer1k })),
				slices.Max(pick(sr.Runs, server, func(r runResult) float64 { return r.PeakRSSMiB })),
				stored)
		}
	}
	fmt.Fprintln(w)
	printPerCore(w, rep)
	for _, sr := range rep.Scenarios {
		fmt.Fprintf(w, "- %s: %s\n", sr.Name, sr.About)
		if pg := pick(sr.Runs, "gotrack", func(r runResult) float64 { return r.PGCPUPer1k }); slices.Max(pg) > 0 {
			fmt.Fprintf(w, "  - PostgreSQL's own CPU s / 1k events, median: %.3f (gotrack + PostgreSQL: %.3f)\n", median(pg),
				median(pick(sr.Runs, "gotrack", func(r runResult) float64 { return r.CPUPer1k + r.PGCPUPer1k })))
		}
		if kf := pick(sr.Runs, "gotrack", func(r runResult) float64 { return r.KfakeCPUPer1k }); slices.Max(kf) > 0 {
			fmt.Fprintf(w, "  - kfake's own CPU s / 1k events, median: %.3f (gotrack + kfake: %.3f)\n", median(kf),
				median(pick(sr.Runs, "gotrack", func(r runResult) float64 { return r.CPUPer1k + r.KfakeCPUPer1k })))
			rate := func(f func(r runResult) float64) string { return spread(pick(sr.Runs, "gotrack", f), "%.0f") }
			fmt.Fprintf(w, "  - records/s into kfake, median (min–max), after the load, the topic's records written again in batches of %d, one batch awaited at a time, best of 3: "+
				"GoTrack's kafka sink %s, a plain franz-go producer with the same client settings %s (%s all at once). "+
				"Under the load, the sink wrote %s per second of its own write time\n", plainBatch,
				rate(func(r runResult) float64 { return r.KafkaSinkBatched }), rate(func(r runResult) float64 { return r.KafkaPlainBatched }),
				rate(func(r runResult) float64 { return r.KafkaPlainAsync }), rate(func(r runResult) float64 { return r.KafkaSinkRate }))
		}
	}
}

func pctOf(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = 100 * x
	}
	return out
}
