package segment

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gotrack/gotrack/internal/event"
)

// Bounds of the Segment fields with no /collect counterpart.
const (
	MaxNameLen = 512 // the track event name, the page or screen name
	MaxIDLen   = event.MaxIDLen
	// MaxDepth bounds the nesting of properties, traits and context (with
	// what GoTrack adds under context._segment): deeper JSON is refused.
	MaxDepth = 32
)

// AnonymousSource is the source_id of messages sent without a write key.
const AnonymousSource = "anonymous"

// SourceID names the sender of a write key on its events under
// AUTH_MODE=open, where any key is accepted (under AUTH_MODE=key, the
// source's id in SOURCES_FILE is recorded instead): the events record "wk_" and the first 16 hex digits of the key's SHA-256:
// enough to tell senders apart and to find a key's events, without putting
// the key, which is a credential for server-side sources, in every sink.
func SourceID(writeKey string) string {
	if writeKey == "" {
		return AnonymousSource
	}
	sum := sha256.Sum256([]byte(writeKey))
	return "wk_" + hex.EncodeToString(sum[:8])
}

// messageNamespace is the UUIDv5 namespace of event ids derived from a
// non-UUID messageId.
var messageNamespace = [16]byte{0x6b, 0x1d, 0x3c, 0x52, 0x8e, 0x0a, 0x4f, 0x39, 0x9d, 0x47, 0x21, 0xc5, 0x7e, 0x90, 0x13, 0xa8}

