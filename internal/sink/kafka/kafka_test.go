package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/pipeline/pipelinetest"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/testkit"
)

const topic = "gotrack.events"

func newCluster(t testing.TB, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func open(t testing.TB, c *kfake.Cluster, key Key) *Sink {
	t.Helper()
	s, err := Open(Options{Brokers: c.ListenAddrs(), Topic: topic, Acks: AcksAll, Compression: "zstd", Key: key,
		ClientID: "gotrack-test", MaxBufferedRecords: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// consume reads every record of the topic: it waits until there are at
// least want of them, then until a second passes with no new one.
func consume(t *testing.T, c *kfake.Cluster, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	testkit.Wait(testkit.Patience, func() bool { // the callers check what arrived
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
		return len(out) >= want
	})
	for { // records beyond want, such as duplicates, show up too
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n := len(out)
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
		cancel()
		if len(out) == n {
			break
		}
	}
	return out
}

func TestConformance(t *testing.T) {
	var c *kfake.Cluster
	sinktest.Run(t, sinktest.Harness{
		Open: func(t *testing.T) sink.Sink {
			c = newCluster(t, 3)
			return open(t, c, KeyEventID)
		},
		Stored: func(t *testing.T) [][]byte {
			var out [][]byte
			for _, r := range consume(t, c, 0) {
				out = append(out, r.Value)
			}
			return out
		},
		// Past the brokers' 1 MB default message size.
		Poison: func() *event.Event {
			e := sinktest.Events(1)[0]
			e.Props = json.RawMessage(`{"blob":"` + strings.Repeat("x", 1_100_000) + `"}`)
			e.Seal()
			return e
		},
		// Brokers that drop every connection.
		Break: func(t *testing.T, _ sink.Sink) func() {
			var down atomic.Bool
			down.Store(true)
			c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if down.Load() {
					return nil, errors.New("broker down"), true
				}
				return nil, nil, false
			})
			return func() { down.Store(false) }
		},
		// A broker that takes produce requests and never answers them.
		Stall: func(t *testing.T) (sink.Sink, <-chan struct{}, func()) {
			c := newCluster(t, 3)
			release, stuck := make(chan struct{}), make(chan struct{})
			var stuckOnce, once sync.Once
			c.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if req.Key() == int16(kmsg.Produce) {
					stuckOnce.Do(func() { close(stuck) })
					<-release
				}
				return nil, nil, false
			})
			return open(t, c, KeyEventID), stuck, func() { once.Do(func() { close(release) }) }
		},
	})
}

