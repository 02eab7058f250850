package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// dedupSink keeps each event_id once and says how many of a batch it held
// already, as the PostgreSQL sink does.
type dedupSink struct {
	mu  sync.Mutex
	ids map[string]bool
}

var _ sink.Deduplicator = (*dedupSink)(nil)

func (s *dedupSink) WriteBatch(ctx context.Context, batch []*event.Event) error {
	_, err := s.WriteBatchDedup(ctx, batch)
	return err
}

func (s *dedupSink) WriteBatchDedup(_ context.Context, batch []*event.Event) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dups := 0
	for _, e := range batch {
		if s.ids[e.EventID] {
			dups++
		}
		s.ids[e.EventID] = true
	}
	return dups, nil
}

func (s *dedupSink) Close(context.Context) error { return nil }

// TestDuplicatesCountedApart: events a Deduplicator held already count in
// gotrack_events_duplicate_total, not in gotrack_events_ingested_total,
// while Stats (the shutdown summary, replay's count) counts both.
func TestDuplicatesCountedApart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := pipeline.NewMetrics(reg, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	s := &dedupSink{ids: map[string]bool{}}
	p, err := pipeline.New([]pipeline.Output{{Name: "db", Sink: s}}, pipeline.Options{FlushInterval: time.Millisecond}, m, reg,
		deadletter.New(filepath.Join(t.TempDir(), "dead.ndjson")), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	events := sinktest.Events(3)
	count := func(name string) float64 {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil || n != 1 {
			t.Fatalf("%s: %d series, %v", name, n, err)
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	for _, step := range []struct {
		send          []*event.Event
		ingested, dup float64
	}{
		{events[:2], 2, 0},
		{events[:1], 2, 1},
		{[]*event.Event{events[2], events[2], events[1]}, 3, 3},
	} {
		if err := p.Submit(step.send); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "the batch to be written", func() bool {
			return count("gotrack_events_ingested_total")+count("gotrack_events_duplicate_total") >= step.ingested+step.dup
		})
		if i, d := count("gotrack_events_ingested_total"), count("gotrack_events_duplicate_total"); i != step.ingested || d != step.dup {
			t.Errorf("ingested %v, duplicates %v; want %v and %v", i, d, step.ingested, step.dup)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st[0].Delivered != 6 {
		t.Errorf("Stats.Delivered = %d, want every event the sink took, 6", st[0].Delivered)
	}
}
