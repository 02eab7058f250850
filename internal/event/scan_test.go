package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

var validItemsSeeds = []string{
	``, ` `, `{}`, `[]`, ` [ ] `, `[{}]`, `{"a":1}`, ` {"a" : [1, 2.5e-3, -0, true, false, null, "x"]} `,
	`[{"type":"a","props":{"k":[1,{"b":"]"}]}} , {"type":"b"},3,"s\"]",null]`, `[1,]`, `[,1]`, `{"a":1,}`, `{"a"}`, `{"a":}`,
	`{1:2}`, `01`, `-`, `-0`, `1.`, `1.e5`, `1e`, `1e+`, `1E-7`, `.5`, `+1`, `tru`, `truex`, `nul`, `"\u12"`, `"\u12g4"`, `"\x"`,
	"\"\x1f\"", "\"\x7f\xff\"", `"\/\b\f\n\r\t\\\""`, `{"a":1}{}`, `[1] 2`, `[[[[]]]]`, `[[[]]`, `{"a":{"b":{}}}}`, "\t[\r\n1\n]\t",
	`"abcdefghijklmnop"`, `"abcdefg\"ijklmnop"`, `["abcdefghij\\", "k"]`, `{"abcdefgh":"ijklmnopqrstuvwx"}`,
}

// FuzzValidItems checks ValidItems against encoding/json: the same verdict
// as json.Valid on every input, and, for a valid array, the elements
// json.Unmarshal finds.
func FuzzValidItems(f *testing.F) {
	for _, s := range validItemsSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		items, ok := ValidItems([]byte(s), nil)
		if want := json.Valid([]byte(s)); ok != want {
			t.Fatalf("ValidItems(%q) reports %v, json.Valid %v", s, ok, want)
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
		if len(items) != len(want) {
			t.Fatalf("ValidItems(%q) gave %d items, encoding/json %d", s, len(items), len(want))
		}
		for i := range items {
			if !bytes.Equal(items[i], want[i]) {
				t.Fatalf("ValidItems(%q): item %d is %s, want %s", s, i, items[i], want[i])
			}
		}
	})
}

// TestValidItemsDepth checks encoding/json's nesting limit, which
// ValidItems keeps: 10000 levels are valid, 10001 are not.
func TestValidItemsDepth(t *testing.T) {
	for _, depth := range []int{maxDepth, maxDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			s := []byte(strings.Repeat(open, depth) + "1" + strings.Repeat(close, depth))
			_, ok := ValidItems(s, nil)
			if want := json.Valid(s); ok != want || ok != (depth <= maxDepth) {
				t.Errorf("depth %d of %s: ValidItems %v, json.Valid %v", depth, open, ok, want)
			}
		}
	}
}