func TestTenThousandRoundTrip(t *testing.T) {
	c := newCluster(t, 6)
	s := open(t, c, KeyEventID)
	events := sinktest.Events(10000)
	for i := 0; i < len(events); i += 500 {
		if err := s.WriteBatch(t.Context(), events[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	byID := map[string]*event.Event{}
	for _, e := range events {
		byID[e.EventID] = e
	}
	records := consume(t, c, len(events))
	if len(records) != len(events) {
		t.Fatalf("consumed %d records, want %d", len(records), len(events))
	}
	seen := map[string]bool{}
	for _, r := range records {
		e, err := event.Decode(r.Value)
		if err != nil {
			t.Fatal(err)
		}
		want := byID[e.EventID]
		if want == nil || string(r.Value) != string(want.JSON()) || string(r.Key) != e.EventID || seen[e.EventID] {
			t.Fatalf("record %s key %q does not match its event, or repeats", r.Value, r.Key)
		}
		seen[e.EventID] = true
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h[HeaderType] != want.Type || h[HeaderSchemaVersion] != event.SchemaVersion || h[HeaderContentType] != "application/json" {
			t.Fatalf("headers %v for a %s event", h, want.Type)
		}
	}
}

func TestKeyDecidesPartition(t *testing.T) {
	c := newCluster(t, 8)
	s := open(t, c, KeyVisitorID)
	var events []*event.Event
	for i, e := range sinktest.Events(800) {
		e2 := *e
		e2.VisitorID = "visitor-" + string(rune('a'+i%16))
		e2.Seal()
		events = append(events, &e2)
	}
	if err := s.WriteBatch(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	s.Close(t.Context())
	partitionOf := map[string]int32{}
	used := map[int32]bool{}
	for _, r := range consume(t, c, len(events)) {
		if string(r.Key) == "" {
			t.Fatal("record without a key")
		}
		if p, ok := partitionOf[string(r.Key)]; ok && p != r.Partition {
			t.Fatalf("visitor %s is on partitions %d and %d", r.Key, p, r.Partition)
		}
		partitionOf[string(r.Key)] = r.Partition
		used[r.Partition] = true
	}
	if len(partitionOf) != 16 || len(used) < 3 {
		t.Errorf("16 visitors over %d partitions (%d keys seen); keys should spread", len(used), len(partitionOf))
	}
}

func TestTooLargeRecordIsDeadLettered(t *testing.T) {
	c := newCluster(t, 3)
	f := pipelinetest.Start(t, "kafka", open(t, c, KeyEventID), pipeline.Options{BatchSize: 10, FlushInterval: time.Hour})
	p, dead := f.Pipe, f.Dead
	events := sinktest.Events(10)
	big := events[4]
	big.Props = json.RawMessage(`{"blob":"` + strings.Repeat("x", 1_100_000) + `"}`) // past the 1 MB default
	big.Seal()
	if err := p.Submit(events); err != nil {
		t.Fatal(err)
	}
	f.Close(t, 60*time.Second)
	records := consume(t, c, 9)
	if len(records) != 9 {
		t.Errorf("%d records delivered, want the 9 batch-mates", len(records))
	}
	for _, r := range records {
		if strings.Contains(string(r.Value), big.EventID) {
			t.Error("the too-large record was delivered")
		}
	}
	b, err := os.ReadFile(dead)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1 || !strings.Contains(string(b), big.EventID) || !strings.Contains(string(b), "MESSAGE_TOO_LARGE") {
		t.Errorf("dead-letter file has %d lines: %.300s", n, b)
	}
}

// TestBrokerFailure makes the broker refuse every request for a while:
// the sink is reported down, the events wait, and once the broker is back
// every one of them is delivered.
func TestBrokerFailure(t *testing.T) {
	c := newCluster(t, 3)
	var down atomic.Bool
	c.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if down.Load() {
			return nil, errors.New("broker down"), true // closes the connection
		}
		return nil, nil, false
	})
	s := open(t, c, KeyEventID)
	f := pipelinetest.Start(t, "kafka", s, pipeline.Options{BatchSize: 100, FlushInterval: 10 * time.Millisecond,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, WriteTimeout: 2 * time.Second, PingInterval: 100 * time.Millisecond})
	p := f.Pipe
	events := sinktest.Events(3000)
	if err := p.Submit(events[:1000]); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the first events", func() bool { return p.Stats()[0].Delivered == 1000 })
	down.Store(true)
	if err := p.Submit(events[1000:2000]); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the sink to be reported down", func() bool { ready, _ := p.Ready(); return !ready })
	if d := p.Stats()[0].Delivered; d >= 2000 {
		t.Fatalf("%d delivered while the broker was down", d)
	}
	down.Store(false)
	if err := p.Submit(events[2000:]); err != nil {
		t.Fatal(err)
	}
	f.Close(t, 60*time.Second)
	got := map[string]int{}
	for _, r := range consume(t, c, len(events)) {
		got[string(r.Key)]++
	}
	for _, e := range events {
		if got[e.EventID] == 0 {
			t.Fatalf("event %s was lost", e.EventID)
		}
	}
	if st := p.Stats()[0]; st.DeadLettered != 0 {
		t.Errorf("%d events dead-lettered", st.DeadLettered)
	}
}

func TestShutdownFlushes(t *testing.T) {
	c := newCluster(t, 3)
	f := pipelinetest.Start(t, "kafka", open(t, c, KeyNone), pipeline.Options{BatchSize: 500, FlushInterval: time.Hour})
	p := f.Pipe
	events := sinktest.Events(5000)
	for i := 0; i < len(events); i += 50 {
		if err := p.Submit(events[i : i+50]); err != nil {
			t.Fatal(err)
		}
	}
	f.Close(t, 60*time.Second) // the last, partial batch flushes on Close, not on the hour-long interval
	if n := len(consume(t, c, len(events))); n != len(events) {
		t.Errorf("%d records after shutdown, want %d", n, len(events))
	}
}

func TestSASLWithoutTLSRefused(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	_, err := Open(Options{Brokers: []string{"127.0.0.1:1"}, Topic: topic, SASLMechanism: "SCRAM-SHA-256", SASLUser: "u", SASLPasswordFile: pw})
	if err == nil || !strings.Contains(err.Error(), "in the clear") {
		t.Errorf("Open = %v, want a refusal", err)
	}
	s, err := Open(Options{Brokers: []string{"127.0.0.1:1"}, Topic: topic, SASLMechanism: "PLAIN", SASLUser: "u",
		SASLPasswordFile: pw, AllowPlaintextSASL: true})
	if err != nil {
		t.Fatalf("explicitly allowed plaintext SASL: %v", err)
	}
	s.Close(t.Context())
}

func TestSASLAgainstCluster(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "gotrack", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	s, err := Open(Options{Brokers: c.ListenAddrs(), Topic: topic, SASLMechanism: "SCRAM-SHA-512", SASLUser: "gotrack",
		SASLPasswordFile: pw, AllowPlaintextSASL: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WriteBatch(ctx, sinktest.Events(5)); err != nil {
		t.Fatalf("SCRAM-SHA-512 produce: %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (Options{Brokers: []string{"127.0.0.1:9092"}, Topic: topic}).Validate(); err != nil {
		t.Errorf("Validate of the least options = %v", err)
	}
	err := Options{
		Brokers: []string{"no-port"}, Acks: "some", Compression: "brotli", Key: "user",
		TLSCA: garbage, TLSKey: garbage, SASLMechanism: "PLAIN",
	}.Validate()
	for _, want := range []string{
		`Brokers entry "no-port" is not host:port`, "Topic is empty", `Acks: unknown acks "some"`,
		`Compression: unknown compression "brotli" (want none, gzip, snappy, lz4, zstd)`, `Key: unknown key "user"`,
		"TLSCA: " + garbage + " holds no PEM certificate", "TLSCert and TLSKey must be set together", "SASLMechanism needs SASLUser and SASLPasswordFile",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to say %q", err, want)
		}
	}
	err = Options{Brokers: []string{"127.0.0.1:9092"}, Topic: topic, SASLMechanism: "PLAIN", SASLUser: "u", SASLPasswordFile: garbage}.Validate()
	if err == nil || !strings.Contains(err.Error(), "SASLMechanism without TLS would send the credentials in the clear") {
		t.Errorf("SASL without TLS: Validate = %v", err)
	}
	if _, err := Open(Options{Brokers: []string{"127.0.0.1:9092"}}); err == nil || !strings.Contains(err.Error(), "kafka: Topic is empty") {
		t.Errorf("Open without a topic = %v", err)
	}
}

// TestClientMetricsPassPromtool turns franz-go's client metrics on, as
// KAFKA_CLIENT_METRICS=true does, produces a batch, and checks the
// exposition with the real promtool: kprom names two gauges *_total, which
// promtool refuses, so the sink renames them. Closing the sink takes every
// client metric away again.
func TestClientMetricsPassPromtool(t *testing.T) {
	promtool := testkit.RequireTool(t, "promtool")
	c := newCluster(t, 1)
	reg := prometheus.NewRegistry()
	s, err := Open(Options{Brokers: c.ListenAddrs(), Topic: topic, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), sinktest.Events(3)); err != nil {
		t.Fatal(err)
	}
	var text string
	// kprom counts a produced batch in a hook that may run just after the
	// produce returns.
	testkit.Eventually(t, "kprom to count the produced batch", func() bool {
		text = expose(t, reg)
		return strings.Contains(text, "\ngotrack_kafka_produce_bytes_total{")
	})
	for _, want := range []string{"\ngotrack_kafka_buffered_produce_records ", "\ngotrack_kafka_buffered_fetch_records ", "\ngotrack_kafka_produce_bytes_total{"} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q:\n%s", want, text)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if text := expose(t, reg); strings.Contains(text, "gotrack_kafka_buffered") {
		t.Errorf("client metrics left registered after Close:\n%s", text)
	}
}

func expose(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
