// Package kafka is the sink that produces events to a Kafka topic with
// franz-go. A batch counts as written only when the brokers have
// acknowledged every record of it.
package kafka

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/gotrack/gotrack/internal/credfile"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// Header names carried by every record.
const (
	HeaderType          = "gotrack-event-type"
	HeaderSchemaVersion = "gotrack-schema-version"
	HeaderContentType   = "content-type"
)

// The values of the headers that are the same on every record. Records
// share them; neither the sink nor franz-go writes to them.
var (
	schemaVersion = []byte(event.SchemaVersion)
	contentType   = []byte("application/json")
)

// Options configure a Sink. Parse* turn setting values into them.
type Options struct {
	Brokers     []string
	Topic       string
	Acks        Acks
	Compression string // one of Compressions(); "" for DefaultCompression
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
	// prefixed gotrack_kafka_. The two kprom gauges named *_total are
	// exposed without that suffix, which Prometheus keeps for counters.
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

// codecs is the one list of compressions: each name and its codec.
var codecs = []struct {
	name  string
	codec func() kgo.CompressionCodec
}{
	{"none", kgo.NoCompression},
	{"gzip", kgo.GzipCompression},
	{"snappy", kgo.SnappyCompression},
	{"lz4", kgo.Lz4Compression},
	{"zstd", kgo.ZstdCompression},
}

// DefaultCompression is the compression of Options.Compression "".
const DefaultCompression = "zstd"

// Compressions returns the compression names ParseCompression accepts.
func Compressions() []string {
	names := make([]string, len(codecs))
	for i, c := range codecs {
		names[i] = c.name
	}
	return names
}

// ParseCompression checks a compression codec name.
func ParseCompression(s string) (string, error) {
	if codec(s) == nil {
		return "", fmt.Errorf("unknown compression %q (want %s)", s, strings.Join(Compressions(), ", "))
	}
	return s, nil
}

// codec returns the named codec's constructor, or nil.
func codec(name string) func() kgo.CompressionCodec {
	for _, c := range codecs {
		if c.name == name {
			return c.codec
		}
	}
	return nil
}

// ParseSASLMechanism checks a SASL mechanism name.
func ParseSASLMechanism(s string) (string, error) {
	switch m := strings.ToUpper(s); m {
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		return m, nil
	}
	return "", fmt.Errorf("unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", s)
}

// Validate reports every problem with o, each a *sink.OptionError, joined:
// the values and how they combine, and the content of the files they name
// (TLS certificates and keys, the SASL password). Open calls it; zero values
// that have a default (Acks, Compression, Key) are valid.
func (o Options) Validate() error {
	errs := sink.NewOptionErrors("kafka")
	if len(o.Brokers) == 0 {
		errs.Add("{Brokers} is not set; want a comma list of seed brokers, host:port")
	}
	for _, b := range o.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs.Add(fmt.Sprintf("{Brokers} entry %q is not host:port; want a comma list of host:port", b))
		}
	}
	if o.Topic == "" {
		errs.Add("{Topic} is empty; want the name of an existing topic")
	}
	if o.Acks != "" {
		if _, err := ParseAcks(string(o.Acks)); err != nil {
			errs.Add("{Acks}: " + err.Error())
		}
	}
	if o.Compression != "" {
		if _, err := ParseCompression(o.Compression); err != nil {
			errs.Add("{Compression}: " + err.Error())
		}
	}
	if o.Key != "" {
		if _, err := ParseKey(string(o.Key)); err != nil {
			errs.Add("{Key}: " + err.Error())
		}
	}
	if o.MaxBufferedRecords < 0 {
		errs.Add("{MaxBufferedRecords} is negative; want 0 (the client's default) or more")
	}
	tlsFiles := o
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs.Add("{TLSCert} and {TLSKey} must be set together; want both (a client certificate and its key) or neither")
		tlsFiles.TLSCert, tlsFiles.TLSKey = "", "" // the CA can still be checked
	}
	if _, err := tlsConfig(tlsFiles); err != nil {
		errs.Join(err)
	}
	if o.SASLMechanism != "" {
		if _, err := ParseSASLMechanism(o.SASLMechanism); err != nil {
			errs.Add("{SASLMechanism}: " + err.Error())
		}
		if o.SASLUser == "" || o.SASLPasswordFile == "" {
			errs.Add("{SASLMechanism} needs {SASLUser} and {SASLPasswordFile}; want both set")
		} else if _, err := credfile.ReadPassword(o.SASLPasswordFile); err != nil {
			errs.Add("{SASLPasswordFile}: " + err.Error())
		}
		if !o.tls() && !o.AllowPlaintextSASL {
			errs.Add("{SASLMechanism} without TLS would send the credentials in the clear; " +
				"want {TLSCA} set (and a client pair if the brokers want one), or {AllowPlaintextSASL}=true")
		}
	}
	return errs.Err()
}

