// Command gotrack is the GoTrack event collector.
//
//	gotrack [serve]                       run the collector (the default)
//	gotrack replay [--sink NAME] FILE...  deliver NDJSON event or dead-letter files again
//	gotrack spool verify DIR              check a stopped spool without changing it
//	gotrack version                       print the version
//	gotrack -h                            list the commands, and every setting with its default
//
// Every setting comes from the environment; see the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/config"
	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/enrich"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/gcpace"
	"github.com/gotrack/gotrack/internal/ingest"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/ratelimit"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/kafka"
	"github.com/gotrack/gotrack/internal/sink/ndjson"
	"github.com/gotrack/gotrack/internal/sink/postgres"
	"github.com/gotrack/gotrack/internal/source"
	"github.com/gotrack/gotrack/internal/spool"
	"github.com/gotrack/gotrack/internal/telemetry"
	"github.com/gotrack/gotrack/internal/tracing"
)

// commands is every subcommand, one line each, for `gotrack -h`.
var commands = []config.Command{
	{Name: "serve", Help: "run the collector (the default command)"},
	{Name: "replay [--sink NAME] FILE...", Help: "deliver NDJSON event or dead-letter files to the sinks again"},
	{Name: "spool verify DIR", Help: "check a stopped spool's segments and cursors without changing them"},
	{Name: "version", Help: "print the version"},
}

func main() {
	// SIGINT and SIGTERM cancel ctx, and run catches SIGHUP, before
	// anything slow happens.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotrack:", err)
		os.Exit(1)
	}
}

// run is the whole program, driven by its arguments, environment and output
// streams so that tests can run it in-process. It returns when ctx is
// cancelled and the graceful stop is done.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// SIGHUP is caught from the first line: its default action kills the
	// process, and logrotate may send it while a start is slow (PostgreSQL
	// slow to answer, say). Until the sinks are open it is ignored.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr, hup, startHooks{})
	case "replay":
		return replayCmd(ctx, args, getenv, stdout, stderr)
	case "spool":
		return spoolCmd(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "gotrack %s (%s)\n", telemetry.Version, runtime.Version())
		return nil
	}
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i], _, _ = strings.Cut(c.Name, " ")
	}
	return fmt.Errorf("unknown command %q (want %s; -h for help)", cmd, strings.Join(names, ", "))
}

// startHooks let tests fail a start after any step and see what it opened.
type startHooks struct {
	fail   func(step string) error
	opened func(outputs []pipeline.Output, sp *spool.Spool) // after the sinks, and after the spool
}

// startSteps names the steps of a start, in order, as startHooks.fail sees them.
var startSteps = []string{"sinks", "pipeline metrics", "spool", "pipeline", "sources", "enrichment", "handler", "metrics listener", "ingest listener"}

func (h startHooks) after(step string) error {
	if h.fail == nil {
		return nil
	}
	return h.fail(step)
}

