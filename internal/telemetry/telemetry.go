// Package telemetry holds GoTrack's own observability: the metrics registry,
// the metrics listener with its TLS, mTLS and authentication, and logging.
package telemetry

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version is the GoTrack version, set at build time with
// -ldflags "-X github.com/gotrack/gotrack/internal/telemetry.Version=v1.2.3".
var Version = "dev"

// NewRegistry returns the registry every GoTrack metric is registered on:
// a fresh one, never the global default, carrying the Go runtime and process
// collectors and gotrack_build_info.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "gotrack_build_info",
		Help:        "Always 1; the labels say which GoTrack build is running.",
		ConstLabels: prometheus.Labels{"version": Version, "revision": revision, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(info)
	return reg
}

// NewLogger returns a logger writing JSON or text at level to w.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
