package event

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

var batchSeeds = []string{
	``, ` `, `{}`, `[]`, ` [ ] `, `[{}]`, `{"a":1}`, ` {"a" : [1, 2.5e-3, -0, true, false, null, "x"]} `,
	`[{"type":"a","props":{"k":[1,{"b":"]"}]}} , {"type":"b"},3,"s\"]",null]`, `[1,]`, `[,1]`, `{"a":1,}`, `{"a"}`, `{"a":}`,
	`{1:2}`, `01`, `-`, `-0`, `1.`, `1.e5`, `1e`, `1e+`, `1E-7`, `.5`, `+1`, `tru`, `truex`, `nul`, `"\u12"`, `"\u12g4"`, `"\x"`,
	"\"\x1f\"", "\"\x7f\xff\"", `"\/\b\f\n\r\t\\\""`, `{"a":1}{}`, `[1] 2`, `[[[[]]]]`, `[[[]]`, `{"a":{"b":{}}}}`, "\t[\r\n1\n]\t",
	`"abcdefghijklmnop"`, `"abcdefg\"ijklmnop"`, `["abcdefghij\\", "k"]`, `{"abcdefgh":"ijklmnopqrstuvwx"}`,
}

// FuzzBatchParse checks Batch.Parse against encoding/json: the same
// verdict as json.Valid on every input; for a valid array, the elements
// json.Unmarshal finds; and for each object, the members that members, the
// scanner of FromJSON, finds in it.
func FuzzBatchParse(f *testing.F) {
	for _, s := range batchSeeds {
		f.Add(s)
	}
	var bt Batch // reused, as the handler does
	f.Fuzz(func(t *testing.T, s string) {
		ok := bt.Parse([]byte(s))
		if want := json.Valid([]byte(s)); ok != want {
			t.Fatalf("Parse(%q) reports %v, json.Valid %v", s, ok, want)
		}
		if !ok {
			return
		}
		body := bytes.TrimSpace([]byte(s))
		var want []json.RawMessage
		if body[0] != '[' {
			want = []json.RawMessage{body}
		} else if err := json.Unmarshal(body, &want); err != nil {
			t.Fatal(err)
		}
		if len(bt.Items) != len(want) || bt.Count != len(want) {
			t.Fatalf("Parse(%q) gave %d items (Count %d), encoding/json %d", s, len(bt.Items), bt.Count, len(want))
		}
		for i, it := range bt.Items {
			if !bytes.Equal(it.Raw, want[i]) {
				t.Fatalf("Parse(%q): item %d is %s, want %s", s, i, it.Raw, want[i])
			}
			if it.object != (it.Raw[0] == '{') {
				t.Fatalf("Parse(%q): item %d is an object: %v", s, i, it.object)
			}
			var ms []member
			if it.object {
				members(it.Raw, func(k, v []byte) bool { ms = append(ms, member{k, v}); return true })
			}
			if len(ms) != len(it.members) {
				t.Fatalf("Parse(%q): item %d has %d members, want %d", s, i, len(it.members), len(ms))
			}
			for j := range ms {
				if !bytes.Equal(ms[j].key, it.members[j].key) || !bytes.Equal(ms[j].value, it.members[j].value) {
					t.Fatalf("Parse(%q): item %d member %d is %s:%s, want %s:%s", s, i, j,
						it.members[j].key, it.members[j].value, ms[j].key, ms[j].value)
				}
			}
		}
	})
}

// TestBatchParseDepth checks encoding/json's nesting limit, which
// Parse keeps: 10000 levels are valid, 10001 are not.
func TestBatchParseDepth(t *testing.T) {
	for _, depth := range []int{maxDepth, maxDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			s := []byte(strings.Repeat(open, depth) + "1" + strings.Repeat(close, depth))
			var bt Batch
			ok := bt.Parse(s)
			if want := json.Valid(s); ok != want || ok != (depth <= maxDepth) {
				t.Errorf("depth %d of %s: Parse %v, json.Valid %v", depth, open, ok, want)
			}
		}
	}
}

// TestBatchParseMaxItems: with MaxItems set, Parse records only the first
// MaxItems items and their members, counts all of them, and keeps the
// verdict; Reset lets go of a members array one huge object grew, so a
// pooled Batch does not keep it.
func TestBatchParseMaxItems(t *testing.T) {
	body := []byte(`[{"type":"a","url":"u"},{"type":"b"},{"type":"c","x":1},2,{"d":4}]`)
	var all, some Batch
	some.MaxItems = 2
	if !all.Parse(body) || !some.Parse(body) {
		t.Fatal("valid body refused")
	}
	if some.Count != 5 || len(some.Items) != 2 || len(some.members) != 3 {
		t.Fatalf("Count %d, %d items, %d members; want 5, 2, 3", some.Count, len(some.Items), len(some.members))
	}
	for i, it := range some.Items {
		if !bytes.Equal(it.Raw, all.Items[i].Raw) || len(it.members) != len(all.Items[i].members) {
			t.Errorf("item %d: %s with %d members, want %s with %d", i, it.Raw, len(it.members), all.Items[i].Raw, len(all.Items[i].members))
		}
	}
	if some.Parse([]byte(`[1,2,3,]`)) {
		t.Error("invalid body past MaxItems accepted")
	}

	huge := []byte("{" + strings.Repeat(`"a":0,`, 100000) + `"a":0}`)
	var bt Batch
	bt.MaxItems = 500
	if !bt.Parse(huge) || len(bt.Items[0].members) != 100001 {
		t.Fatal("huge object not parsed whole")
	}
	bt.Reset()
	if cap(bt.members) > 16*500 {
		t.Errorf("Reset keeps room for %d members", cap(bt.members))
	}
}

// TestFromItemKeepsNoPadding: an event keeps its own fields, not the item
// it was cut from: white space padding an item (which its JSON and Size do
// not count) must not stay in memory as long as the event is queued, or a
// queue bounded in events or bytes of JSON holds far more than its bound.
func TestFromItemKeepsNoPadding(t *testing.T) {
	n, err := NewNormalizer(Policy{IPMode: IPFull})
	if err != nil {
		t.Fatal(err)
	}
	const events, pad = 32, 256 << 10
	pads := strings.Repeat(" ", pad)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	kept := make([]*Event, 0, events)
	for range events {
		body := []byte(`{"type":"view","url":"https://a.example/","title":"t"` + pads + `}`)
		var bt Batch
		if !bt.Parse(body) {
			t.Fatal("valid body refused")
		}
		e, err := n.FromItem(&bt.Items[0], Meta{Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, e)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if held := int64(after.HeapAlloc) - int64(before.HeapAlloc); held > events*pad/4 {
		t.Errorf("%d events of %d bytes of JSON each hold %d KiB", events, kept[0].Size(), held>>10)
	}
	runtime.KeepAlive(kept)
}
