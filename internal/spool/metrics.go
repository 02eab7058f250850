package spool

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the spool's Prometheus metrics. Live state (bytes, segments,
// age, lag) is read at scrape time.
type Metrics struct {
	appended       prometheus.Counter
	truncations    prometheus.Counter
	truncatedBytes prometheus.Counter
	corrupt        prometheus.Counter
	recovered      *prometheus.CounterVec
	fsync          prometheus.Histogram

	mu    sync.Mutex
	spool *Spool

	bytesDesc, capacityDesc, segmentsDesc, ageDesc, lagDesc *prometheus.Desc
}

// NewMetrics creates the spool metrics on reg, with the per-sink series of
// readers present from the first scrape.
func NewMetrics(reg prometheus.Registerer, readers []string) (*Metrics, error) {
	m := newUnregisteredMetrics()
	for _, r := range readers {
		m.recovered.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.appended, m.truncations, m.truncatedBytes, m.corrupt, m.recovered, m.fsync, m} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func newUnregisteredMetrics() *Metrics {
	return &Metrics{
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotrack_spool_appended_events_total", Help: "Events appended to the spool (stored; refused appends are not counted).",
		}),
		truncations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotrack_spool_truncations_total", Help: "Torn tails cut off the newest segment at start.",
		}),
		truncatedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotrack_spool_truncated_bytes_total", Help: "Bytes cut off torn tails of the newest segment at start.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gotrack_spool_corrupt_records_total", Help: "Records lost to damage: found at start (the records around them kept), or by a reader while running.",
		}),
		recovered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotrack_spool_recovered_events_total",
			Help: "Events found in the spool at start that the sink had not acknowledged, and so replays.",
		}, []string{"sink"}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gotrack_spool_fsync_seconds",
			Help:    "Time of each spool fsync (one covers every append waiting for it).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		bytesDesc:    prometheus.NewDesc("gotrack_spool_bytes", "Bytes the spool's segments take on disk.", nil, nil),
		capacityDesc: prometheus.NewDesc("gotrack_spool_capacity_bytes", "Bytes the spool may use (SPOOL_MAX_BYTES).", nil, nil),
		segmentsDesc: prometheus.NewDesc("gotrack_spool_segments", "Segment files in the spool.", nil, nil),
		ageDesc: prometheus.NewDesc("gotrack_spool_oldest_unacked_age_seconds",
			"Age of the oldest event some sink has not acknowledged (by segment, so coarse); 0 when all are.", nil, nil),
		lagDesc: prometheus.NewDesc("gotrack_spool_lag_events", "Events in the spool the sink has not acknowledged.", []string{"sink"}, nil),
	}
}

func (m *Metrics) setState(s *Spool) {
	m.mu.Lock()
	m.spool = s
	m.mu.Unlock()
}

// Describe implements prometheus.Collector for the live state.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.bytesDesc
	ch <- m.capacityDesc
	ch <- m.segmentsDesc
	ch <- m.ageDesc
	ch <- m.lagDesc
}

// Collect implements prometheus.Collector for the live state.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	s := m.spool
	m.mu.Unlock()
	if s == nil {
		return
	}
	st := s.snapshot()
	age := 0.0
	if !st.oldestAt.IsZero() {
		age = max(0, time.Since(st.oldestAt).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.GaugeValue, float64(st.bytes))
	ch <- prometheus.MustNewConstMetric(m.capacityDesc, prometheus.GaugeValue, float64(s.opts.MaxBytes))
	ch <- prometheus.MustNewConstMetric(m.segmentsDesc, prometheus.GaugeValue, float64(st.segments))
	ch <- prometheus.MustNewConstMetric(m.ageDesc, prometheus.GaugeValue, age)
	for name, r := range s.readers {
		ch <- prometheus.MustNewConstMetric(m.lagDesc, prometheus.GaugeValue, float64(st.next-min(st.next, r.Cursor())), name)
	}
}
