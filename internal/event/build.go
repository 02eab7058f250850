package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Meta is what a request says about every event it carries, read once per
// request by the HTTP layer.
type Meta struct {
	Now       time.Time
	IP        string // already under the IP mode; see Normalizer.ClientIP
	UserAgent string
	Referer   string // the Referer header; the pixel's url when it names none
	SourceID  string // the authenticated source; see Event.SourceID
	// Enrichment, when not nil, is set on every event of the request.
	Enrichment *Enrichment
	// Campaign parses each event's url for its campaign parameters.
	Campaign bool
	// TraceID and SpanID are the sampled request span's, or empty.
	TraceID, SpanID string
}

// FromQuery builds a sealed pixel event from a raw query string. Parameters:
// e (type), url, ref, title, uid, sid, eid (a client UUID) and p.NAME for
// custom string properties. Unknown parameters are ignored, as cache
// busters are common.
//
// The query is read in one pass. A value without escapes is kept as a
// substring of rawQuery, as unescape does; the values that had escapes are
// unescaped into one buffer, followed by the new event id, which becomes a
// single string that they all share: one allocation for every field, where
// each unescaped value and the id took one of their own.
func (n *Normalizer) FromQuery(rawQuery string, m Meta) (*Event, error) {
	e := &Event{Source: SourcePixel}
	fields := [...]*string{&e.Type, &e.URL, &e.Referrer, &e.Title, &e.VisitorID, &e.SessionID}
	var spans [len(fields)]struct{ start, end int } // in text, of the fields unescaped there; end 0 for none
	var stack [512]byte
	text := stack[:0] // grown by appendUnescaped and appendID past it
	var props []byte  // sealed with the event, then a slice of its encoding
	var propsBuf [256]byte
	var namesBuf [8]string // most pixels have a few p.NAME, if any
	names := namesBuf[:0]
	for rawQuery != "" {
		var pair string
		if i := strings.IndexByte(rawQuery, '&'); i >= 0 {
			pair, rawQuery = rawQuery[:i], rawQuery[i+1:]
		} else {
			pair, rawQuery = rawQuery, ""
		}
		if pair == "" {
			continue
		}
		rk, rv := pair, ""
		if i := strings.IndexByte(pair, '='); i >= 0 {
			rk, rv = pair[:i], pair[i+1:]
		}
		k, err := unescape(rk)
		if err != nil {
			return nil, errQueryEscape
		}
		f := -1
		switch k {
		case "e":
			f = 0
		case "url":
			f = 1
		case "ref":
			f = 2
		case "title":
			f = 3
		case "uid":
			f = 4
		case "sid":
			f = 5
		}
		if f >= 0 {
			if plainQuery(rv) == len(rv) {
				*fields[f], spans[f].end = rv, 0
				continue
			}
			start := len(text)
			var ok bool
			if text, ok = appendUnescaped(text, rv); !ok {
				return nil, errQueryEscape
			}
			spans[f].start, spans[f].end = start, len(text) // not empty: an escape is a byte at least
			continue
		}
		v, err := unescape(rv) // checked even when ignored, as before
		if err != nil {
			return nil, errQueryEscape
		}
		if k == "eid" {
			e.EventID = v
			continue
		}
		name, ok := strings.CutPrefix(k, "p.")
		if !ok {
			continue
		}
		if name == "" || len(name) > MaxTypeLen {
			return nil, errField("p."+truncate(name, MaxTypeLen), "is not a valid property name")
		}
		if len(names) == MaxPropsKeys {
			return nil, errField("props", "has more than the allowed number of keys")
		}
		if slices.Contains(names, name) {
			return nil, errField("p."+name, "is given twice")
		}
		if strings.IndexByte(name, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
			return nil, errNUL("p." + name)
		}
		names = append(names, name)
		if props == nil {
			props = append(propsBuf[:0], '{')
		} else {
			props = append(props, ',')
		}
		props = appendString(props, name)
		props = append(props, ':')
		props = appendString(props, v)
	}
	if props != nil {
		props = append(props, '}')
		if len(props) > MaxPropsBytes {
			return nil, errTooLong("props", MaxPropsBytes)
		}
	}
	idStart := len(text)
	if e.EventID != "" {
		id, ok := ParseUUID(e.EventID)
		if !ok {
			return nil, errField("event_id", "is not a UUID")
		}
		e.EventID = id
	} else {
		text = appendID(text, m.Now)
	}
	if len(text) > 0 {
		all := string(text)
		for f, sp := range spans {
			if sp.end > 0 {
				*fields[f] = all[sp.start:sp.end]
			}
		}
		if idStart < len(all) {
			e.EventID = all[idStart:]
		}
	}
	if e.Type == "" {
		e.Type = DefaultType
	}
	if e.URL == "" {
		e.URL = m.Referer
	}
	if err := n.prepare(e, m); err != nil {
		return nil, err
	}
	var campaign []byte
	var campaignBuf [256]byte
	if m.Campaign {
		var c Campaign
		if parseCampaign(e.URL, &c) {
			campaign = c.AppendJSON(campaignBuf[:0])
		}
	}
	e.sealWith(props, campaign, &n.second)
	return e, nil
}