// EventID returns the event id of a message: its messageId when that is a
// UUID, else a UUIDv5 of the source id and the messageId, so that a retried
// message always gets the same id and the sinks can deduplicate it.
func EventID(sourceID, messageID string) (id string, derived bool) {
	if u, ok := event.ParseUUID(messageID); ok {
		return u, false
	}
	h := sha1.New()
	h.Write(messageNamespace[:])
	h.Write([]byte(sourceID))
	h.Write([]byte{0})
	h.Write([]byte(messageID))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = 0x50 | (u[6] & 0x0F) // version 5
	u[8] = 0x80 | (u[8] & 0x3F) // variant 10
	s := hex.EncodeToString(u[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:], true
}

// errMessage is a message that cannot become an event.
type errMessage string

func (e errMessage) Error() string { return string(e) }

// message maps one Segment message onto a sealed GoTrack event. call is the
// route's call type, "" for a batch item (which then names its own). See
// the README's field mapping table.
func (h *Handler) message(raw json.RawMessage, call, key string, b batchInfo, m event.Meta) (*event.Event, error) {
	if len(raw) > MaxMessageBytes {
		return nil, errMessage("message is larger than 32 KB")
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil || msg == nil {
		return nil, errMessage("message is not a JSON object")
	}
	take := func(name string) json.RawMessage {
		v := msg[name]
		delete(msg, name)
		if string(v) == "null" {
			return nil
		}
		return v
	}
	str := func(name string, limit int, numberOK bool) (string, error) {
		v := take(name)
		if len(v) == 0 {
			return "", nil
		}
		var s string
		switch {
		case v[0] == '"':
			_ = json.Unmarshal(v, &s) // valid JSON
		case numberOK && (v[0] == '-' || v[0] >= '0' && v[0] <= '9'):
			s = string(v) // Segment accepts numeric user ids; kept as written
		default:
			return "", errMessage(name + " must be a string")
		}
		if len(s) > limit {
			return "", errMessage(name + " is longer than " + strconv.Itoa(limit) + " bytes")
		}
		if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return "", errMessage(name + " holds a control character")
		}
		return s, nil
	}

	typ, err := str("type", 16, false)
	if err != nil {
		return nil, err
	}
	switch {
	case call == "" && typ == "":
		return nil, errMessage("type is missing")
	case call == "":
		call = typ
	case typ != "" && typ != call:
		return nil, errMessage("type " + strconv.Quote(typ) + " does not match the endpoint's " + call)
	}
	switch call {
	case "track", "page", "screen", "identify", "group", "alias":
	default:
		return nil, errMessage("type " + strconv.Quote(call) + " is not track, page, screen, identify, group or alias")
	}
	e := &event.Event{Source: event.SourceSegment, Call: call, Type: call}
	if call == "page" {
		e.Type = event.DefaultType // "pageview", as the pixel's
	}
	if wk := stringValue(take("writeKey")); key == "" {
		key = wk // a beacon cannot send Authorization; the key is never stored
	}
	e.SourceID = SourceID(key)
	if m.SourceID != "" {
		e.SourceID = m.SourceID // AUTH_MODE=key: the source's id, whichever of its keys was used
	}

	messageID, err := str("messageId", MaxIDLen, false)
	if err != nil {
		return nil, err
	}
	if messageID != "" {
		var derived bool
		if e.EventID, derived = EventID(e.SourceID, messageID); derived {
			e.MessageID = messageID
		}
	}
	if e.VisitorID, err = str("anonymousId", MaxIDLen, true); err != nil {
		return nil, err
	}
	if e.UserID, err = str("userId", MaxIDLen, true); err != nil {
		return nil, err
	}
	if e.VisitorID == "" && e.UserID == "" {
		return nil, errMessage("userId or anonymousId is required")
	}
	switch call {
	case "track":
		if e.Name, err = str("event", MaxNameLen, false); err != nil {
			return nil, err
		}
		if e.Name == "" {
			return nil, errMessage("event is required in a track call")
		}
	case "page", "screen":
		if e.Name, err = str("name", MaxNameLen, false); err != nil {
			return nil, err
		}
	case "group":
		if len(msg["groupId"]) == 0 || string(msg["groupId"]) == "null" {
			return nil, errMessage("groupId is required in a group call")
		}
	case "alias":
		if len(msg["previousId"]) == 0 || string(msg["previousId"]) == "null" {
			return nil, errMessage("previousId is required in an alias call")
		}
	}

	// The call's own object becomes props: properties, or the traits of an
	// identify or group call.
	propsName := "properties"
	if call == "identify" || call == "group" {
		propsName = "traits"
	}
	props, err := object(take(propsName), propsName)
	if err != nil {
		return nil, err
	}
	if call == "page" || call == "screen" {
		// A page call repeats the url, referrer and query string in its
		// properties: they get the same sanitising as the url field.
		for _, k := range []string{"url", "referrer", "search"} {
			if s := stringValue(props[k]); s != "" {
				props[k], _ = json.Marshal(h.norm.SanitizeURL(s))
			}
		}
		e.URL, e.Referrer, e.Title = stringValue(props["url"]), stringValue(props["referrer"]), stringValue(props["title"])
	}
	if len(props) > 0 {
		e.Props, _ = json.Marshal(props)
	}

	ctx, err := object(take("context"), "context")
	if err != nil {
		return nil, err
	}
	if err := h.mapContext(e, ctx, &m); err != nil {
		return nil, err
	}

	if e.OriginalTimestamp, err = timeField(take("originalTimestamp"), "originalTimestamp"); err != nil {
		return nil, err
	}
	ts, err := timeField(take("timestamp"), "timestamp")
	if err != nil {
		return nil, err
	}
	if e.OriginalTimestamp.IsZero() {
		e.OriginalTimestamp = ts
	}
	sentAt := take("sentAt")
	if sentAt == nil {
		sentAt = b.sentAt
	}
	if e.SentAt, err = timeField(sentAt, "sentAt"); err != nil {
		return nil, err
	}
	e.Timestamp = correctedTime(m.Now, e.SentAt, e.OriginalTimestamp)

	// Everything else the client sent (groupId, previousId, integrations,
	// a track call's traits, ...) is kept under context._segment, and the
	// batch's own members other than batch, sentAt and writeKey under
	// context._segment._batch.
	if b.extra != nil {
		msg["_batch"] = b.extra
	}
	if len(msg) > 0 {
		if ctx == nil {
			ctx = map[string]json.RawMessage{}
		}
		ctx["_segment"], _ = json.Marshal(msg)
	}
	if len(ctx) > 0 {
		e.Context, _ = json.Marshal(ctx)
	}
	// What PostgreSQL's jsonb refuses is refused here, as /collect refuses
	// it in props: accepted means storable.
	for _, f := range []struct {
		name string
		v    []byte
	}{{propsName, e.Props}, {"context", e.Context}, {"context.campaign", e.Campaign}} {
		if err := event.CheckStorable(f.name, f.v, MaxDepth); err != nil {
			return nil, err
		}
	}
	// What decoding into maps collapsed: a member given twice, at the top
	// or in context, would lose its first value silently.
	if err := event.CheckStorable("message", raw, MaxDepth+1); err != nil {
		return nil, err
	}
	if err := h.norm.Finish(e, m); err != nil {
		return nil, errMessage(mapFieldError(err))
	}
	return e, nil
}

// mapContext takes context.page, userAgent, ip and campaign into the
// event's own fields, where the privacy policy applies to them, and leaves
// the rest in ctx.
func (h *Handler) mapContext(e *event.Event, ctx map[string]json.RawMessage, m *event.Meta) error {
	if ctx == nil {
		return nil
	}
	if _, ok := ctx["_segment"]; ok {
		return errMessage("context._segment is reserved for GoTrack")
	}
	page, err := object(ctx["page"], "context.page")
	if err != nil {
		return err
	}
	if page != nil {
		for _, f := range []struct {
			name string
			dst  *string
		}{{"url", &e.URL}, {"referrer", &e.Referrer}, {"title", &e.Title}} {
			if v, ok := page[f.name]; ok && (len(v) > 0 && v[0] == '"' || string(v) == "null") {
				*f.dst = stringValue(v) // else kept in context.page: nothing is dropped silently
				delete(page, f.name)
			}
		}
		if s := stringValue(page["search"]); s != "" {
			page["search"], _ = json.Marshal(h.norm.SanitizeURL(s))
		}
		if len(page) == 0 {
			delete(ctx, "page")
		} else {
			ctx["page"], _ = json.Marshal(page)
		}
	}
	if v, ok := ctx["userAgent"]; ok {
		if len(v) > 0 && v[0] != '"' && string(v) != "null" {
			return errMessage("context.userAgent must be a string")
		}
		if ua := stringValue(v); ua != "" {
			m.UserAgent = ua // the end user's browser, when a server relays its events
		}
		delete(ctx, "userAgent")
	}
	if v, ok := ctx["ip"]; ok {
		if len(v) > 0 && v[0] != '"' && string(v) != "null" {
			return errMessage("context.ip is not an IP address")
		}
		if ip := stringValue(v); ip != "" {
			if _, err := netip.ParseAddr(ip); err != nil {
				return errMessage("context.ip is not an IP address")
			}
			m.IP = h.norm.ClientIP(ip, nil) // under IP_MODE like any client address
		}
		delete(ctx, "ip")
	}
	if v, ok := ctx["campaign"]; ok {
		c, err := object(v, "context.campaign")
		if err != nil {
			return err
		}
		if len(c) > 0 {
			e.Campaign, _ = json.Marshal(c)
		}
		delete(ctx, "campaign")
	}
	return nil
}

// object decodes a JSON object member; null or absent gives nil.
func object(raw json.RawMessage, name string) (map[string]json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var o map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &o) != nil {
		return nil, errMessage(name + " must be a JSON object")
	}
	return o, nil
}

