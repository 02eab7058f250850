package postgres

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// turnConn counts round trips: each read that follows a write.
type turnConn struct {
	net.Conn
	wrote         atomic.Bool // Write and Read run on different goroutines when pgx pipelines
	turns, writes *atomic.Int64
}

func (c *turnConn) Write(p []byte) (int, error) {
	c.wrote.Store(true)
	c.writes.Add(1)
	return c.Conn.Write(p)
}
func (c *turnConn) Read(p []byte) (int, error) {
	if c.wrote.Swap(false) {
		c.turns.Add(1)
	}
	return c.Conn.Read(p)
}

// TestReviewRoundTrips: copyTx takes as many round trips as the pre-merge
// fast path (pool.Begin, COPY, Commit), reconstructed here.
func TestReviewRoundTrips(t *testing.T) {
	table := pgtest.Table(t)
	s := open(t, table)
	defer s.Close(t.Context())
	cfg, err := pgxpool.ParseConfig(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	var turns, writes atomic.Int64
	d := &net.Dialer{}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		return &turnConn{Conn: c, turns: &turns, writes: &writes}, err
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s.pool = pool
	if err := s.WriteBatch(t.Context(), sinktest.Events(10)); err != nil { // connect
		t.Fatal(err)
	}
	turns.Store(0)
	writes.Store(0)
	if err := s.WriteBatch(t.Context(), sinktest.Events(1000)); err != nil {
		t.Fatal(err)
	}
	now, nowW := turns.Swap(0), writes.Swap(0)
	if err := s.tx(t.Context(), func(tx pgx.Tx) error {
		return copyBinary(t.Context(), tx.Conn().PgConn(), s.copy, payloadJSONB, nil, sinktest.Events(1000))
	}); err != nil {
		t.Fatal(err)
	}
	before, beforeW := turns.Load(), writes.Load()
	t.Logf("per batch: copyTx %d turns, %d writes; pre-merge sequence %d turns, %d writes", now, nowW, before, beforeW)
	if nowW > beforeW {
		t.Errorf("copyTx flushes %d times, the pre-merge fast path %d", nowW, beforeW)
	}
}
