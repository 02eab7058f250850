// Package sinktest is the conformance suite that every sink must pass.
package sinktest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// Harness tells the suite how to open a fresh sink and read back what it
// stored.
type Harness struct {
	// Open returns a new sink over empty storage. The suite closes it.
	Open func(t *testing.T) sink.Sink
	// Stored returns the JSON of every event the storage holds, in any
	// order, after the sink was closed.
	Stored func(t *testing.T) [][]byte
	// Idempotent says the sink writes an event_id once however often it is
	// given; otherwise writing a batch twice may store it twice.
	Idempotent bool
}

// Events returns n sealed events with distinct ids and varied content: empty
// and long fields, escapes, non-ASCII text and nested props.
func Events(n int) []*event.Event {
	base := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	out := make([]*event.Event, n)
	for i := range out {
		e := &event.Event{
			EventID:    event.NewID(base),
			ReceivedAt: base.Add(time.Duration(i) * time.Millisecond),
			Type:       "pageview",
			Source:     event.SourceCollect,
		}
		switch i % 4 {
		case 1:
			e.URL = "https://example.com/a?q=" + fmt.Sprint(i)
			e.Title = "Café \"quoted\" \\ tab\t line\nbreak 😀"
			e.Props = json.RawMessage(`{"n":` + fmt.Sprint(i) + `,"nested":{"list":[1,"two",null,true]}}`)
		case 2:
			e.Type = "signup"
			e.VisitorID, e.SessionID = "v-"+fmt.Sprint(i), "s-"+fmt.Sprint(i%7)
			e.UserAgent = strings.Repeat("U", event.MaxUserAgentLen)
			e.SentAt = base.Add(-time.Second)
		case 3:
			e.IP, e.Source = "192.0.2.0", event.SourcePixel
			e.URL = strings.Repeat("u", event.MaxURLLen)
		}
		e.Seal()
		out[i] = e
	}
	return out
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("WritesEveryEvent", func(t *testing.T) {
		s := h.Open(t)
		events := Events(1000)
		for i := 0; i < len(events); i += 250 {
			if err := s.WriteBatch(t.Context(), events[i:i+250]); err != nil {
				t.Fatalf("WriteBatch: %v", err)
			}
		}
		closeSink(t, s)
		checkStored(t, h.Stored(t), events, true)
	})
	t.Run("EmptyBatch", func(t *testing.T) {
		s := h.Open(t)
		if err := s.WriteBatch(t.Context(), nil); err != nil {
			t.Fatalf("WriteBatch(nil): %v", err)
		}
		closeSink(t, s)
		if got := h.Stored(t); len(got) != 0 {
			t.Fatalf("an empty batch stored %d events", len(got))
		}
	})
	t.Run("RepeatedBatch", func(t *testing.T) {
		s := h.Open(t)
		events := Events(50)
		for range 2 {
			if err := s.WriteBatch(t.Context(), events); err != nil {
				t.Fatalf("WriteBatch: %v", err)
			}
		}
		closeSink(t, s)
		checkStored(t, h.Stored(t), events, h.Idempotent)
	})
	t.Run("CloseWithExpiredContext", func(t *testing.T) {
		s := h.Open(t)
		if err := s.WriteBatch(t.Context(), Events(3)); err != nil {
			t.Fatalf("WriteBatch: %v", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		done := make(chan struct{})
		go func() {
			_ = s.Close(ctx) // an error is fine; hanging is not
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Close with a cancelled context did not return")
		}
	})
}

func closeSink(t *testing.T, s sink.Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// checkStored compares stored events with want by event_id and content.
// With exact, each must be stored once.
func checkStored(t *testing.T, stored [][]byte, want []*event.Event, exact bool) {
	t.Helper()
	byID := make(map[string]*event.Event, len(want))
	for _, w := range want {
		byID[w.EventID] = w
	}
	got := make(map[string]int, len(stored))
	for _, raw := range stored {
		e, err := event.Decode(raw)
		if err != nil {
			t.Fatalf("stored event does not decode: %v: %s", err, raw)
		}
		got[e.EventID]++
		w, ok := byID[e.EventID]
		if !ok {
			t.Fatalf("stored an event that was never written: %s", raw)
		}
		var a, b any
		_ = json.Unmarshal(raw, &a)
		_ = json.Unmarshal(w.JSON(), &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("event %s stored as\n%s\nwant\n%s", e.EventID, raw, w.JSON())
		}
	}
	for _, w := range want {
		switch n := got[w.EventID]; {
		case n == 0:
			t.Fatalf("event %s was not stored (%d of %d stored)", w.EventID, len(got), len(want))
		case exact && n > 1:
			t.Fatalf("event %s stored %d times", w.EventID, n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("stored %d distinct events, want %d", len(got), len(want))
	}
}
