package postgres

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gotrack/gotrack/internal/pgtest"
	"github.com/gotrack/gotrack/internal/sink"
	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

// TestReviewExplore applies ALTERs the merge's tests did not try and logs
// what the sink does. Exploration only: run with REVIEW_EXPLORE=1.
func TestReviewExplore(t *testing.T) {
	if os.Getenv("REVIEW_EXPLORE") == "" {
		t.Skip("REVIEW_EXPLORE not set")
	}
	for _, tc := range []struct{ name, sql string }{
		{"payload jsonb[]", `ALTER TABLE %t ALTER COLUMN payload TYPE jsonb[] USING ARRAY[payload]`},
		{"payload text[]", `ALTER TABLE %t ALTER COLUMN payload TYPE text[] USING ARRAY[payload::text]`},
		{"payload bytea", `ALTER TABLE %t ALTER COLUMN payload TYPE bytea USING convert_to(payload::text, 'UTF8')`},
		{"payload varchar", `ALTER TABLE %t ALTER COLUMN payload TYPE varchar`},
		{"payload varchar(100)", `TRUNCATE %t; ALTER TABLE %t ALTER COLUMN payload TYPE varchar(100)`},
		{"event_id varchar(10)", `TRUNCATE %t; ALTER TABLE %t ALTER COLUMN event_id TYPE varchar(10)`},
		{"event_id varchar(36)", `ALTER TABLE %t ALTER COLUMN event_id TYPE varchar(36)`},
		{"event_id bigint", `TRUNCATE %t; ALTER TABLE %t ALTER COLUMN event_id TYPE bigint USING 0`},
		{"received_at timestamp", `ALTER TABLE %t ALTER COLUMN received_at TYPE timestamp`},
		{"received_at date", `ALTER TABLE %t ALTER COLUMN received_at TYPE date`},
		{"received_at text", `ALTER TABLE %t ALTER COLUMN received_at TYPE text`},
		{"type enum", `DROP TYPE IF EXISTS rv_kind; CREATE TYPE rv_kind AS ENUM ('pageview', 'signup'); ALTER TABLE %t ALTER COLUMN type TYPE rv_kind USING type::rv_kind`},
		{"type char(3)", `TRUNCATE %t; ALTER TABLE %t ALTER COLUMN type TYPE char(3)`},
		{"source NOT NULL", `ALTER TABLE %t ALTER COLUMN source SET NOT NULL`},
		{"add NOT NULL no default", `TRUNCATE %t; ALTER TABLE %t ADD COLUMN extra int NOT NULL`},
		{"trigger", `CREATE OR REPLACE FUNCTION rv_up() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.type := upper(NEW.type); RETURN NEW; END$$; CREATE TRIGGER rv_up BEFORE INSERT ON %t FOR EACH ROW EXECUTE FUNCTION rv_up()`},
		{"generated extra", `ALTER TABLE %t ADD COLUMN g text GENERATED ALWAYS AS (type || '!') STORED`},
		{"payload generated", `ALTER TABLE %t DROP COLUMN payload; ALTER TABLE %t ADD COLUMN payload jsonb GENERATED ALWAYS AS ('{}') STORED`},
		{"dropped+recreated", `DROP TABLE %t; CREATE TABLE %t (event_id uuid PRIMARY KEY, received_at timestamptz NOT NULL, type text NOT NULL, source text, payload jsonb NOT NULL)`},
		{"view", `ALTER TABLE %t RENAME TO %t_base; CREATE VIEW %t AS SELECT * FROM %t_base`},
		{"partitioned", `ALTER TABLE %t RENAME TO %t_old; CREATE TABLE %t (event_id uuid, received_at timestamptz NOT NULL, type text NOT NULL, source text, payload jsonb NOT NULL, PRIMARY KEY (event_id, received_at)) PARTITION BY RANGE (received_at); CREATE TABLE %t_p PARTITION OF %t DEFAULT`},
		{"renamed away", `ALTER TABLE %t RENAME TO %t_away`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := pgtest.Table(t)
			s := open(t, table)
			defer s.Close(t.Context())
			old := sinktest.Events(20)
			if err := s.WriteBatch(t.Context(), old); err != nil {
				t.Fatal(err)
			}
			q := pgx.Identifier{table}.Sanitize()
			sql := strings.ReplaceAll(tc.sql, "%t_", strings.TrimSuffix(q, `"`)+"_")
			sql = strings.ReplaceAll(strings.ReplaceAll(sql, `_base`, `_base"`), `_old`, `_old"`)
			sql = strings.ReplaceAll(strings.ReplaceAll(sql, `_p `, `_p" `), `_away`, `_away"`)
			sql = strings.ReplaceAll(sql, "%t", q)
			admin := pgtest.Conn(t)
			if _, err := admin.Exec(context.Background(), sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			t.Cleanup(func() {
				for _, suf := range []string{"_base", "_old", "_away", "_p"} {
					admin.Exec(context.Background(), `DROP VIEW IF EXISTS `+q)
					admin.Exec(context.Background(), `DROP TABLE IF EXISTS `+pgx.Identifier{table + suf}.Sanitize()+` CASCADE`)
				}
			})
			events := sinktest.Events(20)
			err := s.WriteBatch(t.Context(), events)
			t.Logf("new batch: err=%v permanent=%v kind=%s", err, sink.IsPermanent(err), payloadKind(s.kind.Load()))
			again := append(events[:5:5], sinktest.Events(5)...)
			dups, err := s.WriteBatchDedup(t.Context(), again)
			t.Logf("dedup batch: dups=%d err=%v permanent=%v", dups, err, sink.IsPermanent(err))
			rows, err := admin.Query(context.Background(), `SELECT * FROM `+q+` LIMIT 3 OFFSET 20`)
			if err == nil {
				for rows.Next() {
					v, _ := rows.Values()
					s := ""
					for _, x := range v {
						b := []byte(strings.ReplaceAll(strings.TrimSpace(fmtv(x)), "\n", " "))
						if len(b) > 70 {
							b = b[:70]
						}
						s += string(b) + " | "
					}
					t.Logf("row: %s", s)
				}
				rows.Close()
			} else {
				t.Logf("read: %v", err)
			}
		})
	}
}

func fmtv(x any) string {
	switch v := x.(type) {
	case []byte:
		return "bytes:" + string(v)
	case [16]byte:
		return "uuid"
	}
	return strings.TrimSpace(strings.ReplaceAll(fmtAny(x), "\x01", "\\x01"))
}

func fmtAny(x any) string { return fmt.Sprintf("%T %v", x, x) }
