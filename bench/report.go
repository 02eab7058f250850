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
					stored += fmt.Sprintf("; table caught up %.2fs (max %.2fs) after the load", median(cu), slices.Max(cu))
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
	}
}

func pctOf(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = 100 * x
	}
	return out
}
