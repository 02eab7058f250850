package pipeline

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
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
