package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/sink"
)

// AllSinks is the sink label of drops that happen before an event reaches
// any sink's queue (Do Not Track, invalid events).
const AllSinks = "all"

// Drop reasons, the reason label of gotrack_events_dropped_total.
const (
	DropQueueFull = "queue_full" // the sink's queue stayed full past ENQUEUE_TIMEOUT, or the policy is drop
	DropDNT       = "dnt"        // the request asked not to be tracked
	DropInvalid   = "invalid"    // the event broke the schema (a pixel; /collect reports it)
	DropClosed    = "shutdown"   // GoTrack was stopping
	DropSpoolFull = "spool_full" // the spool reached SPOOL_MAX_BYTES
	// DropSpoolFailed counts events refused because the spool could not
	// write or sync them.
	DropSpoolFailed = "spool_failed"
	// DropUnauthorized counts pixels without a valid write key under
	// AUTH_MODE=key (the reason is in gotrack_auth_failures_total).
	DropUnauthorized = "unauthorized"
	// DropRateLimited counts pixels over a rate limit (a source's rate, or
	// RATE_LIMIT_PER_IP).
	DropRateLimited = "rate_limited"
	// DropBot counts events dropped under BOT_POLICY=drop (by bot reason
	// in gotrack_bot_events_dropped_total).
	DropBot = "bot"
)

// Dead-letter reasons, the reason label of gotrack_events_dead_lettered_total.
const (
	DeadRejected = "rejected" // the sink refused the event's content
	DeadShutdown = "shutdown" // the sink could not take it before the shutdown deadline
)

// Metrics are the pipeline's Prometheus metrics.
type Metrics struct {
	ingested     *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	sinkErrors   *prometheus.CounterVec
	flushLatency *prometheus.HistogramVec
	batchSize    *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	lastFlush    *prometheus.GaugeVec
	dropped      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	lost         *prometheus.CounterVec
}

// NewMetrics creates the pipeline's metrics on reg, with every series of
// the named sinks present at zero from the first scrape.
func NewMetrics(reg prometheus.Registerer, sinks []string) (*Metrics, error) {
	m := &Metrics{
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_events_ingested_total",
			Help: "Events the sink has durably written (counted after the write, not at enqueue).",
		}, []string{"sink"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_events_duplicate_total",
			Help: "Events the sink held already (a repeated event_id), so did not write again; not counted as ingested. Only sinks that can tell (postgres) count them.",
		}, []string{"sink"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_sink_errors_total",
			Help: "Failed batch writes, by sink and error type (rejected, timeout, unavailable, disk_full, other).",
		}, []string{"sink", "error_type"}),
		flushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gotrack_batch_flush_latency_seconds",
			Help:    "Time to write one batch to the sink, per attempt.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"sink"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gotrack_batch_size_events",
			Help:    "Events in each batch written to the sink.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 .. 16384
		}, []string{"sink"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_sink_retries_total",
			Help: "Batch writes retried after a retryable error.",
		}, []string{"sink"}),
		lastFlush: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gotrack_sink_last_success_timestamp_seconds",
			Help: "Unix time of the sink's last successful batch write; 0 before the first.",
		}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_events_dropped_total",
			Help: `Events not delivered to a sink, by reason (queue_full, dnt, invalid, shutdown, spool_full, spool_failed, unauthorized, rate_limited, bot); sink="all" before fan-out.`,
		}, []string{"sink", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_events_dead_lettered_total",
			Help: "Events written to the dead-letter file instead of the sink, by reason (rejected, shutdown).",
		}, []string{"sink", "reason"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_events_lost_total",
			Help: "Acknowledged events GoTrack gave up without delivering them or writing them to the dead-letter file.",
		}, []string{"sink"}),
	}
	for _, c := range []prometheus.Collector{m.ingested, m.duplicates, m.sinkErrors, m.flushLatency, m.batchSize,
		m.retries, m.lastFlush, m.dropped, m.deadLettered, m.lost} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, reason := range []string{DropDNT, DropInvalid, DropClosed, DropSpoolFull, DropSpoolFailed} {
		m.dropped.WithLabelValues(AllSinks, reason)
	}
	for _, s := range sinks {
		m.ingested.WithLabelValues(s)
		m.duplicates.WithLabelValues(s)
		for _, t := range sink.ErrorTypes {
			m.sinkErrors.WithLabelValues(s, t)
		}
		m.flushLatency.WithLabelValues(s)
		m.batchSize.WithLabelValues(s)
		m.retries.WithLabelValues(s)
		m.lastFlush.WithLabelValues(s)
		m.dropped.WithLabelValues(s, DropQueueFull)
		m.deadLettered.WithLabelValues(s, DeadRejected)
		m.deadLettered.WithLabelValues(s, DeadShutdown)
		m.lost.WithLabelValues(s)
	}
	return m, nil
}

// sinkMetrics are one sink's series, looked up once rather than per batch.
type sinkMetrics struct {
	ingested     prometheus.Counter
	duplicates   prometheus.Counter
	errors       map[string]prometheus.Counter
	flushLatency prometheus.Observer
	batchSize    prometheus.Observer
	retries      prometheus.Counter
	lastFlush    prometheus.Gauge
	queueFull    prometheus.Counter
	deadRejected prometheus.Counter
	deadShutdown prometheus.Counter
	lost         prometheus.Counter
}

func (m *Metrics) forSink(name string) *sinkMetrics {
	sm := &sinkMetrics{
		ingested:     m.ingested.WithLabelValues(name),
		duplicates:   m.duplicates.WithLabelValues(name),
		errors:       make(map[string]prometheus.Counter, len(sink.ErrorTypes)),
		flushLatency: m.flushLatency.WithLabelValues(name),
		batchSize:    m.batchSize.WithLabelValues(name),
		retries:      m.retries.WithLabelValues(name),
		lastFlush:    m.lastFlush.WithLabelValues(name),
		queueFull:    m.dropped.WithLabelValues(name, DropQueueFull),
		deadRejected: m.deadLettered.WithLabelValues(name, DeadRejected),
		deadShutdown: m.deadLettered.WithLabelValues(name, DeadShutdown),
		lost:         m.lost.WithLabelValues(name),
	}
	for _, t := range sink.ErrorTypes {
		sm.errors[t] = m.sinkErrors.WithLabelValues(name, t)
	}
	return sm
}

// stateCollector reports each buffer's live depth, capacity and the
// sink-up state at scrape time, so that nothing on the hot path updates a
// gauge.
type stateCollector struct {
	outs     []*output
	depth    *prometheus.Desc
	capacity *prometheus.Desc
	up       *prometheus.Desc
}

func newStateCollector(outs []*output) *stateCollector {
	return &stateCollector{
		outs: outs,
		depth: prometheus.NewDesc("gotrack_queue_depth",
			"Events not yet delivered to the sink: in its queue, or with a spool, in the spool; the batch being written or retried included.", []string{"sink"}, nil),
		capacity: prometheus.NewDesc("gotrack_queue_capacity", "Events the sink's queue can hold (QUEUE_SIZE).", []string{"sink"}, nil),
		up:       prometheus.NewDesc("gotrack_sink_up", "1 when the sink's destination answers and its last write succeeded, else 0.", []string{"sink"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.capacity
	ch <- c.up
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, o := range c.outs {
		up := 0.0
		if o.isUp() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(o.buf.Lag()), o.name)
		if n := o.buf.Capacity(); n > 0 { // the spool is bounded by SPOOL_MAX_BYTES, not a count
			ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(n), o.name)
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, o.name)
	}
}
