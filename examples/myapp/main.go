// Command myapp is the exercise of seed 003 built on the httpmetrics
// package: /work sleeps for a random time and answers 200 or 500 at random,
// and /metrics exposes myapp_processed_ops_total{status} and
// myapp_request_duration_seconds, with the Go runtime (go_*) and process
// (process_*) metrics.
//
//	go run ./examples/myapp -addr 127.0.0.1:8080 -max-sleep 2s -error-rate 0.2
//	curl localhost:8080/work; curl localhost:8080/metrics | grep myapp_
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gotrack/gotrack/httpmetrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "myapp:", err)
		os.Exit(1)
	}
}

type options struct {
	addr               string
	minSleep, maxSleep time.Duration
	errorRate          float64
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("myapp", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.DurationVar(&o.minSleep, "min-sleep", 0, "shortest simulated work")
	fs.DurationVar(&o.maxSleep, "max-sleep", 2*time.Second, "longest simulated work")
	fs.Float64Var(&o.errorRate, "error-rate", 0.2, "share of requests answered 500, from 0 to 1")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.minSleep < 0 || o.maxSleep < o.minSleep {
		return o, errors.New("want 0 <= -min-sleep <= -max-sleep")
	}
	if o.errorRate < 0 || o.errorRate > 1 {
		return o, errors.New("-error-rate must be from 0 to 1")
	}
	return o, nil
}

// newRegistry returns the app's own registry, carrying the Go runtime
// (go_*) and process (process_*) collectors. Seed 003's promhttp.Handler()
// serves the global default registry, which registers both by itself; a
// registry of our own starts empty, so without these two lines /metrics
// would lose the memory, GC, goroutine, CPU and file-descriptor series that
// dashboards expect. A registry of our own is still the better choice: no
// package-level state, and tests build a fresh one each time.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// newHandler returns the app's routes with /work instrumented on reg.
func newHandler(o options, reg *prometheus.Registry) (http.Handler, error) {
	m, err := httpmetrics.New(reg, httpmetrics.Opts{
		Namespace:      "myapp",
		RequestsName:   "processed_ops_total",
		RequestsHelp:   "The total number of processed events",
		RequestsLabels: []httpmetrics.Label{httpmetrics.Status},
		DurationName:   "request_duration_seconds",
		DurationHelp:   "Time taken to process a request.",
		Buckets:        []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		InFlightName:   "-",
	})
	if err != nil {
		return nil, err
	}
	work := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := o.minSleep
		if span := o.maxSleep - o.minSleep; span > 0 {
			d += rand.N(span)
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		if rand.Float64() < o.errorRate {
			http.Error(w, "simulated failure", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "worked for %v\n", d.Round(time.Millisecond))
	})
	mux := http.NewServeMux()
	mux.Handle("GET /work", m.Wrap(work))
	// InstrumentMetricHandler adds the promhttp_metric_handler_* series that
	// promhttp.Handler() would have brought too.
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
	return mux, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	h, err := newHandler(o, newRegistry())
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: o.addr, Handler: h, ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout: o.maxSleep + 10*time.Second, IdleTimeout: time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Fprintf(stderr, "myapp listening on http://%s (/work, /metrics)\n", o.addr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