// serve runs the collector. Whatever it opened before a failing step, it
// closes before it returns, within SHUTDOWN_TIMEOUT.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, hup <-chan os.Signal, hooks startHooks) (err error) {
	fs := flag.NewFlagSet("gotrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { config.Usage(stdout, commands) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	typos := config.Typos(os.Environ())
	cfg, err := config.Load(getenv)
	if err != nil {
		// A misspelt setting is often why the configuration is invalid
		// (PG_DNS leaves PG_DSN unset): say so in the same report.
		for _, w := range typos {
			fmt.Fprintln(stderr, "gotrack: warning:", w)
		}
		return err
	}
	log := slog.New(tracing.LogHandler(telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel).Handler()))
	for _, w := range typos {
		log.Warn(w)
	}
	reg := telemetry.NewRegistry()
	tracing.LogSDK(log)
	tp, err := tracing.Setup(cfg.Tracing, telemetry.Version)
	if err != nil {
		return err
	}
	// stopBy is the deadline of the stop, once it began: SHUTDOWN_TIMEOUT
	// bounds the whole stop, the export of the spans still buffered too.
	var stopBy time.Time
	defer func() {
		// Export the spans still buffered, in the time the stop has left.
		if stopBy.IsZero() {
			stopBy = time.Now().Add(cfg.ShutdownTimeout)
		}
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), stopBy)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("tracing: spans not exported at exit", "err", err)
		}
	}()
	if getenv("GOGC") == "" {
		// GoTrack's live heap is small and it allocates per request, so the
		// default GOGC=100 collects very often; 200 costs some MiB of RSS and
		// measurably less CPU (bench: /collect 187k -> 225k events/s), and
		// up to 400 while the heap stays under gcpace's budget less again.
		debug.SetGCPercent(gcpace.Min)
		pctx, stopPace := context.WithCancel(ctx)
		defer stopPace()
		go gcpace.Run(pctx, gcpace.DefaultBudget, 100*time.Millisecond)
	}
	if getenv("GOMAXPROCS") == "" {
		raiseProcs()
	}
	norm, err := event.NewNormalizer(cfg.Privacy)
	if err != nil {
		return err
	}

	// What is open so far, closed in reverse order when a step fails. Once
	// the pipeline exists it owns the sinks, the spool and the dead-letter
	// file.
	var (
		outputs []pipeline.Output
		sp      *spool.Spool
		pipe    *pipeline.Pipeline
		metrics *telemetry.MetricsServer
		ln      net.Listener
		started bool // from then on, shutdown closes everything
	)
	defer func() {
		if err == nil || started {
			return
		}
		stopBy = time.Now().Add(cfg.ShutdownTimeout)
		cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), stopBy)
		defer cancel()
		var errs []error
		if ln != nil {
			errs = append(errs, ln.Close())
		}
		if metrics != nil {
			errs = append(errs, metrics.Shutdown(cctx))
		}
		if pipe != nil {
			errs = append(errs, pipe.Close(cctx))
		} else {
			if sp != nil {
				errs = append(errs, sp.Close())
			}
			errs = append(errs, closeSinks(cctx, outputs))
		}
		err = errors.Join(err, errors.Join(errs...))
	}()
	step := func(name string, err error) error {
		if err != nil {
			return err
		}
		return hooks.after(name)
	}

	outputs, err = openSinks(ctx, cfg, reg, log)
	if err == nil && hooks.opened != nil {
		hooks.opened(outputs, nil)
	}
	if err := step("sinks", err); err != nil {
		return err
	}
	names := make([]string, len(outputs))
	for i, o := range outputs {
		names[i] = o.Name
	}
	pm, err := pipeline.NewMetrics(reg, names)
	if err := step("pipeline metrics", err); err != nil {
		return err
	}
	popts := cfg.Pipeline
	popts.Tracer = tp.Tracer()
	if cfg.Spool.Dir != "" {
		sm, err := spool.NewMetrics(reg, names)
		if err == nil {
			sp, err = spool.Open(spool.Options{Dir: cfg.Spool.Dir, Sync: cfg.Spool.Sync, MaxBytes: cfg.Spool.MaxBytes,
				Readers: names, Metrics: sm, Log: log})
		}
		if err == nil && hooks.opened != nil {
			hooks.opened(outputs, sp)
		}
		if err := step("spool", err); err != nil {
			return err
		}
		popts.Spool = sp
	}
	pipe, err = pipeline.New(outputs, popts, pm, reg, deadletter.New(cfg.DeadLetterPath), log)
	if err := step("pipeline", err); err != nil {
		return err
	}
	auth, err := source.New(source.Options{Mode: cfg.Sources.Mode, Path: cfg.Sources.File, Set: cfg.Sources.Set,
		SignatureTolerance: cfg.Sources.SignatureTolerance}, reg, log)
	if err := step("sources", err); err != nil {
		return err
	}
	enricher, err := enrich.New(cfg.Enrich, reg, log)
	if err := step("enrichment", err); err != nil {
		return err
	}
	handler, err := ingest.NewHandler(ingest.Options{
		Enricher:         enricher,
		Auth:             auth,
		RateLimitPerIP:   perIP(cfg.Sources.RateLimitPerIP),
		MaxBodyBytes:     cfg.MaxBodyBytes,
		MaxBatchEvents:   cfg.MaxBatchEvents,
		CORSOrigins:      cfg.CORSOrigins,
		MaxInflightBytes: cfg.MaxInflightBytes,
		Tracer:           tp.Tracer(),
		LinkClientTraces: cfg.Tracing.LinkClientTraces,
		RoutePrefix:      cfg.RoutePrefix,
	}, norm, pipe, reg, log)
	if err := step("handler", err); err != nil {
		return err
	}

	metricsAddr := "disabled"
	if cfg.Metrics.Enabled {
		if metrics, err = telemetry.NewMetricsServer(cfg.Metrics, reg, log); err == nil {
			if err = metrics.Start(); err != nil {
				metrics = nil
			}
		}
		if err := step("metrics listener", err); err != nil {
			return err
		}
		metricsAddr = metrics.Scheme() + "://" + metrics.Addr() + "/metrics"
	}
	srv := ingest.NewServer(cfg.ServerAddr, handler, log)
	ln, err = net.Listen("tcp", cfg.ServerAddr)
	if err != nil {
		err = fmt.Errorf("ingest listener: listen on SERVER_ADDR=%s: %w", cfg.ServerAddr, err)
	} else if limited, lerr := ingest.LimitListener(ln, cfg.MaxConnections, srv, reg); lerr != nil {
		err = fmt.Errorf("ingest listener: %w", lerr) // ln, still bare, is closed below
	} else {
		ln = limited
	}
	if err := step("ingest listener", err); err != nil {
		return err
	}

	started = true
	pipe.Start()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	log.Info("gotrack started",
		"ingest_addr", ln.Addr().String(), "metrics", metricsAddr, "sinks", names,
		"ip_mode", cfg.Privacy.IPMode, "dnt_respect", cfg.Privacy.RespectDNT, "trust_proxy", cfg.Privacy.TrustProxy,
		"auth_mode", auth.String(), "queue_size", cfg.Pipeline.QueueSize, "queue_full_policy", cfg.Pipeline.FullPolicy, "spool", spoolDesc(cfg),
		"tracing", cfg.Tracing.TracesURL() != "" && !cfg.Tracing.Disabled, "trace_client_parent", clientParent(cfg.Tracing),
		"gomaxprocs", runtime.GOMAXPROCS(0), "version", telemetry.Version)

	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-serveErr:
			runErr = fmt.Errorf("ingest listener: %w", err)
			break wait
		case <-hup:
			reopen(outputs, log)
			_ = auth.Reload()     // logged and counted; a bad file keeps the previous sources
			_ = enricher.Reload() // likewise for the GeoIP databases
		}
	}
	stopBy = time.Now().Add(cfg.ShutdownTimeout) // shutdown's own deadline is a moment later
	return errors.Join(runErr, shutdown(ctx, cfg, srv, pipe, metrics, log))
}

