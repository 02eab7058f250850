package postgres

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// topKeys returns the keys of the JSON object j, in order, or fails.
func topKeys(t *testing.T, j []byte) []string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(j))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s is not an object: %v", j, err)
	}
	var keys []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestJSONBOrderSorts(t *testing.T) {
	var o jsonbOrder
	for _, j := range [][]byte{
		pixelEvents(1)[0].JSON(),
		pixelEvents(1)[0].JSON(), // the same keys again: the order found before
		sinktest.Events(1)[0].JSON(),
		[]byte(`{"bb":1,"a":[1,{"z":"}\"],"}],"ccc":"x\\","b":{"q":{"r":null}},"aa":-1.5e+3,"":true}`),
		[]byte(`{"only":false}`),
		[]byte(`{"bb":"x\\\",\"a\":\\","a":"\\"}`), // escaped quotes and backslashes in values
		[]byte(`{"b":1,"a":2}`),
		[]byte(`{"x":1,"x":2}`), // keys of the lengths before: the order found then would put the last x first
		[]byte(`{"x":1,"y":2,"x":3}`),
		[]byte(`{}`),
	} {
		got := o.appendSorted([]byte("prefix"), j)
		got, ok := bytes.CutPrefix(got, []byte("prefix"))
		if !ok || len(got) != len(j) {
			t.Fatalf("appendSorted(%s) = %s", j, got)
		}
		var want, have map[string]json.RawMessage // the last of a key's values, as jsonb keeps
		if err := json.Unmarshal(j, &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(got, &have); err != nil {
			t.Fatalf("appendSorted(%s) = %s: %v", j, got, err)
		}
		if !mapsEqual(want, have) {
			t.Errorf("appendSorted(%s) = %s: other members", j, got)
		}
		keys := topKeys(t, got)
		if !slices.IsSortedFunc(keys, func(a, b string) int {
			if len(a) != len(b) {
				return len(a) - len(b)
			}
			return bytes.Compare([]byte(a), []byte(b))
		}) {
			t.Errorf("appendSorted(%s): keys %q not in jsonb's order", j, keys)
		}
	}
}

func mapsEqual(a, b map[string]json.RawMessage) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestJSONBOrderKeepsOddInput: what the scanner does not expect is sent as
// it is, for the server to sort.
func TestJSONBOrderKeepsOddInput(t *testing.T) {
	var o jsonbOrder
	for _, j := range []string{
		`{"b":1, "a":2}`, `{"b" :1,"a":2}`, `{"b": "x,y","a":2}`, `{"b":1 ,"a":2}`, // whitespace
		`{"b\u0041":1,"a":2}`, `{"b\"":1,"a":2}`, // escaped keys
		`["b","a"]`, `"x"`, `{"b":1,"a":2`, `{"b":"x,"a":2}`, `{"b":[1,"a":2}`, `{"b":1,"a"}`, `{"b":1,}`, `{,}`, `{"b":1}x`, ``,
	} {
		if got := o.appendSorted(nil, []byte(j)); string(got) != j {
			t.Errorf("appendSorted(%s) = %s; want it unchanged", j, got)
		}
	}
}

// BenchmarkJSONBOrder is the sink's cost of sorting a pixel event's keys.
func BenchmarkJSONBOrder(b *testing.B) {
	j := pixelEvents(1)[0].JSON()
	var o jsonbOrder
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(j)))
	for b.Loop() {
		buf = o.appendSorted(buf[:0], j)
	}
}

// TestCopyStreamPayloads: a jsonb payload goes into the COPY stream with
// its keys in jsonb's order; a json payload, which PostgreSQL stores as
// text, goes exactly as the event encodes it.
func TestCopyStreamPayloads(t *testing.T) {
	e := pixelEvents(1)[0]
	var o jsonbOrder
	sorted := o.appendSorted(nil, e.JSON())
	if bytes.Equal(sorted, e.JSON()) {
		t.Fatal("the pixel event's keys are in jsonb's order already; the test needs another event")
	}
	for _, tc := range []struct {
		kind payloadKind
		want []byte
	}{{payloadJSONB, append([]byte{1}, sorted...)}, {payloadJSON, e.JSON()}} {
		stream, err := io.ReadAll(&copyReader{batch: []*event.Event{e}, kind: tc.kind})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(stream, append(tc.want, 0xff, 0xff)) {
			t.Errorf("kind %d: the stream does not end with the payload %s", tc.kind, tc.want)
		}
	}
}

