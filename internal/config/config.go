// Package config reads every GoTrack setting from the environment, once,
// into typed values, and checks them as a whole: Load reports every problem
// it finds, not just the first.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gotrack/gotrack/internal/credfile"
	"github.com/gotrack/gotrack/internal/enrich"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/ingest"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/ratelimit"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/kafka"
	"github.com/gotrack/gotrack/internal/sink/ndjson"
	"github.com/gotrack/gotrack/internal/sink/postgres"
	"github.com/gotrack/gotrack/internal/source"
	"github.com/gotrack/gotrack/internal/spool"
	"github.com/gotrack/gotrack/internal/tracing"
)

// Output names accepted in OUTPUTS.
const (
	OutputLog      = "log"
	OutputPostgres = "postgres"
	OutputKafka    = "kafka"
)

var knownOutputs = []string{OutputLog, OutputPostgres, OutputKafka}

// Config is every setting, parsed.
type Config struct {
	ServerAddr      string
	Outputs         []string
	MaxBatchEvents  int
	MaxBodyBytes    int64
	CORSOrigins     []string // empty means any origin
	RoutePrefix     string   // ROUTE_PREFIX; "" serves the routes at the root
	ShutdownTimeout time.Duration
	// ShutdownDrainDelay is how long /readyz answers 503 while the
	// listener still serves, before the stop; part of ShutdownTimeout.
	ShutdownDrainDelay time.Duration

	// MaxInflightBytes and MaxConnections bound the ingest listener's
	// memory; see ingest.Options and ingest.LimitListener.
	MaxInflightBytes int64
	MaxConnections   int

	Privacy event.Policy

	Pipeline       pipeline.Options
	DeadLetterPath string

	Log          ndjson.Options
	Postgres     postgres.Options // with its batch policy
	Kafka        kafka.Options
	KafkaMetrics bool

	LogFormat string // json or text
	LogLevel  slog.Level

	Metrics Metrics

	Spool Spool

	Pushgateway Pushgateway

	Sources Sources
	Enrich  enrich.Options
	Tracing tracing.Options
}

// Sources is who may write events (AUTH_MODE, SOURCES_FILE). Set is the
// file's sources, read and checked by Load under AUTH_MODE=key.
type Sources struct {
	Mode source.Mode
	File string
	Set  *source.Set
	// SignatureTolerance bounds a signed request's clock skew.
	SignatureTolerance time.Duration
	// RateLimitPerIP is RATE_LIMIT_PER_IP; Rate 0 means off.
	RateLimitPerIP ratelimit.Bucket
}

// Pushgateway is where `gotrack replay` pushes its job metrics; URL ""
// means nowhere.
type Pushgateway struct {
	URL, User, PasswordFile string
}

// Spool configures the durable spool; Dir "" leaves it off.
type Spool struct {
	Dir      string
	Sync     spool.Sync
	MaxBytes int64
}

// Metrics configures the metrics listener.
type Metrics struct {
	Enabled           bool
	Addr              string
	TLSCert, TLSKey   string
	RequireTLS        bool
	ClientCA          string
	ClientAllowedSANs []string
	BearerTokenFile   string
	BasicAuthFile     string
	AllowInsecure     bool
	MaxScrapes        int
	ScrapeTimeout     time.Duration
	TLSReloadInterval time.Duration
}

// TLS reports whether the metrics listener serves TLS.
func (m Metrics) TLS() bool { return m.TLSCert != "" || m.TLSKey != "" }

// Auth reports whether the metrics listener authenticates scrapes at the
// application (mTLS, bearer token or basic auth).
func (m Metrics) Auth() bool {
	return m.ClientCA != "" || m.BearerTokenFile != "" || m.BasicAuthFile != ""
}

// setting is one environment variable: its name, default, meaning, and
// how to store it.
type setting struct {
	name, def, help string
	set             func(string) error
	secret          bool
}

