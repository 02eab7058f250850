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
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/gotrack/gotrack/internal/cors"
	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pipeline"
	"github.com/gotrack/gotrack/internal/ratelimit"
	"github.com/gotrack/gotrack/internal/source"
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
	gifLength = []string{strconv.Itoa(len(gif))}
	gifType   = []string{"image/gif"}
	noStore   = []string{"no-store, no-cache, must-revalidate, private"}
	jsonType  = []string{"application/json"}
	nosniff   = []string{"nosniff"}
)

type server struct {
	opts     Options
	norm     *event.Normalizer
	pipe     Pipeline
	log      *slog.Logger
	tracer   trace.Tracer // nil: tracing off
	received struct{ pixel, collect, segment prometheus.Counter }
	shed     prometheus.Counter
	budget   budget // MAX_INFLIGHT_BYTES
	// rateLimited counts requests over a rate limit, by source and limit.
	rateLimited *prometheus.CounterVec
	bufs        *bufPools // request bodies
	gzips       sync.Pool // *gzip.Reader
	batches     sync.Pool // *event.Batch, a parsed body
}

func newServer(opts Options, n *event.Normalizer, p Pipeline, reg prometheus.Registerer, log *slog.Logger) (*server, error) {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_events_received_total",
		Help: "Events received, by source (pixel, collect, segment), before validation and the privacy policy.",
	}, []string{"source"})
	if err := reg.Register(received); err != nil {
		return nil, err
	}
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_requests_shed_total",
		Help: "Requests to /collect or the Segment API answered 503 at once, unread, to keep memory bounded, by reason (inflight_bytes: MAX_INFLIGHT_BYTES was spent).",
	}, []string{"reason"})
	if err := reg.Register(shed); err != nil {
		return nil, err
	}
	rateLimited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gotrack_rate_limited_total",
		Help: "Requests over a rate limit (429 on /collect, a drop on the pixel), by source (an id of SOURCES_FILE, anonymous, or unknown before authentication) and limit (source: its rate in SOURCES_FILE; ip: RATE_LIMIT_PER_IP).",
	}, []string{"source", "limit"})
	if err := reg.Register(rateLimited); err != nil {
		return nil, err
	}
	s := &server{opts: opts, norm: n, pipe: p, log: log, tracer: opts.Tracer, bufs: newBufPools(opts.MaxBodyBytes), rateLimited: rateLimited}
	s.budget.max = opts.MaxInflightBytes
	s.batches.New = func() any { return new(event.Batch) }
	s.received.pixel = received.WithLabelValues(string(event.SourcePixel))
	s.received.collect = received.WithLabelValues(string(event.SourceCollect))
	s.received.segment = received.WithLabelValues(string(event.SourceSegment))
	s.shed = shed.WithLabelValues(ShedInflightBytes)
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gotrack_inflight_body_bytes",
		Help: "Request body bytes /collect and the Segment API hold in memory now, after decompression, counted against MAX_INFLIGHT_BYTES.",
	}, func() float64 { return float64(s.budget.used.Load()) })
	if err := reg.Register(inflight); err != nil {
		return nil, err
	}
	return s, nil
}

