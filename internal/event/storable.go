package event

import (
	"bytes"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// What every sink can store: the checks that keep out of an event what one
// sink would refuse (PostgreSQL's jsonb and text above all), so that an
// accepted event is never dead-lettered for its content. checkProps applies
// them to props; finish, to the string fields.

// checkEscapes rejects a \u0000 escape in the inside of a JSON string, and
// replaces, in place, each lone surrogate escape with \ufffd (the same six
// bytes long).
func checkEscapes(s []byte) error {
	for i := 0; i < len(s); i++ {
		j := bytes.IndexByte(s[i:], '\\')
		if j < 0 {
			return nil
		}
		i += j
		if s[i+1] != 'u' {
			i++ // \" \\ \/ \b \f \n \r \t
			continue
		}
		switch r := hex4(s[i+2 : i+6]); {
		case r == 0:
			return errField("props", "holds a NUL character (\\u0000), which PostgreSQL cannot store")
		case r < 0xDC00 && utf16.IsSurrogate(r) && i+12 <= len(s) && s[i+6] == '\\' && s[i+7] == 'u' &&
			utf16.DecodeRune(r, hex4(s[i+8:i+12])) != utf8.RuneError:
			i += 6 // a valid pair: skip its high half here, its low half below
		case utf16.IsSurrogate(r):
			copy(s[i+2:i+6], "fffd")
		}
		i += 5
	}
	return nil
}

// hex4 decodes four hex digits, valid as JSON guarantees.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// numberInRange reports whether a JSON number fits a float64, neither
// overflowing it nor underflowing to zero, with an exponent within ±999
// (PostgreSQL's numeric refuses 0e-999999, though it is zero). Short
// numbers without an exponent always fit.
func numberInRange(num []byte) bool {
	e := bytes.IndexAny(num, "eE")
	if e < 0 && len(num) <= 20 {
		return true
	}
	mantissa := num
	if e >= 0 {
		exp, err := strconv.Atoi(string(num[e+1:]))
		if err != nil || exp < -999 || exp > 999 {
			return false
		}
		mantissa = num[:e]
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil {
		return false // ±Inf: out of range
	}
	return f != 0 || len(bytes.Trim(mantissa, "-0.")) == 0 // a zero, not an underflow
}

// validUTF8 returns s with each byte that is not part of valid UTF-8
// replaced by U+FFFD, as encoding/json encodes it. Only a pixel's query can
// carry such bytes: a /collect body must be valid UTF-8 as a whole.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\uFFFD"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return string(b)
}

func errNUL(field string) error {
	return errField(field, "holds a NUL character (\\u0000), which PostgreSQL cannot store")
}

// CheckStorable applies checkProps's storability rules to raw, a valid JSON
// value built by another ingest API (the Segment-compatible one), without
// /collect's bounds on the size and number of keys of props, which that API
// bounds by its message size instead: a \u0000 escape, a number beyond
// float64's range or a key given twice in one object is rejected, nesting
// deeper than maxDepth is rejected, and a lone surrogate escape becomes
// \ufffd in place. Errors name field.
func CheckStorable(field string, raw []byte, maxDepth int) error {
	var (
		keys    [][]byte
		frames  []int // per open container: index of its first key, or -1 for an array
		wantKey bool
	)
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '"':
			end := skipString(raw, i)
			str := raw[i+1 : end]
			if err := checkEscapes(str); err != nil {
				return errField(field, err.(*FieldError).Reason)
			}
			if wantKey {
				key := str
				if bytes.IndexByte(key, '\\') >= 0 {
					key = []byte(unquote(key))
				}
				for _, k := range keys[frames[len(frames)-1]:] {
					if bytes.Equal(k, key) {
						return errField(field, "has the key "+strconv.Quote(truncate(string(key), MaxTypeLen))+" twice")
					}
				}
				keys = append(keys, key)
				wantKey = false
			}
			i = end
		case '{', '[':
			if len(frames) >= maxDepth {
				return errField(field, "is nested deeper than "+strconv.Itoa(maxDepth)+" levels")
			}
			if c == '{' {
				frames = append(frames, len(keys))
			} else {
				frames = append(frames, -1)
			}
			wantKey = c == '{'
		case '}', ']':
			if f := frames[len(frames)-1]; f >= 0 {
				keys = keys[:f]
			}
			frames = frames[:len(frames)-1]
		case ',':
			wantKey = frames[len(frames)-1] >= 0
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			end := i + 1
			for end < len(raw) && isNumberByte(raw[end]) {
				end++
			}
			if !numberInRange(raw[i:end]) {
				return errField(field, "holds the number "+cutMarked(string(raw[i:end]), 32)+", out of range (a number must fit a float64, with an exponent within ±999)")
			}
			i = end - 1
		}
	}
	return nil
}
