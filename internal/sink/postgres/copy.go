package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// The fast path encodes a batch in PostgreSQL's binary COPY format itself,
// straight from the events into one reused buffer, rather than through
// pgx.CopyFrom, which boxes five values per row and asks the server for
// the table's column types before every COPY. It serves tables whose
// columns have the types the migrations create (see payloadKind); any
// other table goes through pgx.CopyFrom, which converts as needed.

// payloadKind is how the fast path encodes the payload column.
type payloadKind int

const (
	slowPath     payloadKind = iota // the table's columns are not the expected ones: pgx.CopyFrom
	payloadJSONB                    // payload jsonb: a version byte, then the JSON text
	payloadJSON                     // payload json: the JSON text
)

// fastColumns are the column types the fast path encodes, as format_type
// names them; payload may be jsonb or json.
var fastColumns = map[string]string{
	"event_id": "uuid", "received_at": "timestamp with time zone", "type": "text", "source": "text",
}

// payloadKindOf picks the fast path's encoding for a table whose columns
// are named to their types in cols, or slowPath.
func payloadKindOf(cols map[string]string) payloadKind {
	for name, typ := range fastColumns {
		if cols[name] != typ {
			return slowPath
		}
	}
	switch cols["payload"] {
	case "jsonb":
		return payloadJSONB
	case "json":
		return payloadJSON
	}
	return slowPath
}

// columnTypes returns the types of table's columns, by name.
func columnTypes(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, table pgx.Identifier) (map[string]string, error) {
	rows, err := q.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, table.Sanitize())
	if err != nil {
		return nil, err
	}
	cols := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		cols[name] = typ
	}
	return cols, rows.Err()
}

// copyBinary copies batch into the table of the COPY statement sql on
// tx's connection, encoding the payload as kind says. An event_id that is
// not a UUID fails the batch with a permanent error before anything is
// sent, as the server would reject the row.
func copyBinary(ctx context.Context, tx pgx.Tx, sql string, kind payloadKind, batch []*event.Event) error {
	var id [16]byte
	for _, e := range batch {
		if _, ok := appendUUID(id[:0], e.EventID); !ok {
			return sink.Permanent(fmt.Errorf("event_id %q is not a UUID", e.EventID))
		}
	}
	_, err := tx.Conn().PgConn().CopyFrom(ctx, &copyReader{batch: batch, kind: kind}, sql)
	return err
}

// copySQL is the COPY statement of the fast path into table.
func copySQL(table pgx.Identifier) string {
	return `COPY ` + table.Sanitize() + ` (event_id, received_at, type, source, payload) FROM STDIN (FORMAT binary)`
}

// copyReader streams a batch in the binary COPY format: the header, one
// tuple per event, the trailer. It holds about one read's worth of bytes.
type copyReader struct {
	batch  []*event.Event
	kind   payloadKind
	next   int  // the next event to encode
	header bool // written
	done   bool // the trailer written
	buf    []byte
	off    int        // read up to here
	order  jsonbOrder // for a jsonb payload
}

// copyHeader is the binary COPY signature, the flags and the header
// extension's length.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

func (r *copyReader) Read(p []byte) (int, error) {
	if r.off > 0 {
		r.buf = r.buf[:copy(r.buf, r.buf[r.off:])]
		r.off = 0
	}
	if r.buf == nil {
		r.buf = make([]byte, 0, len(p)+4096)
	}
	for len(r.buf) < len(p) && !r.done {
		switch {
		case !r.header:
			r.buf = append(r.buf, copyHeader...)
			r.header = true
		case r.next < len(r.batch):
			r.buf = appendTuple(r.buf, r.batch[r.next], r.kind, &r.order)
			r.next++
		default:
			r.buf = append(r.buf, 0xff, 0xff) // the trailer: a field count of -1
			r.done = true
		}
	}
	n := copy(p, r.buf)
	r.off = n
	if n == 0 && r.done {
		return 0, io.EOF
	}
	return n, nil
}

// microsFromUnixToY2K is how many microseconds PostgreSQL's epoch,
// 2000-01-01 UTC, is after the Unix epoch.
const microsFromUnixToY2K = 946_684_800 * 1_000_000

// appendTuple appends e as a tuple of the five columns, in the order of
// copySQL: event_id uuid, received_at timestamptz (microseconds since
// 2000, truncated as pgx does), type and source text, payload: a jsonb
// payload with its keys in jsonb's order (see jsonbOrder).
func appendTuple(b []byte, e *event.Event, kind payloadKind, order *jsonbOrder) []byte {
	b = append(b, 0, 5)
	b = append(b, 0, 0, 0, 16)
	b, _ = appendUUID(b, e.EventID) // checked by copyBinary
	b = append(b, 0, 0, 0, 8)
	t := e.ReceivedAt
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()*1_000_000+int64(t.Nanosecond()/int(time.Microsecond))-microsFromUnixToY2K))
	b = appendText(b, e.Type)
	b = appendText(b, string(e.Source))
	j := e.JSON()
	if kind != payloadJSONB {
		b = binary.BigEndian.AppendUint32(b, uint32(len(j)))
		return append(b, j...)
	}
	at := len(b)
	b = append(b, 0, 0, 0, 0, 1) // the length, set below; jsonb's binary format version
	b = order.appendSorted(b, j)
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	return b
}

func appendText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendUUID appends the 16 bytes of a UUID in the canonical 8-4-4-4-12
// hex form, of either case, and reports whether s was one.
func appendUUID(b []byte, s string) ([]byte, bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return b, false
	}
	var u [16]byte
	bad := byte(0)
	for i, at := range uuidDigits {
		hi, lo := hexValue[s[at]], hexValue[s[at+1]]
		bad |= hi | lo
		u[i] = hi<<4 | lo
	}
	if bad > 15 {
		return b, false
	}
	return append(b, u[:]...), true
}

// uuidDigits are where each byte's two hex digits start in a UUID's text.
var uuidDigits = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// hexValue is the value of each hex digit, and 0xff for other bytes.
var hexValue = func() (t [256]byte) {
	for c := range t {
		switch {
		case '0' <= c && c <= '9':
			t[c] = byte(c - '0')
		case 'a' <= c && c <= 'f':
			t[c] = byte(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			t[c] = byte(c - 'A' + 10)
		default:
			t[c] = 0xff
		}
	}
	return t
}()
