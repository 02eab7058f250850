package replay

import (
	"strings"
	"testing"

	"github.com/gotrack/gotrack/internal/deadletter"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// TestParse tells dead-letter lines from event lines by decoding them, so
// that spacing, key order, or an event whose content mentions "event": do
// not fool it.
func TestParse(t *testing.T) {
	e := sinktest.Events(2)[1] // has props
	ev := string(e.JSON())
	for _, tc := range []struct {
		name, line, sink string
	}{
		{"dead letter", `{"sink":"postgres","reason":"rejected","error":"x","failed_at":"2026-11-22T12:00:00Z","event":` + ev + `}`, "postgres"},
		{"dead letter with spaces", `{ "sink" : "kafka", "reason" : "shutdown", "event" : ` + ev + ` }`, "kafka"},
		{"dead letter, keys reordered", `{"event":` + ev + `,"reason":"rejected","sink":"log"}`, "log"},
		{"plain event", ev, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, sink, err := Parse([]byte(tc.line))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.EventID != e.EventID || sink != tc.sink {
				t.Errorf("Parse = event %s, sink %q; want %s, %q", got.EventID, sink, e.EventID, tc.sink)
			}
		})
	}
	// An event whose props hold an "event" key stays an event.
	withEvent := strings.Replace(ev, `"props":{`, `"props":{"event":{"x":1},`, 1)
	if withEvent == ev {
		t.Fatal("test event has no props")
	}
	if _, sink, err := Parse([]byte(withEvent)); err != nil || sink != "" {
		t.Errorf("an event with an \"event\" prop parsed as sink %q, err %v", sink, err)
	}
	if _, err := deadletter.Decode([]byte(ev)); err == nil {
		t.Error("deadletter.Decode took a plain event for a dead-letter line")
	}
}
