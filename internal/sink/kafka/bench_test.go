package kafka

import (
	"testing"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// BenchmarkWriteBatch produces batches of 500 events (the pipeline's
// default BATCH_SIZE) to an in-process kfake with the sink's defaults. Its
// time and CPU include kfake's; its allocations are mostly the sink's and
// franz-go's per record.
func BenchmarkWriteBatch(b *testing.B) {
	c := newCluster(b, 3)
	s := open(b, c, KeyEventID)
	defer s.Close(b.Context())
	events := sinktest.Events(500)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(events) {
		if err := s.WriteBatch(b.Context(), events[:min(len(events), b.N-i)]); err != nil {
			b.Fatal(err)
		}
	}
}
