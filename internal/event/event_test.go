package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var now = time.Date(2026, 11, 22, 10, 30, 0, 123456789, time.UTC)

func mustNormalizer(t testing.TB, p Policy) *Normalizer {
	t.Helper()
	if p.IPMode == "" {
		p.IPMode = IPFull
	}
	n, err := NewNormalizer(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFromQuery(t *testing.T) {
	n := mustNormalizer(t, Policy{SanitizeParams: DefaultSanitizeParams})
	m := Meta{Now: now, IP: "192.0.2.0", UserAgent: "UA/1", Referer: "https://ex.com/from-header"}
	e, err := n.FromQuery("e=signup&url=https%3A%2F%2Fex.com%2Fa%3Fx%3D1%26token%3Dsecret&ref=r&title=T%C3%A9&uid=v1&sid=s1"+
		"&eid=0190F0F0-0000-7000-8000-000000000001&p.plan=pro&p.n=2&cb=123", m)
	if err != nil {
		t.Fatal(err)
	}
	want := &Event{
		EventID: "0190f0f0-0000-7000-8000-000000000001", ReceivedAt: now, Type: "signup",
		URL: "https://ex.com/a?x=1", Referrer: "r", Title: "Té", VisitorID: "v1", SessionID: "s1",
		UserAgent: "UA/1", IP: "192.0.2.0", Props: json.RawMessage(`{"plan":"pro","n":"2"}`), Source: SourcePixel,
	}
	e.raw = nil
	if !reflect.DeepEqual(e, want) {
		t.Errorf("got  %+v\nwant %+v", e, want)
	}

	d, err := n.FromQuery("", m)
	if err != nil {
		t.Fatal(err)
	}
	if d.Type != DefaultType || d.URL != m.Referer || !strings.HasPrefix(d.EventID, "") || d.EventID[14] != '7' {
		t.Errorf("defaults not applied: %+v", d)
	}
}

func TestFromQueryErrors(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	for _, tc := range []struct{ query, field string }{
		{"e=bad%20type", "type"},
		{"e=" + strings.Repeat("a", MaxTypeLen+1), "type"},
		{"url=" + strings.Repeat("a", MaxURLLen+1), "url"},
		{"title=a%00b", "title"},
		{"url=%00", "url"},
		{"p.k=a%00", "p.k"},
		{"uid=a%0Ab", "visitor_id"},
		{"eid=not-a-uuid", "event_id"},
		{"eid=00000000-0000-0000-0000-000000000000", "event_id"},
		{"p.a=1&p.a=2", "p.a"},
		{"p.=1", "p."},
		{"url=%zz", "query"},
	} {
		_, err := n.FromQuery(tc.query, Meta{Now: now})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("FromQuery(%q) = %v, want an error on field %q", tc.query, err, tc.field)
		}
	}
}

// TestCanonicalText: invalid text becomes U+FFFD, as encoding/json decodes
// it, the same way in the pixel's fields, its p.* properties, and the
// strings of /collect, props included; what is valid is kept as sent.
func TestCanonicalText(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	px, err := n.FromQuery("title=a%ffb&url=https://x.example/%C3%A9%fe&p.k=%ff&p.%fe=v", Meta{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if px.Title != "a\uFFFDb" || px.URL != "https://x.example/\u00e9\uFFFD" {
		t.Errorf("pixel title %q, url %q", px.Title, px.URL)
	}
	if got, want := string(px.Props), `{"k":"\ufffd","\ufffd":"v"}`; got != want {
		t.Errorf("pixel props = %s, want %s", got, want)
	}
	col, err := n.FromJSON([]byte(`{"type":"x","title":"a\ud800b","props":{"k":"\udc00","p":"\ud83d\ude00","l":["\ud800\ud83d\ude00"],"n":[1e308,0.0,-0e-5,12345678901234567890123]}}`), Meta{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if col.Title != "a\uFFFDb" {
		t.Errorf("collect title %q", col.Title)
	}
	if got, want := string(col.Props), `{"k":"\ufffd","p":"\ud83d\ude00","l":["\ufffd\ud83d\ude00"],"n":[1e308,0.0,-0e-5,12345678901234567890123]}`; got != want {
		t.Errorf("collect props = %s, want %s", got, want)
	}
	var v any
	if err := json.Unmarshal(col.JSON(), &v); err != nil {
		t.Errorf("the event's JSON does not decode: %v", err)
	}
}

func TestFromJSON(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	e, err := n.FromJSON([]byte(`{"type":"click","sent_at":"2026-11-22T10:29:59.5+01:00",
		"props":{ "a" : [1, {"b": "c\n"}] ,"d":null}}`), Meta{Now: now, IP: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(e.Props), `{"a":[1,{"b":"c\n"}],"d":null}`; got != want {
		t.Errorf("props = %s, want %s", got, want)
	}
	if e.SentAt.IsZero() || e.Source != SourceCollect || e.IP != "10.0.0.1" {
		t.Errorf("unexpected event %+v", e)
	}
}

func TestFromJSONErrors(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	deep := `{"type":"x","props":{"a":{"b":{"c":{"d":{}}}}}}`
	var manyKeys strings.Builder
	for i := range MaxPropsKeys {
		fmt.Fprintf(&manyKeys, `"k%d":1,`, i)
	}
	many := `{"type":"x","props":{` + manyKeys.String() + `"z":1}}`
	big := `{"type":"x","props":{"k":"` + strings.Repeat("a", MaxPropsBytes) + `"}}`
	for _, tc := range []struct{ body, field string }{
		{`{}`, "type"},
		{`{"type":1}`, "type"},
		{`{"type":"x","ip":"1.2.3.4"}`, "ip"},
		{`{"type":"x","colour":"red"}`, "colour"},
		{`{"type":"x","sent_at":"yesterday"}`, "sent_at"},
		{`{"type":"x","props":[1]}`, "props"},
		{`{"type":"x","props":"s"}`, "props"},
		{deep, "props"},
		{many, "props"},
		{big, "props"},
		{`{"type":"x","visitor_id":"` + strings.Repeat("v", MaxIDLen+1) + `"}`, "visitor_id"},
		// A control character is blamed on the field that holds it.
		{`{"type":"x","visitor_id":"v\u0001"}`, "visitor_id"},
		{`{"type":"x","visitor_id":"v","session_id":"s\u0001"}`, "session_id"},
		{`[1]`, "event"},
		// What PostgreSQL's jsonb or text columns refuse is refused here,
		// naming the field, so that no sink is handed what it cannot store.
		{`{"type":"x","title":"a\u0000b"}`, "title"},
		{`{"type":"x","url":"\u0000"}`, "url"},
		{`{"type":"x","referrer":"\u0000"}`, "referrer"},
		{`{"type":"x","props":{"k":"\u0000"}}`, "props"},
		{`{"type":"x","props":{"\u0000":1}}`, "props"},
		{`{"type":"x","props":{"k":[{"j":"\u0000"}]}}`, "props"},
		{`{"type":"x","props":{"n":1e999999}}`, "props"},
		{`{"type":"x","props":{"n":-1e-999999}}`, "props"},
		{`{"type":"x","props":{"n":0e-999999}}`, "props"},
		{`{"type":"x","props":{"n":1e-400}}`, "props"},
		// Keys given twice are refused, naming the key.
		{`{"type":"x","type":"y"}`, "type"},
		{`{"type":"x","title":"a","title":"b"}`, "title"},
		{`{"type":"x","typ\u0065":"y"}`, "type"},
		{`{"type":"x","props":{},"props":{}}`, "props"},
		{`{"type":"x","props":{"k":1,"k":2}}`, "props"},
		{`{"type":"x","props":{"o":{"k":1,"\u006b":2}}}`, "props"},
	} {
		_, err := n.FromJSON([]byte(tc.body), Meta{Now: now})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("FromJSON(%.60s) = %v, want an error on field %q", tc.body, err, tc.field)
		}
	}
}

func TestClientIP(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name   string
		policy Policy
		remote string
		xff    []string
		want   string
	}{
		{"full", Policy{IPMode: IPFull}, "203.0.113.7:5000", nil, "203.0.113.7"},
		{"truncate v4", Policy{IPMode: IPTruncate}, "203.0.113.7:5000", nil, "203.0.113.0"},
		{"truncate v6", Policy{IPMode: IPTruncate}, "[2001:db8:1:2:3::4]:5000", nil, "2001:db8:1::"},
		{"truncate mapped", Policy{IPMode: IPTruncate}, "[::ffff:203.0.113.7]:1", nil, "203.0.113.0"},
		{"drop", Policy{IPMode: IPDrop}, "203.0.113.7:5000", nil, ""},
		{"spoofed xff ignored", Policy{IPMode: IPFull}, "203.0.113.7:5000", []string{"1.1.1.1"}, "203.0.113.7"},
		{"xff right-most", Policy{IPMode: IPFull, TrustProxy: true}, "127.0.0.1:1", []string{"1.1.1.1, 2.2.2.2"}, "2.2.2.2"},
		{"xff skips trusted", Policy{IPMode: IPFull, TrustProxy: true, TrustedProxies: proxies},
			"10.0.0.1:1", []string{"1.1.1.1, 3.3.3.3", "10.1.1.1"}, "3.3.3.3"},
		{"untrusted peer", Policy{IPMode: IPFull, TrustProxy: true, TrustedProxies: proxies},
			"203.0.113.9:1", []string{"1.1.1.1"}, "203.0.113.9"},
		{"garbled hop", Policy{IPMode: IPFull, TrustProxy: true, TrustedProxies: proxies},
			"10.0.0.1:1", []string{"1.1.1.1, junk, 10.2.2.2"}, "10.2.2.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustNormalizer(t, tc.policy).ClientIP(tc.remote, tc.xff); got != tc.want {
				t.Errorf("ClientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestClientIPHash(t *testing.T) {
	a := mustNormalizer(t, Policy{IPMode: IPHash, IPHashSecret: []byte("k1")})
	b := mustNormalizer(t, Policy{IPMode: IPHash, IPHashSecret: []byte("k2")})
	h1, h2 := a.ClientIP("203.0.113.7:1", nil), a.ClientIP("203.0.113.7:2", nil)
	if len(h1) != 64 || h1 != h2 {
		t.Errorf("hash not stable: %q %q", h1, h2)
	}
	if h1 == b.ClientIP("203.0.113.7:1", nil) || strings.Contains(h1, "203") {
		t.Errorf("hash does not depend on the secret or leaks the address: %q", h1)
	}
	if _, err := NewNormalizer(Policy{IPMode: IPHash}); err == nil {
		t.Error("hash mode without a secret was accepted")
	}
}

func TestSanitizeURL(t *testing.T) {
	n := mustNormalizer(t, Policy{SanitizeParams: DefaultSanitizeParams})
	for in, want := range map[string]string{
		"https://a/b":                                  "https://a/b",
		"https://a/b?x=1&Token=s&y=%20":                "https://a/b?x=1&y=%20",
		"https://a/b?password=p":                       "https://a/b",
		"https://a/cb#access_token=t&state=s":          "https://a/cb#state=s",
		"https://a/b?api%5Fkey=k#top":                  "https://a/b#top",
		"https://a/b?email=a%40b.c&session=1&keep=yes": "https://a/b?keep=yes",
	} {
		if got := n.SanitizeURL(in); got != want {
			t.Errorf("SanitizeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDoNotTrack(t *testing.T) {
	on, off := mustNormalizer(t, Policy{RespectDNT: true}), mustNormalizer(t, Policy{})
	if !on.DoNotTrack("1", "") || !on.DoNotTrack("", "1") || on.DoNotTrack("0", "") {
		t.Error("DNT or Sec-GPC not respected")
	}
	if off.DoNotTrack("1", "1") {
		t.Error("DNT respected although the policy says not to")
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID(now)
		if _, ok := ParseUUID(id); !ok || id[14] != '7' || !strings.ContainsAny(id[19:20], "89ab") {
			t.Fatalf("bad UUIDv7 %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	ms := fmt.Sprintf("%012x", now.UnixMilli())
	if id := NewID(now); id[:8]+id[9:13] != ms {
		t.Errorf("NewID(%v) = %s, want the milliseconds %s first", now, id, ms)
	}
}

// FuzzAppendJSON checks that the hand-written encoder agrees with
// encoding/json on every string, including invalid UTF-8.
func FuzzAppendJSON(f *testing.F) {
	for _, s := range []string{"plain", "quote\" back\\slash", "\x00\x1f\n\t", "\xff\xfe", "\u2028é😀", "<a&b>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Event{EventID: s, ReceivedAt: now, Type: s, URL: s, Title: s, Source: SourcePixel}
		var back Event
		if err := json.Unmarshal(e.AppendJSON(nil), &back); err != nil {
			t.Fatalf("invalid JSON for %q: %v", s, err)
		}
		want, _ := json.Marshal(s)
		var ws string
		_ = json.Unmarshal(want, &ws)
		if back.Title != ws || back.URL != ws || !back.ReceivedAt.Equal(now) {
			t.Fatalf("round trip of %q gave %q", s, back.Title)
		}
	})
}

func TestDecodeRoundTrip(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	e, err := n.FromJSON([]byte(`{"type":"x","url":"u","props":{"k":[true]},"sent_at":"2026-01-02T03:04:05Z"}`), Meta{Now: now, IP: "1.2.3.4", UserAgent: "ua"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(e.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if string(d.JSON()) != string(e.JSON()) {
		t.Errorf("round trip changed the event:\n%s\n%s", e.JSON(), d.JSON())
	}
	if _, err := Decode([]byte(`{"type":"x"}`)); err == nil {
		t.Error("Decode accepted an event without an id")
	}
}

func TestBatchItems(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`[]`, nil},
		{` [ {"a":1} , {"b":"x,]}"} ]`, []string{`{"a":1}`, `{"b":"x,]}"}`}},
		{`[{"a":[1,{"b":[2,3]}]},"s\"]",3,null]`, []string{`{"a":[1,{"b":[2,3]}]}`, `"s\"]"`, `3`, `null`}},
		{"\t{\"a\":[]}\n", []string{`{"a":[]}`}},
	} {
		var got []string
		var bt Batch
		ok := bt.Parse([]byte(tc.in))
		for _, item := range bt.Items {
			got = append(got, string(item.Raw))
		}
		if !ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%s) = %q, %v; want %q, true", tc.in, got, ok, tc.want)
		}
	}
}

// FuzzDecodeInput checks the /collect member scanner against encoding/json
// for objects of the schema's string fields, escapes and all.
func FuzzDecodeInput(f *testing.F) {
	for _, s := range []string{"plain", `quo"te`, "back\\slash", "\u00e9\U0001F600", "\x01", "a,b}:{[", ""} {
		f.Add(s, " ")
	}
	f.Fuzz(func(t *testing.T, s, space string) {
		if strings.Trim(space, " \t\r\n") != "" {
			return
		}
		v, _ := json.Marshal(s)
		raw := []byte("{" + space + `"type"` + space + ":" + space + string(v) + space + "," + `"title":` + string(v) +
			`,"props":{"k":[` + string(v) + `]}` + space + "}")
		if !json.Valid(raw) {
			return
		}
		in, err := decodeInput(raw)
		if err != nil {
			t.Fatalf("decodeInput(%s): %v", raw, err)
		}
		var want struct {
			Type, Title string
			Props       json.RawMessage
		}
		json.Unmarshal(raw, &want)
		if in.Type != want.Type || in.Title != want.Title || string(in.Props) != string(want.Props) {
			t.Fatalf("decodeInput(%s) = %q %q %s, want %q %q %s", raw, in.Type, in.Title, in.Props, want.Type, want.Title, want.Props)
		}
	})
}

func FuzzAppendReceivedAt(f *testing.F) {
	f.Add(int64(0), int64(0))
	f.Add(now.Unix(), int64(now.Nanosecond()))
	f.Add(int64(253402300799), int64(999999999)) // 9999-12-31T23:59:59.999999999Z
	var second secondCache                       // shared by the inputs: it holds another second at times
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		tm := time.Unix(sec, nsec).UTC()
		want := tm.AppendFormat(nil, "2006-01-02T15:04:05.000000000Z07:00")
		for _, cache := range []*secondCache{nil, &second, &second} { // the second time, from the cache
			if got := appendReceivedAt(nil, tm, cache); string(got) != string(want) {
				t.Fatalf("appendReceivedAt(%v) = %s, want %s (cache %v)", tm, got, want, cache != nil)
			}
		}
		if other := tm.Add(time.Second + 1); other.Year() <= 9999 {
			want := other.AppendFormat(nil, "2006-01-02T15:04:05.000000000Z07:00")
			if got := appendReceivedAt(nil, other, &second); string(got) != string(want) {
				t.Fatalf("appendReceivedAt(%v) after %v = %s, want %s", other, tm, got, want)
			}
		}
	})
}

// loneSurrogate reports whether valid JSON text holds a \u escape of a
// surrogate that is not part of a high-low pair.
func loneSurrogate(b []byte) bool {
	pendingHigh := false
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			if pendingHigh {
				return true
			}
			continue
		}
		i++
		if b[i] != 'u' {
			if pendingHigh {
				return true
			}
			continue
		}
		r, _ := strconv.ParseUint(string(b[i+1:i+5]), 16, 32)
		i += 4
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if pendingHigh {
				return true
			}
			pendingHigh = true
		case r >= 0xDC00 && r <= 0xDFFF:
			if !pendingHigh {
				return true
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return true
			}
		}
	}
	return pendingHigh
}

// hasNUL reports whether a decoded JSON value holds a NUL character in a
// string or a key.
func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.IndexByte(v, 0) >= 0
	case []any:
		return slices.ContainsFunc(v, hasNUL)
	case map[string]any:
		for k, x := range v {
			if strings.IndexByte(k, 0) >= 0 || hasNUL(x) {
				return true
			}
		}
	}
	return false
}

// FuzzFromJSONStorable: whatever FromJSON accepts encodes as what every
// sink can store: JSON that encoding/json decodes, with no NUL character,
// no lone surrogate escape, and no number beyond a float64.
func FuzzFromJSONStorable(f *testing.F) {
	for _, s := range []string{`"\u0000"`, `"\ud800"`, `"\udc00\ud800"`, `"\ud83d\ude00"`, `1e999999`, `-1e-400`, `0e-999999`,
		`{"a":1,"a":2}`, `{"a":{"\u0061":1,"a":2}}`, `[1e308,0.5,"x"]`, `{"k":"\\u0000"}`} {
		f.Add(s)
	}
	n, err := NewNormalizer(Policy{IPMode: IPFull})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, raw := range []string{
			`{"type":"x","props":{"v":` + v + `}}`,
			`{"type":"x","props":` + v + `}`,
			`{"type":"x","title":` + v + `,"url":` + v + `}`,
		} {
			if !json.Valid([]byte(raw)) || !utf8.ValidString(raw) {
				continue
			}
			e, err := n.FromJSON([]byte(raw), Meta{Now: now})
			if err != nil {
				continue
			}
			out := e.JSON()
			var decoded any
			if err := json.Unmarshal(out, &decoded); err != nil {
				t.Fatalf("%s accepted as %s, which encoding/json refuses: %v", raw, out, err)
			}
			if hasNUL(decoded) {
				t.Fatalf("%s accepted with a NUL: %s", raw, out)
			}
			if loneSurrogate(out) {
				t.Fatalf("%s accepted with a lone surrogate: %s", raw, out)
			}
		}
	})
}

// TestOutOfRangeNumberMessage: the error quotes the number as sent, and
// marks where a long one is cut, so that the client is not shown a number
// that is in range (a 401-digit integer cut to 32 digits is 1e31).
func TestOutOfRangeNumberMessage(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	long := "1" + strings.Repeat("0", 400)
	for _, tc := range []struct{ num, want string }{
		{"1e999999", "holds the number 1e999999, out of range"},
		{long, "holds the number " + long[:32] + "..., out of range"},
	} {
		_, err := n.FromJSON([]byte(`{"type":"x","props":{"n":`+tc.num+`}}`), Meta{Now: now})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FromJSON(%.40s...) = %v, want %q", tc.num, err, tc.want)
		}
	}
}
