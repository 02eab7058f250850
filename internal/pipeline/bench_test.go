package pipeline

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

type discardSink struct{}

func (discardSink) WriteBatch(context.Context, []*event.Event) error { return nil }
func (discardSink) Close(context.Context) error                      { return nil }

// BenchmarkSubmit measures enqueueing one event into two sinks' queues,
// from parallel producers, with workers draining them.
func BenchmarkSubmit(b *testing.B) {
	reg := prometheus.NewRegistry()
	m, _ := NewMetrics(reg, []string{"a", "b"})
	p, err := New([]Output{{Name: "a", Sink: discardSink{}}, {Name: "b", Sink: discardSink{}}}, Options{QueueSize: 100000},
		m, reg, deadletter.New(b.TempDir()+"/dead"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close(context.Background())
	e := sinktest.Events(1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.Submit(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSubmitEach(b *testing.B) {
	reg := prometheus.NewRegistry()
	m, _ := NewMetrics(reg, []string{"a"})
	p, err := New([]Output{{Name: "a", Sink: discardSink{}}}, Options{QueueSize: 100000},
		m, reg, deadletter.New(b.TempDir()+"/dead"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close(context.Background())
	e := sinktest.Events(1)[0]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.SubmitEach(e)
		}
	})
}

// partSink is discardSink with the postgres sink's policy: large batches
// written in two parts at once.
type partSink struct{ discardSink }

func (partSink) Policy() sink.Policy {
	return sink.Policy{BatchEvents: 5000, BatchBytes: 8 << 20, MaxInFlight: 2, MinPart: 1000, Idempotent: true}
}

// BenchmarkDeliver measures the engine's work per event from Submit to
// the sink's acknowledgement, with the postgres sink's batch policy: the
// worker's batching, parts and per-event accounting.
func BenchmarkDeliver(b *testing.B) {
	reg := prometheus.NewRegistry()
	m, _ := NewMetrics(reg, []string{"a"})
	p, err := New([]Output{{Name: "a", Sink: partSink{}}}, Options{QueueSize: 100000, FlushInterval: time.Millisecond},
		m, reg, deadletter.New(b.TempDir()+"/dead"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close(context.Background())
	events := sinktest.Events(5000)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := range b.N {
		for !p.SubmitEach(events[i%len(events)]) {
			runtime.Gosched() // the queue is full: let the worker catch up
		}
	}
	for p.Stats()[0].Delivered < int64(b.N) {
		runtime.Gosched()
	}
	// CPU time, unlike ns/op, means something on a busy machine.
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