// errQueryEscape is FromQuery's error for a '%' in the query not followed
// by two hex digits.
var errQueryEscape = errField("query", "has a malformed escape")

// appendUnescaped appends s to b unescaped, as url.QueryUnescape does (see
// unescape), and reports false, with b as it was, for a malformed escape. It reads byte by byte,
// as the escapes of a URL in a query are dense, into room made first.
func appendUnescaped(b []byte, s string) ([]byte, bool) {
	n := len(b)
	if cap(b)-n < len(s) {
		b = slices.Grow(b, len(s))
	}
	out := b[n : n+len(s)] // unescaping never lengthens
	j := 0
	for i := 0; i < len(s) && j < len(out); i++ {
		c := s[i]
		if c == '%' {
			if len(s)-i < 3 {
				return b, false
			}
			hi, lo := hexValue[s[i+1]], hexValue[s[i+2]]
			if hi|lo > 0xF {
				return b, false
			}
			c = hi<<4 | lo
			i += 2
		} else if c == '+' {
			c = ' '
		}
		out[j] = c
		j++
	}
	return b[:n+j], true
}

// hexValue is the value of each hex digit, and 0xFF for every other byte.
var hexValue = func() (t [256]byte) {
	for c := range t {
		v, ok := unhex(byte(c))
		if !ok {
			v = 0xFF
		}
		t[c] = v
	}
	return t
}()

// errEscape is unescape's error: a '%' not followed by two hex digits.
var errEscape = errors.New("malformed escape")

// unescape is url.QueryUnescape ('+' is a space, %XX a byte, and any other
// '%' an error), without the allocation when there is nothing to unescape.
func unescape(s string) (string, error) {
	if plainQuery(s) == len(s) {
		return s, nil
	}
	var buf [128]byte // keys and values are short: one allocation, the string's
	b, ok := appendUnescaped(buf[:0], s)
	if !ok {
		return "", errEscape
	}
	return string(b), nil
}

// plainQuery returns the index of the first '%' or '+' in s, or len(s).
// Query keys and values are short, and escapes in them dense: a loop is
// cheaper here than two calls of strings.IndexByte.
func plainQuery(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || c == '+' {
			return i
		}
	}
	return len(s)
}

func isHex(c byte) bool {
	_, ok := unhex(c)
	return ok
}

// input is one /collect event as sent.
type input struct {
	EventID, Type, URL, Referrer, Title, VisitorID, SessionID, SentAt string
	Props                                                             []byte
}

// serverFields are set by GoTrack; a client that sends one is told so.
var serverFields = []string{"received_at", "user_agent", "ip", "source", "source_id", "ua", "bot", "geo", "asn", "campaign"}

// FromJSON builds a sealed event from one JSON object of a /collect body.
// raw must be valid JSON and the body valid UTF-8. FromItem does the same
// for an item of a Batch, without reading the object again.
func (n *Normalizer) FromJSON(raw []byte, m Meta) (*Event, error) {
	in, err := decodeInput(raw)
	if err != nil {
		return nil, err
	}
	return n.fromInput(in, m)
}

// FromItem builds a sealed event from an item of a /collect body, as
// FromJSON does from its JSON. The body must be valid UTF-8.
func (n *Normalizer) FromItem(it *Item, m Meta) (*Event, error) {
	if !it.object {
		return nil, errField("event", "is not a JSON object")
	}
	in, err := decodeMembers(it.Raw, it.members)
	if err != nil {
		return nil, err
	}
	return n.fromInput(in, m)
}

// AddItem builds an event from an item of a /collect body, as FromItem
// does, in a, the arena of the request: Seal seals it with the others.
func (n *Normalizer) AddItem(a *Arena, it *Item, m Meta) error {
	if !it.object {
		return errField("event", "is not a JSON object")
	}
	e := &a.events[a.next] // a struct per object, each rejected one's reused
	if err := n.fromItem(e, a, it, m); err != nil {
		*e = Event{} // the next item's
		return err
	}
	a.next++
	return nil
}

