package ndjson

import (
	"path/filepath"
	"testing"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// BenchmarkWriteBatch writes batches of 500 events without fsync: the
// encoding and the single write per batch.
func BenchmarkWriteBatch(b *testing.B) {
	s, err := Open(Options{Path: filepath.Join(b.TempDir(), "e.ndjson"), Fsync: FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(b.Context())
	batch := sinktest.Events(500)
	n := 0
	for _, e := range batch {
		n += len(e.JSON()) + 1
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.WriteBatch(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
}
