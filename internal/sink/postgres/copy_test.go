package postgres

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

func TestAppendUUID(t *testing.T) {
	want := []byte{0x01, 0x93, 0x4f, 0x3a, 0x7b, 0x2c, 0x7d, 0xef, 0x8a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78}
	for _, s := range []string{"01934f3a-7b2c-7def-8abc-def012345678", "01934F3A-7B2C-7DEF-8ABC-DEF012345678"} {
		if got, ok := appendUUID(nil, s); !ok || !bytes.Equal(got, want) {
			t.Errorf("appendUUID(%q) = %x, %v; want %x", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "01934f3a7b2c7def8abcdef012345678", "01934f3a-7b2c-7def-8abc-def01234567g",
		"01934f3a-7b2c-7def-8abc_def012345678", "01934f3a-7b2c-7def-8abc-def0123456789"} {
		if _, ok := appendUUID(nil, s); ok {
			t.Errorf("appendUUID(%q) accepted it", s)
		}
	}
}

// TestCopyReaderReadSizes: the stream is the same whatever the size of
// the reads, including reads smaller than one tuple.
func TestCopyReaderReadSizes(t *testing.T) {
	events := sinktest.Events(50)
	var want []byte
	for _, size := range []int{1, 7, 100, 65531} {
		var out bytes.Buffer
		if _, err := io.CopyBuffer(&out, struct{ io.Reader }{&copyReader{batch: events, kind: payloadJSONB}}, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		if want == nil {
			want = out.Bytes()
			if !bytes.HasPrefix(want, copyHeader) || !bytes.HasSuffix(want, []byte{0xff, 0xff}) {
				t.Fatalf("the stream lacks the header or the trailer")
			}
			continue
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("reads of %d bytes give %d bytes, reads of 1 byte %d", size, out.Len(), len(want))
		}
	}
}

// roundTrip writes events to table through s and checks every column of
// every row against its event.
func roundTrip(t *testing.T, s *Sink, table string, events []*event.Event) {
	t.Helper()
	if err := s.WriteBatch(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	rows, err := pgtest.Conn(t).Query(context.Background(),
		`SELECT event_id::text, received_at, type, source, payload::text FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*event.Event{}
	for _, e := range events {
		byID[e.EventID] = e
	}
	n := 0
	for rows.Next() {
		var id, typ, source, payload string
		var at time.Time
		if err := rows.Scan(&id, &at, &typ, &source, &payload); err != nil {
			t.Fatal(err)
		}
		e := byID[id]
		if e == nil || !at.Equal(e.ReceivedAt.Truncate(time.Microsecond)) || typ != e.Type || source != string(e.Source) {
			t.Fatalf("row %s %v %s %s does not match its event %+v", id, at, typ, source, e)
		}
		if d, err := event.Decode([]byte(payload)); err != nil || d.EventID != id {
			t.Fatalf("row %s: payload %s does not decode to its event: %v", id, payload, err)
		}
		n++
	}
	if rows.Err() != nil || n != len(events) {
		t.Fatalf("table holds %d rows (%v), want %d", n, rows.Err(), len(events))
	}
}

// TestTablesOfOtherTypes: a table created beforehand with a json payload
// takes the fast path, encoded as json; one whose columns differ more
// (event_id text, received_at timestamp) has each value converted by pgx. Both
// hold every event, and both deduplicate a batch written again.
func TestTablesOfOtherTypes(t *testing.T) {
	for _, tc := range []struct {
		columns string
		kind    payloadKind
	}{
		{"event_id uuid PRIMARY KEY, received_at timestamptz NOT NULL, type text NOT NULL, source text, payload json NOT NULL", payloadJSON},
		{"event_id text PRIMARY KEY, received_at timestamp NOT NULL, type text NOT NULL, source text, payload jsonb NOT NULL", slowPath},
	} {
		table := pgtest.Table(t)
		if _, err := pgtest.Conn(t).Exec(t.Context(), `CREATE TABLE `+pgx.Identifier{table}.Sanitize()+` (`+tc.columns+`)`); err != nil {
			t.Fatal(err)
		}
		s := open(t, table)
		if got := payloadKind(s.kind.Load()); got != tc.kind {
			t.Errorf("%s: encoding %s, want %s", tc.columns, got, tc.kind)
		}
		events := sinktest.Events(200)
		if tc.kind == slowPath {
			for _, e := range events { // timestamp without time zone keeps the wall clock: UTC here
				e.ReceivedAt = e.ReceivedAt.UTC()
			}
		}
		roundTrip(t, s, table, events)
		if dups, err := s.WriteBatchDedup(t.Context(), events[:10]); err != nil || dups != 10 {
			t.Errorf("%s: writing 10 events again = %d duplicates, %v; want 10", tc.columns, dups, err)
		}
		s.Close(t.Context())
	}
}

// TestBadEventIDIsPermanent: an event_id that is not a UUID fails the
// batch before the COPY, as a rejection the pipeline isolates.
func TestBadEventIDIsPermanent(t *testing.T) {
	s := open(t, pgtest.Table(t))
	defer s.Close(t.Context())
	events := sinktest.Events(3)
	events[1].EventID = "not-a-uuid"
	err := s.WriteBatch(t.Context(), events)
	if !sink.IsPermanent(err) || !strings.Contains(err.Error(), `"not-a-uuid" is not a UUID`) {
		t.Fatalf("write = %v, want a permanent error naming the event_id", err)
	}
}
