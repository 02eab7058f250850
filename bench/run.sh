#!/usr/bin/env bash
# Runs the load benchmark (go run ./bench) with a throwaway PostgreSQL for
# the postgres scenario, which keeps PostgreSQL's durable defaults (fsync on).
# Arguments go to the benchmark, e.g.:
#   bench/run.sh -scenarios pixel,collect,postgres -runs 3 -duration 10s
set -euo pipefail
cd "$(dirname "$0")/.."
export PG_TEST_DURABLE=1
. scripts/pg.sh
trap pg_stop EXIT
pg_start
go run ./bench "$@"