// timeField parses an ISO 8601 time as Segment's libraries send it
// (Date.toISOString: RFC 3339 in UTC).
func timeField(raw json.RawMessage, name string) (time.Time, error) {
	if len(raw) == 0 {
		return time.Time{}, nil
	}
	s := stringValue(raw)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errMessage(name + " is not an ISO 8601 time with a time zone")
	}
	return t, nil
}

// correctedTime is Segment's clock-skew correction: the event happened
// (sentAt - originalTimestamp) before the client sent it, measured on the
// client's clock, so on the server's clock it happened that long before it
// was received. Without sentAt the client's own time is all there is, and
// without either the receipt time.
func correctedTime(received, sentAt, original time.Time) time.Time {
	switch {
	case !sentAt.IsZero() && !original.IsZero():
		return received.Add(-sentAt.Sub(original)).UTC()
	case !original.IsZero():
		return original
	}
	return received.UTC()
}

// mapFieldError names a GoTrack field by the Segment member it came from.
func mapFieldError(err error) string {
	var fe *event.FieldError
	if !errors.As(err, &fe) {
		return err.Error()
	}
	name := map[string]string{
		"event_id": "messageId", "url": "context.page.url", "referrer": "context.page.referrer",
		"title": "context.page.title", "visitor_id": "anonymousId",
	}[fe.Field]
	if name == "" {
		name = fe.Field
	}
	return name + ": " + fe.Reason
}
