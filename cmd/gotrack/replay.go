package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/config"
	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/replay"
	"github.com/gotrack/gotrack/internal/telemetry"
	"github.com/gotrack/gotrack/internal/tracing"
)

// replayProgressEvery is how many events apart the replay span records its
// progress.
const replayProgressEvery = 10000

// replayCmd is `gotrack replay [--sink NAME] FILE...`: it delivers the
// events of NDJSON event logs or dead-letter files to the configured sinks.
// A dead-letter line goes back to the sink it failed in, unless --sink
// names another. Running it twice is harmless in PostgreSQL, which writes
// each event_id once; Kafka and the NDJSON sink store the events again
// (Kafka's records are keyed by event_id, for consumers that dedupe). It
// closes every file, sink and pipeline it opened, on every path.
func replayCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("gotrack replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	only := fs.String("sink", "", "deliver only to this sink (one of OUTPUTS)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: gotrack replay [--sink NAME] FILE...")
		fmt.Fprintln(stderr, "\nDelivers the events of NDJSON event files or dead-letter files to the sinks in OUTPUTS.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	files := fs.Args()
	if len(files) == 0 {
		fs.Usage()
		return errors.New("replay: name at least one file")
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := slog.New(tracing.LogHandler(telemetry.NewLogger(stderr, cfg.LogFormat, max(cfg.LogLevel, slog.LevelWarn)).Handler()))
	tracing.LogSDK(log)
	tp, err := tracing.Setup(cfg.Tracing, telemetry.Version)
	if err != nil {
		return err
	}
	run := tracing.StartRun(ctx, tp, "gotrack replay", attribute.Int("gotrack.replay.files", len(files)))
	ctx = run.Context()
	// What replay does once its events are written (pushing the job's OTLP
	// metrics, exporting its spans) has SHUTDOWN_TIMEOUT in all, from the
	// first of those steps, however slow a collector is.
	exit := sync.OnceValues(func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	})
	defer func() {
		sctx, cancel := exit()
		defer cancel()
		run.End(err)
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("tracing: spans not exported at exit", "err", err)
		}
	}()
	if *only != "" {
		if !slices.Contains(cfg.Outputs, *only) {
			return fmt.Errorf("replay: --sink %s is not in OUTPUTS (%v)", *only, cfg.Outputs)
		}
		cfg.Outputs = []string{*only}
	}
	in, err := replay.NewReader(files)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer in.Close()
	// Events that fail again must not be appended to a file being read.
	deadPath := cfg.DeadLetterPath
	if st, err := os.Stat(deadPath); err == nil {
		for _, f := range files {
			if fst, err := os.Stat(f); err == nil && os.SameFile(st, fst) {
				deadPath += ".replay-" + strconv.FormatInt(time.Now().Unix(), 10)
				fmt.Fprintf(stderr, "replay: events that fail again go to %s\n", deadPath)
				break
			}
		}
	}
	dead := deadletter.New(deadPath)

	outputs, err := openSinks(ctx, cfg, nil, log)
	if err != nil {
		return err
	}
	// One pipeline per sink, so that a dead-letter line reaches its own sink
	// only. Their queues wait for room rather than drop.
	pipes := map[string]*pipeline.Pipeline{}
	closeTimeout := max(cfg.ShutdownTimeout, 10*time.Minute)
	opts := cfg.Pipeline
	opts.FullPolicy, opts.EnqueueTimeout = pipeline.Block, 10*time.Minute
	// Each batch write attempt is a span, as in serve, a child of the run's.
	opts.Tracer, opts.Parent = tp.Tracer(), trace.SpanContextFromContext(ctx)
	for i, o := range outputs {
		reg := prometheus.NewRegistry()
		m, err := pipeline.NewMetrics(reg, []string{o.Name})
		var p *pipeline.Pipeline
		if err == nil {
			p, err = pipeline.New([]pipeline.Output{o}, opts, m, reg, dead, log)
		}
		if err != nil {
			// Close what is open: the pipelines started (each closes its
			// sink), and the sinks not yet handed to one.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
			defer cancel()
			errs := []error{err}
			for _, p := range pipes {
				errs = append(errs, p.Close(cctx))
			}
			errs = append(errs, closeSinks(cctx, outputs[i:]), dead.Close())
			return errors.Join(errs...)
		}
		p.Start()
		pipes[o.Name] = p
	}

	start := time.Now()
	var counts replay.Counts
	pending := map[string][]*event.Event{}
	submit := func(name string, force bool) {
		if batch := pending[name]; len(batch) > 0 && (force || len(batch) >= 100) {
			if err := pipes[name].Submit(batch); err != nil {
				counts.Failed += int64(len(batch))
				fmt.Fprintf(stderr, "replay: %d events not queued for %s: %v\n", len(batch), name, err)
			}
			pending[name] = nil
		}
	}
	progress := replay.NewProgress(stderr)
	var read int64
	interrupted := false
	for {
		// main turns SIGINT and SIGTERM into ctx's end: stop reading then,
		// or Ctrl-C would do nothing until every file is replayed.
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		line, err := in.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			counts.Failed++
			fmt.Fprintf(stderr, "%s:%d: %v\n", line.File, line.No, err)
			continue
		}
		read++
		targets := slices.Sorted(maps.Keys(pipes))
		if line.Sink != "" && *only == "" {
			targets = nil
			if _, ok := pipes[line.Sink]; ok {
				targets = []string{line.Sink}
			}
		}
		if len(targets) == 0 {
			counts.Skipped++
			continue
		}
		for _, name := range targets {
			pending[name] = append(pending[name], line.Event)
			submit(name, false)
		}
		progress.Update(in.Done(), in.Total(), read, false)
		if read%replayProgressEvery == 0 {
			run.Progress(in.Done(), in.Total(), read)
		}
	}
	for name := range pipes {
		submit(name, true)
	}
	var errs []error
	if interrupted {
		// Stopped by a signal: what is queued gets SHUTDOWN_TIMEOUT, as
		// serve's stop does, not the patient close of a finished replay.
		closeTimeout = cfg.ShutdownTimeout
		errs = append(errs, fmt.Errorf("replay: interrupted after %d events read; the lines after them were not replayed", read))
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	for name, p := range pipes {
		if err := p.Close(cctx); err != nil {
			errs = append(errs, err)
		}
		for _, st := range p.Stats() {
			counts.Replayed += st.Delivered
			counts.Failed += st.DeadLettered + st.Lost
			if st.DeadLettered > 0 {
				fmt.Fprintf(stderr, "replay: %d events failed again in %s; see %s\n", st.DeadLettered, name, deadPath)
			}
		}
	}
	done := in.Total()
	if interrupted {
		done = in.Done()
	}
	progress.Update(done, in.Total(), read, true)
	run.Progress(done, in.Total(), read)
	run.SetAttributes(attribute.Int64("gotrack.replay.replayed", counts.Replayed),
		attribute.Int64("gotrack.replay.failed", counts.Failed), attribute.Int64("gotrack.replay.skipped", counts.Skipped))
	took := time.Since(start)
	fmt.Fprintf(stdout, "replay: %d replayed, %d failed, %d skipped in %s\n", counts.Replayed, counts.Failed, counts.Skipped, took.Round(time.Millisecond))
	ok := counts.Failed == 0 && len(errs) == 0
	if cfg.Pushgateway.URL != "" {
		if err := replay.Push(replay.PushOptions{URL: cfg.Pushgateway.URL, User: cfg.Pushgateway.User,
			PasswordFile: cfg.Pushgateway.PasswordFile}, counts, took, ok); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Tracing.MetricsEnabled() {
		mctx, _ := exit()
		if err := tracing.PushJobMetrics(mctx, cfg.Tracing, telemetry.Version, replayGauges(counts, took, ok)); err != nil {
			errs = append(errs, err)
		}
	}
	if counts.Failed > 0 {
		errs = append(errs, fmt.Errorf("replay: %d lines or events failed", counts.Failed))
	}
	return errors.Join(errs...)
}

// replayGauges are the job metrics of a replay run for OTLP, named as those
// pushed to the Pushgateway; the last success time only when the run
// succeeded.
func replayGauges(c replay.Counts, took time.Duration, ok bool) []tracing.Gauge {
	help := "Events of the last replay run, by result (replayed, failed, skipped)."
	g := []tracing.Gauge{
		{Name: "gotrack_replay_events", Help: help, Value: float64(c.Replayed), Attrs: []attribute.KeyValue{attribute.String("result", "replayed")}},
		{Name: "gotrack_replay_events", Help: help, Value: float64(c.Failed), Attrs: []attribute.KeyValue{attribute.String("result", "failed")}},
		{Name: "gotrack_replay_events", Help: help, Value: float64(c.Skipped), Attrs: []attribute.KeyValue{attribute.String("result", "skipped")}},
		{Name: "gotrack_replay_duration_seconds", Help: "How long the last replay run took.", Unit: "s", Value: took.Seconds()},
	}
	if ok {
		g = append(g, tracing.Gauge{Name: "gotrack_replay_last_success_timestamp_seconds", Help: "Unix time the last successful replay run ended.",
			Unit: "s", Value: float64(time.Now().UnixNano()) / 1e9})
	}
	return g
}
