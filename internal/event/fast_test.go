package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzUnescape checks the pixel's unescape against url.QueryUnescape: the
// same text, and an error for the same inputs.
func FuzzUnescape(f *testing.F) {
	for _, s := range []string{"", "plain", "a+b", "%41%62", "0123456789abcdef%41", "01234567+", "0123456%41", "01234567\x80%", "%", "%4", "%4g", "a%2", "%e2%80%93+x", "100%", "++%2B%25", "\xff%ff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := unescape(s)
		want, wantErr := url.QueryUnescape(s)
		if (err != nil) != (wantErr != nil) || got != want {
			t.Fatalf("unescape(%q) = %q, %v; url.QueryUnescape: %q, %v", s, got, err, want, wantErr)
		}
	})
}

// appendStringByByte is appendString as it was before specialLanes: the
// reference the word-at-a-time version must match byte for byte.
func appendStringByByte(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
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

// FuzzAppendStringWords checks appendString, which skips plain 8-byte words
// at once, against the byte-by-byte reference, exactly.
func FuzzAppendStringWords(f *testing.F) {
	for _, s := range []string{"", "0123456", "01234567", "https://shop.example/products/42?utm_source=news",
		"abcdefg\"", "abcdefgh\\ijklmnop", "abcdefg\x1f", "abcdefg\x7f12345678", "abcdefgé", "\u2028abcdefgh",
		"abcdefgh\xffabcdefgh", " !#$%&'()*+,-./[]^_`{|}~", "\x20\x20\x20\x20\x20\x20\x20\x1f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := appendString(nil, s), appendStringByByte(nil, s); string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// TestSpecialLanes tries each byte in each lane of a word.
func TestSpecialLanes(t *testing.T) {
	for c := range 256 {
		special := c < 0x20 || c >= 0x80 || c == '"' || c == '\\'
		for lane := range 8 {
			w := []byte("abcdefgh")
			w[lane] = byte(c)
			m := specialLanes(binary.LittleEndian.Uint64(w))
			if special != (m != 0) || special && bits.TrailingZeros64(m)>>3 != lane {
				t.Fatalf("specialLanes with %#x in lane %d = %#x", c, lane, m)
			}
			for above := lane + 1; above < 8; above++ { // borrows above it must not matter
				w[above] = byte(c) ^ byte(above)
			}
			if m := specialLanes(binary.LittleEndian.Uint64(w)); special && bits.TrailingZeros64(m)>>3 != lane {
				t.Fatalf("specialLanes of %q = %#x, want the lowest in lane %d", w, m, lane)
			}
		}
	}
}

// TestSealAllocatesOnce checks that sizeHint covers the encoding of events
// as the endpoints build them, every field set included, so that Seal
// allocates once and the queues hold no buffer twice the event's size.
func TestSealAllocatesOnce(t *testing.T) {
	n := mustNormalizer(t, Policy{IPMode: IPTruncate, SanitizeParams: DefaultSanitizeParams})
	pixel, err := n.FromQuery(benchQuery, Meta{Now: now, IP: "203.0.113.0", UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
		SourceID: "anonymous", TraceID: strings.Repeat("a", 32), SpanID: strings.Repeat("b", 16), Campaign: true})
	if err != nil {
		t.Fatal(err)
	}
	collect, err := n.FromJSON([]byte(`{"type":"add_to_cart","url":"https://shop.example/products/42","visitor_id":"v1234567",`+
		`"session_id":"s7654321","sent_at":"2026-11-22T10:00:00.123456789+01:00","props":{"sku":"W-42","qty":2,"price":19.99}}`),
		Meta{Now: now, IP: "203.0.113.0", UserAgent: "bench", SourceID: "anonymous"})
	if err != nil {
		t.Fatal(err)
	}
	full := &Event{EventID: pixel.EventID, ReceivedAt: now, SentAt: now, Type: "track", URL: pixel.URL, Referrer: pixel.Referrer,
		Title: pixel.Title, VisitorID: "v", SessionID: "s", UserAgent: pixel.UserAgent, IP: "2001:db8::", Props: []byte(`{"a":1}`),
		Source: SourceSegment, SourceID: "shop", Call: "track", Name: "Order Completed", UserID: "u1", MessageID: "m1",
		Timestamp: now, OriginalTimestamp: now, Context: []byte(`{"library":{"name":"analytics.js"}}`),
		TraceID: pixel.TraceID, SpanID: pixel.SpanID,
		UA:  &UA{Browser: "Chrome", Version: "131.0", OS: "Windows", OSVersion: "10.0", Device: "desktop"},
		Bot: &Bot{IsBot: true, Reasons: []string{"crawler", "datacenter"}}, Geo: &Geo{Country: "DE", Region: "BE", City: "Berlin"},
		ASN: &ASN{Number: 4294967295, Org: "Example Org"}, Campaign: (&Campaign{Source: "news", Medium: "email"}).AppendJSON(nil)}
	for name, e := range map[string]*Event{"pixel": pixel, "collect": collect, "every field": full} {
		hint := e.sizeHint()
		if got := len(e.AppendJSON(nil)); got > hint {
			t.Errorf("%s: encoding of %d bytes outgrows sizeHint %d", name, got, hint)
		}
		if allocs := testing.AllocsPerRun(10, e.Seal); allocs != 1 {
			t.Errorf("%s: Seal allocates %v times, want once", name, allocs)
		}
	}
}

// sanitizeURLCopying is SanitizeURL as it was before it returned an
// unchanged URL as it is: the reference it must match.
func (n *Normalizer) sanitizeURLCopying(u string) string {
	q := strings.IndexByte(u, '?')
	f := strings.IndexByte(u, '#')
	if (q < 0 && f < 0) || len(n.sanitize) == 0 {
		return u
	}
	base, query, frag := u, "", ""
	if f >= 0 {
		base, frag = u[:f], u[f+1:]
	}
	if q >= 0 && (f < 0 || q < f) {
		query = base[q+1:]
		base = base[:q]
	}
	var b strings.Builder
	b.WriteString(base)
	if q >= 0 && (f < 0 || q < f) {
		if kept := n.sanitizeQuery(query); kept != "" {
			b.WriteByte('?')
			b.WriteString(kept)
		}
	}
	if f >= 0 {
		b.WriteByte('#')
		if strings.IndexByte(frag, '=') >= 0 {
			frag = n.sanitizeQuery(frag)
		}
		b.WriteString(frag)
	}
	return b.String()
}

func FuzzSanitizeURL(f *testing.F) {
	for _, s := range []string{"https://a/b", "https://a/b?", "https://a/b?#", "https://a/b#", "https://a/b?x=1&Token=s",
		"https://a/cb#access_token=t&state=s", "https://a/b#x?token=1", "?token=1#a=b", "https://a/b?&&x", "https://a/b?token"} {
		f.Add(s)
	}
	n := mustNormalizer(f, Policy{SanitizeParams: append([]string{""}, DefaultSanitizeParams...)})
	plain := mustNormalizer(f, Policy{SanitizeParams: DefaultSanitizeParams})
	f.Fuzz(func(t *testing.T, u string) {
		for _, n := range []*Normalizer{n, plain} {
			if got, want := n.SanitizeURL(u), n.sanitizeURLCopying(u); got != want {
				t.Fatalf("SanitizeURL(%q) = %q, want %q", u, got, want)
			}
		}
	})
}

// FuzzPrintableASCII checks the word-at-a-time printableASCII byte by byte.
func FuzzPrintableASCII(f *testing.F) {
	for _, s := range []string{"", " ~", "abcdefgh\x7f", "abcdefgh~ijklmno\x1f", "\x80bcdefgh", "abcdefg\x00", "abcdefg~", "abcdefg\x7f", " bcdefg\x1f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := true
		for i := 0; i < len(s); i++ {
			want = want && s[i] >= ' ' && s[i] <= '~'
		}
		if got := printableASCII(s); got != want {
			t.Fatalf("printableASCII(%q) = %v, want %v", s, got, want)
		}
	})
}

// checkTextThreePasses is checkText as it was before its printable ASCII
// pass: the reference it must match, in results and in errors.
func checkTextThreePasses(e *Event) error {
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
		*f.v = validUTF8(*f.v)
		if len(*f.v) > f.limit {
			return errTooLong(f.name, f.limit)
		}
		if strings.IndexByte(*f.v, 0) >= 0 {
			return errNUL(f.name)
		}
	}
	if strings.ContainsFunc(e.VisitorID, isControl) {
		return errField("visitor_id", "holds a control character")
	}
	if strings.ContainsFunc(e.SessionID, isControl) {
		return errField("session_id", "holds a control character")
	}
	return nil
}

func FuzzCheckText(f *testing.F) {
	f.Add("https://a/b", "t", "v1", "s\x01", 0)
	f.Add("u\x00", "t\xff", "v\x7f", "s", 126)
	f.Add("u", "\xff", "é", "s\x00", 127)
	f.Fuzz(func(t *testing.T, url, title, visitor, session string, pad int) {
		pad = max(0, min(pad, 200))
		visitor += strings.Repeat("x", pad) // near MaxIDLen, where \xff's replacement tips it over
		a := Event{URL: url, Referrer: title + url, Title: title, VisitorID: visitor, SessionID: session}
		b := a
		errA, errB := checkText(&a), checkTextThreePasses(&b)
		text := func(e Event) [5]string { return [5]string{e.URL, e.Referrer, e.Title, e.VisitorID, e.SessionID} }
		if fmt.Sprint(errA) != fmt.Sprint(errB) || errA == nil && text(a) != text(b) {
			t.Fatalf("checkText: %v, %q; want %v, %q", errA, text(a), errB, text(b))
		}
	})
}

// FuzzFormatUUID checks the unrolled formatUUID against the 8-4-4-4-12
// layout written with fmt.
func FuzzFormatUUID(f *testing.F) {
	f.Add([]byte("0123456789abcdef"))
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 16 {
			return
		}
		u := [16]byte(b)
		want := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
		if got := formatUUID(u); got != want {
			t.Fatalf("formatUUID(%x) = %s, want %s", u, got, want)
		}
	})
}

