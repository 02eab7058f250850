package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink/kafka"
)

// The kafka scenario's cluster: one kfake broker (bench/kfake) per run,
// with gotrack's topic and the plain producer's, each kafkaPartitions wide.
const (
	kafkaTopic      = "gotrack.events"
	plainTopic      = "bench.plain"
	kafkaPartitions = 3
	// plainBatch is what the plain producer waits for at a time: the
	// pipeline's default BATCH_SIZE, which the kafka sink keeps.
	plainBatch = 500
)

// kfakeRun is a kfake process.
type kfakeRun struct {
	cmd   *exec.Cmd
	stdin io.Closer
	addr  string
}

func startKfake(bin string) (*kfakeRun, error) {
	cmd := exec.Command(bin, "-topics", kafkaTopic+","+plainTopic, "-partitions", strconv.Itoa(kafkaPartitions))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	k := &kfakeRun{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		k.stop()
		return nil, fmt.Errorf("kfake: %w", err)
	}
	k.addr = strings.TrimSpace(line)
	return k, nil
}

// stop closes kfake's stdin, which ends it, and kills it if it lingers.
func (k *kfakeRun) stop() {
	k.stdin.Close()
	done := make(chan struct{})
	go func() {
		k.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		k.cmd.Process.Kill()
		<-done
	}
}

// sinkOpts are the kafka sink's client options with GoTrack's defaults
// (internal/sink/kafka.Open): acks all with the idempotent producer, zstd,
// no linger, keyed records hashed to partitions. Keep them equal.
func sinkOpts(addr, topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.UniformBytesPartitioner(1<<20, true, true, nil)),
		kgo.ProducerBatchCompression(kgo.ZstdCompression()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

// endOffsets returns the sum of topic's high watermarks: the number of
// records in it, as nothing is compacted or deleted.
func endOffsets(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = topic
	for p := range int32(kafkaPartitions) {
		pp := kmsg.NewListOffsetsRequestTopicPartition()
		pp.Partition = p
		pp.Timestamp = -1 // the latest offset
		t.Partitions = append(t.Partitions, pp)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return 0, fmt.Errorf("list offsets of %s/%d: error code %d", topic, p.Partition, p.ErrorCode)
			}
			n += p.Offset
		}
	}
	return n, nil
}

func kafkaCount(addr, topic string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	return endOffsets(ctx, cl, topic)
}

// consumeAll reads every record of topic, up to its end offsets, and
// returns them in the order fetched.
func consumeAll(addr, topic string) ([]*kgo.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	want, err := endOffsets(ctx, cl, topic)
	if err != nil {
		return nil, err
	}
	var out []*kgo.Record
	for int64(len(out)) < want {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("consume %s: %d of %d records: %w", topic, len(out), want, err)
		}
		fs.EachError(func(_ string, _ int32, e error) { err = e })
		if err != nil {
			return out, fmt.Errorf("consume %s: %w", topic, err)
		}
		out = append(out, fs.Records()...)
	}
	return out, nil
}

// plainProduce writes copies of recs (key, value and headers) to the
// plain topic with a franz-go client set up as the sink's, batch records
// at a time, each batch produced at once and waited for as the sink's
// WriteBatch does; batch <= 0 produces them all and waits once, the most
// a single producer can do. It returns records per second.
func plainProduce(addr string, recs []*kgo.Record, batch int) (float64, error) {
	cl, err := kgo.NewClient(sinkOpts(addr, plainTopic)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		return 0, err
	}
	if batch <= 0 {
		batch = len(recs)
	}
	var mu sync.Mutex
	var firstErr error
	promise := func(wg *sync.WaitGroup) func(*kgo.Record, error) {
		return func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
			wg.Done()
		}
	}
	start := time.Now()
	for i := 0; i < len(recs); i += batch {
		var wg sync.WaitGroup
		p := promise(&wg)
		for _, r := range recs[i:min(i+batch, len(recs))] {
			wg.Add(1)
			cl.Produce(ctx, &kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers}, p)
		}
		wg.Wait()
	}
	secs := time.Since(start).Seconds()
	if firstErr != nil {
		return 0, fmt.Errorf("plain producer: %w", firstErr)
	}
	return float64(len(recs)) / secs, nil
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// sinkWriteRate scrapes gotrack's metrics listener and returns the events
// the kafka sink wrote per second of time spent in its writes: the
// gotrack_events_ingested_total of the sink over the sum of its
// gotrack_batch_flush_latency_seconds (one write at a time, so that sum is
// the sink's busy time).
func sinkWriteRate(metricsAddr, sink string) (float64, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var ingested, busy float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	label := `sink="` + sink + `"`
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !strings.Contains(rest, label) {
			continue
		}
		_, v, _ := strings.Cut(rest, "} ")
		f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch name {
		case "gotrack_events_ingested_total":
			ingested = f
		case "gotrack_batch_flush_latency_seconds_sum":
			busy = f
		}
	}
	if busy <= 0 {
		return 0, fmt.Errorf("metrics: no flush time for sink %s", sink)
	}
	return ingested / busy, nil
}

// sinkProduce writes recs again through GoTrack's own kafka sink
// (internal/sink/kafka, default options) in batches of batch events, one
// WriteBatch at a time as the pipeline calls it, and returns records per
// second. The events are decoded from the records' values beforehand;
// values that do not encode back to the same bytes are an error, so that
// both producers write the same bytes.
func sinkProduce(addr string, recs []*kgo.Record, batch int) (float64, error) {
	events := make([]*event.Event, len(recs))
	for i, r := range recs {
		e, err := event.Decode(r.Value)
		if err != nil {
			return 0, fmt.Errorf("decode record %d: %w", i, err)
		}
		if !bytes.Equal(e.JSON(), r.Value) {
			return 0, fmt.Errorf("record %d does not encode back to the same bytes", i)
		}
		events[i] = e
	}
	s, err := kafka.Open(kafka.Options{Brokers: []string{addr}, Topic: plainTopic, ClientID: "gotrack"})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	defer s.Close(ctx)
	if err := s.Ping(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < len(events); i += batch {
		if err := s.WriteBatch(ctx, events[i:min(i+batch, len(events))]); err != nil {
			return 0, err
		}
	}
	return float64(len(events)) / time.Since(start).Seconds(), nil
}

// kafkaRates writes recs again to the plain topic, in turn through
// GoTrack's sink and from a plain producer, in batches of plainBatch, and
// then from the plain producer all at once; it returns the best records
// per second of three rounds of each, as the machine may be busy.
func kafkaRates(addr string, recs []*kgo.Record) (sink, plain, plainAsync float64, err error) {
	for range 3 {
		s, err := sinkProduce(addr, recs, plainBatch)
		if err != nil {
			return 0, 0, 0, err
		}
		p, err := plainProduce(addr, recs, plainBatch)
		if err != nil {
			return 0, 0, 0, err
		}
		a, err := plainProduce(addr, recs, 0)
		if err != nil {
			return 0, 0, 0, err
		}
		sink, plain, plainAsync = max(sink, s), max(plain, p), max(plainAsync, a)
	}
	return sink, plain, plainAsync, nil
}
