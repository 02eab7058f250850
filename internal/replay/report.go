package replay

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/gotrack/gotrack/internal/credfile"
)

// Counts is how a run went.
type Counts struct {
	Replayed int64 // events delivered to their sinks
	Failed   int64 // lines that are not events, and events the sinks rejected again
	Skipped  int64 // dead-letter lines for a sink not being replayed
}

// Progress prints progress: a redrawn bar on a terminal, plain lines
// otherwise.
type Progress struct {
	w       io.Writer
	tty     bool
	start   time.Time
	last    time.Time
	every   time.Duration
	printed bool
}

// NewProgress returns a Progress writing to w, drawing a bar when w is a
// terminal.
func NewProgress(w io.Writer) *Progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	every := 5 * time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	return &Progress{w: w, tty: tty, start: time.Now(), every: every}
}

// Update reports done of total bytes and the events so far, at most every
// so often unless final.
func (p *Progress) Update(done, total, events int64, final bool) {
	now := time.Now()
	if !final && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start).Seconds()
	rate := float64(events) / max(elapsed, 1e-9)
	frac := 1.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	eta := "-"
	if frac > 0 && frac < 1 {
		eta = (time.Duration(elapsed/frac*(1-frac)) * time.Second).Round(time.Second).String()
	}
	if p.tty {
		const width = 30
		n := int(frac * width)
		fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %d events  %.0f events/s  ETA %s ",
			strings.Repeat("=", n), strings.Repeat(" ", width-n), 100*frac, events, rate, eta)
		if final {
			fmt.Fprintln(p.w)
		}
	} else {
		fmt.Fprintf(p.w, "replay: %3.0f%% of %d bytes, %d events, %.0f events/s, ETA %s\n", 100*frac, total, events, rate, eta)
	}
	p.printed = true
}

// PushOptions say where the job metrics go.
type PushOptions struct {
	URL          string
	User         string
	PasswordFile string
}

// Job is the Pushgateway job name of the replay.
const Job = "gotrack_replay"

// Push sends the run's metrics to the Pushgateway, from a registry of their
// own (no Go or process collectors: they would describe a process that is
// about to exit). A successful run replaces the job's group, stamping the
// last success; a failed one adds its counts and keeps the last success
// time of the run before, so an alert on its age fires.
func Push(o PushOptions, c Counts, took time.Duration, ok bool) error {
	reg := prometheus.NewRegistry()
	events := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gotrack_replay_events", Help: "Events of the last replay run, by result (replayed, failed, skipped).",
	}, []string{"result"})
	events.WithLabelValues("replayed").Set(float64(c.Replayed))
	events.WithLabelValues("failed").Set(float64(c.Failed))
	events.WithLabelValues("skipped").Set(float64(c.Skipped))
	duration := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gotrack_replay_duration_seconds", Help: "How long the last replay run took.",
	})
	duration.Set(took.Seconds())
	reg.MustRegister(events, duration)
	p := push.New(o.URL, Job).Gatherer(reg)
	if o.User != "" {
		pass, err := credfile.ReadPassword(o.PasswordFile)
		if err != nil {
			return fmt.Errorf("PUSHGATEWAY_PASSWORD_FILE: %w", err)
		}
		p = p.BasicAuth(o.User, pass)
	}
	if !ok {
		if err := p.Add(); err != nil {
			return fmt.Errorf("push to the Pushgateway: %w", err)
		}
		return nil
	}
	last := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gotrack_replay_last_success_timestamp_seconds", Help: "Unix time the last successful replay run ended.",
	})
	last.SetToCurrentTime()
	reg.MustRegister(last)
	if err := p.Push(); err != nil {
		return fmt.Errorf("push to the Pushgateway: %w", err)
	}
	return nil
}
