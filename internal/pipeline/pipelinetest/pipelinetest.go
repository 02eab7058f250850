// Package pipelinetest runs one sink behind a real pipeline, for the sinks'
// tests of retries, dead letters and shutdown.
package pipelinetest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/sink"
)

// Fixture is a started pipeline with one sink, its dead-letter file, and
// the registry of its metrics.
type Fixture struct {
	Pipe *pipeline.Pipeline
	Dead string
	Reg  *prometheus.Registry
}

// Start starts a pipeline delivering to s under name.
func Start(t *testing.T, name string, s sink.Sink, opts pipeline.Options) *Fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := pipeline.NewMetrics(reg, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(t.TempDir(), "dead.ndjson")
	p, err := pipeline.New([]pipeline.Output{{Name: name, Sink: s}}, opts, m, reg,
		deadletter.New(dead), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	return &Fixture{Pipe: p, Dead: dead, Reg: reg}
}

// Close closes the pipeline, failing the test on an error or when it takes
// longer than d.
func (f *Fixture) Close(t *testing.T, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := f.Pipe.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
