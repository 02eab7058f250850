package pipeline

import (
	"errors"
	"fmt"
	"time"

	"github.com/gotrack/gotrack/internal/buffer"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/spool"
)

// intake is the write side of the sinks' buffers: how Submit puts events
// into them. The read side, the worker loop, is the same for every buffer.
type intake interface {
	put(events []*event.Event) error // all or nothing
	putEach(e *event.Event) bool     // each sink that has room; reports whether all had
	notReady(why []string) []string  // appends why the buffers cannot take events now
	close() error
}

// memIntake puts into one memory buffer per sink.
type memIntake struct {
	p    *Pipeline
	mems []*buffer.Memory // in the order of p.outs
}

func (in *memIntake) put(events []*event.Event) error {
	n := int64(len(events))
	deadline := in.p.deadline()
	for i, m := range in.mems {
		if !m.Reserve(n, deadline) {
			for _, r := range in.mems[:i] {
				r.Release(len(events))
			}
			in.p.outs[i].m.queueFull.Add(float64(n))
			return ErrQueueFull
		}
	}
	for _, m := range in.mems {
		for _, e := range events {
			m.Put(e)
		}
	}
	return nil
}

func (in *memIntake) putEach(e *event.Event) bool {
	all := true
	var deadline time.Time
	for i, m := range in.mems {
		ok := m.TryReserve(1)
		if !ok && in.p.opts.FullPolicy == Block {
			if deadline.IsZero() {
				deadline = in.p.deadline()
			}
			ok = m.Reserve(1, deadline)
		}
		if !ok {
			in.p.outs[i].m.queueFull.Inc()
			all = false
			continue
		}
		m.Put(e)
	}
	return all
}

func (in *memIntake) notReady(why []string) []string {
	for i, m := range in.mems {
		if m.Full() {
			why = append(why, "queue "+in.p.outs[i].name+" is full")
		}
	}
	return why
}

func (in *memIntake) close() error { return nil }

// spoolIntake appends to the spool, which every sink reads.
type spoolIntake struct {
	p  *Pipeline
	sp *spool.Spool
}

func (in *spoolIntake) put(events []*event.Event) error {
	span := in.p.startAppend(events)
	err := in.sp.Append(events)
	endAppend(span, err)
	if err != nil {
		return in.refused(err, len(events))
	}
	return nil
}

func (in *spoolIntake) putEach(e *event.Event) bool {
	return in.put([]*event.Event{e}) == nil
}

// refused counts n events refused by the spool and says why.
func (in *spoolIntake) refused(err error, n int) error {
	if errors.Is(err, spool.ErrFull) {
		in.p.metrics.dropped.WithLabelValues(AllSinks, DropSpoolFull).Add(float64(n))
		return ErrSpoolFull
	}
	in.p.metrics.dropped.WithLabelValues(AllSinks, DropSpoolFailed).Add(float64(n))
	return fmt.Errorf("pipeline: %w", err)
}

func (in *spoolIntake) notReady(why []string) []string {
	if err := in.sp.Failed(); err != nil {
		return append(why, "the spool cannot sync: restart GoTrack")
	}
	if in.sp.Full() {
		return append(why, "the spool is full")
	}
	return why
}

func (in *spoolIntake) close() error { return in.sp.Close() }
