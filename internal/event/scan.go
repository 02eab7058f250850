package event

import "math/bits"

// maxDepth is encoding/json's limit on nesting, which ValidItems keeps so
// as to accept exactly what json.Valid accepts.
const maxDepth = 10000

// Batch is a /collect body split into its events, for FromItem. A Batch
// may be parsed again, for the next body, once its items are done with.
type Batch struct {
	// Items are the elements of the body when it is an array, or else the
	// body itself; they are sub-slices of the body: nothing is copied.
	Items   []Item
	members []member
	// Count is how many items the body has. When MaxItems is more than 0,
	// Parse records at most MaxItems of them in Items, with their members:
	// a body of many tiny items, refused for its length, then costs no
	// more memory than one of MaxItems items (an Item is 56 bytes, the
	// item "0," two).
	Count    int
	MaxItems int
}

// Item is one event of a /collect body as Batch.Parse found it: its JSON,
// trimmed of white space, and, when it is an object, its members.
type Item struct {
	Raw     []byte
	object  bool
	members []member
}

// member is one key (the inside of its quotes) and raw value of an object.
type member struct{ key, value []byte }

// Reset forgets the items, so that the Batch holds no body. It lets go of
// the members' array when one object's many members grew it (a valid
// event has at most 9), so that a pooled Batch does not keep it.
func (bt *Batch) Reset() {
	clear(bt.Items)
	clear(bt.members)
	if cap(bt.members) > max(1024, 16*bt.MaxItems) {
		bt.members = nil
	}
	bt.Items, bt.members, bt.Count = bt.Items[:0], bt.members[:0], 0
}

// Parse reports whether body is valid JSON, exactly as json.Valid does,
// and sets Items, each object's members found in the same pass: one pass
// over the body where json.Valid, splitting and decoding took three, and
// several times faster than json.Valid alone, which calls a function for
// each byte.
func (bt *Batch) Parse(body []byte) bool {
	bt.Reset()
	var stackBuf [32]byte
	stack := stackBuf[:0] // the open containers, '{' or '['
	b := body
	i := skipSpace(b, 0)
	topArray := i < len(b) && b[i] == '['
	itemDepth := 1 // the depth of an item object's members
	if topArray {
		itemDepth = 2
	}
	itemStart, firstMember := i, 0
	var key []byte // the item member's key whose value is being read
	valueStart := 0
	for {
		// A value starts at i, after white space.
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		if topArray && len(stack) == 1 {
			itemStart, firstMember = i, len(bt.members)
		}
		switch c := b[i]; c {
		case '{', '[':
			if len(stack) == maxDepth {
				return false
			}
			stack = append(stack, c)
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == c+2 { // '}' or ']': empty
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '[' {
				continue // to the first element
			}
			keyStart := i + 1
			if i = checkKey(b, i); i < 0 {
				return false
			}
			if len(stack) == itemDepth {
				key, valueStart = b[keyStart:keyEnd(b, i)], skipSpace(b, i)
			}
			continue // to the first member's value
		case '"':
			if i = skipStringValid(b, i); i < 0 {
				return false
			}
		case 't':
			if i = literal(b, i, "true"); i < 0 {
				return false
			}
		case 'f':
			if i = literal(b, i, "false"); i < 0 {
				return false
			}
		case 'n':
			if i = literal(b, i, "null"); i < 0 {
				return false
			}
		default:
			if i = number(b, i); i < 0 {
				return false
			}
		}
		// A value ended at i: close what it ends, up to the next one.
		for {
			keep := bt.MaxItems <= 0 || bt.Count < bt.MaxItems // this item is recorded
			if len(stack) == itemDepth && stack[itemDepth-1] == '{' && keep {
				bt.members = append(bt.members, member{key, b[valueStart:i]})
			}
			if len(stack) == itemDepth-1 {
				if keep {
					it := Item{Raw: b[itemStart:i], object: b[itemStart] == '{'}
					if it.object {
						it.members = bt.members[firstMember:len(bt.members):len(bt.members)]
					}
					bt.Items = append(bt.Items, it)
				}
				bt.Count++
			}
			i = skipSpace(b, i)
			if len(stack) == 0 {
				return i == len(b)
			}
			if i >= len(b) {
				return false
			}
			open := stack[len(stack)-1]
			if b[i] == open+2 { // '}' or ']'
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if b[i] != ',' {
				return false
			}
			i++
			if open == '{' {
				keyStart := skipSpace(b, i) + 1
				if i = checkKey(b, keyStart-1); i < 0 {
					return false
				}
				if len(stack) == itemDepth {
					key, valueStart = b[keyStart:keyEnd(b, i)], skipSpace(b, i)
				}
			}
			break
		}
	}
}

// keyEnd returns the index of the closing quote of the key that checkKey
// checked, given the index after its colon.
func keyEnd(b []byte, afterColon int) int {
	i := afterColon - 2
	for b[i] != '"' { // white space before the colon
		i--
	}
	return i
}

// checkKey checks a member's key and colon at b[i:], and returns the index
// after the colon, or -1.
func checkKey(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = skipStringValid(b, i); i < 0 {
		return -1
	}
	if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
		return -1
	}
	return i + 1
}

// skipStringValid checks the JSON string that opens at b[i] and returns the
// index after its closing quote, or -1. As encoding/json, it takes any
// byte from 0x20 up, valid UTF-8 or not.
func skipStringValid(b []byte, i int) int {
	i++
	for {
		for len(b)-i >= 8 { // 8 plain bytes at a time, up to the first special one
			if m := specialLanes(load8(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++
		}
	}
}

// number checks the JSON number that starts at b[i] and returns the index
// after it, or -1.
func number(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// literal checks that b[i:] starts with lit and returns the index after
// it, or -1.
func literal(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// isSpace reports whether c is JSON white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