// meta reads what a request says about its events. Headers are read by
// their canonical keys directly: Header.Get would canonicalise each name
// again on every request.
func (s *server) meta(r *http.Request, src *source.Source, c client, en *event.Enrichment) event.Meta {
	ip := ""
	if c.ok {
		ip = s.norm.MaskAddr(c.addr)
	}
	m := event.Meta{
		SourceID:   src.ID,
		Enrichment: en,
		Campaign:   s.opts.Enricher != nil && s.opts.Enricher.Campaign(),
		Now:        time.Now(),
		IP:         ip,
		UserAgent:  first(r.Header["User-Agent"]),
		Referer:    first(r.Header["Referer"]),
	}
	if s.tracer != nil {
		m.TraceID, m.SpanID = spanIDs(r)
	}
	return m
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

// client is the request's client address as TRUST_PROXY chooses it,
// before IP_MODE; ok is false when there is none.
type client struct {
	addr netip.Addr
	ok   bool
}

func (s *server) client(r *http.Request) client {
	a, ok := s.norm.ClientAddr(r.RemoteAddr, r.Header["X-Forwarded-For"])
	return client{a, ok}
}

// limitIP takes a token of the client's RATE_LIMIT_PER_IP bucket, or
// returns a *ratelimit.Exceeded.
func (s *server) limitIP(c client) error {
	if s.opts.RateLimitPerIP == nil || !c.ok {
		return nil
	}
	if ok, wait := s.opts.RateLimitPerIP.Allow(ipKey(c.addr)); !ok {
		s.rateLimited.WithLabelValues(source.Unknown, ratelimit.LimitIP).Inc()
		return &ratelimit.Exceeded{Limit: ratelimit.LimitIP, Wait: wait}
	}
	return nil
}

// ipKey is the RATE_LIMIT_PER_IP bucket of a: the address itself for
// IPv4, its /64 for IPv6, as an IPv6 host is usually given a whole /64
// and could otherwise take a new bucket, and push real clients out of
// the LRU, with each of its addresses.
func ipKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// limitSource takes a token of src's bucket, or returns a
// *ratelimit.Exceeded.
func (s *server) limitSource(src *source.Source) error {
	if s.opts.Auth == nil {
		return nil
	}
	err := s.opts.Auth.Allow(src)
	if err != nil {
		s.rateLimited.WithLabelValues(src.ID, ratelimit.LimitSource).Inc()
	}
	return err
}

// enrich returns the enrichment of r's events, looked up on the client
// address before IP_MODE, and reports whether BOT_POLICY=drop drops its n
// events, which it counts.
func (s *server) enrich(r *http.Request, c client, n int) (*event.Enrichment, bool) {
	if s.opts.Enricher == nil {
		return nil, false
	}
	en := s.opts.Enricher.Request(r, c.addr, c.ok)
	if s.opts.Enricher.Count(en, n) {
		s.pipe.CountDropped(pipeline.DropBot, n)
		return en, true
	}
	return en, false
}

// segmentAuthorize returns the Segment API's check of a write key under
// AUTH_MODE=key, or nil. It applies RATE_LIMIT_PER_IP, the key (from HTTP
// Basic or the body's writeKey) with the browser-origin rule of header
// keys, and the source's rate. A source that signs its requests cannot
// use the Segment API, which has no signatures: it is refused as unsigned.
func (s *server) segmentAuthorize() func(http.ResponseWriter, *http.Request, string) (string, bool) {
	if s.opts.Auth == nil || s.opts.Auth.Mode() != source.ModeKey {
		return nil
	}
	return func(w http.ResponseWriter, r *http.Request, key string) (string, bool) {
		src, err := s.segmentSource(r, key)
		if err != nil {
			writeError(w, nil, err, nil) // the body was read
			return "", false
		}
		return src.ID, true
	}
}

func (s *server) segmentSource(r *http.Request, key string) (*source.Source, error) {
	if err := s.limitIP(s.client(r)); err != nil {
		return nil, err
	}
	src, err := s.opts.Auth.CheckKey(r, key)
	if err != nil {
		return nil, err
	}
	if err := s.limitSource(src); err != nil {
		return nil, err
	}
	return src, nil
}

// anonymous is the source of every request when no authenticator is set.
var anonymous = &source.Source{ID: source.Anonymous}

// auth returns the source r writes for, or a *source.Failure.
func (s *server) auth(r *http.Request, pixel bool) (*source.Source, error) {
	if s.opts.Auth == nil {
		return anonymous, nil
	}
	return s.opts.Auth.Check(r, pixel)
}

// pixel always answers the GIF: a browser can do nothing with an error, so
// the outcome is counted instead.
func (s *server) pixel(w http.ResponseWriter, r *http.Request) {
	s.received.pixel.Inc()
	switch {
	case s.doNotTrack(r):
		s.pipe.CountDropped(pipeline.DropDNT, 1)
		s.count(r, 0, 0, 1)
	default:
		c := s.client(r)
		if s.limitIP(c) != nil {
			s.pipe.CountDropped(pipeline.DropRateLimited, 1)
			s.count(r, 0, 0, 1)
			break
		}
		src, err := s.auth(r, true)
		if err != nil {
			s.pipe.CountDropped(pipeline.DropUnauthorized, 1)
			s.count(r, 0, 0, 1)
			break
		}
		if s.limitSource(src) != nil {
			s.pipe.CountDropped(pipeline.DropRateLimited, 1)
			s.count(r, 0, 0, 1)
			break
		}
		en, drop := s.enrich(r, c, 1)
		if drop {
			s.count(r, 0, 0, 1)
			break
		}
		e, err := s.norm.FromQuery(r.URL.RawQuery, s.meta(r, src, c, en))
		if err != nil {
			s.pipe.CountDropped(pipeline.DropInvalid, 1)
			s.count(r, 0, 1, 0)
			s.log.DebugContext(r.Context(), "pixel event invalid", "err", err)
			break
		}
		if s.pipe.SubmitEach(e) { // drops are counted per sink
			s.count(r, 1, 0, 0)
		} else {
			s.count(r, 0, 0, 1)
		}
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

// appendCounts appends r as json.Marshal encodes it when it has neither
// Error nor Errors.
func (r *collectResponse) appendCounts(b []byte) []byte {
	b = append(b, `{"accepted":`...)
	b = strconv.AppendInt(b, int64(r.Accepted), 10)
	b = append(b, `,"rejected":`...)
	b = strconv.AppendInt(b, int64(r.Rejected), 10)
	if r.Dropped != 0 {
		b = append(b, `,"dropped":`...)
		b = strconv.AppendInt(b, int64(r.Dropped), 10)
	}
	return append(b, '}')
}

type itemError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

func (s *server) collect(w http.ResponseWriter, r *http.Request) {
	var signed *source.Signed
	resp, events, err := s.readEvents(w, r, &signed)
	if err != nil {
		signed.Forget() // not accepted: a retry with the same signature is no replay
		if resp != nil {
			s.count(r, 0, resp.Rejected, resp.Dropped)
		}
		writeError(w, r, err, resp)
		s.countShed(err)
		return
	}
	if resp.Dropped == 0 {
		if err := s.pipe.Submit(events); err != nil {
			signed.Forget()
			s.count(r, 0, resp.Rejected, resp.Accepted) // refused with a 503: the client may send them again
			if writeError(w, nil, err, nil).failed {    // the body was read to its end
				s.log.ErrorContext(r.Context(), "submit failed", "err", err)
			}
			return
		}
	}
	s.count(r, resp.Accepted, resp.Rejected, resp.Dropped)
	writeJSON(w, http.StatusAccepted, resp)
}

// readEvents reads and checks a /collect request and builds its events.
// The body's buffer and its share of MAX_INFLIGHT_BYTES are given back
// before it returns: the events copy what they keep. On an error, resp, when
// not nil, is the body to answer with (every event was rejected).
//
// *signed is set to the request's verified signature, if it has one.
func (s *server) readEvents(w http.ResponseWriter, r *http.Request, signedOut **source.Signed) (resp *collectResponse, events []*event.Event, err error) {
	if !s.cors(w, r) {
		return nil, nil, refuse(kindOrigin, "origin is not allowed (CORS_ORIGINS)")
	}
	if err := checkContentType(r); err != nil {
		return nil, nil, err
	}
	c := s.client(r)
	if err := s.limitIP(c); err != nil {
		return nil, nil, err
	}
	src, err := s.auth(r, false)
	if err != nil {
		return nil, nil, err
	}
	if src.Secret == nil {
		if err := s.limitSource(src); err != nil {
			return nil, nil, err
		}
	} // a signing source's token is taken once the signature is verified
	var raw io.Writer // the signature's MAC, fed the body as received
	var signed *source.Signed
	if src.Secret != nil {
		if signed, err = s.opts.Auth.BeginSignature(r, src); err != nil {
			return nil, nil, err
		}
		raw = signed
	}
	buf, err := s.readBody(w, r, raw)
	if err != nil {
		return nil, nil, err
	}
	defer s.release(buf)
	if signed != nil {
		if err := signed.Verify(); err != nil {
			return nil, nil, err
		}
		*signedOut = signed
		// Only now: requests that merely know the write key must not spend
		// the signing source's rate. A 429 here forgets the signature, so
		// its retry is no replay.
		if err := s.limitSource(src); err != nil {
			return nil, nil, err
		}
	}
	body := bytes.TrimSpace(buf.b)
	if !utf8.Valid(body) {
		return nil, nil, refuse(kindMalformed, "body is not valid UTF-8")
	}
	if len(body) == 0 {
		return nil, nil, refuse(kindMalformed, "body is empty; send a JSON event object or an array of them")
	}
	if body[0] != '[' && body[0] != '{' {
		return nil, nil, refuse(kindMalformed, "body must be a JSON event object or an array of them")
	}
	batch := s.batches.Get().(*event.Batch)
	batch.MaxItems = s.opts.MaxBatchEvents // the rest are counted, not recorded: the body is refused
	defer func() {
		batch.Reset()
		s.batches.Put(batch)
	}()
	if !batch.Parse(body) {
		var v any // for encoding/json's words on what is wrong, and where
		return nil, nil, refuse(kindMalformed, "malformed JSON: "+jsonError(json.Unmarshal(body, &v)))
	}
	items := batch.Items
	if body[0] == '[' {
		if len(items) == 0 {
			return nil, nil, refuse(kindMalformed, "body is an empty array; send at least one event")
		}
		if batch.Count > s.opts.MaxBatchEvents {
			return nil, nil, refuse(kindTooLarge, fmt.Sprintf(
				"batch has %d events, more than MAX_BATCH_EVENTS=%d", batch.Count, s.opts.MaxBatchEvents))
		}
	}
	s.received.collect.Add(float64(len(items)))

	resp = new(collectResponse)
	if s.doNotTrack(r) {
		resp.Dropped = len(items)
		s.pipe.CountDropped(pipeline.DropDNT, len(items))
		return resp, nil, nil
	}
	en, drop := s.enrich(r, c, len(items))
	if drop {
		resp.Dropped = len(items)
		return resp, nil, nil
	}
	m := s.meta(r, src, c, en)
	arena := event.NewArena(items)
	for i := range items {
		if err := s.norm.AddItem(arena, &items[i], m); err != nil {
			resp.Errors = append(resp.Errors, itemError{Index: i, Error: err.Error()})
		}
	}
	resp.Accepted, resp.Rejected = len(items)-len(resp.Errors), len(resp.Errors)
	if resp.Rejected > 0 {
		s.pipe.CountDropped(pipeline.DropInvalid, resp.Rejected)
	}
	if resp.Accepted == 0 {
		return resp, nil, refuse(kindNoValidEvent, "no valid event in the body")
	}
	return resp, s.norm.Seal(arena, m), nil
}

// checkContentType accepts JSON and text/plain (what navigator.sendBeacon
// sends for a string), identity or gzip.
func checkContentType(r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && mt != "text/plain") {
		return refuse(kindMediaType, "Content-Type must be application/json or text/plain")
	}
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "", "identity", "gzip":
		return nil
	}
	return refuse(kindMediaType, "Content-Encoding must be gzip or identity")
}

// readBody reads the body into a pooled buffer, enforcing MaxBodyBytes on
// the bytes received and again on the bytes after decompression, so that a
// small gzip bomb is refused as too large. The buffer's capacity is charged
// to MAX_INFLIGHT_BYTES before it is allocated; when the budget is spent the
// request is shed at once, without reading further. The caller gives the
// buffer back with release. raw, when not nil, is also given the body as
// received, before decompression (a signature's MAC).
func (s *server) readBody(w http.ResponseWriter, r *http.Request, raw io.Writer) (*bodyBuf, error) {
	limit := s.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, s.tooLarge("")
	}
	gzipped := strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip")
	class := 0
	if !gzipped && r.ContentLength >= 0 {
		class = s.bufs.classFor(r.ContentLength + 1) // +1 to read the EOF without growing
	}
	if !s.budget.take(int64(s.bufs.sizes[class])) {
		return nil, errShed
	}
	buf := s.bufs.get(class)
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	if raw != nil {
		body = io.TeeReader(body, raw)
	}
	if gzipped {
		zr, err := s.gzipReader(body)
		if err != nil {
			s.release(buf)
			return nil, s.readError(err)
		}
		defer s.gzips.Put(zr)
		body = zr
	}
	for {
		if len(buf.b) == cap(buf.b) {
			if buf.class == len(s.bufs.sizes)-1 {
				s.release(buf)
				if gzipped {
					return nil, s.tooLarge(" after decompression")
				}
				return nil, s.tooLarge("")
			}
			next, ok := s.grow(buf)
			if !ok {
				s.release(buf)
				return nil, errShed
			}
			buf = next
		}
		n, err := body.Read(buf.b[len(buf.b):cap(buf.b)])
		buf.b = buf.b[:len(buf.b)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			s.release(buf)
			return nil, s.readError(err)
		}
	}
}

