// Package sinktest is the conformance suite that every sink must pass: it
// writes, repeats, breaks, stalls and closes a sink and checks what the
// pipeline relies on (see sink.Sink): permanent and retryable errors told
// apart, BatchError indices that name exactly the failed events, a
// cancelled context that stops a write, Close that returns during a stuck
// write, and the idempotency the sink declares in its Policy.
package sinktest

import (
	"context"
	"encoding/json"
	"errors"
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

	// Poison returns an event the destination refuses for its content, or
	// nil for a sink that refuses no content (the suite then skips the
	// permanent-error tests, saying so).
	Poison func() *event.Event
	// Break makes the sink opened last fail every write retryably, as an
	// outage does, until repair is called.
	Break func(t *testing.T, s sink.Sink) (repair func())
	// Stall opens a sink over empty storage whose destination hangs every
	// write until release is called, as a stuck disk or server does; stuck
	// is closed once a write hangs there.
	Stall func(t *testing.T) (s sink.Sink, stuck <-chan struct{}, release func())
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
	t.Run("DeclaredIdempotency", func(t *testing.T) {
		s := h.Open(t)
		idem := sink.PolicyOf(s).Idempotent
		events := Events(50)
		for range 2 {
			if err := s.WriteBatch(t.Context(), events); err != nil {
				t.Fatalf("WriteBatch: %v", err)
			}
		}
		closeSink(t, s)
		stored := h.Stored(t)
		checkStored(t, stored, events, idem)
		if !idem && len(stored) != 2*len(events) {
			// The declaration is the contract replay and the docs rely on:
			// a sink that dedupes should say so.
			t.Errorf("the sink declares itself not idempotent, yet a batch written twice stored %d events, not %d", len(stored), 2*len(events))
		}
	})
	t.Run("PermanentErrorAndBatchErrorIndices", func(t *testing.T) {
		if h.Poison == nil {
			t.Skip("this sink refuses no event for its content: it has no permanent errors")
		}
		s := h.Open(t)
		good := Events(9)
		bad := h.Poison()
		batch := append(append(append([]*event.Event{}, good[:4]...), bad), good[4:]...)
		err := s.WriteBatch(t.Context(), batch)
		var be *sink.BatchError
		switch {
		case err == nil:
			t.Fatal("a batch with a poison event was written")
		case errors.As(err, &be):
			// Every event not named is durable; the poison must be named,
			// alone, with a permanent error.
			if len(be.Failed) != 1 || be.Failed[0].Index != 4 || !sink.IsPermanent(be.Failed[0].Err) {
				t.Fatalf("BatchError %+v, want exactly index 4 failed permanently", be.Failed)
			}
		case sink.IsPermanent(err):
			if sink.ErrorType(err) != sink.ErrRejected {
				t.Errorf("permanent error counted as %s, want %s", sink.ErrorType(err), sink.ErrRejected)
			}
			// Nothing is promised of the batch: the pipeline bisects it.
			if err := s.WriteBatch(t.Context(), good); err != nil {
				t.Fatalf("WriteBatch of the good events: %v", err)
			}
		default:
			t.Fatalf("a poison event gave %v: neither permanent nor a BatchError", err)
		}
		if err := s.WriteBatch(t.Context(), []*event.Event{bad}); !sink.IsPermanent(err) {
			var be *sink.BatchError
			if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[0].Index != 0 || !sink.IsPermanent(be.Failed[0].Err) {
				t.Fatalf("the poison event alone = %v, want a permanent error", err)
			}
		}
		closeSink(t, s)
		checkStored(t, h.Stored(t), good, sink.PolicyOf(s).Idempotent)
	})
	t.Run("RetryableError", func(t *testing.T) {
		if h.Break == nil {
			t.Fatal("the harness has no Break: every sink must show its retryable errors")
		}
		s := h.Open(t)
		events := Events(20)
		repair := h.Break(t, s)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := s.WriteBatch(ctx, events)
		cancel()
		if err == nil {
			t.Fatal("WriteBatch succeeded during the outage")
		}
		var be *sink.BatchError
		if sink.IsPermanent(err) || errors.As(err, &be) && anyPermanent(be) {
			t.Fatalf("an outage gave a permanent error: %v", err)
		}
		repair()
		// As the pipeline does: retry until the sink takes the batch. A
		// sink may fail a retry or two while it recovers (Kafka fails the
		// records queued behind those the outage failed).
		for attempt := 1; ; attempt++ {
			err := s.WriteBatch(t.Context(), events)
			if err == nil {
				break
			}
			if sink.IsPermanent(err) || attempt == 5 {
				t.Fatalf("WriteBatch after the repair, attempt %d: %v", attempt, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		closeSink(t, s)
		checkStored(t, h.Stored(t), events, sink.PolicyOf(s).Idempotent)
	})
	t.Run("CancelledContext", func(t *testing.T) {
		s := h.Open(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.WriteBatch(ctx, Events(3)); err == nil {
			t.Error("WriteBatch with a cancelled context returned nil")
		}
		closeSink(t, s)
	})
	t.Run("CancelStopsStalledWrite", func(t *testing.T) {
		if h.Stall == nil {
			t.Fatal("the harness has no Stall: every sink must show a stuck write stops")
		}
		s, stuck, release := h.Stall(t)
		defer release()
		first := make(chan error, 1)
		events := Events(2000)
		go func() { first <- s.WriteBatch(context.WithoutCancel(t.Context()), events) }()
		waitStuck(t, stuck)
		ctx, cancel := context.WithCancel(t.Context())
		second := make(chan error, 1)
		go func() { second <- s.WriteBatch(ctx, Events(10)) }()
		time.Sleep(100 * time.Millisecond)
		cancel()
		select {
		case err := <-second:
			if err == nil {
				t.Error("a write cancelled while the destination hung returned nil")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("cancelling the context did not stop a write while the destination hung")
		}
		release()
		<-first
		closeSink(t, s)
	})
	t.Run("CloseDuringWrite", func(t *testing.T) {
		if h.Stall == nil {
			t.Fatal("the harness has no Stall: every sink must show Close returns during a stuck write")
		}
		s, stuck, release := h.Stall(t)
		defer release()
		first := make(chan error, 1)
		wctx, wcancel := context.WithCancel(context.WithoutCancel(t.Context()))
		defer wcancel()
		events := Events(2000)
		go func() { first <- s.WriteBatch(wctx, events) }()
		waitStuck(t, stuck)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() {
			_ = s.Close(ctx) // an error is fine; waiting for the stuck write is not
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return by its deadline while a write was stuck")
		}
		release()
		select {
		case <-first:
		case <-time.After(30 * time.Second):
			t.Fatal("the stuck write did not return once the destination answered")
		}
		if err := s.WriteBatch(t.Context(), Events(1)); err == nil {
			t.Error("WriteBatch after Close returned nil")
		}
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

func waitStuck(t *testing.T, stuck <-chan struct{}) {
	t.Helper()
	select {
	case <-stuck:
	case <-time.After(30 * time.Second):
		t.Fatal("the write never reached the stalled destination")
	}
}

func anyPermanent(be *sink.BatchError) bool {
	for _, f := range be.Failed {
		if sink.IsPermanent(f.Err) {
			return true
		}
	}
	return false
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