func (o Options) tls() bool { return o.TLSCA != "" || o.TLSCert != "" || o.TLSKey != "" }

// Sink produces events to Kafka.
type Sink struct {
	client *kgo.Client
	topic  string
	key    Key
}

// Open builds the client. It does not wait for a broker: while none
// answers, the sink is reported down and its queue fills, as for any outage.
func Open(o Options) (*Sink, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.ProducerLinger(0), // the pipeline batches already
		kgo.RecordPartitioner(kgo.UniformBytesPartitioner(1<<20, true, true, nil)),
		kgo.ProducerBatchCompression(codec(cmp.Or(o.Compression, DefaultCompression))()),
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
	if o.tls() {
		cfg, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if o.SASLMechanism != "" {
		m, err := mechanism(o)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	if o.Metrics != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("gotrack_kafka", kprom.Registerer(&gaugeNames{Registerer: o.Metrics}))))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return &Sink{client: client, topic: o.Topic, key: o.Key}, nil
}

// tlsConfig builds the client's TLS configuration from the PEM files, or
// returns nil when none is set. Its errors are *sink.OptionError.
func tlsConfig(o Options) (*tls.Config, error) {
	if !o.tls() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSCA != "" {
		pool, err := credfile.LoadCAPool(o.TLSCA)
		if err != nil {
			return nil, &sink.OptionError{Sink: "kafka", Text: "{TLSCA}: " + err.Error()}
		}
		cfg.RootCAs = pool
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		pair, err := credfile.LoadKeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, &sink.OptionError{Sink: "kafka", Text: "{TLSCert} and {TLSKey}: " + err.Error()}
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func mechanism(o Options) (sasl.Mechanism, error) {
	pass, err := credfile.ReadPassword(o.SASLPasswordFile)
	if err != nil {
		return nil, &sink.OptionError{Sink: "kafka", Text: "{SASLPasswordFile}: " + err.Error()}
	}
	switch strings.ToUpper(o.SASLMechanism) {
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
	// The records, their headers and the bytes of their types and keys
	// are allocated once per batch, not per record.
	slab := make([]kgo.Record, len(batch))
	headers := make([]kgo.RecordHeader, 3*len(batch))
	size := 0
	for _, e := range batch {
		size += len(e.Type) + len(s.keyOf(e))
	}
	text := make([]byte, 0, size)
	records := make([]*kgo.Record, len(batch))
	index := make(map[*kgo.Record]int, len(batch))
	for i, e := range batch {
		r := &slab[i]
		r.Topic, r.Value = s.topic, e.JSON()
		text = append(text, e.Type...)
		h := headers[3*i : 3*i+3 : 3*i+3]
		h[0] = kgo.RecordHeader{Key: HeaderType, Value: text[len(text)-len(e.Type):]}
		h[1] = kgo.RecordHeader{Key: HeaderSchemaVersion, Value: schemaVersion}
		h[2] = kgo.RecordHeader{Key: HeaderContentType, Value: contentType}
		r.Headers = h
		if k := s.keyOf(e); k != "" {
			text = append(text, k...)
			r.Key = text[len(text)-len(k):]
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
