package main

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestLogAndKafkaHoldTheSameEvents runs the binary with OUTPUTS=log,kafka
// against an in-process kfake cluster and compares the event ids in the
// topic and the NDJSON file.
func TestLogAndKafkaHoldTheSameEvents(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "gotrack.events"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := startGotrack(t, "OUTPUTS=log,kafka", "KAFKA_BROKERS="+strings.Join(c.ListenAddrs(), ","), "KAFKA_KEY=visitor_id",
		"KAFKA_CLIENT_METRICS=true", "METRICS_ENABLED=true", "METRICS_ADDR=127.0.0.1:0")
	sendEvents(t, p.ingest, 400) // 600 events
	p.stop(t)
	inFile := readEvents(t, p.path("events.ndjson"))

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("gotrack.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	inTopic := map[string]int{}
	testkit.Wait(testkit.Patience, func() bool { // the comparison below fails the test
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			e, err := event.Decode(r.Value)
			if err != nil {
				t.Errorf("record is not an event: %v", err)
				return
			}
			inTopic[e.EventID]++
		})
		return len(inTopic) >= len(inFile)
	})
	if len(inFile) != 600 || !maps.Equal(inFile, inTopic) {
		t.Errorf("file holds %d events, topic %d; the sets differ", len(inFile), len(inTopic))
	}
	if !strings.Contains(p.stderr.String(), `"sink":"kafka","events":600`) {
		t.Errorf("no delivery summary for kafka in the logs")
	}
}
