package telemetry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gotrack/gotrack/internal/config"
)

// rejectLogInterval is the least time between two log lines about rejected
// client certificates; the rejections in between are counted in the next.
const rejectLogInterval = time.Minute

// MetricsServer is the metrics listener: /metrics and /healthz on an address
// of their own, optionally behind TLS, mTLS and authentication.
type MetricsServer struct {
	cfg  config.Metrics
	tls  bool // fixed at construction; srv.TLSConfig is the server's once it serves
	srv  *http.Server
	ln   net.Listener
	log  *slog.Logger
	done chan error
}

// NewMetricsServer loads the certificates, CA bundle and credentials the
// configuration names, and returns a server ready to Start. Every problem
// found is returned at once.
func NewMetricsServer(cfg config.Metrics, reg *prometheus.Registry, log *slog.Logger) (*MetricsServer, error) {
	tlsFailures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gotrack_metrics_tls_reload_failures_total",
		Help: "Reloads of the metrics TLS certificate that failed; the previous certificate stays in service.",
	})
	tlsReloads := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gotrack_metrics_tls_reloads_total",
		Help: "Successful reloads of the metrics TLS certificate after its files changed.",
	})
	authFailures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_metrics_auth_failures_total",
		Help: "Scrapes refused for want of valid credentials, by reason (missing, invalid, busy, client_cert).",
	}, []string{"reason"})
	var errs []error
	for _, c := range []prometheus.Collector{tlsFailures, tlsReloads, authFailures} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range authFailureReasons {
		authFailures.WithLabelValues(r)
	}

	var tlsConfig *tls.Config
	if cfg.TLS() {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		cr, err := newCertReloader(cfg.TLSCert, cfg.TLSKey, cfg.TLSReloadInterval, log, tlsFailures, tlsReloads)
		if err != nil {
			errs = append(errs, err)
		} else {
			tlsConfig.GetCertificate = cr.GetCertificate
			expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "gotrack_metrics_tls_cert_expiry_timestamp_seconds",
				Help: "Expiry (NotAfter) of the certificate the metrics listener serves, in unix seconds.",
			}, func() float64 { return float64(cr.notAfter().Unix()) })
			if err := reg.Register(expiry); err != nil {
				errs = append(errs, err)
			}
		}
		if cfg.ClientCA != "" {
			pool, err := loadCAPool(cfg.ClientCA)
			if err != nil {
				errs = append(errs, err)
			}
			// The CA bundle is still named in the handshake, but verifyClient
			// does the checking, so that every rejection is counted and logged.
			tlsConfig.ClientCAs = pool
			tlsConfig.ClientAuth = tls.RequestClientCert
			logEvery := &sometimes{interval: rejectLogInterval, now: time.Now}
			tlsConfig.VerifyConnection = verifyClient(pool, cfg.ClientAllowedSANs, func(kind string) {
				authFailures.WithLabelValues("client_cert").Inc()
				if ok, held := logEvery.allow(); ok {
					log.Warn("metrics scrape refused: client certificate rejected in the TLS handshake",
						"kind", kind, "rejections_not_logged", held)
				}
			})
		}
	}
	auth, err := newAuthenticator(cfg.BearerTokenFile, cfg.BasicAuthFile, authFailures)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("metrics listener: %w", errors.Join(errs...))
	}

	metrics := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		Registry:            reg, // counts promhttp_metric_handler_errors_total
		MaxRequestsInFlight: cfg.MaxScrapes,
		Timeout:             cfg.ScrapeTimeout,
		// OpenMetrics when the scraper asks for it: the only format that
		// carries the exemplars (trace ids) of the duration histograms.
		EnableOpenMetrics: true,
	}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", auth.wrap(metrics))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.Handle("/", http.NotFoundHandler())

	return &MetricsServer{
		cfg: cfg,
		tls: tlsConfig != nil,
		log: log,
		srv: &http.Server{
			Handler:           mux,
			TLSConfig:         tlsConfig,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      cfg.ScrapeTimeout + 5*time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		done: make(chan error, 1),
	}, nil
}

// Start binds the address and serves in the background. A taken address is
// reported with the variable that chose it.
func (m *MetricsServer) Start() error {
	ln, err := net.Listen("tcp", m.cfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("metrics listener: METRICS_ADDR=%s is already in use (Prometheus itself listens on 9090 by default); "+
				"choose a free port with METRICS_ADDR: %w", m.cfg.Addr, err)
		}
		return fmt.Errorf("metrics listener: listen on METRICS_ADDR=%s: %w", m.cfg.Addr, err)
	}
	m.ln = ln
	go func() {
		var err error
		if m.tls {
			err = m.srv.ServeTLS(ln, "", "")
		} else {
			err = m.srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		m.done <- err
	}()
	return nil
}

// Addr returns the bound address, useful when METRICS_ADDR names port 0.
func (m *MetricsServer) Addr() string { return m.ln.Addr().String() }

// Scheme returns "https" when the listener serves TLS, else "http".
func (m *MetricsServer) Scheme() string {
	if m.tls {
		return "https"
	}
	return "http"
}

// Shutdown stops the listener, waiting for scrapes under way until ctx ends.
func (m *MetricsServer) Shutdown(ctx context.Context) error {
	if m.ln == nil {
		return nil
	}
	err := m.srv.Shutdown(ctx)
	return errors.Join(err, <-m.done)
}
