package event

import (
	"encoding/binary"
	"net/url"
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

// appendStringByByte is appendString as it was before plainLanes: the
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

// TestPlainLanes tries each byte in each lane of a word.
func TestPlainLanes(t *testing.T) {
	for c := range 256 {
		want := c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
		for lane := range 8 {
			w := []byte("abcdefgh")
			w[lane] = byte(c)
			if got := plainLanes(binary.LittleEndian.Uint64(w)); got != want {
				t.Fatalf("plainLanes with %#x in lane %d = %v, want %v", c, lane, got, want)
			}
		}
	}
}