// fromQueryUnescapingEach is FromQuery as it was before it unescaped the
// values into one buffer: each value unescaped on its own, and the new id a
// string of its own. It is the reference FromQuery must match.
func (n *Normalizer) fromQueryUnescapingEach(rawQuery string, m Meta) (*Event, error) {
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
			if strings.IndexByte(name, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
				return nil, errNUL("p." + name)
			}
			names = append(names, name)
			if props == nil {
				props = []byte{'{'}
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

// FuzzFromQuery checks FromQuery against fromQueryUnescapingEach: the same
// event, JSON included, or the same error. A new event_id is random, so
// the reference's is taken as FromQuery's once both are checked as ids.
func FuzzFromQuery(f *testing.F) {
	for _, q := range []string{"", benchQuery, "e=a&e=b%20c", "url=a%20b&url=plain", "url=plain&url=a%20b", "url=%zz", "cb=%4",
		"title=x&uid=%", "e=&url=", "url=+", "p.a=1&p.a=2", "p.%41=v%42&p.b=%C3%A9", "eid=0190F0F0-0000-7000-8000-000000000001&url=%2F",
		"eid=0190f0f0%2D0000-7000-8000-000000000001", "eid=x", "ref=https%3A%2F%2Fa%2F%3Ftoken%3Ds%26b%3D1&sid=%01", "u%72l=%2Fx",
		"title=a%ffb&url=https://x.example/%C3%A9%fe", "&&url=%2F&&", "=x&url", "sid=" + strings.Repeat("%41", MaxIDLen+1)} {
		f.Add(q, "https://ref.example/")
	}
	f.Add("url=https%3A%2F%2Fa%2F%3Futm_source%3Dnews%26gclid%3DG&p.k=v", "") // campaign and props, both sealed in the encoding
	f.Add("url=https%3A%2F%2Fa%2F%3Futm_source%3Dn&p.k=v", "")
	n := mustNormalizer(f, Policy{IPMode: IPTruncate, SanitizeParams: DefaultSanitizeParams})
	f.Fuzz(func(t *testing.T, q, referer string) {
		m := Meta{Now: now, IP: "203.0.113.0", UserAgent: "UA/1", Referer: referer, SourceID: "anonymous", Campaign: len(q)%2 == 0}
		got, err := n.FromQuery(q, m)
		want, wantErr := n.fromQueryUnescapingEach(q, m)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("FromQuery(%q): error %v, want %v", q, err, wantErr)
		}
		if err != nil {
			return
		}
		if _, ok := ParseUUID(got.EventID); !ok || len(got.EventID) != 36 {
			t.Fatalf("FromQuery(%q): event_id %q", q, got.EventID)
		}
		if want.EventID != got.EventID && want.EventID[:15] == got.EventID[:15] { // both new: at m.Now, version 7
			want.EventID = got.EventID
			want.raw = nil
			want.Seal()
		}
		if !bytes.Equal(got.JSON(), want.JSON()) {
			t.Fatalf("FromQuery(%q):\n got %s\nwant %s", q, got.JSON(), want.JSON())
		}
		got.raw, want.raw = nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("FromQuery(%q):\n got %+v\nwant %+v", q, got, want)
		}
	})
}

