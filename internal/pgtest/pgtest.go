// Package pgtest gives tests the PostgreSQL server that scripts/test.sh
// started (or the one PG_TEST_DSN names), fresh tables in it, and control
// over the server's life for outage tests.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/testkit"
)

// strict reports whether a missing server must fail the test rather than
// skip it: in CI, and under scripts/test.sh, which always provides one.
func strict() bool { return testkit.Strict() }

// DSN returns the test server's DSN, skipping the test (outside CI) when
// there is none.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("PG_TEST_DSN")
	if dsn == "" {
		if strict() {
			t.Fatal("PG_TEST_DSN is not set; scripts/test.sh starts a server and sets it")
		}
		t.Skip("PG_TEST_DSN is not set; run scripts/test.sh, which starts a throwaway PostgreSQL")
	}
	return dsn
}

// Conn opens a connection to the test server, closed with the test.
func Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Table returns a new table name, unique to this test, and drops the table
// when the test ends.
func Table(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	dsn := DSN(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			c.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{name}.Sanitize())
			c.Exec(ctx, `DELETE FROM gotrack_schema_migrations WHERE table_name = $1`, pgx.Identifier{name}.Sanitize())
			c.Close(ctx)
		}
	})
	return name
}

// IDs returns the event ids in table.
func IDs(t testing.TB, table string) map[string]int {
	t.Helper()
	c := Conn(t)
	rows, err := c.Query(context.Background(), `SELECT event_id::text FROM `+pgx.Identifier{table}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// Controllable gives the test a server it may stop and start: a throwaway
// cluster of its own, started with scripts/pg.sh and removed when the test
// ends, with PG_TEST_* pointing at it meanwhile. go test runs packages in
// parallel, and the suite's shared server going away would fail other
// packages' tests. It skips the test (outside CI) when the suite's server
// is not a cluster scripts/pg.sh started, since then the PostgreSQL
// binaries may be missing too. Tests that call it must not be parallel.
func Controllable(t testing.TB) {
	t.Helper()
	DSN(t)
	if os.Getenv("PG_TEST_PGDATA") == "" || os.Getenv("PG_TEST_PGCTL") == "" {
		if os.Getenv("CI") != "" { // in CI, scripts/test.sh always starts its own cluster
			t.Fatal("PG_TEST_PGDATA and PG_TEST_PGCTL are not set; scripts/test.sh sets them")
		}
		t.Skip("the server is not ours to stop (PG_TEST_PGDATA unset); run scripts/test.sh")
	}
	if os.Getenv("PG_TEST_OWN") == "" {
		own(t)
	}
}

// own starts a cluster for this test alone and points PG_TEST_* at it
// until the test ends, when the cluster is removed.
func own(t testing.TB) {
	t.Helper()
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(root, "scripts", "pg.sh")); err == nil {
			break
		}
		up := filepath.Dir(root)
		if up == root {
			t.Fatal("scripts/pg.sh not found above the test's directory")
		}
		root = up
	}
	cmd := exec.Command("bash", "-c", `. scripts/pg.sh && pg_start 2>/dev/null && printf '%s\n' "$PG_TEST_DSN" "$PG_TEST_PGDATA" "$PG_TEST_PGCTL" "$PG_TEST_RUNAS"`)
	cmd.Dir = root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG_TEST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.Output()
	lines := strings.Split(string(out), "\n")
	if err != nil || len(lines) < 4 || lines[0] == "" {
		t.Fatalf("start a PostgreSQL cluster with scripts/pg.sh: %v\n%s", err, out)
	}
	vars := map[string]string{"PG_TEST_DSN": lines[0], "PG_TEST_PGDATA": lines[1], "PG_TEST_PGCTL": lines[2],
		"PG_TEST_RUNAS": lines[3], "PG_TEST_OWN": "1"}
	t.Cleanup(func() {
		stop := exec.Command("bash", "-c", ". scripts/pg.sh && pg_stop")
		stop.Dir = root
		stop.Env = os.Environ()
		for k, v := range vars {
			stop.Env = append(stop.Env, k+"="+v)
		}
		if out, err := stop.CombinedOutput(); err != nil {
			t.Errorf("pg_stop: %v\n%s", err, out)
		}
	})
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

// Outage stops the server for an outage test and returns the function that
// starts it again; if the test ends first, the server is started then, so
// that the tests after it find it running.
func Outage(t testing.TB) (restart func()) {
	t.Helper()
	Stop(t)
	up := false
	t.Cleanup(func() {
		if !up {
			Start(t)
		}
	})
	return func() {
		t.Helper()
		Start(t)
		up = true
	}
}

// Stop stops the server at once, dropping every connection.
func Stop(t testing.TB) { pgctl(t, "-m", "fast", "-w", "stop") }

// Start starts the server again and waits until it accepts connections.
func Start(t testing.TB) {
	pgctl(t, "-l", os.Getenv("PG_TEST_PGDATA")+"/server.log", "-w", "-t", "60", "start")
}

func pgctl(t testing.TB, args ...string) {
	t.Helper()
	Controllable(t)
	full := append([]string{os.Getenv("PG_TEST_PGCTL"), "-D", os.Getenv("PG_TEST_PGDATA")}, args...)
	if u := os.Getenv("PG_TEST_RUNAS"); u != "" {
		full = append([]string{"runuser", "-u", u, "--"}, full...)
	}
	if out, err := exec.Command(full[0], full[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %v: %v\n%s", args, err, out)
	}
}

// ServerCPU returns the CPU time the test server (PG_TEST_PGDATA, from
// scripts/pg.sh) has used so far: its postmaster, the postmaster's live
// children, and the children that have exited, whose time the kernel adds
// to the postmaster's when it reaps them. It is 0 when PG_TEST_PGDATA does
// not name a running server's data directory.
func ServerCPU() time.Duration {
	b, err := os.ReadFile(filepath.Join(os.Getenv("PG_TEST_PGDATA"), "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0
	}
	var ticks int64
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 > len(s) {
			continue
		}
		f := strings.Fields(s[i+2:]) // state, ppid, ..., utime (11), stime, cutime, cstime (14)
		if len(f) < 15 {
			continue
		}
		n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		switch {
		case pid == postmaster:
			ticks += n(11) + n(12) + n(13) + n(14)
		case int(n(1)) == postmaster:
			ticks += n(11) + n(12)
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100
}