// settings binds every variable to its field of c. The order is the order
// of the help text and of the README table.
func settings(c *Config) []setting {
	var s []setting
	add := func(name, def, help string, set func(string) error) {
		s = append(s, setting{name: name, def: def, help: help, set: set})
	}
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	list := func(p *[]string) func(string) error { return func(v string) error { *p = splitList(v); return nil } }
	boolean := func(p *bool) func(string) error {
		return func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("want true or false")
			}
			*p = b
			return nil
		}
	}
	integer := func(p *int, lo, hi int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				return fmt.Errorf("want a whole number from %d to %d", lo, hi)
			}
			*p = n
			return nil
		}
	}
	duration := func(p *time.Duration, lo, hi time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < lo || d > hi {
				return fmt.Errorf("want a duration from %s to %s, such as %s", short(lo), short(hi), example(lo, hi))
			}
			*p = d
			return nil
		}
	}
	// Options of a sink are only parsed here; their ranges are the sink's
	// Validate's to check.
	whole := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("want a whole number")
			}
			*p = n
			return nil
		}
	}
	anyDuration := func(p *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return errors.New("want a duration, such as 10s or 1m")
			}
			*p = d
			return nil
		}
	}
	var bodyBytes, rotateMB int

	add("SERVER_ADDR", ":19890", "address of the ingest listener (/px.gif, /collect, /healthz, /readyz)", str(&c.ServerAddr))
	add("ROUTE_PREFIX", "", "path prefix, such as /a7x, under which every ingest route and /gotrack.js are served (health checks stay at the root too)", func(v string) error {
		if !ingest.ValidRoutePrefix(v) {
			return errors.New("is not a path prefix; want a leading slash and no trailing one, with letters, digits and - _ . ~, such as /a7x")
		}
		c.RoutePrefix = v
		return nil
	})
	add("OUTPUTS", "log", "comma list of sinks: log, postgres, kafka", list(&c.Outputs))
	add("LOG_PATH", "./events.ndjson", "NDJSON file of the log sink; - for standard output", str(&c.Log.Path))
	add("LOG_FSYNC", "batch", "when the log sink fsyncs: batch (before a batch counts as written), interval (each second), never", func(v string) (err error) {
		c.Log.Fsync, err = ndjson.ParseFsyncPolicy(v)
		return err
	})
	add("LOG_ROTATE_MB", "0", "rotate the log file when it would pass this size in MiB; 0 never", func(v string) error {
		if err := integer(&rotateMB, 0, 1<<20)(v); err != nil {
			return err
		}
		c.Log.RotateBytes = int64(rotateMB) << 20
		return nil
	})
	add("LOG_BACKUPS", "5", "rotated log files kept (events.ndjson.1 ... .N)", whole(&c.Log.Backups))
	add("LOG_BATCH_SIZE", "", "batch size of the log sink, in place of BATCH_SIZE: one write and, under LOG_FSYNC=batch, one fsync per batch; unset, "+
		strconv.Itoa(ndjson.DefaultBatchSize)+", or QUEUE_SIZE when smaller", integer(&c.Log.BatchSize, 1, ndjson.MaxBatchSize))
	add("MAX_BODY_BYTES", "1048576", "largest /collect body, checked before and after gzip decompression", func(v string) error {
		if err := integer(&bodyBytes, 1024, 64<<20)(v); err != nil {
			return err
		}
		c.MaxBodyBytes = int64(bodyBytes)
		return nil
	})
	add("MAX_INFLIGHT_BYTES", "67108864", "most /collect and Segment API body bytes held in memory at once, after decompression, across all requests; beyond it they answer 503 at once; larger than MAX_BODY_BYTES", func(v string) error {
		var n int
		if err := integer(&n, 1024, 1<<40)(v); err != nil {
			return err
		}
		c.MaxInflightBytes = int64(n)
		return nil
	})
	add("MAX_CONNECTIONS", "1024", "most ingest connections open at once; at the limit an idle keep-alive one is closed to make room, or else new ones wait in the kernel's accept backlog", integer(&c.MaxConnections, 1, 1<<20))
	add("MAX_BATCH_EVENTS", "500", "most events in one /collect array", integer(&c.MaxBatchEvents, 1, 100000))
	add("CORS_ORIGINS", "", "comma list of origins allowed to POST /collect from a browser; empty allows any (without credentials)", func(v string) (err error) {
		c.CORSOrigins, err = parseOrigins(v)
		return err
	})
	add("AUTH_MODE", "open", "who may write events: open (anyone; source_id anonymous) or key (a write key of SOURCES_FILE on every request)", func(v string) (err error) {
		c.Sources.Mode, err = source.ParseMode(v)
		return err
	})
	add("SOURCES_FILE", "", "YAML file of sources (ids, write keys, origins, rates); required with AUTH_MODE=key; reloaded on SIGHUP", str(&c.Sources.File))
	add("SIGNATURE_TOLERANCE", "5m", "clock skew allowed, either way, between a signed request's timestamp and the server's clock (sources with signing_secret_file)", duration(&c.Sources.SignatureTolerance, time.Second, time.Hour))
	add("RATE_LIMIT_PER_IP", "", "requests a second (50/s), minute (/m) or hour (/h) each client address may make, after TRUST_PROXY chose it, with bursts of twice that; empty for no limit", func(v string) error {
		r, err := source.ParseRate(v)
		if err != nil {
			return errors.New("is not a rate; want COUNT/UNIT with a count from 1 to 1000000 and a unit s, m or h, such as 50/s or 600/m")
		}
		c.Sources.RateLimitPerIP = ratelimit.Bucket{Rate: r, Burst: max(1, int(math.Ceil(2*r)))}
		return nil
	})
	add("ENRICH", "ua,bot,campaign", "comma list of what is added to events: ua (parsed user agent), bot (is_bot and reasons), campaign (utm_* and click ids from url); none for nothing", func(v string) error {
		c.Enrich.UA, c.Enrich.Bot, c.Enrich.Campaign = false, false, false
		if v == "none" {
			return nil
		}
		var bad []string
		for _, p := range splitList(v) {
			switch p {
			case enrich.PartUA:
				c.Enrich.UA = true
			case enrich.PartBot:
				c.Enrich.Bot = true
			case enrich.PartCampaign:
				c.Enrich.Campaign = true
			default:
				bad = append(bad, p)
			}
		}
		if bad != nil {
			return fmt.Errorf("names unknown parts %s (want %s, or none)", strings.Join(bad, ", "), strings.Join(enrich.Parts, ", "))
		}
		return nil
	})
	add("BOT_POLICY", "flag", "events from bots: flag (kept, with bot.is_bot and reasons) or drop (counted by reason; drops server-side senders too, see docs/enrichment.md); needs bot in ENRICH", func(v string) (err error) {
		c.Enrich.BotPolicy, err = enrich.ParseBotPolicy(v)
		return err
	})
	add("GEOIP_DB", "", "MaxMind City or Country mmdb file: adds geo (country, region, city), looked up before IP_MODE; reloaded on SIGHUP", str(&c.Enrich.GeoIPDB))
	add("GEOIP_ASN_DB", "", "MaxMind ASN mmdb file: adds asn (number, org), and the datacenter bot reason; reloaded on SIGHUP", str(&c.Enrich.GeoIPASNDB))
	add("DNT_RESPECT", "true", "drop events from requests with DNT: 1 or Sec-GPC: 1", boolean(&c.Privacy.RespectDNT))
	add("IP_MODE", "truncate", "client IP kept: full, truncate (IPv4 /24, IPv6 /48), hash (HMAC-SHA256), drop", func(v string) (err error) {
		c.Privacy.IPMode, err = event.ParseIPMode(v)
		return err
	})
	s = append(s, setting{name: "IP_HASH_SECRET", help: "HMAC key for IP_MODE=hash (required then); keep it secret and stable", secret: true,
		set: func(v string) error { c.Privacy.IPHashSecret = []byte(v); return nil }})
	add("TRUST_PROXY", "false", "take the client IP from X-Forwarded-For", boolean(&c.Privacy.TrustProxy))
	add("TRUSTED_PROXIES", "", "comma list of proxy CIDRs skipped in X-Forwarded-For; empty trusts only the direct peer", func(v string) error {
		c.Privacy.TrustedProxies = nil
		var bad []string
		for _, item := range splitList(v) {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				a, err2 := netip.ParseAddr(item)
				if err2 != nil {
					bad = append(bad, item)
					continue
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			c.Privacy.TrustedProxies = append(c.Privacy.TrustedProxies, p.Masked())
		}
		if len(bad) > 0 {
			return fmt.Errorf("has entries that are not CIDRs: %s; want a comma list of CIDRs or addresses, such as 10.0.0.0/8,192.0.2.1", strings.Join(bad, ", "))
		}
		return nil
	})
	add("SANITIZE_PARAMS", strings.Join(event.DefaultSanitizeParams, ","), "query parameters removed from url and referrer", list(&c.Privacy.SanitizeParams))
	add("QUEUE_SIZE", "10000", "events each sink's queue holds", integer(&c.Pipeline.QueueSize, 1, 10_000_000))
	add("BATCH_SIZE", "500", "flush a batch at this many events", integer(&c.Pipeline.BatchSize, 1, 1_000_000))
	add("BATCH_BYTES", "1048576", "flush a batch at this many bytes of JSON", integer(&c.Pipeline.BatchBytes, 1024, 1<<30))
	add("FLUSH_INTERVAL", "200ms", "flush a batch this long after its first event", duration(&c.Pipeline.FlushInterval, time.Millisecond, time.Minute))
	add("QUEUE_FULL_POLICY", "block", "when a queue is full: block (wait ENQUEUE_TIMEOUT, then 503 / pixel drop) or drop (at once)", func(v string) (err error) {
		c.Pipeline.FullPolicy, err = pipeline.ParseFullPolicy(v)
		return err
	})
	add("ENQUEUE_TIMEOUT", "100ms", "how long the block policy waits for room", duration(&c.Pipeline.EnqueueTimeout, 0, time.Minute))
	add("RETRY_MAX_BACKOFF", "5s", "cap of the exponential backoff between retries of a failed batch", duration(&c.Pipeline.RetryMax, 10*time.Millisecond, 10*time.Minute))
	add("SINK_WRITE_TIMEOUT", "30s", "deadline of one batch write attempt", duration(&c.Pipeline.WriteTimeout, 100*time.Millisecond, 10*time.Minute))
	add("SPOOL_DIR", "", "directory of the durable spool; when set, every accepted event is on disk before its 2xx", str(&c.Spool.Dir))
	add("SPOOL_FSYNC", "always", "when the spool syncs: always (group commit before the 2xx) or interval:DURATION (2xx may precede it)", func(v string) (err error) {
		c.Spool.Sync, err = spool.ParseSync(v)
		return err
	})
	add("SPOOL_MAX_BYTES", "1073741824", "disk the spool may use; when full, /collect answers 503, the pixel drops, /readyz is not ready", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 64<<10 {
			return errors.New("want a whole number of bytes, at least 65536")
		}
		c.Spool.MaxBytes = n
		return nil
	})
	add("PUSHGATEWAY_URL", "", "gotrack replay pushes its job metrics here (job gotrack_replay), such as http://127.0.0.1:9091", str(&c.Pushgateway.URL))
	add("PUSHGATEWAY_USER", "", "basic auth user for the Pushgateway", str(&c.Pushgateway.User))
	add("PUSHGATEWAY_PASSWORD_FILE", "", "file holding the Pushgateway basic auth password", str(&c.Pushgateway.PasswordFile))
	add("DEAD_LETTER_PATH", "./dead-letter.ndjson", "NDJSON file for events a sink rejects or cannot take before the shutdown deadline", str(&c.DeadLetterPath))
	add("SHUTDOWN_TIMEOUT", "30s", "on SIGTERM/SIGINT: time to finish requests, drain queues and close sinks", duration(&c.ShutdownTimeout, time.Second, time.Hour))
	add("SHUTDOWN_DRAIN_DELAY", "0s", "on SIGTERM/SIGINT: time /readyz answers 503 while requests are still served, before the stop; part of SHUTDOWN_TIMEOUT", duration(&c.ShutdownDrainDelay, 0, time.Hour))
	add("LOG_FORMAT", "json", "format of GoTrack's own logs on stderr: json or text", func(v string) error {
		if v != "json" && v != "text" {
			return errors.New("want json or text")
		}
		c.LogFormat = v
		return nil
	})
	add("LOG_LEVEL", "info", "least level logged: debug, info, warn, error", func(v string) error {
		if c.LogLevel.UnmarshalText([]byte(v)) != nil {
			return errors.New("want debug, info, warn or error")
		}
		return nil
	})

	s = append(s, setting{name: "PG_DSN", help: "PostgreSQL connection, a libpq URL or key=value string (required with OUTPUTS=postgres)", secret: true,
		set: func(v string) error { c.Postgres.DSN = v; return nil }})
	add("PG_TABLE", "events", "table the postgres sink writes, created when missing; schema.table allowed", str(&c.Postgres.Table))
	var pgConns int
	add("PG_MAX_CONNS", strconv.Itoa(postgres.DefaultMaxConns), "connections in the postgres sink's pool", func(v string) error {
		if err := whole(&pgConns)(v); err != nil {
			return err
		}
		c.Postgres.MaxConns = int32(max(math.MinInt32, min(pgConns, math.MaxInt32)))
		return nil
	})
	add("PG_BATCH_SIZE", strconv.Itoa(postgres.DefaultBatchSize), "batch size of the postgres sink, which writes far faster in large batches", whole(&c.Postgres.BatchSize))
	add("PG_BATCH_BYTES", strconv.Itoa(postgres.DefaultBatchBytes), "batch byte limit of the postgres sink", whole(&c.Postgres.BatchBytes))
	add("PG_PARALLEL", strconv.Itoa(postgres.DefaultParallel), "connections one postgres batch is spread over in a backlog (another full batch queued behind it), 2500 events or more each", whole(&c.Postgres.Parallel))
	add("PG_CONNECT_TIMEOUT", postgres.DefaultConnectTimeout.String(), "time to connect and migrate at start; GoTrack refuses to start past it", anyDuration(&c.Postgres.ConnectTimeout))

	k := &c.Kafka
	add("KAFKA_BROKERS", "", "comma list of seed brokers, host:port (required with OUTPUTS=kafka)", list(&k.Brokers))
	add("KAFKA_TOPIC", "gotrack.events", "topic the kafka sink produces to (it must exist)", str(&k.Topic))
	add("KAFKA_ACKS", "all", "acknowledgement a batch waits for: all (idempotent producer), leader, none", func(v string) (err error) {
		k.Acks, err = kafka.ParseAcks(v)
		return err
	})
	add("KAFKA_COMPRESSION", kafka.DefaultCompression, "record batch compression: "+strings.Join(kafka.Compressions(), ", "), func(v string) (err error) {
		k.Compression, err = kafka.ParseCompression(v)
		return err
	})
	add("KAFKA_KEY", "event_id", "record key, which picks the partition: event_id, visitor_id, session_id, none", func(v string) (err error) {
		k.Key, err = kafka.ParseKey(v)
		return err
	})
	add("KAFKA_CLIENT_ID", "gotrack", "client id the brokers see", str(&k.ClientID))
	add("KAFKA_TLS_CA", "", "PEM CA bundle for the brokers' certificates; turns TLS on", str(&k.TLSCA))
	add("KAFKA_TLS_CERT", "", "PEM client certificate for brokers that want one; turns TLS on", str(&k.TLSCert))
	add("KAFKA_TLS_KEY", "", "PEM key for KAFKA_TLS_CERT", str(&k.TLSKey))
	add("KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none", func(v string) (err error) {
		k.SASLMechanism, err = kafka.ParseSASLMechanism(v)
		return err
	})
	add("KAFKA_SASL_USER", "", "SASL user name", str(&k.SASLUser))
	add("KAFKA_SASL_PASSWORD_FILE", "", "file holding the SASL password", str(&k.SASLPasswordFile))
	add("KAFKA_ALLOW_PLAINTEXT_SASL", "false", "allow SASL without TLS, which sends credentials in the clear", boolean(&k.AllowPlaintextSASL))
	add("KAFKA_CLIENT_METRICS", "false", "also expose franz-go's own client metrics, as gotrack_kafka_*", boolean(&c.KafkaMetrics))

	m := &c.Metrics
	add("METRICS_ENABLED", "false", "serve Prometheus metrics on their own listener", boolean(&m.Enabled))
	add("METRICS_ADDR", "127.0.0.1:9090", "address of the metrics listener (/metrics, /healthz); loopback unless scrapers authenticate (mTLS, token or basic auth) or METRICS_ALLOW_INSECURE=true", str(&m.Addr))
	add("METRICS_TLS_CERT", "", "PEM certificate for the metrics listener; reloaded when the file changes", str(&m.TLSCert))
	add("METRICS_TLS_KEY", "", "PEM private key for METRICS_TLS_CERT", str(&m.TLSKey))
	add("METRICS_TLS_RELOAD_INTERVAL", "5s", "how often, at most, the certificate files are checked for changes", duration(&m.TLSReloadInterval, 0, time.Hour))
	add("METRICS_REQUIRE_TLS", "false", "refuse to start the metrics listener without a usable certificate and key", boolean(&m.RequireTLS))
	add("METRICS_CLIENT_CA", "", "PEM CA bundle; when set, scrapers must present a client certificate it signed (mTLS)", str(&m.ClientCA))
	add("METRICS_CLIENT_ALLOWED_SANS", "", "comma list of client certificate SANs (DNS, URI, email or IP) allowed; empty allows any the CA signed", list(&m.ClientAllowedSANs))
	add("METRICS_BEARER_TOKEN_FILE", "", "file holding the bearer token scrapers must send", str(&m.BearerTokenFile))
	add("METRICS_BASIC_AUTH_FILE", "", "htpasswd file of bcrypt users (htpasswd -nBC 10 user) for basic auth", str(&m.BasicAuthFile))
	add("METRICS_ALLOW_INSECURE", "false", "allow a non-loopback METRICS_ADDR without mTLS, bearer token or basic auth (TLS alone does not count)", boolean(&m.AllowInsecure))
	add("METRICS_MAX_SCRAPES", "4", "concurrent /metrics requests served; more get 503", integer(&m.MaxScrapes, 1, 1000))
	add("METRICS_SCRAPE_TIMEOUT", "10s", "time limit of one /metrics response", duration(&m.ScrapeTimeout, 100*time.Millisecond, 5*time.Minute))
	s = append(s, otelSettings(&c.Tracing)...)
	add("TRACE_CLIENT_PARENT", "follow", "an ingest request's traceparent: follow (its span is the client span's child, in the client's trace, sampled as the client says under the parentbased_* samplers) or link (a trace of GoTrack's own, sampled by GoTrack alone, with a link to the client's span); link where the ingest API is public", func(v string) error {
		switch v {
		case "follow", "link":
			c.Tracing.LinkClientTraces = v == "link"
			return nil
		}
		return errors.New("want follow or link")
	})
	return s
}

