package telemetry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/credfile"
)

// certReloader serves a certificate and key pair from files, reloading them
// when either file changes. A pair that fails to load (a half-written file,
// say) leaves the last good one in service.
type certReloader struct {
	certPath, keyPath string
	interval          time.Duration // how often the files are looked at, at most
	log               *slog.Logger
	failures          prometheus.Counter
	reloads           prometheus.Counter

	cert      atomic.Pointer[tls.Certificate]
	lastCheck atomic.Int64 // unix nanoseconds

	mu     sync.Mutex
	loaded fileState // of the pair in service
	failed fileState // of the last pair that would not load
}

type fileState struct {
	certMod, keyMod   int64 // unix nanoseconds
	certSize, keySize int64
}

func newCertReloader(certPath, keyPath string, interval time.Duration, log *slog.Logger, failures, reloads prometheus.Counter) (*certReloader, error) {
	r := &certReloader{certPath: certPath, keyPath: keyPath, interval: interval, log: log, failures: failures, reloads: reloads}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := credfile.LoadKeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load METRICS_TLS_CERT and METRICS_TLS_KEY: %w", err)
	}
	r.warnValidity(cert.Leaf, "loaded")
	r.cert.Store(&cert)
	r.loaded = st
	r.lastCheck.Store(time.Now().UnixNano())
	return r, nil
}

func (r *certReloader) stat() (fileState, error) {
	c, err := os.Stat(r.certPath)
	if err != nil {
		return fileState{}, fmt.Errorf("METRICS_TLS_CERT: %w", err)
	}
	k, err := os.Stat(r.keyPath)
	if err != nil {
		return fileState{}, fmt.Errorf("METRICS_TLS_KEY: %w", err)
	}
	return fileState{certMod: c.ModTime().UnixNano(), keyMod: k.ModTime().UnixNano(), certSize: c.Size(), keySize: k.Size()}, nil
}

// GetCertificate is the tls.Config hook: it looks at the files at most once
// per interval and returns the pair in service.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if last := r.lastCheck.Load(); now-last >= int64(r.interval) && r.lastCheck.CompareAndSwap(last, now) {
		r.reload()
	}
	return r.cert.Load(), nil
}

func (r *certReloader) reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stat()
	if err != nil || st == r.loaded || st == r.failed {
		return
	}
	cert, err := credfile.LoadKeyPair(r.certPath, r.keyPath)
	if err != nil {
		r.failed = st
		r.failures.Inc()
		r.log.Error("metrics TLS certificate reload failed; keeping the previous one", "err", err)
		return
	}
	r.warnValidity(cert.Leaf, "reloaded")
	r.cert.Store(&cert)
	r.loaded, r.failed = st, fileState{}
	r.reloads.Inc()
	r.log.Info("metrics TLS certificate reloaded", "cert", r.certPath)
}

// warnValidity logs at WARN a certificate that is served although it has
// expired or is not valid yet: clients will refuse it, and only the log
// says why scrapes start failing.
func (r *certReloader) warnValidity(leaf *x509.Certificate, how string) {
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		r.log.Warn("metrics TLS certificate "+how+" has expired; scrapers will refuse it",
			"cert", r.certPath, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		r.log.Warn("metrics TLS certificate "+how+" is not valid yet; scrapers will refuse it",
			"cert", r.certPath, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
}

// notAfter returns the expiry of the certificate in service.
func (r *certReloader) notAfter() time.Time { return r.cert.Load().Leaf.NotAfter }

// loadCAPool reads a PEM bundle that must hold at least one certificate.
func loadCAPool(path string) (*x509.CertPool, error) {
	pool, err := credfile.LoadCAPool(path)
	if err != nil {
		return nil, fmt.Errorf("METRICS_CLIENT_CA: %w", err)
	}
	return pool, nil
}

// verifyClient returns the tls.Config.VerifyConnection hook of mTLS. The
// listener asks for a client certificate with tls.RequestClientCert, which
// leaves every check to this hook (presence, chain to the CA bundle,
// client-auth usage, validity, and the SAN allow-list when set), so that each
// rejection passes through one place where rejected sees it. The chain is
// checked as crypto/tls would with RequireAndVerifyClientCert; the hook runs
// on resumed sessions too, so those are checked again, at the current time.
func verifyClient(pool *x509.CertPool, allowedSANs []string, rejected func(kind string)) func(tls.ConnectionState) error {
	var sans func(tls.ConnectionState) error
	if len(allowedSANs) > 0 {
		sans = verifySANs(allowedSANs)
	}
	return func(cs tls.ConnectionState) error {
		kind, err := checkClient(cs, pool, sans)
		if err != nil {
			rejected(kind)
		}
		return err
	}
}

// checkClient returns nil for an acceptable client certificate, else why
// not, and a kind from a fixed set for logs: missing, expired, untrusted or
// san_not_allowed. The error goes to the client only.
func checkClient(cs tls.ConnectionState, pool *x509.CertPool, sans func(tls.ConnectionState) error) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "missing", errors.New("metrics: no client certificate")
	}
	opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return "expired", fmt.Errorf("metrics: client certificate: %w", err)
		}
		return "untrusted", fmt.Errorf("metrics: client certificate not accepted by METRICS_CLIENT_CA: %w", err)
	}
	if sans != nil {
		if err := sans(cs); err != nil {
			return "san_not_allowed", err
		}
	}
	return "", nil
}

// verifySANs returns a tls.Config.VerifyConnection hook that accepts a
// client certificate only when one of its SANs is on the allow-list. It runs
// on resumed sessions too, unlike VerifyPeerCertificate.
func verifySANs(allowed []string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("metrics: no client certificate")
		}
		c := cs.PeerCertificates[0]
		sans := slices.Concat(c.DNSNames, c.EmailAddresses)
		for _, u := range c.URIs {
			sans = append(sans, u.String())
		}
		for _, ip := range c.IPAddresses {
			sans = append(sans, ip.String())
		}
		for _, s := range sans {
			if slices.Contains(allowed, s) {
				return nil
			}
			if ip := net.ParseIP(s); ip != nil && slices.ContainsFunc(allowed, func(a string) bool {
				return ip.Equal(net.ParseIP(a))
			}) {
				return nil
			}
		}
		return errors.New("metrics: client certificate SAN is not in METRICS_CLIENT_ALLOWED_SANS")
	}
}