// perIP returns the buckets of RATE_LIMIT_PER_IP, or nil when it is off.
func perIP(b ratelimit.Bucket) *ratelimit.IPs {
	if b.Rate == 0 {
		return nil
	}
	return ratelimit.NewKeyed[netip.Addr](b, ratelimit.DefaultIPBuckets, nil)
}

func spoolDesc(cfg *config.Config) string {
	switch {
	case cfg.Spool.Dir == "":
		return "off (events wait in memory)"
	case cfg.Spool.Sync.Always:
		return cfg.Spool.Dir + " (fsync before every 2xx)"
	}
	return cfg.Spool.Dir + " (fsync every " + cfg.Spool.Sync.Interval.String() + ")"
}

// listenerShare is how long the ingest listener may take to finish the
// requests under way at a stop: half of the time left before ctx's
// deadline.
func listenerShare(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Hour
	}
	return time.Until(d) / 2
}

// shutdown stops in order, all within SHUTDOWN_TIMEOUT, the one deadline
// passed down to every step:
//
//  1. for SHUTDOWN_DRAIN_DELAY, /readyz answers 503 while requests are
//     still served, so that load balancers stop sending;
//  2. the ingest listener stops accepting and finishes the requests under
//     way, for at most half of the time left (listenerShare);
//  3. the pipeline drains every buffer into its sink, dead-letters what a
//     sink cannot take in time (a spool keeps it instead), and closes the
//     spool, the sinks and the dead-letter file (see pipeline.Close);
//  4. the metrics listener stops.
//
// The deadline is fresh: ctx is already cancelled when a signal brought us
// here. Acknowledged events that were lost make the error non-nil, and so
// the exit status non-zero.
func shutdown(ctx context.Context, cfg *config.Config, srv *http.Server, pipe *pipeline.Pipeline, metrics *telemetry.MetricsServer, log *slog.Logger) error {
	log.Info("gotrack stopping", "timeout", cfg.ShutdownTimeout.String(), "drain_delay", cfg.ShutdownDrainDelay.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if d := cfg.ShutdownDrainDelay; d > 0 {
		pipe.StopReady()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-sctx.Done():
		}
		t.Stop()
	}
	var errs []error
	// The listener gets at most half of the time left: a request still
	// under way then (a client stalling its body, up to ReadTimeout) is cut
	// off, since it was not acknowledged, rather than leave the pipeline no
	// time to deliver or dead-letter the events that were.
	lctx, lcancel := context.WithTimeout(sctx, listenerShare(sctx))
	if err := srv.Shutdown(lctx); err != nil {
		srv.Close()
		errs = append(errs, fmt.Errorf("ingest listener: requests still under way were cut off: %w", err))
	}
	lcancel()
	if err := pipe.Close(sctx); err != nil {
		errs = append(errs, err)
	}
	for _, st := range pipe.Stats() {
		log.Info("sink delivered", "sink", st.Sink, "events", st.Delivered, "dead_lettered", st.DeadLettered, "lost", st.Lost)
	}
	if metrics != nil {
		if err := metrics.Shutdown(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		log.Error("gotrack stopped with errors", "err", err)
	} else {
		log.Info("gotrack stopped")
	}
	return err
}

// openSinks opens every sink OUTPUTS names, closing those already open when
// one fails. The sinks log to log.
func openSinks(ctx context.Context, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) ([]pipeline.Output, error) {
	var outputs []pipeline.Output
	for _, name := range cfg.Outputs {
		var (
			s   sink.Sink
			err error
			out = pipeline.Output{Name: name}
		)
		switch name {
		case config.OutputLog:
			s, err = ndjson.Open(cfg.Log)
		case config.OutputPostgres:
			o := cfg.Postgres
			o.Logger = log
			s, err = postgres.Open(ctx, o)
		case config.OutputKafka:
			o := cfg.Kafka
			if cfg.KafkaMetrics && reg != nil {
				o.Metrics = reg
			}
			s, err = kafka.Open(o)
		default:
			err = fmt.Errorf("sink %q is not available in this build", name)
		}
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			return nil, errors.Join(fmt.Errorf("open sink %s: %w", name, err), closeSinks(cctx, outputs))
		}
		out.Sink = s
		outputs = append(outputs, out)
	}
	return outputs, nil
}

