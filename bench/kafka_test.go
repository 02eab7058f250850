package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gotrack/gotrack/internal/sink/kafka"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// TestKafkaAccounting: the kafka scenario counts every record in the
// topic, reads each back, and writes the same number again through the
// sink and the plain producer.
func TestKafkaAccounting(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(kafkaPartitions, kafkaTopic, plainTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	s, err := kafka.Open(kafka.Options{Brokers: []string{addr}, Topic: kafkaTopic})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1234
	events := sinktest.Events(n)
	for i := 0; i < n; i += 500 {
		if err := s.WriteBatch(t.Context(), events[i:min(i+500, n)]); err != nil {
			t.Fatal(err)
		}
	}
	s.Close(context.Background())

	if got, err := kafkaCount(addr, kafkaTopic); err != nil || got != n {
		t.Fatalf("kafkaCount = %d, %v; want %d", got, err, n)
	}
	recs, err := consumeAll(addr, kafkaTopic)
	if err != nil || len(recs) != n {
		t.Fatalf("consumeAll: %d records, %v; want %d", len(recs), err, n)
	}
	sink, plain, async, err := kafkaRates(addr, recs)
	if err != nil || sink <= 0 || plain <= 0 || async <= 0 {
		t.Fatalf("kafkaRates = %v, %v, %v, %v; want three rates", sink, plain, async, err)
	}
	// Three rounds of three writers, each of every record.
	if got, err := kafkaCount(addr, plainTopic); err != nil || got != 9*n {
		t.Fatalf("the plain topic holds %d records, %v; want %d", got, err, 9*n)
	}
}

// TestSinkWriteRate: the sink's records per second of write time come
// from its own series, not another sink's.
func TestSinkWriteRate(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Join([]string{
			`# HELP gotrack_events_ingested_total Events written.`,
			`gotrack_events_ingested_total{sink="kafka"} 1000`,
			`gotrack_events_ingested_total{sink="log"} 999`,
			`gotrack_batch_flush_latency_seconds_sum{sink="kafka"} 0.5`,
			`gotrack_batch_flush_latency_seconds_sum{sink="log"} 9`,
			`gotrack_batch_flush_latency_seconds_count{sink="kafka"} 2`,
		}, "\n")+"\n")
	}))
	defer srv.Close()
	got, err := sinkWriteRate(strings.TrimPrefix(srv.URL, "http://"), "kafka")
	if err != nil || got != 2000 {
		t.Fatalf("sinkWriteRate = %v, %v; want 2000", got, err)
	}
}