// TestFromQueryAllocs: a pixel event takes three allocations, its struct,
// one string for every unescaped value and its id, and its encoding, which
// holds its props and campaign too, however many of its values had
// escapes.
func TestFromQueryAllocs(t *testing.T) {
	n := mustNormalizer(t, Policy{IPMode: IPTruncate, SanitizeParams: DefaultSanitizeParams})
	m := Meta{Now: now, IP: "203.0.113.0", UserAgent: "UA/1", Campaign: true}
	for _, tc := range []struct {
		query  string
		allocs float64
	}{
		{benchQuery, 5}, // and two more to remove the url's token
		{"e=pageview&url=https%3A%2F%2Fshop.example%2F%3Futm_source%3Dnews&ref=https%3A%2F%2Fwww.example.org%2F&title=Blue%20Widget&uid=v1&sid=s1&p.plan=pro", 3},
		{"e=pageview&url=https%3A%2F%2Fshop.example%2F", 3},
		{"e=pageview&url=https://shop.example/&uid=v1", 3},
	} {
		if got := testing.AllocsPerRun(100, func() {
			if _, err := n.FromQuery(tc.query, m); err != nil {
				t.Fatal(err)
			}
		}); got != tc.allocs {
			t.Errorf("FromQuery(%q) allocates %v times, want %v", tc.query, got, tc.allocs)
		}
	}
}