// errShed is the answer when MAX_INFLIGHT_BYTES is spent.
var errShed = refuse(kindOverloaded, "too many request bytes in flight (MAX_INFLIGHT_BYTES); retry later")

// grow moves buf's content to a buffer of the next class, charging the
// budget first; it reports false, leaving buf as it was, when the budget is
// spent.
func (s *server) grow(buf *bodyBuf) (*bodyBuf, bool) {
	if !s.budget.take(int64(s.bufs.sizes[buf.class+1])) {
		return nil, false
	}
	next := s.bufs.get(buf.class + 1)
	next.b = append(next.b, buf.b...)
	s.release(buf)
	return next, true
}

// release gives a body buffer back to its pool and its capacity back to
// the budget.
func (s *server) release(buf *bodyBuf) {
	s.budget.give(int64(s.bufs.sizes[buf.class]))
	s.bufs.put(buf)
}

func (s *server) tooLarge(suffix string) error {
	return refuse(kindTooLarge, fmt.Sprintf("body is larger than MAX_BODY_BYTES=%d%s", s.opts.MaxBodyBytes, suffix))
}

func (s *server) readError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return s.tooLarge("")
	}
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) {
		return refuse(kindMalformed, "body is not valid gzip")
	}
	return refuse(kindMalformed, "could not read the body")
}

