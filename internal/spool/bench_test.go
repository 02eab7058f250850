package spool

import (
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// BenchmarkAppendAlways is the hot path under SPOOL_FSYNC=always: parallel
// single-event appends sharing group-commit rounds. Its CPU per append is
// what the file layer must not raise.
func BenchmarkAppendAlways(b *testing.B) {
	s := open(b, b.TempDir(), Options{MaxBytes: 1 << 40, Readers: []string{}})
	defer s.Close()
	events := sinktest.Events(1024)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := s.Append(events[i%len(events) : i%len(events)+1]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkAppendInterval is one write per append, fsynced on a timer.
func BenchmarkAppendInterval(b *testing.B) {
	s := open(b, b.TempDir(), Options{MaxBytes: 1 << 40, Readers: []string{}, Sync: Sync{Interval: 100 * time.Millisecond}})
	defer s.Close()
	events := sinktest.Events(1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Append(events[i%len(events) : i%len(events)+1]); err != nil {
			b.Fatal(err)
		}
	}
}
