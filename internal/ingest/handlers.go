package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
)

// gif is a 1x1 transparent GIF89a, 43 bytes ending in the 0x3B trailer.
var gif = []byte{
	'G', 'I', 'F', '8', '9', 'a', 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, // header, screen descriptor
	0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // two-colour table
	0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // graphic control: colour 0 transparent
	0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image descriptor
	0x02, 0x02, 0x44, 0x01, 0x00, // LZW data
	0x3b, // trailer
}

var (
	gifLength    = []string{strconv.Itoa(len(gif))}
	gifType      = []string{"image/gif"}
	noStore      = []string{"no-store, no-cache, must-revalidate, private"}
	jsonType     = []string{"application/json"}
	nosniff      = []string{"nosniff"}
	retryShort   = []string{"1"}
	retryClosing = []string{"5"}
)

type server struct {
	opts     Options
	norm     *event.Normalizer
	pipe     Pipeline
	log      *slog.Logger
	received struct{ pixel, collect, segment prometheus.Counter }
	anyOrig  bool
	bufs     sync.Pool // *bytes.Buffer for request bodies
	gzips    sync.Pool // *gzip.Reader
}

func newServer(opts Options, n *event.Normalizer, p Pipeline, reg prometheus.Registerer, log *slog.Logger) (*server, error) {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_events_received_total",
		Help: "Events received, by source (pixel, collect, segment), before validation and the privacy policy.",
	}, []string{"source"})
	if err := reg.Register(received); err != nil {
		return nil, err
	}
	s := &server{opts: opts, norm: n, pipe: p, log: log, anyOrig: len(opts.CORSOrigins) == 0}
	s.received.pixel = received.WithLabelValues(string(event.SourcePixel))
	s.received.collect = received.WithLabelValues(string(event.SourceCollect))
	s.received.segment = received.WithLabelValues(string(event.SourceSegment))
	s.bufs.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// meta reads what a request says about its events. Headers are read by
// their canonical keys directly: Header.Get would canonicalise each name
// again on every request.
func (s *server) meta(r *http.Request) event.Meta {
	return event.Meta{
		Now:       time.Now(),
		IP:        s.norm.ClientIP(r.RemoteAddr, r.Header["X-Forwarded-For"]),
		UserAgent: first(r.Header["User-Agent"]),
		Referer:   first(r.Header["Referer"]),
	}
}

func (s *server) doNotTrack(r *http.Request) bool {
	return s.norm.DoNotTrack(first(r.Header["Dnt"]), first(r.Header["Sec-Gpc"]))
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// pixel always answers the GIF: a browser can do nothing with an error, so
// the outcome is counted instead.
func (s *server) pixel(w http.ResponseWriter, r *http.Request) {
	s.received.pixel.Inc()
	switch {
	case s.doNotTrack(r):
		s.pipe.CountDropped(pipeline.DropDNT, 1)
	default:
		e, err := s.norm.FromQuery(r.URL.RawQuery, s.meta(r))
		if err != nil {
			s.pipe.CountDropped(pipeline.DropInvalid, 1)
			s.log.Debug("pixel event invalid", "err", err)
			break
		}
		s.pipe.SubmitEach(e) // drops are counted per sink
	}
	h := w.Header()
	h["Content-Type"] = gifType
	h["Content-Length"] = gifLength
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = nosniff
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(gif)
	}
}

// collectResponse is the body of a 202 from /collect.
type collectResponse struct {
	Error    string      `json:"error,omitempty"` // when no event was valid
	Accepted int         `json:"accepted"`
	Rejected int         `json:"rejected"`
	Dropped  int         `json:"dropped,omitempty"` // Do Not Track
	Errors   []itemError `json:"errors,omitempty"`
}

type itemError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