// countShed counts a request shed for lack of budget.
func (s *server) countShed(err error) {
	if err == errShed {
		s.shed.Inc()
	}
}

func (s *server) gzipReader(r io.Reader) (*gzip.Reader, error) {
	if zr, ok := s.gzips.Get().(*gzip.Reader); ok {
		if err := zr.Reset(r); err != nil {
			s.gzips.Put(zr)
			return nil, err
		}
		return zr, nil
	}
	return gzip.NewReader(r)
}

// cors sets the CORS response headers and reports whether the request's
// origin, if any, is allowed.
func (s *server) cors(w http.ResponseWriter, r *http.Request) bool {
	return cors.Allow(w.Header(), r.Header.Get("Origin"), s.opts.CORSOrigins)
}

func (s *server) preflight(w http.ResponseWriter, r *http.Request) {
	if !s.cors(w, r) {
		writeError(w, r, refuse(kindOrigin, "origin is not allowed (CORS_ORIGINS)"), nil)
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Content-Encoding, Authorization, X-Write-Key")
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
	if len(why) > 0 { // conditions that do not stop readiness, e.g. a sink down behind the spool
		writeJSON(w, http.StatusOK, map[string]any{"ready": true, "reasons": why})
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
	writeError(w, r, refuse(kindMethod, "method "+r.Method+" is not allowed here; use "+allow), nil)
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, refuse(kindNotFound, "no such endpoint; GoTrack serves /px.gif, /collect, /v1/* (Segment's API), /gotrack.js, /healthz and /readyz"), nil)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b []byte
	if r, ok := v.(*collectResponse); ok && r.Error == "" && len(r.Errors) == 0 {
		b = r.appendCounts(make([]byte, 0, 64)) // nearly every 202: no reflection
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
		}
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
