package postgres

import "bytes"

// PostgreSQL stores a jsonb object's keys sorted, shorter keys first and
// keys of equal length bytewise, and sorts each object it parses (a qsort
// of the object's pairs). An event's JSON has its keys in the order of the
// schema, 16 at the top level of a pixel event with the default
// enrichment. Sent in jsonb's order, they only pass qsort's check that its
// input is sorted: PostgreSQL 15, under callgrind, ran 88k instructions
// per such event instead of 101k, and its CPU per event fell about as
// much (10.9 against 12.0 µs, COPYs of 5,000); the sink spends some 0.35
// µs per event on it (BenchmarkJSONBOrder). The stored value is the same:
// jsonb keeps no key order, and duplicate keys (which events never have)
// keep their order, so that the last still wins.

// member is one key and value of an object, as offsets in its JSON text:
// no pointers, so that filling o.members costs no write barriers.
type member struct {
	start, end int // the member: its key's opening quote to its value's end
	keyEnd     int // the key's closing quote
}

// key returns m's key in j, without its quotes.
func (m member) key(j []byte) []byte { return j[m.start+1 : m.keyEnd] }

// jsonbOrder reorders the members of a top-level JSON object in jsonb's
// key order. It tries the order it found for the previous object first:
// an event's keys come in the same order as the event before's.
type jsonbOrder struct {
	members []member
	perm    []int // the members in jsonb's order, as indexes: the last object's
}

// appendSorted appends j to b with its top-level members in jsonb's key
// order. Nested values are copied as they are. When j is not an object of
// the shape an event encodes (no whitespace between tokens, no escapes in
// keys), it appends j as it is: the server sorts it all the same.
func (o *jsonbOrder) appendSorted(b, j []byte) []byte {
	if !o.scan(j) {
		return append(b, j...)
	}
	if !o.ascending(j) {
		o.perm = o.perm[:0]
		for i := range o.members {
			o.perm = append(o.perm, i)
		}
		// An insertion sort, stable: a key's pairs keep their order.
		for i := 1; i < len(o.perm); i++ {
			for k := i; k > 0 && jsonbLess(o.members[o.perm[k]].key(j), o.members[o.perm[k-1]].key(j)); k-- {
				o.perm[k], o.perm[k-1] = o.perm[k-1], o.perm[k]
			}
		}
	}
	b = append(b, '{')
	for i, p := range o.perm {
		if i > 0 {
			b = append(b, ',')
		}
		m := o.members[p]
		b = append(b, j[m.start:m.end]...)
	}
	return append(b, '}')
}

// ascending reports whether o.perm puts the members just scanned in
// strictly ascending jsonb order: no key twice, none out of place.
func (o *jsonbOrder) ascending(j []byte) bool {
	if len(o.perm) != len(o.members) {
		return false
	}
	for k := 1; k < len(o.perm); k++ {
		if !jsonbLess(o.members[o.perm[k-1]].key(j), o.members[o.perm[k]].key(j)) {
			return false
		}
	}
	return true
}

// jsonbLess is jsonb's key order: by length, then bytewise.
func jsonbLess(a, b []byte) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return bytes.Compare(a, b) < 0
}

// scan splits the object j into o.members, and reports whether it could.
func (o *jsonbOrder) scan(j []byte) bool {
	o.members = o.members[:0]
	if len(j) < 2 || j[0] != '{' || j[len(j)-1] != '}' {
		return false
	}
	if len(j) == 2 {
		return true
	}
	i := 1
	for {
		if j[i] != '"' {
			return false
		}
		v := i + 1
		for v < len(j) && j[v] != '"' {
			if j[v] == '\\' {
				return false // the server compares keys unescaped
			}
			v++
		}
		keyEnd := v
		if v++; v >= len(j) || j[v] != ':' {
			return false
		}
		e := skipValue(j, v+1)
		if e < 0 || e >= len(j) {
			return false
		}
		o.members = append(o.members, member{start: i, end: e, keyEnd: keyEnd})
		switch j[e] {
		case ',':
			i = e + 1
		case '}':
			return e == len(j)-1
		default:
			return false
		}
	}
}

// skipValue returns the index just past the JSON value at j[i], or -1.
// It does not validate the value; the server does.
func skipValue(j []byte, i int) int {
	if i >= len(j) {
		return -1
	}
	switch j[i] {
	case '"':
		return skipString(j, i)
	case '{', '[':
		depth := 0
		for ; i < len(j); i++ {
			switch c := j[i]; {
			case !structural[c]:
			case c == '"':
				for i++; i < len(j) && j[i] != '"'; i++ {
					if j[i] == '\\' {
						i++
					}
				}
			case c == '{' || c == '[':
				depth++
			default: // '}' or ']'
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	start := i
	for i < len(j) && isScalarByte(j[i]) { // a number, true, false or null
		i++
	}
	if i == start {
		return -1
	}
	return i
}

// structural marks the bytes skipValue stops at inside an object or array.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// isScalarByte reports whether c may be part of a number, true, false or null.
func isScalarByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
}

// skipString returns the index just past the string whose opening quote
// is j[i], or -1.
func skipString(j []byte, i int) int {
	for i++; ; {
		q := bytes.IndexByte(j[i:], '"')
		if q < 0 {
			return -1
		}
		i += q
		slashes := 0
		for k := i - 1; j[k] == '\\'; k-- {
			slashes++
		}
		i++
		if slashes%2 == 0 {
			return i
		}
	}
}
