package postgres

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// TestReviewBouncerStaging: through PgBouncer in transaction pooling
// (REVIEW_BOUNCER_DSN, with default_query_exec_mode=exec), the describe
// pipelined with BEGIN works; but the staging table, a TEMPORARY table
// created once per client connection in AfterConnect, lives on whichever
// server connection ran it: once PgBouncer opens a new server connection
// (server_lifetime, a restart, a killed backend), the duplicate path fails
// with 42P01 until GoTrack reconnects. Pre-existing, not from the merge.
func TestReviewBouncerStaging(t *testing.T) {
	dsn := os.Getenv("REVIEW_BOUNCER_DSN")
	if dsn == "" {
		t.Skip("REVIEW_BOUNCER_DSN not set")
	}
	table := pgtest.Table(t)
	s, err := Open(t.Context(), Options{DSN: dsn, Table: table, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(t.Context())
	events := sinktest.Events(10)
	if err := s.WriteBatch(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	if dups, err := s.WriteBatchDedup(t.Context(), events); err != nil || dups != 10 {
		t.Fatalf("duplicates through the bouncer = %d, %v", dups, err)
	}
	// PgBouncer replaces its server connections (here: they are killed).
	if _, err := pgtest.Conn(t).Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name = ''`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := s.WriteBatch(t.Context(), sinktest.Events(10))
		t.Logf("new events, attempt %d: %v", i, err)
	}
	dups, err := s.WriteBatchDedup(t.Context(), events)
	if err != nil || dups != 10 {
		t.Errorf("duplicates after PgBouncer replaced its server connections = %d, %v", dups, err)
	}
	_ = pgx.Identifier{}
}
