package spool

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
	dto "github.com/prometheus/client_model/go"
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

// BenchmarkAppendAlwaysReader is the load benchmark's spool scenario
// without HTTP: appenders each waiting for their event to be synced before
// the next (as 64 connections each wait for their 2xx), and a reader
// delivering and acknowledging as the pipeline does. Wall time per append
// depends on the disk's fsync latency (with one appender, ns/op is the
// latency of a round); what it is for is the process's CPU time per append
// (cpu-ns/op) and the events each group-commit round carries
// (events/round).
func BenchmarkAppendAlwaysReader(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("appenders=%d", n), func(b *testing.B) { benchAppendAlwaysReader(b, n) })
	}
}

func benchAppendAlwaysReader(b *testing.B, appenders int) {
	s := open(b, b.TempDir(), Options{MaxBytes: 1 << 40, Readers: []string{"log"}})
	defer s.Close()
	events := sinktest.Events(1024)
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	rwg.Go(func() {
		r := s.Reader("log")
		for {
			batch, err := r.Read(1000, 1<<20, 5*time.Millisecond, stop)
			if err != nil {
				b.Error(err)
				return
			}
			if batch == nil {
				return
			}
			if err := r.Ack(len(batch)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportAllocs()
	before, beforeSum := fsyncCount(b, s)
	cpu := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Go(func() {
			for i := g; i < b.N; i += appenders {
				if err := s.Append(events[i%len(events) : i%len(events)+1]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	if n, sum := fsyncCount(b, s); n > before {
		b.ReportMetric(float64(b.N)/float64(n-before), "events/round")
		b.ReportMetric(1e6*(sum-beforeSum)/float64(n-before), "fsync-us/round")
	}
	close(stop)
	rwg.Wait()
}

// fsyncCount is the number of fsyncs the spool has observed (under
// Sync.Always, one per group-commit round) and their total seconds.
func fsyncCount(b *testing.B, s *Spool) (uint64, float64) {
	b.Helper()
	var m dto.Metric
	if err := s.m.fsync.Write(&m); err != nil {
		b.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// cpuTime is the CPU time the process has used, user and system, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkAck is the cost of one acknowledgement, which persists the
// reader's cursor: the pipeline makes one per delivered batch.
func BenchmarkAck(b *testing.B) {
	s := open(b, b.TempDir(), Options{MaxBytes: 1 << 40, Readers: []string{"log"}})
	defer s.Close()
	events := sinktest.Events(1000)
	for n := 0; n < b.N; n += len(events) {
		if err := s.Append(events); err != nil {
			b.Fatal(err)
		}
	}
	r := s.Reader("log")
	b.ReportAllocs()
	cpu := cpuTime()
	b.ResetTimer()
	for range b.N {
		if err := r.Ack(1); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkSyncKinds is the cost of making one group-commit round durable
// (a write of 45 records of 450 bytes) on the file system of the test's
// temporary directory: appended and fsynced, as every round was before
// preallocation, against written into preallocated, synced zeros and
// fdatasynced (see syncRound). ns/op is the latency of a round's write and
// sync; cpu-ns/op the process's CPU time for it, the kernel's included.
func BenchmarkSyncKinds(b *testing.B) {
	round := make([]byte, 45*450)
	for i := range round {
		round[i] = byte(i)
	}
	for _, kind := range []string{"append+fsync", "preallocated+fdatasync"} {
		b.Run(kind, func(b *testing.B) {
			f, err := osFS{}.OpenFile(b.TempDir()+"/seg", os.O_WRONLY|os.O_CREATE, 0o640)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			within := kind != "append+fsync"
			if within {
				zeros := make([]byte, 1<<20)
				for off := int64(0); off < int64(b.N+1)*int64(len(round)); off += int64(len(zeros)) {
					if _, err := f.WriteAt(zeros, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			cpu := cpuTime()
			b.ResetTimer()
			for range b.N {
				if _, err := f.Write(round); err != nil {
					b.Fatal(err)
				}
				if err := syncRound(f, within); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