// Load reads the configuration through getenv and checks it. The error
// lists every problem found, one per line: values that do not parse, values
// that do not fit together, each sink's own rules (its Options.Validate),
// and the content of every file a setting names (certificates, keys, token,
// htpasswd and password files).
//
// An empty value is the same as an unset one: the setting takes its default.
func Load(getenv func(string) string) (*Config, error) {
	c := &Config{}
	var errs []error
	failed := map[string]bool{} // settings whose value did not parse
	for _, s := range settings(c) {
		v, from := getenv(s.name), "environment"
		if v == "" {
			v, from = s.def, "default"
		}
		if v == "" {
			continue
		}
		if err := s.set(v); err != nil {
			shown := v
			if s.secret {
				shown = "(secret)"
			}
			failed[s.name] = true
			errs = append(errs, fmt.Errorf("%s=%q (%s): %w", s.name, shown, from, err))
		}
	}
	c.Kafka.MaxBufferedRecords = c.Pipeline.QueueSize // the client's buffer is bounded like a queue
	errs = append(errs, c.check(failed)...)
	if len(errs) > 0 {
		return nil, &Error{Problems: errs}
	}
	return c, nil
}

// Error lists every configuration problem found.
type Error struct {
	Problems []error
}

func (e *Error) Error() string {
	var b strings.Builder
	noun := "problems"
	if len(e.Problems) == 1 {
		noun = "problem"
	}
	fmt.Fprintf(&b, "invalid configuration (%d %s):", len(e.Problems), noun)
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// The setting each sink option comes from, to name it in Validate's errors.
var (
	logFields = map[string]string{"Path": "LOG_PATH", "Fsync": "LOG_FSYNC", "RotateBytes": "LOG_ROTATE_MB", "Backups": "LOG_BACKUPS", "BatchSize": "LOG_BATCH_SIZE"}
	pgFields  = map[string]string{"DSN": "PG_DSN", "Table": "PG_TABLE", "MaxConns": "PG_MAX_CONNS", "Parallel": "PG_PARALLEL",
		"ConnectTimeout": "PG_CONNECT_TIMEOUT", "BatchSize": "PG_BATCH_SIZE", "BatchBytes": "PG_BATCH_BYTES"}
	kafkaFields = map[string]string{"Brokers": "KAFKA_BROKERS", "Topic": "KAFKA_TOPIC", "Acks": "KAFKA_ACKS",
		"Compression": "KAFKA_COMPRESSION", "Key": "KAFKA_KEY", "ClientID": "KAFKA_CLIENT_ID",
		"TLSCA": "KAFKA_TLS_CA", "TLSCert": "KAFKA_TLS_CERT", "TLSKey": "KAFKA_TLS_KEY",
		"SASLMechanism": "KAFKA_SASL_MECHANISM", "SASLUser": "KAFKA_SASL_USER", "SASLPasswordFile": "KAFKA_SASL_PASSWORD_FILE",
		"AllowPlaintextSASL": "KAFKA_ALLOW_PLAINTEXT_SASL", "MaxBufferedRecords": "QUEUE_SIZE"}
)

// sinkProblems renders the problems a sink's Validate found with the
// settings' names. A problem about a setting whose value did not parse is
// left out: that setting is reported already.
func sinkProblems(err error, names map[string]string, failed map[string]bool) []error {
	if err == nil {
		return nil
	}
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	var out []error
	for _, e := range all {
		var oe *sink.OptionError
		if !errors.As(e, &oe) {
			out = append(out, e)
			continue
		}
		skip := false
		text := oe.Render(func(f string) string {
			n, ok := names[f]
			if !ok {
				n = oe.Sink + " option " + f
			}
			skip = skip || failed[n]
			return n
		})
		if !skip {
			out = append(out, errors.New(text))
		}
	}
	return out
}

func (c *Config) check(failed map[string]bool) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.MaxInflightBytes <= c.MaxBodyBytes && !failed["MAX_INFLIGHT_BYTES"] && !failed["MAX_BODY_BYTES"] {
		bad("MAX_INFLIGHT_BYTES=%d must be larger than MAX_BODY_BYTES=%d, or no body of the largest size could be read; want more than MAX_BODY_BYTES", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if len(c.Outputs) == 0 {
		bad("OUTPUTS names no sink; want one or more of %s", strings.Join(knownOutputs, ", "))
	}
	seen := map[string]bool{}
	for _, o := range c.Outputs {
		switch {
		case !slices.Contains(knownOutputs, o):
			bad("OUTPUTS names an unknown sink %q; want %s", o, strings.Join(knownOutputs, ", "))
		case seen[o]:
			bad("OUTPUTS names %q twice; want each sink once", o)
		}
		seen[o] = true
	}
	if seen[OutputLog] {
		errs = append(errs, sinkProblems(c.Log.Validate(), logFields, failed)...)
	}
	if seen[OutputPostgres] {
		errs = append(errs, sinkProblems(c.Postgres.Validate(), pgFields, failed)...)
	}
	if seen[OutputKafka] {
		errs = append(errs, sinkProblems(c.Kafka.Validate(), kafkaFields, failed)...)
	}
	if c.ShutdownDrainDelay > 0 && c.ShutdownDrainDelay >= c.ShutdownTimeout && !failed["SHUTDOWN_DRAIN_DELAY"] && !failed["SHUTDOWN_TIMEOUT"] {
		bad("SHUTDOWN_DRAIN_DELAY=%s is not shorter than SHUTDOWN_TIMEOUT=%s, which bounds the whole stop, drain delay included; want a delay shorter than SHUTDOWN_TIMEOUT", c.ShutdownDrainDelay, c.ShutdownTimeout)
	}
	if _, _, err := net.SplitHostPort(c.ServerAddr); err != nil {
		bad("SERVER_ADDR=%q is not host:port (%v); want host:port, such as :19890 or 127.0.0.1:19890", c.ServerAddr, err)
	}
	if c.Privacy.IPMode == event.IPHash && len(c.Privacy.IPHashSecret) == 0 {
		bad("IP_MODE=hash needs IP_HASH_SECRET; want a random secret of 16 bytes or more")
	}
	if c.Privacy.IPMode == event.IPHash && len(c.Privacy.IPHashSecret) > 0 && len(c.Privacy.IPHashSecret) < 16 {
		bad("IP_HASH_SECRET is shorter than 16 bytes, too short to keep hashed addresses from being guessed; want 16 bytes or more")
	}
	if len(c.Privacy.TrustedProxies) > 0 && !c.Privacy.TrustProxy {
		bad("TRUSTED_PROXIES is set but TRUST_PROXY is false, so it would be ignored; want TRUST_PROXY=true, or TRUSTED_PROXIES empty")
	}
	if q := c.Pipeline.QueueSize; q > 0 {
		if c.MaxBatchEvents > q {
			bad("MAX_BATCH_EVENTS=%d is larger than QUEUE_SIZE=%d, so a full batch could never be queued; want at most QUEUE_SIZE", c.MaxBatchEvents, q)
		}
		if c.Pipeline.BatchSize > q {
			bad("BATCH_SIZE=%d is larger than QUEUE_SIZE=%d; want at most QUEUE_SIZE", c.Pipeline.BatchSize, q)
		}
		if seen[OutputPostgres] && c.Postgres.BatchSize > q {
			bad("PG_BATCH_SIZE=%d is larger than QUEUE_SIZE=%d; want at most QUEUE_SIZE", c.Postgres.BatchSize, q)
		}
		switch {
		case c.Log.BatchSize == 0: // unset
			c.Log.BatchSize = min(ndjson.DefaultBatchSize, q)
		case seen[OutputLog] && c.Log.BatchSize > q:
			bad("LOG_BATCH_SIZE=%d is larger than QUEUE_SIZE=%d; want at most QUEUE_SIZE", c.Log.BatchSize, q)
		}
	}
	if c.Metrics.Enabled {
		errs = append(errs, c.Metrics.check(c.ServerAddr)...)
	}
	if (c.Pushgateway.User == "") != (c.Pushgateway.PasswordFile == "") {
		bad("PUSHGATEWAY_USER and PUSHGATEWAY_PASSWORD_FILE must be set together; want both or neither")
	}
	if p := c.Pushgateway.PasswordFile; p != "" {
		if _, err := credfile.ReadPassword(p); err != nil {
			bad("PUSHGATEWAY_PASSWORD_FILE: %v", err)
		}
	}
	errs = append(errs, c.Sources.load()...)
	if c.Enrich.BotPolicy == enrich.BotDrop && !c.Enrich.Bot {
		bad("BOT_POLICY=drop needs bot in ENRICH, or no event would ever be found a bot; want bot in ENRICH, or BOT_POLICY=flag")
	}
	for _, f := range []struct{ name, path string }{{"GEOIP_DB", c.Enrich.GeoIPDB}, {"GEOIP_ASN_DB", c.Enrich.GeoIPASNDB}} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(f.path); err != nil {
			bad("%s: %v; want a readable MaxMind .mmdb file", f.name, err)
		} else if !fi.Mode().IsRegular() {
			bad("%s=%q is not a regular file; want a MaxMind .mmdb file", f.name, f.path)
		}
	}
	errs = append(errs, c.Tracing.Validate()...)
	if ca := c.Tracing.CA; ca != "" {
		if _, err := credfile.LoadCAPool(ca); err != nil {
			bad("OTEL_EXPORTER_OTLP_CERTIFICATE: %v", err)
		}
	}
	if crt, key := c.Tracing.ClientCert, c.Tracing.ClientKey; crt != "" && key != "" {
		if _, err := credfile.LoadKeyPair(crt, key); err != nil {
			bad("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/OTEL_EXPORTER_OTLP_CLIENT_KEY: %v", err)
		}
	}
	return errs
}

// load reads SOURCES_FILE under AUTH_MODE=key, each of its problems one
// problem of the configuration.
func (s *Sources) load() []error {
	switch {
	case s.Mode == source.ModeKey && s.File == "":
		return []error{errors.New("AUTH_MODE=key needs SOURCES_FILE; want SOURCES_FILE set to the YAML file of sources")}
	case s.Mode != source.ModeKey && s.File != "":
		return []error{errors.New("SOURCES_FILE is set but AUTH_MODE is not key, so it would be ignored; want AUTH_MODE=key, or SOURCES_FILE unset")}
	case s.Mode != source.ModeKey:
		return nil
	}
	set, err := source.LoadFile(s.File)
	if err != nil {
		var errs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
		for i, e := range errs {
			errs[i] = fmt.Errorf("SOURCES_FILE=%q: %w", s.File, e)
		}
		return errs
	}
	s.Set = set
	return nil
}

func (m Metrics) check(serverAddr string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	host, port, err := net.SplitHostPort(m.Addr)
	if err != nil {
		bad("METRICS_ADDR=%q is not host:port (%v); want host:port, such as 127.0.0.1:9090", m.Addr, err)
	}
	if m.Addr == serverAddr && port != "0" {
		bad("METRICS_ADDR is the same as SERVER_ADDR; metrics need a listener of their own: want another port")
	}
	switch {
	case (m.TLSCert == "") != (m.TLSKey == ""):
		bad("METRICS_TLS_CERT and METRICS_TLS_KEY must be set together; want both or neither")
	case m.TLS():
		if _, err := credfile.LoadKeyPair(m.TLSCert, m.TLSKey); err != nil {
			bad("METRICS_TLS_CERT and METRICS_TLS_KEY: %v", err)
		}
	}
	if m.RequireTLS && !m.TLS() {
		bad("METRICS_REQUIRE_TLS=true but METRICS_TLS_CERT and METRICS_TLS_KEY are not set; want both set")
	}
	if m.ClientCA != "" {
		if !m.TLS() {
			bad("METRICS_CLIENT_CA (mTLS) needs METRICS_TLS_CERT and METRICS_TLS_KEY; want both set")
		}
		if _, err := credfile.LoadCAPool(m.ClientCA); err != nil {
			bad("METRICS_CLIENT_CA: %v", err)
		}
	}
	if len(m.ClientAllowedSANs) > 0 && m.ClientCA == "" {
		bad("METRICS_CLIENT_ALLOWED_SANS needs METRICS_CLIENT_CA; want METRICS_CLIENT_CA set, or no SAN list")
	}
	if m.BearerTokenFile != "" {
		if _, err := credfile.ReadToken(m.BearerTokenFile); err != nil {
			bad("METRICS_BEARER_TOKEN_FILE: %v", err)
		}
	}
	if m.BasicAuthFile != "" {
		if _, err := credfile.ReadHtpasswd(m.BasicAuthFile); err != nil {
			bad("METRICS_BASIC_AUTH_FILE: %v", err)
		}
	}
	if err == nil && !isLoopback(host) && !m.Auth() && !m.AllowInsecure {
		// TLS alone hides the metrics on the wire but lets anyone who can
		// connect read them, so it does not count as protection here.
		bad("METRICS_ADDR=%q listens beyond loopback and scrapers are not authenticated, so anyone who can reach it "+
			"could read GoTrack's metrics; want one of METRICS_CLIENT_CA (mTLS, with METRICS_TLS_CERT and METRICS_TLS_KEY), "+
			"METRICS_BEARER_TOKEN_FILE or METRICS_BASIC_AUTH_FILE; or METRICS_ADDR bound to 127.0.0.1; "+
			"or METRICS_ALLOW_INSECURE=true if the network alone keeps others out", m.Addr)
	}
	return errs
}

// isLoopback reports whether host names only loopback addresses. An empty
// host (":9090") listens on every interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func splitList(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseOrigins parses CORS_ORIGINS. Each entry must be an origin exactly as
// a browser sends it in the Origin header (scheme://host[:port], lower case,
// no path, no default port), since the ingest compares them byte for byte:
// any other entry would never match.
func parseOrigins(v string) ([]string, error) {
	var out, bad []string
	for _, item := range splitList(v) {
		u, err := url.Parse(item)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || item != strings.ToLower(item) ||
			item != u.Scheme+"://"+u.Host || u.Scheme == "https" && u.Port() == "443" || u.Scheme == "http" && u.Port() == "80" {
			bad = append(bad, item)
			continue
		}
		out = append(out, item)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("has entries that are not origins: %s; want scheme://host[:port] in lower case, with no path and no default port, such as https://www.example.com", strings.Join(bad, ", "))
	}
	return out, nil
}

// short formats d without zero units: 1h rather than 1h0m0s.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// example picks a round duration from lo to hi to show the form.
func example(lo, hi time.Duration) string {
	for _, d := range []time.Duration{5 * time.Second, 30 * time.Second, 200 * time.Millisecond, time.Minute} {
		if d >= lo && d <= hi {
			return short(d)
		}
	}
	return short(lo)
}

// Command is one of gotrack's subcommands, for the help text.
type Command struct {
	Name, Help string
}

// Usage writes the subcommands, then every variable with its default and
// meaning.
func Usage(w io.Writer, commands []Command) {
	fmt.Fprintln(w, "Usage: gotrack [COMMAND] [ARGUMENTS]")
	fmt.Fprintln(w, "\nCommands:")
	width := 0
	for _, c := range commands {
		width = max(width, len(c.Name))
	}
	for _, c := range commands {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name, c.Help)
	}
	fmt.Fprintln(w, "\nGoTrack is configured by environment variables; an empty value is the same as an unset one:")
	for _, s := range settings(&Config{}) {
		def := ""
		if s.def != "" {
			def = " (default " + s.def + ")"
		}
		fmt.Fprintf(w, "  %s%s\n      %s\n", s.name, def, s.help)
	}
}

// Markdown returns the settings as the Markdown table kept in the README.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, s := range settings(&Config{}) {
		def := s.def
		if def != "" {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.name, def, strings.ReplaceAll(s.help, "|", `\|`))
	}
	return b.String()
}