// closeSinks closes the sinks by ctx's deadline.
func closeSinks(ctx context.Context, outputs []pipeline.Output) error {
	var errs []error
	for _, o := range outputs {
		if err := o.Sink.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close sink %s: %w", o.Name, err))
		}
	}
	return errors.Join(errs...)
}

// clientParent is TRACE_CLIENT_PARENT's value, for the started line.
func clientParent(o tracing.Options) string {
	if o.LinkClientTraces {
		return "link"
	}
	return "follow"
}

// reopen makes file sinks reopen their files, after logrotate moved them.
func reopen(outputs []pipeline.Output, log *slog.Logger) {
	for _, o := range outputs {
		if r, ok := o.Sink.(sink.Reopener); ok {
			if err := r.Reopen(); err != nil {
				log.Error("reopen on SIGHUP failed", "sink", o.Name, "err", err)
			} else {
				log.Info("reopened on SIGHUP", "sink", o.Name)
			}
		}
	}
}

// raiseProcs gives the Go scheduler two more processors than its default,
// the machine's CPUs. GoTrack fsyncs on its busiest paths: the log sink
// under LOG_FSYNC=batch and the spool's group commit. A goroutine in fsync
// keeps its processor, and the scheduler takes it back only after up to
// 10 ms when the other processors look idle, so with as many processors as
// cores a core sat idle through most fsyncs (load benchmark on 2 cores:
// pixel 70% -> 81% of the bare net/http baseline, CPU per event moving as
// the baseline's did; the baseline gains nothing from more processors). Under a CPU
// quota (Go's default is then below the CPU count) it changes nothing:
// more threads than the quota pays for would be throttled, and Go's
// default keeps following the quota. It is set once per process: run may
// be called more than once in tests.
var raiseProcs = sync.OnceFunc(func() {
	if n := runtime.GOMAXPROCS(0); n >= runtime.NumCPU() {
		runtime.GOMAXPROCS(n + 2)
	}
})