func (n *Normalizer) fromItem(e *Event, a *Arena, it *Item, m Meta) error {
	in, err := decodeMembers(it.Raw, it.members)
	if err != nil {
		return err
	}
	return n.fill(e, in, m, a)
}

func (n *Normalizer) fromInput(in input, m Meta) (*Event, error) {
	e := new(Event)
	return e, n.fill(e, in, m, nil)
}

// fill builds e, a zero Event, from in; in an arena when a is not nil.
func (n *Normalizer) fill(e *Event, in input, m Meta, a *Arena) error {
	if in.Type == "" {
		return errField("type", "is missing")
	}
	// Field by field: assigning a whole Event to the arena's memory would
	// pass each of its pointer words through the GC's write barrier.
	e.EventID, e.Type, e.URL, e.Referrer = in.EventID, in.Type, in.URL, in.Referrer
	e.Title, e.VisitorID, e.SessionID = in.Title, in.VisitorID, in.SessionID
	e.Source = SourceCollect
	if in.SentAt != "" {
		t, err := time.Parse(time.RFC3339Nano, in.SentAt)
		if err != nil {
			return errField("sent_at", "is not an RFC 3339 time")
		}
		e.SentAt = t
	}
	if len(in.Props) > 0 && !bytes.Equal(in.Props, []byte("null")) {
		props, err := checkProps(in.Props)
		if err != nil {
			return err
		}
		e.Props = props
	}
	return n.finishIn(e, m, a)
}

// decodeInput reads a /collect event object, as decodeMembers.
func decodeInput(raw []byte) (input, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return input{}, errField("event", "is not a JSON object")
	}
	var buf [16]member
	ms := buf[:0]
	members(raw, func(key, value []byte) bool {
		ms = append(ms, member{key, value})
		return true
	})
	return decodeMembers(raw, ms)
}

// decodeMembers reads the members ms of the /collect event object raw. It
// takes the keys exactly as spelled in the schema (encoding/json would also
// take "Type" or "TYPE"), rejects any other key, naming it, and copies what
// it keeps, so the body may be reused once it returns: the string values
// without escapes are cut from one copy of them all, rather than copied
// each. Not from a copy of raw: the event would keep all of raw, white
// space its Size does not count included, for as long as it is queued.
func decodeMembers(raw []byte, ms []member) (input, error) {
	var in input
	var plain [8]struct { // the string values without escapes, to copy at the end
		dst   *string
		inner []byte
	}
	nplain, plainLen := 0, 0
	var seen uint16 // a bit for each field of the schema, by its case below
	for _, mb := range ms {
		key, value := mb.key, mb.value
		if bytes.IndexByte(key, '\\') >= 0 {
			key = []byte(unquote(key)) // "typ\u0065" is "type"
		}
		var dst *string
		var bit uint16
		switch string(key) {
		case "event_id":
			dst, bit = &in.EventID, 1<<0
		case "type":
			dst, bit = &in.Type, 1<<1
		case "url":
			dst, bit = &in.URL, 1<<2
		case "referrer":
			dst, bit = &in.Referrer, 1<<3
		case "title":
			dst, bit = &in.Title, 1<<4
		case "visitor_id":
			dst, bit = &in.VisitorID, 1<<5
		case "session_id":
			dst, bit = &in.SessionID, 1<<6
		case "sent_at":
			dst, bit = &in.SentAt, 1<<7
		case "props":
			bit = 1 << 8
		default:
			name := unquote(key)
			if slices.Contains(serverFields, name) {
				return in, errField(name, "is set by the server")
			}
			return in, errField(truncate(name, MaxTypeLen), "is not a field of the event schema")
		}
		if seen&bit != 0 {
			return in, errField(string(key), "is given twice")
		}
		seen |= bit
		if dst == nil {
			in.Props = bytes.Clone(value)
			continue
		}
		switch {
		case value[0] == '"':
			inner := value[1 : len(value)-1]
			if bytes.IndexByte(inner, '\\') >= 0 {
				*dst = unquote(inner)
				break
			}
			plain[nplain].dst, plain[nplain].inner = dst, inner // one per field: at most 8
			nplain++
			plainLen += len(inner)
		case string(value) == "null":
		default:
			return in, errField(unquote(key), "must be a JSON string")
		}
	}
	var text strings.Builder
	text.Grow(plainLen)
	for _, p := range plain[:nplain] {
		text.Write(p.inner)
	}
	all, off := text.String(), 0
	for _, p := range plain[:nplain] {
		*p.dst = all[off : off+len(p.inner)]
		off += len(p.inner)
	}
	return in, nil
}

