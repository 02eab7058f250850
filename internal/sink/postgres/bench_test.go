package postgres

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/pgtest"
)

// BenchmarkWriteBatch writes pixel-like events in batches of 5000, each
// whole, as the pipeline does while the server keeps up (BENCH_PG_PARTS=2:
// in two parts at once, as in a backlog), and reports, besides ns/op (one
// event), the CPU this process used per event and, when the server is the
// throwaway one of scripts/pg.sh (PG_TEST_PGDATA), the server's own CPU per
// event: CPU time means something on a busy machine, wall time does not.
func BenchmarkWriteBatch(b *testing.B) {
	table := pgtest.Table(b)
	if os.Getenv("BENCH_PG_PAYLOAD") == "json" { // an experiment: a table created beforehand with payload json
		if _, err := pgtest.Conn(b).Exec(b.Context(), `CREATE TABLE `+table+` (event_id uuid PRIMARY KEY,
			received_at timestamptz NOT NULL, type text NOT NULL, source text, payload json NOT NULL)`); err != nil {
			b.Fatal(err)
		}
	}
	s, err := Open(b.Context(), Options{DSN: pgtest.DSN(b), Table: table})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(b.Context())
	batch, parts := 5000, 1
	if v, err := strconv.Atoi(os.Getenv("BENCH_PG_PARTS")); err == nil { // a backlog's parts
		parts = v
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_PG_PART")); err == nil { // an experiment: one part of v events
		batch, parts = v, 1
	}
	events := pixelEvents(b.N)
	b.ResetTimer()
	cpu, server := processCPU(), pgtest.ServerCPU()
	for i := 0; i < b.N; i += batch {
		chunk := events[i:min(i+batch, b.N)]
		size := (len(chunk) + parts - 1) / parts
		errs := make(chan error, parts)
		for p := 0; p < len(chunk); p += size {
			go func() { errs <- s.WriteBatch(b.Context(), chunk[p:min(p+size, len(chunk))]) }()
		}
		for p := 0; p < len(chunk); p += size {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	if server > 0 {
		b.ReportMetric(float64(pgtest.ServerCPU()-server)/float64(b.N), "server-cpu-ns/op")
	}
}

// pixelEvents returns n events like the load benchmark's pixel requests
// with the default enrichment (ENRICH=ua,bot,campaign), received 50µs
// apart (20k events/s), so that their UUIDv7 ids ascend.
func pixelEvents(n int) []*event.Event {
	out := make([]*event.Event, n)
	now := time.Now()
	for i := range out {
		at := now.Add(time.Duration(i) * 50 * time.Microsecond)
		e := &event.Event{EventID: event.NewID(at), ReceivedAt: at, Type: "pageview",
			URL: "https://shop.example/products/42?utm_source=news&utm_medium=email", Referrer: "https://www.example.org/search?q=widgets",
			Title: "Blue Widget – Shop", VisitorID: "v1234567", SessionID: "s7654321",
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0", IP: "127.0.0.1",
			Props: []byte(`{"plan":"pro","ab":"b"}`), Source: event.SourcePixel, SourceID: "anonymous",
			UA:       &event.UA{Device: "desktop", Browser: "Chrome", Version: "126.0", OS: "Linux", OSVersion: "x86_64"},
			Bot:      &event.Bot{IsBot: true, Reasons: []string{"missing_headers"}},
			Campaign: []byte(`{"utm_source":"news","utm_medium":"email"}`)}
		e.Seal()
		out[i] = e
	}
	return out
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
