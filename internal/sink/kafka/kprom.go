package kafka

import (
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gaugeNames is the Registerer handed to kprom. kprom names two gauges
// *_total (buffered_produce_records_total, buffered_fetch_records_total),
// a suffix Prometheus keeps for counters, so `promtool check metrics`
// fails on them; kprom has no option to rename them. gaugeNames registers
// every kprom gauge whose name ends in _total under the name without it,
// and passes every other collector through unchanged.
type gaugeNames struct {
	prometheus.Registerer

	// renamed maps each original gauge to the collector registered for it,
	// so that kprom's Unregister (when the client closes) finds it.
	renamed sync.Map // prometheus.Collector -> prometheus.Collector
}

func (r *gaugeNames) Register(c prometheus.Collector) error {
	g, ok := c.(prometheus.GaugeFunc)
	if !ok {
		return r.Registerer.Register(c)
	}
	name, help, ok := describe(g.Desc())
	if !ok || !strings.HasSuffix(name, "_total") {
		return r.Registerer.Register(c)
	}
	value := func() float64 {
		var m dto.Metric
		if err := g.Write(&m); err != nil {
			return 0
		}
		return m.GetGauge().GetValue()
	}
	repl := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: strings.TrimSuffix(name, "_total"), Help: help}, value)
	if err := r.Registerer.Register(repl); err != nil {
		return err
	}
	r.renamed.Store(c, repl)
	return nil
}

func (r *gaugeNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *gaugeNames) Unregister(c prometheus.Collector) bool {
	if repl, ok := r.renamed.LoadAndDelete(c); ok {
		c = repl.(prometheus.Collector)
	}
	return r.Registerer.Unregister(c)
}

// descFields reads the name and help out of a Desc's String, the only way
// client_golang shows them. Only gauges without labels are renamed, so
// nothing else is lost.
var descFields = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), .*constLabels: \{\}, variableLabels: \{\}\}$`)

func describe(d *prometheus.Desc) (name, help string, ok bool) {
	m := descFields.FindStringSubmatch(d.String())
	if m == nil {
		return "", "", false
	}
	name, err1 := strconv.Unquote(m[1])
	help, err2 := strconv.Unquote(m[2])
	return name, help, err1 == nil && err2 == nil
}