// unquote decodes the inside of a valid JSON string.
func unquote(inner []byte) string {
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner)
	}
	var s string
	_ = json.Unmarshal(append(append([]byte{'"'}, inner...), '"'), &s) // valid JSON, so it cannot fail
	return s
}

// members calls f with each top-level key (the raw inside of its quotes)
// and value (raw, trimmed) of a valid JSON object, until f returns false.
func members(obj []byte, f func(key, value []byte) bool) {
	depth := 0
	keyStart, keyEnd, valStart := -1, -1, -1
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; c {
		case '"':
			end := skipString(obj, i)
			if depth == 1 && keyStart < 0 {
				keyStart, keyEnd = i+1, end
			}
			i = end
		case ':':
			if depth == 1 {
				valStart = i + 1
			}
		case '{', '[':
			depth++
		case '}', ']', ',':
			if c != ',' {
				depth--
			}
			if (c == ',' && depth == 1) || (c == '}' && depth == 0) {
				if valStart >= 0 && !f(obj[keyStart:keyEnd], bytes.TrimSpace(obj[valStart:i])) {
					return
				}
				keyStart, keyEnd, valStart = -1, -1, -1
			}
		}
	}
}

// skipString returns the index of the quote that closes the JSON string
// opened at b[open]. b is valid JSON, so the string is closed.
func skipString(b []byte, open int) int {
	i := open + 1
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return len(b) - 1
		}
		i += j
		backslashes := 0
		for k := i - 1; k > open && b[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return i
		}
		i++
	}
}

// checkProps checks that raw (valid JSON, from valid UTF-8) is an object
// within the bounds that every sink can store, and returns it compacted, so
// that it never breaks an NDJSON line. raw is the decoder's own copy: it
// may be changed in place. What PostgreSQL's jsonb refuses is decided here,
// the same way for every sink:
//   - a \u0000 escape, in a key or a value, is rejected;
//   - a lone surrogate escape (\ud800 without its pair) becomes \ufffd, the
//     replacement character, as encoding/json decodes it;
//   - a number beyond float64's range (1e999999, 1e-999999) is rejected;
//   - a key given twice in one object is rejected, naming the key.
func checkProps(raw []byte) ([]byte, error) {
	if raw[0] != '{' {
		return nil, errField("props", "must be a JSON object")
	}
	if len(raw) > MaxPropsBytes {
		return nil, errTooLong("props", MaxPropsBytes)
	}
	var (
		// The keys of the open objects, outermost first: most props have
		// a few, so the array that holds them at first is small, not one of
		// MaxPropsKeys to zero on every call.
		keysBuf [8][]byte
		keys    = keysBuf[:0]
		frames  [MaxPropsDepth + 1]struct {
			obj      bool
			firstKey int
		}
		depth   int
		wantKey bool
		spaced  bool
	)
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '"':
			end := skipString(raw, i)
			str := raw[i+1 : end]
			if err := checkEscapes(str); err != nil {
				return nil, err
			}
			if wantKey {
				if len(keys) == MaxPropsKeys {
					return nil, errField("props", "has more than the allowed number of keys")
				}
				key := str
				if bytes.IndexByte(key, '\\') >= 0 {
					key = []byte(unquote(key))
				}
				for _, k := range keys[frames[depth-1].firstKey:] {
					if bytes.Equal(k, key) {
						return nil, errField("props", "has the key "+strconv.Quote(truncate(string(key), MaxTypeLen))+" twice")
					}
				}
				keys = append(keys, key)
				wantKey = false
			}
			i = end
		case '{', '[':
			if depth++; depth > MaxPropsDepth {
				return nil, errField("props", "is nested deeper than the allowed depth")
			}
			frames[depth-1].obj, frames[depth-1].firstKey = c == '{', len(keys)
			wantKey = c == '{'
		case '}', ']':
			depth--
			if c == '}' {
				keys = keys[:frames[depth].firstKey]
			}
		case ',':
			wantKey = frames[depth-1].obj
		case ' ', '\t', '\n', '\r':
			spaced = true
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			end := i + 1
			for end < len(raw) && isNumberByte(raw[end]) {
				end++
			}
			if !numberInRange(raw[i:end]) {
				return nil, errField("props", "holds the number "+cutMarked(string(raw[i:end]), 32)+", out of range (a number must fit a float64, with an exponent within ±999)")
			}
			i = end - 1
		}
	}
	if !spaced {
		return raw, nil
	}
	var b bytes.Buffer
	b.Grow(len(raw))
	if err := json.Compact(&b, raw); err != nil {
		return nil, errField("props", "is not valid JSON")
	}
	return b.Bytes(), nil
}

