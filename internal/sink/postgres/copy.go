package postgres

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/sink"
)

// The sink encodes a batch in PostgreSQL's binary COPY format itself,
// straight from the events into one reused buffer, rather than through
// pgx.CopyFrom, which boxes five values per row, asks the server for the
// table's column types in a round trip of its own, and caches them per
// connection, blind to an ALTER TABLE. The types come instead from the
// description of describeSQL that each transaction asks for with its
// BEGIN (see Sink.begin). The fast path serves the column types the
// migrations create, with a json or jsonb payload (see payloadKind); other
// types are converted by pgx's type map (slowPath).

// columns are the columns the sink writes, in the order of copySQL.
var columns = []string{"event_id", "received_at", "type", "source", "payload"}

// payloadKind is how a batch is encoded for the table's column types.
type payloadKind int32

// unknownKind is the encoding before any description: Open could not
// lock the table (see Open).
const unknownKind payloadKind = -1

const (
	slowPath     payloadKind = iota // other column types: each value converted by pgx's type map
	payloadJSONB                    // the migrations' types: payload jsonb, a version byte, then the JSON text
	payloadJSON                     // the same with payload json: the JSON text
)

func (k payloadKind) String() string {
	switch k {
	case payloadJSONB:
		return "binary COPY, payload jsonb"
	case payloadJSON:
		return "binary COPY, payload json"
	case unknownKind:
		return "not yet described"
	}
	return "binary COPY, each value converted by pgx to its column's type"
}

// fastTypes are the types of the columns before payload that the fast
// path encodes. The server describes a column of a domain type as its
// base type, whose binary format the domain's receive function reads.
var fastTypes = [4]uint32{pgtype.UUIDOID, pgtype.TimestamptzOID, pgtype.TextOID, pgtype.TextOID}

// kindOf picks the encoding for the columns cols, described by the server
// in the order of columns.
func kindOf(cols []pgconn.FieldDescription) payloadKind {
	if len(cols) != len(columns) {
		return slowPath
	}
	for i, oid := range fastTypes {
		if cols[i].DataTypeOID != oid {
			return slowPath
		}
	}
	switch cols[len(fastTypes)].DataTypeOID {
	case pgtype.JSONBOID:
		return payloadJSONB
	case pgtype.JSONOID:
		return payloadJSON
	}
	return slowPath
}

// copyBinary copies batch into the table of the COPY statement sql on c,
// encoded as kind says; a slowPath batch needs types, the columns' types.
// An event_id that is not a UUID fails the batch with a permanent error
// before anything is sent, as the server would reject the row.
func copyBinary(ctx context.Context, c *pgconn.PgConn, sql string, kind payloadKind, types *converter, batch []*event.Event) error {
	var id [16]byte
	for _, e := range batch {
		if _, ok := appendUUID(id[:0], e.EventID); !ok {
			return sink.Permanent(fmt.Errorf("event_id %q is not a UUID", e.EventID))
		}
	}
	r := &copyReader{batch: batch, kind: kind, types: types}
	_, err := c.CopyFrom(ctx, r, sql)
	if r.err != nil { // the server's error only says the COPY was abandoned
		return r.err
	}
	return err
}

// copySQL is the COPY statement into table.
func copySQL(table pgx.Identifier) string {
	return `COPY ` + table.Sanitize() + ` (` + strings.Join(columns, ", ") + `) FROM STDIN (FORMAT binary)`
}

// describeSQL is the query whose description gives the types of the
// columns copySQL names.
func describeSQL(table pgx.Identifier) string {
	return `SELECT ` + strings.Join(columns, ", ") + ` FROM ` + table.Sanitize()
}

// converter encodes the slow path's values for the column types cols.
type converter struct {
	m    *pgtype.Map
	cols []pgconn.FieldDescription
}

// newConverter returns the converter for the columns cols, or an error
// that is not permanent when their types cannot hold any event: an array
// (pgx would spread the payload's bytes over one, a number each), or an
// event_id too short for a UUID's 36 characters. The server would take
// the first and refuse every event of the second as too long, a rejection
// that dead-letters the stream.
func newConverter(m *pgtype.Map, cols []pgconn.FieldDescription) (*converter, error) {
	c := &converter{m: m, cols: cols}
	for i, col := range cols {
		if t, ok := m.TypeForOID(col.DataTypeOID); ok {
			if _, array := t.Codec.(*pgtype.ArrayCodec); array {
				return nil, c.unfit(i)
			}
		}
	}
	if id := cols[0]; (id.DataTypeOID == pgtype.VarcharOID || id.DataTypeOID == pgtype.BPCharOID) && id.TypeModifier >= 4 && id.TypeModifier-4 < 36 {
		return nil, c.unfit(0)
	}
	return c, nil
}

// unfit is the error for the column i, whose type cannot hold the events'
// values. pgx's errors quote the value: event data, kept out of logs.
func (c *converter) unfit(i int) error {
	oid := c.cols[i].DataTypeOID
	typ := fmt.Sprintf("OID %d", oid)
	if t, ok := c.m.TypeForOID(oid); ok {
		typ = t.Name
		if mod := c.cols[i].TypeModifier; (oid == pgtype.VarcharOID || oid == pgtype.BPCharOID) && mod >= 4 {
			typ += fmt.Sprintf("(%d)", mod-4)
		}
	}
	return fmt.Errorf("the %s cannot be converted to the type of its column, %s", columns[i], typ)
}

// appendTuple appends e as a tuple of the five columns, each value
// converted by pgx to its column's type. A value pgx cannot convert
// fails the batch with an error that is not permanent: the table's types
// do not fit the events, which only a change of the table can mend.
func (c *converter) appendTuple(b []byte, e *event.Event) ([]byte, error) {
	id, err := uuidBytes(e.EventID)
	if err != nil {
		return b, err
	}
	b = append(b, 0, byte(len(columns)))
	var at any = e.ReceivedAt
	switch c.cols[1].DataTypeOID {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID:
		// pgx would write time.Time's String, which PostgreSQL cannot read back.
		at = e.ReceivedAt.UTC().Format("2006-01-02T15:04:05.999999Z07:00")
	}
	for i, v := range [...]any{id, at, e.Type, string(e.Source), json.RawMessage(e.JSON())} {
		start := len(b)
		b = append(b, 0, 0, 0, 0)
		out, err := c.m.Encode(c.cols[i].DataTypeOID, pgtype.BinaryFormatCode, v, b)
		if err != nil {
			return b, c.unfit(i)
		}
		if out == nil { // NULL
			binary.BigEndian.PutUint32(b[start:], 0xffffffff)
			continue
		}
		b = out
		binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	}
	return b, nil
}

// copyReader streams a batch in the binary COPY format: the header, one
// tuple per event, the trailer. It holds about one read's worth of bytes.
type copyReader struct {
	batch  []*event.Event
	kind   payloadKind
	types  *converter // for slowPath
	err    error      // from types
	next   int        // the next event to encode
	header bool       // written
	done   bool       // the trailer written
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
		case r.next < len(r.batch) && r.kind == slowPath:
			if r.buf, r.err = r.types.appendTuple(r.buf, r.batch[r.next]); r.err != nil {
				return 0, r.err
			}
			r.next++
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
