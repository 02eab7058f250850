// Package kafka is the sink that produces events to a Kafka topic with
// franz-go. A batch counts as written only when the brokers have
// acknowledged every record of it.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// Header names carried by every record.
const (
	HeaderType          = "gotrack-event-type"
	HeaderSchemaVersion = "gotrack-schema-version"
	HeaderContentType   = "content-type"
)

// Options configure a Sink. Parse* turn setting values into them.
type Options struct {
	Brokers     []string
	Topic       string
	Acks        Acks
	Compression string // none, gzip, snappy, lz4, zstd
	Key         Key
	ClientID    string

	TLSCA, TLSCert, TLSKey string // PEM files; any one turns TLS on

	SASLMechanism      string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; "" for none
	SASLUser           string
	SASLPasswordFile   string
	AllowPlaintextSASL bool // allow SASL without TLS, which sends credentials in the clear

	// MaxBufferedRecords bounds the records the client holds, tied to the
	// sink's queue size so that memory stays bounded while brokers are down.
	MaxBufferedRecords int

	// Metrics, when set, receives franz-go's own client metrics (kprom),
	// prefixed gotrack_kafka_.
	Metrics prometheus.Registerer
}

// Acks is the acknowledgement a batch waits for.
type Acks string

// The acknowledgement levels.
const (
	AcksAll    Acks = "all"    // every in-sync replica; uses the idempotent producer
	AcksLeader Acks = "leader" // the partition leader only
	AcksNone   Acks = "none"   // none: a batch counts as written once sent
)

// ParseAcks parses an acknowledgement level.
func ParseAcks(s string) (Acks, error) {
	switch a := Acks(s); a {
	case AcksAll, AcksLeader, AcksNone:
		return a, nil
	}
	return "", fmt.Errorf("unknown acks %q (want all, leader or none)", s)
}

// Key says which event field keys a record, and so picks its partition.
type Key string

// The record keys.
const (
	KeyEventID   Key = "event_id"   // spreads events evenly
	KeyVisitorID Key = "visitor_id" // keeps a visitor's events in order on one partition
	KeySessionID Key = "session_id" // keeps a session's events in order on one partition
	KeyNone      Key = "none"       // no key: sticky batches, spread over partitions
)

// ParseKey parses a record key choice.
func ParseKey(s string) (Key, error) {
	switch k := Key(s); k {
	case KeyEventID, KeyVisitorID, KeySessionID, KeyNone:
		return k, nil
	}
	return "", fmt.Errorf("unknown key %q (want event_id, visitor_id, session_id or none)", s)
}

// ParseCompression checks a compression codec name.
func ParseCompression(s string) (string, error) {
	switch s {
	case "none", "gzip", "snappy", "lz4", "zstd":
		return s, nil
	}
	return "", fmt.Errorf("unknown compression %q (want none, gzip, snappy, lz4 or zstd)", s)
}

// ParseSASLMechanism checks a SASL mechanism name.
func ParseSASLMechanism(s string) (string, error) {
	switch m := strings.ToUpper(s); m {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		return m, nil
	}
	return "", fmt.Errorf("unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", s)
}

// Sink produces events to Kafka.
type Sink struct {
	client *kgo.Client
	topic  string
	key    Key
}

// Open builds the client. It does not wait for a broker: while none
// answers, the sink is reported down and its queue fills, as for any outage.
func Open(o Options) (*Sink, error) {
	if len(o.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers")
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.ProducerLinger(0), // the pipeline batches already
		kgo.RecordPartitioner(kgo.UniformBytesPartitioner(1<<20, true, true, nil)),
	}
	if o.ClientID != "" {
		opts = append(opts, kgo.ClientID(o.ClientID))
	}
	if o.MaxBufferedRecords > 0 {
		opts = append(opts, kgo.MaxBufferedRecords(o.MaxBufferedRecords))
	}
	switch o.Acks {
	case AcksAll, "":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case AcksLeader:
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case AcksNone:
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	}
	codec, err := compression(o.Compression)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.ProducerBatchCompression(codec))

	useTLS := o.TLSCA != "" || o.TLSCert != "" || o.TLSKey != ""
	if useTLS {
		cfg, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if o.SASLMechanism != "" {
		if !useTLS && !o.AllowPlaintextSASL {
			return nil, errors.New("kafka: SASL without TLS would send the credentials in the clear; " +
				"set KAFKA_TLS_CA (and a client pair if the brokers want one), or KAFKA_ALLOW_PLAINTEXT_SASL=true")
		}
		m, err := mechanism(o)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	if o.Metrics != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("gotrack_kafka", kprom.Registerer(o.Metrics))))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return &Sink{client: client, topic: o.Topic, key: o.Key}, nil
}