// hasSecretLookingUpEach is hasSecret as it was before it skipped the keys
// whose first byte starts no name: every key unescaped, lower-cased and
// looked up. It is the reference hasSecret must match.
func (n *Normalizer) hasSecretLookingUpEach(q string) bool {
	for pair := range strings.SplitSeq(q, "&") {
		key, _, _ := strings.Cut(pair, "=")
		if k, err := unescape(key); err == nil {
			key = k
		}
		if _, bad := n.sanitize[strings.ToLower(key)]; bad {
			return true
		}
	}
	return false
}

// FuzzHasSecret checks hasSecret against hasSecretLookingUpEach, with the
// default names, names of either case and outside ASCII, and "".
func FuzzHasSecret(f *testing.F) {
	for _, s := range []string{"", "&", "=", "a=1&&b", "token=x", "utm_source=a&Token=b", "%74oken=1", "+x=1", "\u212Aey=1",
		"KEY=1", "ⱥb=1", "Ⱥb=2", "x=1&", "&=", "i\u0307d=1", "İd=1", "SESSIONID=", "e%6Dail"} {
		f.Add(s)
	}
	normalizers := []*Normalizer{
		mustNormalizer(f, Policy{SanitizeParams: DefaultSanitizeParams}),
		mustNormalizer(f, Policy{SanitizeParams: []string{"key", "ⱥb", "i\u0307d", "Ütf"}}),
		mustNormalizer(f, Policy{SanitizeParams: append([]string{""}, DefaultSanitizeParams...)}),
		mustNormalizer(f, Policy{}),
	}
	f.Fuzz(func(t *testing.T, q string) {
		for i, n := range normalizers {
			if got, want := n.hasSecret(q), n.hasSecretLookingUpEach(q); got != want {
				t.Fatalf("normalizer %d: hasSecret(%q) = %v, want %v", i, q, got, want)
			}
		}
	})
}