func (s *server) collect(w http.ResponseWriter, r *http.Request) {
	if !s.cors(w, r) {
		writeError(w, http.StatusForbidden, "origin is not allowed (CORS_ORIGINS)")
		return
	}
	if status, msg := checkContentType(r); status != 0 {
		writeError(w, status, msg)
		return
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.putBuf(buf)
	if status, msg := s.readBody(w, r, buf); status != 0 {
		writeError(w, status, msg)
		return
	}
	body := bytes.TrimSpace(buf.Bytes())
	if !utf8.Valid(body) {
		writeError(w, http.StatusBadRequest, "body is not valid UTF-8")
		return
	}
	if len(body) == 0 {
		writeError(w, http.StatusBadRequest, "body is empty; send a JSON event object or an array of them")
		return
	}
	if body[0] != '[' && body[0] != '{' {
		writeError(w, http.StatusBadRequest, "body must be a JSON event object or an array of them")
		return
	}
	if !json.Valid(body) {
		var v any
		writeError(w, http.StatusBadRequest, "malformed JSON: "+jsonError(json.Unmarshal(body, &v)))
		return
	}
	items := [][]byte{body}
	if body[0] == '[' {
		items = event.SplitArray(body) // the events copy what they keep, so the pooled buffer can go back
		if len(items) > s.opts.MaxBatchEvents {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
				"batch has %d events, more than MAX_BATCH_EVENTS=%d", len(items), s.opts.MaxBatchEvents))
			return
		}
	}
	s.received.collect.Add(float64(len(items)))

	var resp collectResponse
	if s.doNotTrack(r) {
		resp.Dropped = len(items)
		s.pipe.CountDropped(pipeline.DropDNT, len(items))
		writeJSON(w, http.StatusAccepted, resp)
		return
	}
	m := s.meta(r)
	events := make([]*event.Event, 0, len(items))
	for i, raw := range items {
		e, err := s.norm.FromJSON(raw, m)
		if err != nil {
			resp.Errors = append(resp.Errors, itemError{Index: i, Error: err.Error()})
			continue
		}
		events = append(events, e)
	}
	resp.Accepted, resp.Rejected = len(events), len(resp.Errors)
	if resp.Rejected > 0 {
		s.pipe.CountDropped(pipeline.DropInvalid, resp.Rejected)
	}
	if resp.Accepted == 0 && resp.Rejected > 0 {
		resp.Error = "no valid event in the body"
		writeJSON(w, http.StatusBadRequest, resp)
		return
	}
	switch err := s.pipe.Submit(events); {
	case errors.Is(err, pipeline.ErrQueueFull):
		w.Header()["Retry-After"] = retryShort
		writeError(w, http.StatusServiceUnavailable, "queues are full; retry later")
		return
	case errors.Is(err, pipeline.ErrSpoolFull):
		w.Header()["Retry-After"] = retryShort
		writeError(w, http.StatusServiceUnavailable, "the spool is full; retry later")
		return
	case errors.Is(err, pipeline.ErrClosed):
		w.Header()["Retry-After"] = retryClosing
		writeError(w, http.StatusServiceUnavailable, "shutting down; retry later")
		return
	case err != nil: // the spool could not write or sync: nothing was accepted
		w.Header()["Retry-After"] = retryClosing
		writeError(w, http.StatusServiceUnavailable, "events could not be stored; retry later")
		s.log.Error("submit failed", "err", err)
		return
	}
	writeJSON(w, http.StatusAccepted, resp)
}

// checkContentType accepts JSON and text/plain (what navigator.sendBeacon
// sends for a string), identity or gzip.
func checkContentType(r *http.Request) (int, string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && mt != "text/plain") {
		return http.StatusUnsupportedMediaType, "Content-Type must be application/json or text/plain"
	}
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "", "identity", "gzip":
		return 0, ""
	}
	return http.StatusUnsupportedMediaType, "Content-Encoding must be gzip or identity"
}

// readBody reads the body into buf, enforcing MaxBodyBytes on the bytes
// received and again on the bytes after decompression, so that a small gzip
// bomb is refused as too large.
func (s *server) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (int, string) {
	limit := s.opts.MaxBodyBytes
	tooLarge := fmt.Sprintf("body is larger than MAX_BODY_BYTES=%d", limit)
	if r.ContentLength > limit {
		return http.StatusRequestEntityTooLarge, tooLarge
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := s.gzipReader(body)
		if err != nil {
			return gzipStatus(err, tooLarge)
		}
		defer s.gzips.Put(zr)
		body = zr
	}
	_, err := buf.ReadFrom(io.LimitReader(body, limit+1))
	if err != nil {
		return gzipStatus(err, tooLarge)
	}
	if int64(buf.Len()) > limit {
		return http.StatusRequestEntityTooLarge, tooLarge + " after decompression"
	}
	return 0, ""
}

func gzipStatus(err error, tooLarge string) (int, string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, tooLarge
	}
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) {
		return http.StatusBadRequest, "body is not valid gzip"
	}
	return http.StatusBadRequest, "could not read the body"
}

func (s *server) gzipReader(r io.Reader) (*gzip.Reader, error) {
	if zr, ok := s.gzips.Get().(*gzip.Reader); ok {
		if err := zr.Reset(r); err != nil {
			return nil, err
		}
		return zr, nil
	}
	return gzip.NewReader(r)
}

func (s *server) putBuf(b *bytes.Buffer) {
	if b.Cap() > 4<<20 {
		return // let an unusually large buffer go
	}
	b.Reset()
	s.bufs.Put(b)
}

// cors sets the CORS response headers and reports whether the request's
// origin, if any, is allowed.
func (s *server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a cross-origin browser request
	}
	h := w.Header()
	if s.anyOrig {
		h.Set("Access-Control-Allow-Origin", "*")
		return true
	}
	h.Add("Vary", "Origin")
	if !slices.Contains(s.opts.CORSOrigins, origin) {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	return true
}

func (s *server) preflight(w http.ResponseWriter, r *http.Request) {
	if !s.cors(w, r) {
		writeError(w, http.StatusForbidden, "origin is not allowed (CORS_ORIGINS)")
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Content-Encoding")
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ready, why := s.pipe.Ready()
	if !ready {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	allow := "GET, HEAD"
	if r.URL.Path == "/collect" {
		allow = "POST, OPTIONS"
	}
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed here; use "+allow)
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "no such endpoint; GoTrack serves /px.gif, /collect, /v1/* (Segment's API), /gotrack.js, /healthz and /readyz")
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	h := w.Header()
	h["Content-Type"] = jsonType
	h["X-Content-Type-Options"] = nosniff
	h["Cache-Control"] = noStore
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	}
	return "invalid JSON"
}
