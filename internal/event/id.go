package event

import (
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// NewID returns a new UUIDv7 (RFC 9562) as a lower-case string: 48 bits of
// Unix milliseconds followed by 74 random bits. IDs made in the same
// millisecond are not ordered among themselves; that keeps NewID free of
// locks, which matters more on the request path than strict monotonicity.
// The random bits come from the runtime's per-thread ChaCha8 generator,
// seeded by the OS: unpredictable enough for identifiers, and free of
// system calls. Event ids are not secrets.
func NewID(now time.Time) string {
	var b [36]byte
	return string(appendID(b[:0], now))
}

// appendID appends NewID's id to b.
func appendID(b []byte, now time.Time) []byte {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[0:8], rand.Uint64()) // the first 6 bytes are overwritten below
	binary.LittleEndian.PutUint64(u[8:16], rand.Uint64())
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint16(u[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(u[2:6], uint32(ms))
	u[6] = 0x70 | (u[6] & 0x0F) // version 7
	u[8] = 0x80 | (u[8] & 0x3F) // variant 10
	return appendUUID(b, u)
}

func formatUUID(u [16]byte) string {
	var b [36]byte
	return string(appendUUID(b[:0], u))
}

// appendUUID appends u in the 8-4-4-4-12 form.
func appendUUID(dst []byte, u [16]byte) []byte {
	dst = append(dst, make([]byte, 36)...)
	b := dst[len(dst)-36:]
	b[8], b[13], b[18], b[23] = '-', '-', '-', '-'
	hexByte(b[0:2], u[0])
	hexByte(b[2:4], u[1])
	hexByte(b[4:6], u[2])
	hexByte(b[6:8], u[3])
	hexByte(b[9:11], u[4])
	hexByte(b[11:13], u[5])
	hexByte(b[14:16], u[6])
	hexByte(b[16:18], u[7])
	hexByte(b[19:21], u[8])
	hexByte(b[21:23], u[9])
	for i, c := range u[10:] {
		hexByte(b[24+2*i:26+2*i], c)
	}
	return dst
}

func hexByte(dst []byte, c byte) {
	dst[0], dst[1] = hexDigits[c>>4], hexDigits[c&0xF]
}

// ParseUUID reports whether s is a UUID in the canonical 8-4-4-4-12 form,
// of any version, and returns it in lower case.
func ParseUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	var u [16]byte
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return "", false
			}
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return "", false
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	if u == ([16]byte{}) {
		return "", false // the nil UUID identifies nothing
	}
	return formatUUID(u), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
