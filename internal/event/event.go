// Package event defines the GoTrack event, how it is built from a pixel
// request or a /collect body, how it is checked and made private, and how it
// is encoded.
//
// An Event is immutable once Seal has been called: the pipeline shares one
// *Event between every sink's queue, and each sink reads its JSON encoding
// without copying it.
package event

import (
	"encoding/json"
	"math/bits"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// SchemaVersion is the version of the event schema written by this build.
// It is carried in Kafka headers and documented in docs/event.schema.json.
const SchemaVersion = "1"

// Source says which endpoint received an event.
type Source string

// The sources an event can come from.
const (
	SourcePixel   Source = "pixel"
	SourceCollect Source = "collect"
	SourceSegment Source = "segment" // the Segment-compatible API, /v1/*
)

// Bounds on the fields of an event. They are part of the documented schema.
const (
	MaxTypeLen      = 64
	MaxURLLen       = 2048
	MaxTitleLen     = 512
	MaxIDLen        = 128 // visitor_id and session_id
	MaxUserAgentLen = 512 // longer user agents are truncated, not rejected
	MaxPropsBytes   = 8 << 10
	MaxPropsKeys    = 64
	MaxPropsDepth   = 4
)

// DefaultType is the type of a pixel event that names none.
const DefaultType = "pageview"

// Event is one tracked event after validation and the privacy policy.
type Event struct {
	EventID    string          `json:"event_id"`
	ReceivedAt time.Time       `json:"received_at"`
	SentAt     time.Time       `json:"sent_at,omitzero"`
	Type       string          `json:"type"`
	URL        string          `json:"url,omitempty"`
	Referrer   string          `json:"referrer,omitempty"`
	Title      string          `json:"title,omitempty"`
	VisitorID  string          `json:"visitor_id,omitempty"`
	SessionID  string          `json:"session_id,omitempty"`
	UserAgent  string          `json:"user_agent,omitempty"`
	IP         string          `json:"ip,omitempty"`
	Props      json.RawMessage `json:"props,omitempty"`
	Source     Source          `json:"source"`
	// The enrichment (see Enrichment): each nil when off or unknown. The
	// campaign parsed from url (ParseCampaign) is in Campaign below.
	UA  *UA  `json:"ua,omitempty"`
	Bot *Bot `json:"bot,omitempty"`
	Geo *Geo `json:"geo,omitempty"`
	ASN *ASN `json:"asn,omitempty"`

	// SourceID is who sent the event: on /collect and the pixel, the id of
	// the source (SOURCES_FILE) whose write key the request carried, or
	// "anonymous" under AUTH_MODE=open; on the Segment API, see
	// segment.SourceID.
	SourceID string `json:"source_id,omitempty"`
	// Campaign is, on /collect and the pixel, the campaign parameters of
	// url (ENRICH=campaign, see ParseCampaign); on the Segment API,
	// context.campaign as sent.
	Campaign json.RawMessage `json:"campaign,omitempty"`
	// TraceID and SpanID, lower-case hex, are those of the sampled request
	// span that received the event, when tracing is on: an analyst joins
	// the event to its trace, and sink spans link to the request.
	TraceID string `json:"trace_id,omitempty"`
	SpanID  string `json:"span_id,omitempty"`

	// Fields set only by the Segment-compatible API (internal/segment).
	Call              string          `json:"call,omitempty"`
	Name              string          `json:"name,omitempty"`
	UserID            string          `json:"user_id,omitempty"`
	MessageID         string          `json:"message_id,omitempty"`
	Timestamp         time.Time       `json:"timestamp,omitzero"`
	OriginalTimestamp time.Time       `json:"original_timestamp,omitzero"`
	Context           json.RawMessage `json:"context,omitempty"`

	raw []byte // the JSON encoding, set by Seal
}

// Seal computes and caches the event's JSON encoding. After Seal the event
// must not be modified; it may then be read from many goroutines.
func (e *Event) Seal() { e.seal(nil, nil) }

// seal is Seal, encoding into room when it is not nil (it is empty, with
// the capacity of sizeHint), and taking the date and time of day of
// received_at from second when it holds that second (see
// appendReceivedAt).
func (e *Event) seal(room []byte, second *secondCache) {
	if room == nil {
		room = make([]byte, 0, e.sizeHint())
	}
	e.raw = e.appendJSON(room, second)
}

// sealWith is seal for an event without Props and Campaign, given them
// apart: they are encoded with it, and then set to the slices of the
// encoding that hold them, capped, rather than each kept in a buffer of
// its own. (Assigned to e before, buffers on the caller's stack would be
// moved to the heap.)
func (e *Event) sealWith(props, campaign []byte, second *secondCache) {
	room := make([]byte, 0, e.sizeHint()+optRaw(props)+optRaw(campaign))
	var at rawAt
	e.raw = e.appendJSONRaw(room, second, props, campaign, &at)
	if len(props) > 0 {
		e.Props = e.raw[at.props : at.props+len(props) : at.props+len(props)]
	}
	if len(campaign) > 0 {
		e.Campaign = e.raw[at.campaign : at.campaign+len(campaign) : at.campaign+len(campaign)]
	}
}

// rawAt is where appendJSONRaw put props and campaign in its result.
type rawAt struct{ props, campaign int }

// JSON returns the event's JSON encoding, without a trailing newline. The
// returned slice must not be modified. For an event that was not sealed it
// encodes anew on each call.
func (e *Event) JSON() []byte {
	if e.raw != nil {
		return e.raw
	}
	return e.AppendJSON(nil)
}

// Size is the length of the event's JSON encoding, used for byte-bounded
// batching.
func (e *Event) Size() int {
	if e.raw != nil {
		return len(e.raw)
	}
	return e.sizeHint()
}

// sizeHint is the length of the event's JSON encoding when no string
// needs escaping: Seal allocates it once, and an event whose encoding
// outgrew it would be copied and hold twice its room in a queue.
func (e *Event) sizeHint() int {
	// {"event_id":"<36>","received_at":"<30>","type":"","source":""}
	return 127 + len(e.Type) + len(e.Source) + e.enrichmentSize() +
		opt(e.URL) + opt(e.Referrer) + opt(e.Title) + opt(e.VisitorID) + opt(e.SessionID) + opt(e.UserAgent) +
		opt(e.IP) + opt(e.SourceID) + opt(e.Call) + opt(e.Name) + opt(e.UserID) + opt(e.MessageID) +
		opt(e.TraceID) + opt(e.SpanID) + optRaw(e.Props) + optRaw(e.Campaign) + optRaw(e.Context) +
		optTime(e.SentAt) + optTime(e.Timestamp) + optTime(e.OriginalTimestamp)
}

// opt is the room of an optional string field: ,"user_agent":"", the
// longest key, and the value.
func opt(v string) int {
	if v == "" {
		return 0
	}
	return 20 + len(v)
}

func optRaw(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 12 + len(v)
}

func optTime(t time.Time) int {
	if t.IsZero() {
		return 0
	}
	return 64 // ,"original_timestamp":"" and an RFC 3339 time
}

// appendReceivedAt appends t, in UTC, as RFC 3339 with a fixed nine-digit
// fraction ("2006-01-02T15:04:05.000000000Z"), so that every received_at has
// the same width and sorts as text. It is time.AppendFormat for that one
// layout, several times faster. The date and time of day, its costly part,
// are taken from second, when not nil, if t falls in the second it holds,
// as nearly every event does, and stored there otherwise.
func appendReceivedAt(b []byte, t time.Time, second *secondCache) []byte {
	var s *formattedSecond
	if second != nil {
		s = second.Load()
	}
	var f formattedSecond
	if s == nil || s.unix != t.Unix() {
		year, month, day := t.Date()
		hour, min, sec := t.Clock()
		if year < 0 || year > 9999 {
			return t.AppendFormat(b, "2006-01-02T15:04:05.000000000Z07:00")
		}
		f.unix = t.Unix()
		d := f.text[:0]
		d = appendDigits(d, year, 4)
		d = append(d, '-')
		d = appendDigits(d, int(month), 2)
		d = append(d, '-')
		d = appendDigits(d, day, 2)
		d = append(d, 'T')
		d = appendDigits(d, hour, 2)
		d = append(d, ':')
		d = appendDigits(d, min, 2)
		d = append(d, ':')
		appendDigits(d, sec, 2)
		if second != nil {
			c := f
			second.Store(&c)
		}
		s = &f
	}
	b = append(b, s.text[:]...)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond(), 9)
	return append(b, 'Z')
}