func compression(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd", "":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("kafka: unknown compression %q", name)
}

func tlsConfig(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSCA != "" {
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("kafka: KAFKA_TLS_CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: KAFKA_TLS_CA: %s holds no PEM certificate", o.TLSCA)
		}
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		pair, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("kafka: KAFKA_TLS_CERT and KAFKA_TLS_KEY: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func mechanism(o Options) (sasl.Mechanism, error) {
	b, err := os.ReadFile(o.SASLPasswordFile)
	if err != nil {
		return nil, fmt.Errorf("kafka: KAFKA_SASL_PASSWORD_FILE: %w", err)
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if o.SASLUser == "" || pass == "" {
		return nil, errors.New("kafka: SASL needs KAFKA_SASL_USER and a non-empty KAFKA_SASL_PASSWORD_FILE")
	}
	switch o.SASLMechanism {
	case "PLAIN":
		return plain.Auth{User: o.SASLUser, Pass: pass}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: o.SASLUser, Pass: pass}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: o.SASLUser, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka: unknown SASL mechanism %q", o.SASLMechanism)
}

// Policy declares that the sink is not idempotent: records are keyed (by
// event_id by default), but a batch retried after a timeout or a broker
// failure is produced again, and consumers see it twice. Consumers that
// need exactly once deduplicate by event_id.
func (s *Sink) Policy() sink.Policy { return sink.Policy{} }

// WriteBatch produces the batch and waits until every record is
// acknowledged (or, with acks none, sent), or until ctx ends. Records the brokers refuse for
// their content (too large, invalid) come back as permanent failures in a
// *sink.BatchError while their batch-mates are delivered.
func (s *Sink) WriteBatch(ctx context.Context, batch []*event.Event) error {
	if len(batch) == 0 {
		return nil
	}
	records := make([]*kgo.Record, len(batch))
	index := make(map[*kgo.Record]int, len(batch))
	for i, e := range batch {
		r := &kgo.Record{
			Topic: s.topic,
			Value: e.JSON(),
			Headers: []kgo.RecordHeader{
				{Key: HeaderType, Value: []byte(e.Type)},
				{Key: HeaderSchemaVersion, Value: []byte(event.SchemaVersion)},
				{Key: HeaderContentType, Value: []byte("application/json")},
			},
		}
		if k := s.keyOf(e); k != "" {
			r.Key = []byte(k)
		}
		records[i] = r
		index[r] = i
	}
	// Produce asynchronously and wait for every result or for ctx: a record
	// already sent cannot be called back (the idempotent producer keeps
	// its sequence), so waiting for it would outlive ctx while a broker
	// hangs. What is still in flight then may be delivered later, and
	// again by the retry: the sink is not idempotent.
	var (
		mu      sync.Mutex
		failed  []sink.Failure
		pending = len(records)
		done    = make(chan struct{})
	)
	promise := func(r *kgo.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			err := fmt.Errorf("kafka: produce to %s: %w", s.topic, err)
			if permanent(err) {
				err = sink.Permanent(err)
			}
			failed = append(failed, sink.Failure{Index: index[r], Err: err})
		}
		if pending--; pending == 0 {
			close(done)
		}
	}
	for _, r := range records {
		s.client.Produce(ctx, r, promise)
	}
	select {
	case <-done:
	case <-ctx.Done():
		select {
		case <-done: // every result came in: they decide, not ctx
		default:
			return fmt.Errorf("kafka: produce %d records to %s: %w", len(records), s.topic, ctx.Err())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) == 0 {
		return nil
	}
	if len(failed) == len(batch) && !sink.IsPermanent(failed[0].Err) {
		return sink.Unavailable(failed[0].Err) // the whole batch failed: an outage, most likely
	}
	return &sink.BatchError{Failed: failed}
}

func (s *Sink) keyOf(e *event.Event) string {
	switch s.key {
	case KeyEventID, "":
		return e.EventID
	case KeyVisitorID:
		return e.VisitorID
	case KeySessionID:
		return e.SessionID
	}
	return ""
}

// permanent reports whether the brokers refused a record for its content,
// which no retry can change.
func permanent(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

// Ping reports whether a broker answers.
func (s *Sink) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: ping: %w", err)
	}
	return nil
}

// Close flushes anything still buffered, until ctx ends, and closes the
// client.
func (s *Sink) Close(ctx context.Context) error {
	err := s.client.Flush(ctx)
	s.client.Close()
	if err != nil {
		return fmt.Errorf("kafka: flush on close: %w", err)
	}
	return nil
}
