package event

import (
	"bytes"
	"time"
	"unsafe"
)

// Arena allocates the events of one /collect body together: their structs,
// one copy of the body for the strings and props they keep, their ids and
// their JSON encodings, each in a few blocks per request rather than one
// per event each. The events of a request are submitted together and
// share their queues, so holding their memory together keeps it about as
// long as holding it apart. An Arena is used by one goroutine; the events
// it made outlive it.
type Arena struct {
	body   []byte  // the body the items were cut from, not kept
	copy   []byte  // a copy of body, made when an event first needs one
	events []Event // the block of structs events[next:] is free in
	next   int
	ids    []byte // the room left for ids, 36 bytes each
	json   []byte // the room left for encodings
	left   int    // events still to build, the guess for json's next block
}

// NewArena returns an arena for the n items of the /collect body body
// (items that Batch.Parse cut from it).
func NewArena(body []byte, n int) *Arena {
	return &Arena{body: body, events: make([]Event, n), left: n}
}

// event returns the next event's zeroed struct; keep takes it.
func (a *Arena) event() *Event {
	if a.next == len(a.events) {
		a.events, a.next = make([]Event, max(a.left, 1)), 0
	}
	return &a.events[a.next]
}

// cut returns the bytes of the copy of the body at s's place in the body,
// s being a sub-slice of it, or nil. They are capped at their length, so
// that an append to them copies them away rather than overwrite what
// follows them.
func (a *Arena) cut(s []byte) []byte {
	// s and body end at the end of the same array, so the difference of
	// their capacities is s's offset.
	off := cap(a.body) - cap(s)
	if off < 0 || off+len(s) > len(a.body) || (len(s) > 0 && &a.body[off] != &s[0]) {
		return nil
	}
	if a.copy == nil {
		a.copy = bytes.Clone(a.body)
	}
	return a.copy[off : off+len(s) : off+len(s)]
}

// cutString is cut as a string. The bytes under it are never written:
// the only bytes of the copy changed after it is made are those of props
// (checkProps), which no string field overlaps.
func (a *Arena) cutString(s []byte) (string, bool) {
	if len(s) == 0 {
		return "", true
	}
	c := a.cut(s)
	if c == nil {
		return "", false
	}
	return unsafe.String(unsafe.SliceData(c), len(c)), true
}

// newID is NewID, written into the arena's room for ids: 36 bytes written
// once, before the string is made, and never again.
func (a *Arena) newID(now time.Time) string {
	if len(a.ids) < 36 {
		a.ids = make([]byte, 36*max(a.left, 1))
	}
	b := a.ids[:36:36]
	a.ids = a.ids[36:]
	appendID(b[:0], now)
	return unsafe.String(unsafe.SliceData(b), 36)
}

// jsonRoom returns an empty slice with room for hint bytes, for an
// encoding: a block is made for the events still to build, guessed of the
// same size, when the last one is full.
func (a *Arena) jsonRoom(hint int) []byte {
	if len(a.json) < hint {
		a.json = make([]byte, hint*max(a.left, 1))
	}
	b := a.json[:0:hint]
	a.json = a.json[hint:]
	return b
}