// TestStoredPayloadUnchanged: what the table holds is what PostgreSQL
// makes of each event's JSON as encoded, on the fast path and through
// staging, for events of every shape: jsonb's key order is invisible.
func TestStoredPayloadUnchanged(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	events := append(sinktest.Events(20), pixelEvents(1)[0])
	odd := sinktest.Events(1)[0]
	odd.Title = `say "hi", \\ ok}`
	odd.Props = []byte(`{"z":{"b":[1,"}\"]"],"a":null},"ya":"\u00e9\"","a":-1.5e3,"ee":true,"d":"","c":[],"bb":{}}`)
	odd.Seal()
	events = append(events, odd)
	if err := s.WriteBatch(t.Context(), events[:10]); err != nil {
		t.Fatal(err)
	}
	// The rest with the first again: a conflict, so all go through staging.
	if _, err := s.WriteBatchDedup(t.Context(), append(events[10:], events[0])); err != nil {
		t.Fatal(err)
	}
	c := pgtest.Conn(t)
	for _, e := range events {
		var same bool
		var stored string
		if err := c.QueryRow(t.Context(), `SELECT payload = $2::jsonb, payload::text FROM `+pgx.Identifier{table}.Sanitize()+
			` WHERE event_id = $1`, e.EventID, string(e.JSON())).Scan(&same, &stored); err != nil {
			t.Fatalf("event %s: %v", e.EventID, err)
		}
		var want string
		if err := c.QueryRow(t.Context(), `SELECT $1::jsonb::text`, string(e.JSON())).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if !same || stored != want {
			t.Errorf("event %s: stored %s\nwant %s", e.EventID, stored, want)
		}
	}
}

// FuzzJSONBOrder: whatever the input, appendSorted returns it unchanged or
// as the same members in jsonb's key order, of the same length, and valid
// JSON exactly when the input is (the scanner does not validate values:
// an invalid one stays invalid wherever it moves, and the server rejects
// it). Duplicate keys keep their order (the last wins in jsonb).
func FuzzJSONBOrder(f *testing.F) {
	f.Add([]byte(`{"b":1,"a":"x\"y","c":{"d":[1,"}"]}}`))
	f.Add(pixelEvents(1)[0].JSON())
	f.Add([]byte(`{"x":1,"x":2}`))
	f.Fuzz(func(t *testing.T, j []byte) {
		var o jsonbOrder
		o.appendSorted(nil, []byte(`{"bb":1,"a":2}`)) // an order to reuse, or not
		got := o.appendSorted(nil, j)
		if bytes.Equal(got, j) {
			return
		}
		if len(got) != len(j) {
			t.Fatalf("appendSorted(%s) = %s: another length", j, got)
		}
		if !json.Valid(j) {
			if json.Valid(got) {
				t.Fatalf("appendSorted made invalid JSON %s valid: %s", j, got)
			}
			return
		}
		var want, have map[string]json.RawMessage
		if json.Unmarshal(j, &want) != nil || json.Unmarshal(got, &have) != nil || !mapsEqual(want, have) {
			t.Fatalf("appendSorted(%s) = %s: other members", j, got)
		}
		if !utf8.Valid(j) {
			return // the decoder replaces what is not UTF-8 (which the server refuses), so the keys are not the bytes sorted
		}
		keys := topKeys(t, got)
		for i := 1; i < len(keys); i++ {
			if jsonbLess([]byte(keys[i]), []byte(keys[i-1])) {
				t.Fatalf("appendSorted(%s) = %s: keys out of jsonb's order", j, got)
			}
		}
	})
}