// checkPropsFixedKeys is checkProps as it was before it held the keys in a
// slice: in an array of MaxPropsKeys+1, zeroed on every call. It is the
// reference checkProps must match, in results and in errors.
func checkPropsFixedKeys(raw []byte) ([]byte, error) {
	if raw[0] != '{' {
		return nil, errField("props", "must be a JSON object")
	}
	if len(raw) > MaxPropsBytes {
		return nil, errTooLong("props", MaxPropsBytes)
	}
	var (
		keys   [MaxPropsKeys + 1][]byte // the keys of the open objects, outermost first
		nkeys  int
		frames [MaxPropsDepth + 1]struct {
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
				if nkeys++; nkeys > MaxPropsKeys {
					return nil, errField("props", "has more than the allowed number of keys")
				}
				key := str
				if bytes.IndexByte(key, '\\') >= 0 {
					key = []byte(unquote(key))
				}
				for _, k := range keys[frames[depth-1].firstKey : nkeys-1] {
					if bytes.Equal(k, key) {
						return nil, errField("props", "has the key "+strconv.Quote(truncate(string(key), MaxTypeLen))+" twice")
					}
				}
				keys[nkeys-1] = key
				wantKey = false
			}
			i = end
		case '{', '[':
			if depth++; depth > MaxPropsDepth {
				return nil, errField("props", "is nested deeper than the allowed depth")
			}
			frames[depth-1].obj, frames[depth-1].firstKey = c == '{', nkeys
			wantKey = c == '{'
		case '}', ']':
			depth--
			if c == '}' {
				nkeys = frames[depth].firstKey
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

// FuzzCheckProps checks checkProps against checkPropsFixedKeys.
func FuzzCheckProps(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":{"\u0061":1,"a":2}}`, `{"a":{"b":1},"b":2,"a":3}`, `{ "x" : [1, {"y": "z"}] }`,
		`{"a":{"b":{"c":{"d":{}}}}}`, `{"n":1e999999}`, `[1]`, `{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k1":0}`} {
		f.Add(s)
	}
	var many strings.Builder
	many.WriteString(`{"o":{`)
	for i := range MaxPropsKeys + 1 {
		if i > 0 {
			many.WriteByte(',')
		}
		fmt.Fprintf(&many, `"k%d":%d`, i, i)
	}
	many.WriteString(`}}`)
	f.Add(many.String())
	f.Fuzz(func(t *testing.T, raw string) {
		if !json.Valid([]byte(raw)) || !utf8.ValidString(raw) {
			return
		}
		got, err := checkProps([]byte(raw))
		want, wantErr := checkPropsFixedKeys([]byte(raw))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !bytes.Equal(got, want) {
			t.Fatalf("checkProps(%s) = %s, %v; want %s, %v", raw, got, err, want, wantErr)
		}
	})
}

// TestFromQueryPropsInEncoding: a pixel event's props and campaign are
// slices of its encoding, capped there, so that appending to them copies
// rather than writes over the encoding.
func TestFromQueryPropsInEncoding(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	e, err := n.FromQuery("url=https%3A%2F%2Fa%2F%3Futm_source%3Dnews&p.plan=pro&p.n=2", Meta{Now: now, Campaign: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(e.Props), `{"plan":"pro","n":"2"}`; got != want {
		t.Errorf("props %s, want %s", got, want)
	}
	if got, want := string(e.Campaign), `{"utm_source":"news"}`; got != want {
		t.Errorf("campaign %s, want %s", got, want)
	}
	if cap(e.Props) != len(e.Props) || cap(e.Campaign) != len(e.Campaign) {
		t.Errorf("props or campaign not capped: cap %d, %d", cap(e.Props), cap(e.Campaign))
	}
	before := string(e.JSON())
	_ = append(e.Props, "xxxxxxxx"...)
	_ = append(e.Campaign, "xxxxxxxx"...)
	if string(e.JSON()) != before {
		t.Errorf("appending to props or campaign changed the encoding:\n%s\n%s", e.JSON(), before)
	}
}