// secondCache holds the last second appendReceivedAt formatted, for the
// events of the next requests: a Normalizer's, shared by its goroutines.
type secondCache = atomic.Pointer[formattedSecond]

// formattedSecond is a Unix second as appendReceivedAt formats it in UTC,
// "2006-01-02T15:04:05". It is not changed once stored in a secondCache.
type formattedSecond struct {
	unix int64
	text [19]byte
}

func appendDigits(b []byte, v, width int) []byte {
	var buf [9]byte
	for i := width - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, buf[:width]...)
}

// AppendJSON appends the event's JSON encoding to b. It is equivalent to
// json.Marshal but does not allocate beyond growing b.
func (e *Event) AppendJSON(b []byte) []byte { return e.appendJSON(b, nil) }

func (e *Event) appendJSON(b []byte, second *secondCache) []byte {
	var at rawAt
	return e.appendJSONRaw(b, second, e.Props, e.Campaign, &at)
}

// appendJSONRaw is appendJSON with props and campaign in place of the
// event's; it sets at to where they are in the result.
func (e *Event) appendJSONRaw(b []byte, second *secondCache, props, campaign []byte, at *rawAt) []byte {
	b = append(b, `{"event_id":`...)
	b = appendString(b, e.EventID)
	b = append(b, `,"received_at":"`...)
	b = appendReceivedAt(b, e.ReceivedAt.UTC(), second)
	b = append(b, '"')
	if !e.SentAt.IsZero() {
		b = append(b, `,"sent_at":"`...)
		b = e.SentAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	b = appendField(b, `,"url":`, e.URL)
	b = appendField(b, `,"referrer":`, e.Referrer)
	b = appendField(b, `,"title":`, e.Title)
	b = appendField(b, `,"visitor_id":`, e.VisitorID)
	b = appendField(b, `,"session_id":`, e.SessionID)
	b = appendField(b, `,"user_agent":`, e.UserAgent)
	b = appendField(b, `,"ip":`, e.IP)
	if len(props) > 0 {
		b = append(b, `,"props":`...)
		at.props = len(b)
		b = append(b, props...)
	}
	b = append(b, `,"source":`...)
	b = appendString(b, string(e.Source))
	b = appendField(b, `,"source_id":`, e.SourceID)
	b = appendField(b, `,"call":`, e.Call)
	b = appendField(b, `,"name":`, e.Name)
	b = appendField(b, `,"user_id":`, e.UserID)
	b = appendField(b, `,"message_id":`, e.MessageID)
	b = appendTime(b, `,"timestamp":"`, e.Timestamp)
	b = appendTime(b, `,"original_timestamp":"`, e.OriginalTimestamp)
	b = e.appendEnrichment(b)
	if len(campaign) > 0 {
		b = append(b, `,"campaign":`...)
		at.campaign = len(b)
		b = append(b, campaign...)
	}
	b = appendRaw(b, `,"context":`, e.Context)
	b = appendField(b, `,"trace_id":`, e.TraceID)
	b = appendField(b, `,"span_id":`, e.SpanID)
	return append(b, '}')
}

func appendTime(b []byte, key string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, key...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendRaw(b []byte, key string, v json.RawMessage) []byte {
	if len(v) == 0 {
		return b
	}
	return append(append(b, key...), v...)
}

func appendField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, key...)
	return appendString(b, v)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 is replaced with
// U+FFFD, as encoding/json does; U+2028 and U+2029 are escaped so that a
// line is safe to embed in JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for len(s)-i >= 8 { // 8 plain bytes at a time, up to the first special one
			if m := specialLanes(load8(s[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Bytes of every lane of a word, for specialLanes.
const (
	lanes01 = 0x0101010101010101
	lanes80 = 0x8080808080808080
)

// load8 returns the first 8 bytes of t as a word, t[0] in its lowest lane.
func load8[T string | []byte](t T) uint64 {
	t = t[:8]
	return uint64(t[0]) | uint64(t[1])<<8 | uint64(t[2])<<16 | uint64(t[3])<<24 |
		uint64(t[4])<<32 | uint64(t[5])<<40 | uint64(t[6])<<48 | uint64(t[7])<<56
}

// specialLanes sets the high bit of each lane of w (a byte) that a JSON
// string does not hold as it is: a byte from 0x80 up, a control character,
// '"' or '\\'. It is the classic "has a zero byte" test, on w and on w
// with each of the two special bytes xor-ed out; its borrows may set lanes
// above a special byte too, but never below, so the lowest set bit is
// exactly the first special byte: bits.TrailingZeros64(m)/8. Most of an
// event is plain: appendString and Batch.Parse skip 8 such bytes at once.
func specialLanes(w uint64) uint64 {
	quote, slash := w^(lanes01*'"'), w^(lanes01*'\\')
	return (w | (w - lanes01*0x20) | ((quote - lanes01) &^ quote) | ((slash - lanes01) &^ slash)) & lanes80
}

// Decode parses one event from its JSON encoding, as written by AppendJSON,
// and seals it. It is used to read event logs and dead-letter files back.
func Decode(line []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(line, &e); err != nil {
		return nil, err
	}
	if e.EventID == "" {
		return nil, errField("event_id", "is missing")
	}
	if _, ok := ParseUUID(e.EventID); !ok {
		return nil, errField("event_id", "is not a UUID")
	}
	if e.Type == "" {
		return nil, errField("type", "is missing")
	}
	if e.ReceivedAt.IsZero() {
		return nil, errField("received_at", "is missing")
	}
	if !isHexID(e.TraceID, 32) || !isHexID(e.SpanID, 16) {
		return nil, errField("trace_id", "or span_id is not lower-case hex of 32 or 16 digits")
	}
	e.Seal()
	return &e, nil
}

// isHexID reports whether s is empty or n lower-case hex digits.
func isHexID(s string, n int) bool {
	if s == "" {
		return true
	}
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// FieldError reports an event field that breaks the schema.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func errField(field, reason string) error { return &FieldError{Field: field, Reason: reason} }

func errTooLong(field string, limit int) error {
	return errField(field, "is longer than "+strconv.Itoa(limit)+" bytes")
}
