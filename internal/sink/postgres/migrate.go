package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migration is one step of the table's schema. Steps are applied in order,
// once each, and recorded in gotrack_schema_migrations by table and version.
type migration struct {
	version int
	name    string
	sql     func(table pgx.Identifier) string
}

// migrations is the schema's history. Append; never edit a released step.
var migrations = []migration{
	{1, "create events table with a BRIN index on received_at", func(t pgx.Identifier) string {
		idx := pgx.Identifier{t[len(t)-1] + "_received_at_brin"}.Sanitize()
		return `CREATE TABLE IF NOT EXISTS ` + t.Sanitize() + ` (
			event_id    uuid PRIMARY KEY,
			received_at timestamptz NOT NULL,
			type        text NOT NULL,
			source      text,
			payload     jsonb NOT NULL
		);
		CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + t.Sanitize() + ` USING brin (received_at);`
	}},
}

// migrate applies the steps not yet recorded for table, in one transaction
// under an advisory lock, so that instances starting together do not race.
func migrate(ctx context.Context, pool *pgxpool.Pool, table pgx.Identifier) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// An arbitrary, fixed key: "gotrack" in ASCII, 0x676f747261636b.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(29114468527072107)`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS gotrack_schema_migrations (
		table_name text NOT NULL,
		version    int  NOT NULL,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (table_name, version)
	)`); err != nil {
		return err
	}
	name := table.Sanitize()
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM gotrack_schema_migrations WHERE table_name = $1`, name).Scan(&current); err != nil {
		return err
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql(table)); err != nil {
			return fmt.Errorf("step %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO gotrack_schema_migrations (table_name, version, name) VALUES ($1, $2, $3)`,
			name, m.version, m.name); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}