// Finish checks the common fields of an event built by another ingest API
// (the Segment-compatible one), applies the privacy policy to its url,
// referrer and IP (m.IP must come from ClientIP) and the server's fields
// from m, and seals it. Its other fields are the caller's to check.
func (n *Normalizer) Finish(e *Event, m Meta) error { return n.finish(e, m) }

// finish checks the common fields, applies the privacy policy and the
// server's fields, and seals the event.
func (n *Normalizer) finish(e *Event, m Meta) error { return n.finishIn(e, m, nil) }

// finishIn is finish; in an arena, when a is not nil, it leaves the new
// id and the encoding to Seal.
func (n *Normalizer) finishIn(e *Event, m Meta, a *Arena) error {
	if e.EventID != "" {
		id, ok := ParseUUID(e.EventID)
		if !ok {
			return errField("event_id", "is not a UUID")
		}
		e.EventID = id
	} else if a == nil {
		e.EventID = NewID(m.Now)
	}
	return n.complete(e, m, a)
}

// complete is finishIn for an event whose id is set, or left to Seal.
func (n *Normalizer) complete(e *Event, m Meta, a *Arena) error {
	if err := n.prepare(e, m); err != nil {
		return err
	}
	if m.Campaign {
		var c Campaign
		if parseCampaign(e.URL, &c) {
			e.Campaign = c.AppendJSON(make([]byte, 0, 64))
		}
	}
	if a == nil {
		e.seal(nil, &n.second)
	}
	return nil
}

// prepare is complete but for the campaign and the seal.
func (n *Normalizer) prepare(e *Event, m Meta) error {
	if len(e.Type) > MaxTypeLen {
		return errTooLong("type", MaxTypeLen)
	}
	if !validType(e.Type) {
		return errField("type", "may hold only letters, digits and _ . : -")
	}
	if err := checkText(e); err != nil {
		return err
	}
	e.URL = n.SanitizeURL(e.URL)
	e.Referrer = n.SanitizeURL(e.Referrer)
	e.ReceivedAt = m.Now.UTC()
	e.UserAgent = truncateUTF8(m.UserAgent, MaxUserAgentLen)
	e.IP = m.IP
	if m.SourceID != "" { // the Segment API sets its own before
		e.SourceID = m.SourceID
	}
	if en := m.Enrichment; en != nil {
		e.UA, e.Bot, e.Geo, e.ASN = en.UA, en.Bot, en.Geo, en.ASN
	}
	e.TraceID, e.SpanID = m.TraceID, m.SpanID
	return nil
}

// checkText makes the free-text fields of e valid UTF-8 and checks their
// lengths, NUL characters, and the control characters of the ids. A value
// of printable ASCII, as most are, is checked in one pass.
func checkText(e *Event) error {
	for _, f := range [...]struct {
		name  string
		v     *string
		limit int
	}{
		{"url", &e.URL, MaxURLLen},
		{"referrer", &e.Referrer, MaxURLLen},
		{"title", &e.Title, MaxTitleLen},
		{"visitor_id", &e.VisitorID, MaxIDLen},
		{"session_id", &e.SessionID, MaxIDLen},
	} {
		if len(*f.v) > f.limit {
			return errTooLong(f.name, f.limit)
		}
		if printableASCII(*f.v) {
			continue // valid UTF-8, without NUL or control characters: most values
		}
		*f.v = validUTF8(*f.v) // may lengthen it: check again
		if len(*f.v) > f.limit {
			return errTooLong(f.name, f.limit)
		}
		if strings.IndexByte(*f.v, 0) >= 0 {
			return errNUL(f.name)
		}
	}
	if !printableASCII(e.VisitorID) && strings.ContainsFunc(e.VisitorID, isControl) {
		return errField("visitor_id", "holds a control character")
	}
	if !printableASCII(e.SessionID) && strings.ContainsFunc(e.SessionID, isControl) {
		return errField("session_id", "holds a control character")
	}
	return nil
}

// printableASCII reports whether every byte of s is printable ASCII, from
// ' ' to '~', a word at a time.
func printableASCII(s string) bool {
	for len(s) >= 8 {
		w := load8(s)
		del := w ^ (lanes01 * 0x7F)
		if (w|(w-lanes01*0x20)|((del-lanes01)&^del))&lanes80 != 0 {
			return false
		}
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > '~' {
			return false
		}
	}
	return true
}

func validType(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return s != ""
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7F }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// cutMarked cuts s, which is ASCII, to n bytes, and marks the cut with
// "...", so that an error quoting it does not show another value.
func cutMarked(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
