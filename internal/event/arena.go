package event

import "strings"

// Arena holds the events of one /collect body while they are built
// (Normalizer.AddItem), then seals them (Normalizer.Seal) with one
// allocation each for their structs, their new ids and their encodings,
// rather than one each per event. The blocks are sized to what the
// accepted events use, give or take an eighth of the structs, so that a
// queued event holds no more memory than it would alone: the events of a
// request are submitted together and share their queues. An Arena is used
// by one goroutine; the events it made outlive it.
type Arena struct {
	events []Event // the structs; events[next] is the next item's
	next   int
}

// NewArena returns an arena for items, those of one /collect body.
func NewArena(items []Item) *Arena {
	objects := 0
	for i := range items {
		if items[i].object { // nothing else can be an event
			objects++
		}
	}
	return &Arena{events: make([]Event, objects)}
}

// Seal gives the events of a without an event_id their new ids, made at
// m.Now, encodes them all into one block, and returns them, in the order
// of their items. a must not be used again.
func (n *Normalizer) Seal(a *Arena, m Meta) []*Event {
	events := a.events[:a.next]
	if unused := len(a.events) - a.next; unused > len(a.events)/8 {
		// More than an eighth of the objects were rejected: copy the
		// events to structs of their own, rather than keep the unused
		// ones for as long as the events are queued.
		events = append([]Event(nil), events...)
	}
	a.events = nil
	missing := 0
	for i := range events {
		if events[i].EventID == "" {
			missing++
		}
	}
	if missing > 0 {
		var ids strings.Builder
		ids.Grow(36 * missing)
		var id [36]byte
		for i := range events {
			if events[i].EventID == "" {
				ids.Write(appendID(id[:0], m.Now))
			}
		}
		all := ids.String()
		for i := range events {
			if events[i].EventID == "" {
				events[i].EventID, all = all[:36], all[36:]
			}
		}
	}
	size := 0
	for i := range events {
		size += events[i].sizeHint()
	}
	block := make([]byte, size)
	out := make([]*Event, len(events))
	for i := range events {
		e := &events[i]
		hint := e.sizeHint()
		// Capped at its hint, so that an encoding that outgrows it is
		// copied away rather than overwrite the next one.
		e.seal(block[:0:hint], &n.second)
		block = block[hint:]
		out[i] = e
	}
	return out
}
