package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
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
}

// FromQuery builds a sealed pixel event from a raw query string. Parameters:
// e (type), url, ref, title, uid, sid, eid (a client UUID) and p.NAME for
// custom string properties. Unknown parameters are ignored, as cache
// busters are common.
func (n *Normalizer) FromQuery(rawQuery string, m Meta) (*Event, error) {
	e := &Event{Source: SourcePixel}
	var props []byte
	var names []string
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		rk, rv, _ := strings.Cut(pair, "=")
		k, err1 := unescape(rk)
		v, err2 := unescape(rv)
		if err1 != nil || err2 != nil {
			return nil, errField("query", "has a malformed escape")
		}
		switch k {
		case "e":
			e.Type = v
		case "url":
			e.URL = v
		case "ref":
			e.Referrer = v
		case "title":
			e.Title = v
		case "uid":
			e.VisitorID = v
		case "sid":
			e.SessionID = v
		case "eid":
			e.EventID = v
		default:
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
			names = append(names, name)
			if props == nil {
				props = append(make([]byte, 0, 64), '{')
			} else {
				props = append(props, ',')
			}
			props = appendString(props, name)
			props = append(props, ':')
			props = appendString(props, v)
		}
	}
	if props != nil {
		props = append(props, '}')
		if len(props) > MaxPropsBytes {
			return nil, errTooLong("props", MaxPropsBytes)
		}
		e.Props = props
	}
	if e.Type == "" {
		e.Type = DefaultType
	}
	if e.URL == "" {
		e.URL = m.Referer
	}
	return e, n.finish(e, m)
}

// unescape is url.QueryUnescape without the allocation when there is
// nothing to unescape.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// input is the JSON shape of one /collect event.
type input struct {
	EventID   string          `json:"event_id"`
	Type      string          `json:"type"`
	URL       string          `json:"url"`
	Referrer  string          `json:"referrer"`
	Title     string          `json:"title"`
	VisitorID string          `json:"visitor_id"`
	SessionID string          `json:"session_id"`
	SentAt    string          `json:"sent_at"`
	Props     json.RawMessage `json:"props"`
}

// serverFields are set by GoTrack; a client that sends one is told so.
var serverFields = []string{"received_at", "user_agent", "ip", "source"}

// FromJSON builds a sealed event from one JSON object of a /collect body.
// The body must already be known to be valid UTF-8.
func (n *Normalizer) FromJSON(raw []byte, m Meta) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in input
	if err := dec.Decode(&in); err != nil {
		return nil, jsonFieldError(err)
	}
	if in.Type == "" {
		return nil, errField("type", "is missing")
	}
	e := &Event{
		EventID:   in.EventID,
		Type:      in.Type,
		URL:       in.URL,
		Referrer:  in.Referrer,
		Title:     in.Title,
		VisitorID: in.VisitorID,
		SessionID: in.SessionID,
		Source:    SourceCollect,
	}
	if in.SentAt != "" {
		t, err := time.Parse(time.RFC3339Nano, in.SentAt)
		if err != nil {
			return nil, errField("sent_at", "is not an RFC 3339 time")
		}
		e.SentAt = t
	}
	if p := bytes.TrimSpace(in.Props); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		props, err := checkProps(p)
		if err != nil {
			return nil, err
		}
		e.Props = props
	}
	return e, n.finish(e, m)
}

func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return errField(te.Field, "must be a JSON "+te.Type.String())
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		for _, f := range serverFields {
			if name == f {
				return errField(name, "is set by the server")
			}
		}
		return errField(truncate(name, MaxTypeLen), "is not a field of the event schema")
	}
	return errField("event", "is not a JSON object")
}

// checkProps checks that raw (valid JSON) is an object within the bounds and
// returns it compacted, so that it never breaks an NDJSON line.
func checkProps(raw []byte) ([]byte, error) {
	if raw[0] != '{' {
		return nil, errField("props", "must be a JSON object")
	}
	if len(raw) > MaxPropsBytes {
		return nil, errTooLong("props", MaxPropsBytes)
	}
	depth, keys, inString, escaped := 0, 0, false, false
	for _, c := range raw {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > MaxPropsDepth {
				return nil, errField("props", "is nested deeper than the allowed depth")
			}
		case '}', ']':
			depth--
		case ':':
			if keys++; keys > MaxPropsKeys {
				return nil, errField("props", "has more than the allowed number of keys")
			}
		}
	}
	var b bytes.Buffer
	b.Grow(len(raw))
	if err := json.Compact(&b, raw); err != nil {
		return nil, errField("props", "is not valid JSON")
	}
	return b.Bytes(), nil
}

// finish checks the common fields, applies the privacy policy and the
// server's fields, and seals the event.
func (n *Normalizer) finish(e *Event, m Meta) error {
	if e.EventID != "" {
		id, ok := ParseUUID(e.EventID)
		if !ok {
			return errField("event_id", "is not a UUID")
		}
		e.EventID = id
	} else {
		e.EventID = NewID(m.Now)
	}
	if len(e.Type) > MaxTypeLen {
		return errTooLong("type", MaxTypeLen)
	}
	if !validType(e.Type) {
		return errField("type", "may hold only letters, digits and _ . : -")
	}
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
		if !utf8.ValidString(*f.v) {
			return errField(f.name, "is not valid UTF-8")
		}
	}
	if strings.ContainsFunc(e.VisitorID+e.SessionID, isControl) {
		return errField("visitor_id", "or session_id holds a control character")
	}
	e.URL = n.SanitizeURL(e.URL)
	e.Referrer = n.SanitizeURL(e.Referrer)
	e.ReceivedAt = m.Now.UTC()
	e.UserAgent = truncateUTF8(m.UserAgent, MaxUserAgentLen)
	e.IP = m.IP
	e.Seal()
	return nil
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
