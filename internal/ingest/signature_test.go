package ingest

import (
	"bytes"
	"compress/gzip"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/source"
)

const testSecret = "s3cret-s3cret-s3cret"

func sign(secret string, t int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(t, 10) + "."))
	m.Write(body)
	return "t=" + strconv.FormatInt(t, 10) + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// TestSignedRequests covers every outcome of a signature through /collect,
// with the clock injected: missing, malformed, stale either way, bad,
// replayed, good (at both edges of the tolerance, and over a gzip body as
// sent), and the pixel of a signing source.
func TestSignedRequests(t *testing.T) {
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "backend.secret")
	os.WriteFile(secretPath, []byte(testSecret+"\n"), 0o600)
	now := time.Unix(1_800_000_000, 0)
	reg := prometheus.NewPedanticRegistry()
	auth := newAuth(t, "sources:\n  - id: backend\n    write_keys: [wk_backend_1]\n    signing_secret_file: "+secretPath+"\n",
		func() time.Time { return now }, reg)
	f := newFixture(t, event.Policy{}, Options{Auth: auth})
	tol := int64(300)
	ts := now.Unix()

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"type":"zipped"}`))
	zw.Close()

	body := func(i int) []byte { return []byte(`{"type":"signed","props":{"i":` + strconv.Itoa(i) + `}}`) }
	for i, c := range []struct {
		name      string
		body      []byte
		gzip      bool
		sig       string // "" sends no header
		status    int
		reason    string // of gotrack_auth_failures_total
		errorWord string // the JSON error names the problem
	}{
		{name: "missing", body: body(1), status: 401, reason: source.ReasonSignatureMissing, errorWord: "missing"},
		{name: "malformed", body: body(2), sig: "t=now,v1=zz", status: 401, reason: source.ReasonSignatureMalformed, errorWord: "malformed"},
		{name: "no v1", body: body(3), sig: "t=" + strconv.FormatInt(ts, 10), status: 401, reason: source.ReasonSignatureMalformed, errorWord: "malformed"},
		{name: "stale, past", body: body(4), sig: sign(testSecret, ts-tol-1, body(4)), status: 401, reason: source.ReasonSignatureStale, errorWord: "stale"},
		{name: "stale, future", body: body(5), sig: sign(testSecret, ts+tol+1, body(5)), status: 401, reason: source.ReasonSignatureStale, errorWord: "stale"},
		{name: "bad secret", body: body(6), sig: sign("another-secret-here", ts, body(6)), status: 401, reason: source.ReasonSignatureBad, errorWord: "bad"},
		{name: "bad body", body: body(7), sig: sign(testSecret, ts, body(70)), status: 401, reason: source.ReasonSignatureBad, errorWord: "bad"},
		{name: "good", body: body(8), sig: sign(testSecret, ts, body(8)), status: 202},
		{name: "replayed", body: body(8), sig: sign(testSecret, ts, body(8)), status: 401, reason: source.ReasonSignatureReplayed, errorWord: "replay"},
		{name: "good, edge of the past", body: body(9), sig: sign(testSecret, ts-tol, body(9)), status: 202},
		{name: "good, edge of the future", body: body(10), sig: sign(testSecret, ts+tol, body(10)), status: 202},
		{name: "gzip signed as sent", body: gz.Bytes(), gzip: true, sig: sign(testSecret, ts, gz.Bytes()), status: 202},
		{name: "gzip signed decompressed", body: gz.Bytes(), gzip: true, sig: sign(testSecret, ts+1, []byte(`{"type":"zipped"}`)), status: 401, reason: source.ReasonSignatureBad, errorWord: "bad"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/collect", bytes.NewReader(c.body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("X-Write-Key", "wk_backend_1")
			if c.gzip {
				r.Header.Set("Content-Encoding", "gzip")
			}
			if c.sig != "" {
				r.Header.Set("X-GoTrack-Signature", c.sig)
			}
			before := failures(t, reg, "backend", c.reason)
			w := httptest.NewRecorder()
			f.h.ServeHTTP(w, r)
			if w.Code != c.status {
				t.Fatalf("case %d: %d %s, want %d", i, w.Code, w.Body, c.status)
			}
			if c.status == 401 {
				var eb errorBody
				if json.Unmarshal(w.Body.Bytes(), &eb) != nil || !strings.Contains(eb.Error, c.errorWord) {
					t.Errorf("error %s does not say %q", w.Body, c.errorWord)
				}
				if got := failures(t, reg, "backend", c.reason) - before; got != 1 {
					t.Errorf("failures{backend,%s} grew by %v, want 1", c.reason, got)
				}
			}
		})
	}
	if len(f.pipe.events) != 4 {
		t.Errorf("%d events accepted, want 4", len(f.pipe.events))
	}

	// A request refused after its signature was verified (503: the queue
	// is full) is forgotten, so that its retry is no replay.
	retry := func() int {
		b := body(11)
		r := httptest.NewRequest("POST", "/collect", bytes.NewReader(b))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Write-Key", "wk_backend_1")
		r.Header.Set("X-GoTrack-Signature", sign(testSecret, ts, b))
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w.Code
	}
	f.pipe.err = pipeline.ErrQueueFull
	if got := retry(); got != 503 {
		t.Fatalf("with a full queue: %d", got)
	}
	f.pipe.err = nil
	if got := retry(); got != 202 {
		t.Fatalf("the retry of a 503: %d, want 202", got)
	}
	if got := retry(); got != 401 {
		t.Fatalf("a replay of the accepted retry: %d, want 401", got)
	}

	r := httptest.NewRequest("GET", "/px.gif?k=wk_backend_1", nil)
	r.Header.Set("X-Write-Key", "wk_backend_1")
	f.h.ServeHTTP(httptest.NewRecorder(), r)
	if f.pipe.dropped[pipeline.DropUnauthorized] != 1 {
		t.Errorf("a signing source's pixel was not dropped: %v", f.pipe.dropped)
	}
}

func failures(t *testing.T, reg *prometheus.Registry, src, reason string) float64 {
	t.Helper()
	if reason == "" {
		return 0
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gotrack_auth_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var s, r string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "source":
					s = l.GetValue()
				case "reason":
					r = l.GetValue()
				}
			}
			if s == src && r == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series gotrack_auth_failures_total{source=%q,reason=%q}", src, reason)
	return 0
}

// TestSignedSourceRateNotSpentByForgers checks that requests which fail
// the signature do not take the signing source's tokens: the write key
// alone does not let a client write for a signing source, so it must not
// let it starve the real, signed requests into 429 either.
func TestSignedSourceRateNotSpentByForgers(t *testing.T) {
	dir := t.TempDir()
	secretPath := filepath.Join(dir, "backend.secret")
	os.WriteFile(secretPath, []byte(testSecret+"\n"), 0o600)
	now := time.Unix(1_800_000_000, 0)
	auth := newAuth(t, "sources:\n  - id: backend\n    write_keys: [wk_backend_1]\n    signing_secret_file: "+secretPath+"\n    rate: 1/m\n    burst: 2\n",
		func() time.Time { return now }, prometheus.NewPedanticRegistry())
	f := newFixture(t, event.Policy{}, Options{Auth: auth})
	post := func(b []byte, sig string) int {
		r := httptest.NewRequest("POST", "/collect", bytes.NewReader(b))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Write-Key", "wk_backend_1")
		if sig != "" {
			r.Header.Set("X-GoTrack-Signature", sig)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		return w.Code
	}
	b := []byte(`{"type":"forged"}`)
	for i := range 5 {
		for _, sig := range []string{"", "t=1,v1=00", sign("not-the-secret-at-all", now.Unix(), b)} {
			if got := post(b, sig); got != 401 {
				t.Fatalf("forgery %d (%q): %d, want 401", i, sig, got)
			}
		}
	}
	for i := range 2 {
		b := []byte(`{"type":"signed","props":{"i":` + strconv.Itoa(i) + `}}`)
		if got := post(b, sign(testSecret, now.Unix(), b)); got != 202 {
			t.Fatalf("signed request %d after forgeries: %d, want 202 (the burst is 2)", i, got)
		}
	}
	b = []byte(`{"type":"signed","props":{"i":2}}`)
	sig := sign(testSecret, now.Unix(), b)
	if got := post(b, sig); got != 429 {
		t.Fatalf("the third signed request: %d, want 429", got)
	}
	now = now.Add(time.Minute)
	if got := post(b, sig); got != 202 {
		t.Fatalf("the retry of the 429, once a token is back: %d, want 202 (a 429 is no replay)", got)
	}
}
