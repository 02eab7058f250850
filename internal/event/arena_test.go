package event

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

const idKey = `"event_id":"`

// withoutID returns an encoding with its event_id's value blanked, and
// that value.
func withoutID(t testing.TB, raw []byte) (string, string) {
	t.Helper()
	s := string(raw)
	i := strings.Index(s, idKey)
	if i < 0 || len(s) < i+len(idKey)+36 {
		t.Fatalf("no event_id in %s", s)
	}
	i += len(idKey)
	return s[:i] + s[i+36:], s[i : i+36]
}

// arenaSeeds are /collect bodies: items valid and not, escapes, spaced
// props, lone surrogates (rewritten in place in the copy of the body),
// ids given and made.
var arenaSeeds = []string{
	`[{"type":"a","title":"t1","url":"https://x.example/?utm_source=n","props":{"k":"v"}},` +
		`{"type":"b","title":"bad","sent_at":"x"},{"type":"c"},3,` +
		`{"type":"d","event_id":"0190A5B2-1C3D-7E4F-8A9B-0C1D2E3F4A5B","title":"a\"b\\u00e9","props":{ "k" : [1, "\ud800"] }},` +
		`{"type":"e","visitor_id":"","session_id":"s","props":null},{"type":"f","referrer":"r","props":{"a":"\udc00x","b":{"c":"\ud83d\ude00"}}}]`,
	`{"type":"only","props":{"n":1e3}}`,
	`[{"type":"x","props":{"a":1,"a":2}},{"title":"no type"},{"type":"y","url":"u"}]`,
	` [ {"type" : "z" , "title" : "" } ] `,
	`[{"type":"b","sent_at":"2026-01-01T00:00:00Z","props":[1]},{"type":"c"},{"type":"d","props":{"x":1},"event_id":"no"},{"type":"e"}]`,
}

// FuzzArena checks that the events an arena builds encode, and fail,
// exactly as those FromItem builds one by one, ids aside, which are new
// and distinct; that they keep nothing of the body, which the handler
// reuses; and that each event's encoding and props are its own: writing
// past the end of one leaves the others as they were.
func FuzzArena(f *testing.F) {
	for _, s := range arenaSeeds {
		f.Add(s)
	}
	n := mustNormalizer(f, Policy{SanitizeParams: DefaultSanitizeParams})
	m := Meta{Now: now, IP: "1.2.3.4", UserAgent: "ua", Campaign: true}
	f.Fuzz(func(t *testing.T, s string) {
		var bt Batch
		body := bytes.TrimSpace([]byte(s))
		if len(body) == 0 || !bt.Parse(body) {
			return
		}
		var want []string // each accepted item's encoding, in order
		var wantErrs []string
		for i := range bt.Items {
			e, err := n.FromItem(&bt.Items[i], m)
			if err != nil {
				wantErrs = append(wantErrs, err.Error())
				continue
			}
			wantErrs = append(wantErrs, "")
			j, _ := withoutID(t, e.JSON())
			want = append(want, j)
		}
		a := NewArena(bt.Items)
		for i := range bt.Items {
			err := n.AddItem(a, &bt.Items[i], m)
			if (err == nil) != (wantErrs[i] == "") || (err != nil && err.Error() != wantErrs[i]) {
				t.Fatalf("item %d of %s: error %v, want %q", i, s, err, wantErrs[i])
			}
		}
		events := n.Seal(a, m)
		if len(events) != len(want) {
			t.Fatalf("%s: %d events sealed, want %d", s, len(events), len(want))
		}
		ids := map[string]bool{}
		for i, e := range events {
			j, id := withoutID(t, e.JSON())
			if j != want[i] {
				t.Fatalf("event %d of %s encodes as\n%s\nwant\n%s", i, s, j, want[i])
			}
			if ids[id] || id != e.EventID {
				t.Fatalf("event %d of %s: id %s given twice, or not its EventID %s", i, s, id, e.EventID)
			}
			ids[id] = true
		}
		before := make([]string, len(events))
		for i, e := range events {
			before[i] = fields(e)
		}
		for i := range body {
			body[i] = '#' // the handler's buffer, reused by the next request
		}
		for _, e := range events {
			for _, b := range [][]byte{e.JSON(), e.Props} {
				for i := range b[len(b):cap(b)] {
					b[len(b):cap(b)][i] = '!' // what an append in place would write
				}
			}
		}
		for i, e := range events {
			if after := fields(e); after != before[i] {
				t.Fatalf("event %d of %s changed from\n%s\nto\n%s", i, s, before[i], after)
			}
		}
	})
}

// TestArenaKeepsNoPadding: events from an arena hold about what they would
// alone, whatever else their body held: white space, or items rejected.
func TestArenaKeepsNoPadding(t *testing.T) {
	n := mustNormalizer(t, Policy{})
	const requests = 32
	valid := `{"type":"view","url":"https://a.example/","title":"t"}`
	for _, tc := range []struct{ name, body string }{
		{"white space", "[" + valid + strings.Repeat(" ", 256<<10) + "]"},
		{"rejected items", "[" + valid + strings.Repeat(`,{"type":"view","title":"t","sent_at":"x"}`, 400) + "]"},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		kept := make([][]*Event, 0, requests)
		for range requests {
			body := []byte(tc.body)
			var bt Batch
			if !bt.Parse(body) {
				t.Fatal("valid body refused")
			}
			a := NewArena(bt.Items)
			for i := range bt.Items {
				n.AddItem(a, &bt.Items[i], Meta{Now: now})
			}
			kept = append(kept, n.Seal(a, Meta{Now: now}))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		// Alone, an event of 100 bytes of JSON holds about 1 KiB with its
		// struct.
		if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > requests*4<<10 {
			t.Errorf("%s: %d events of %d bytes of JSON hold %d KiB", tc.name, requests, kept[0][0].Size(), held>>10)
		}
		runtime.KeepAlive(kept)
	}
}

// TestArenaAllocs: a request's events take a few allocations, not a few
// each.
func TestArenaAllocs(t *testing.T) {
	n := mustNormalizer(t, Policy{SanitizeParams: DefaultSanitizeParams})
	m := Meta{Now: now, IP: "1.2.3.4", UserAgent: "ua"}
	item := `{"type":"add_to_cart","url":"https://shop.example/p/42","visitor_id":"v1234567","props":{"sku":"W-42","qty":2}}`
	body := []byte("[" + strings.Repeat(item+",", 19) + item + "]")
	var bt Batch
	if !bt.Parse(body) {
		t.Fatal("body does not parse")
	}
	allocs := testing.AllocsPerRun(100, func() {
		a := NewArena(bt.Items)
		for i := range bt.Items {
			if err := n.AddItem(a, &bt.Items[i], m); err != nil {
				t.Fatal(err)
			}
		}
		n.Seal(a, m)
	})
	// Per event, its text and props (see decodeMembers); per request, the
	// arena, its structs, the ids, the encodings and the slice of them.
	if allocs > 2*20+5 {
		t.Errorf("20 events took %v allocations, want at most %d", allocs, 2*20+5)
	}
}

// fields is e's encoding and the fields an arena cuts from its copy.
func fields(e *Event) string {
	return strings.Join([]string{string(e.JSON()), e.EventID, e.Type, e.URL, e.Referrer, e.Title,
		e.VisitorID, e.SessionID, string(e.Props)}, "|")
}
