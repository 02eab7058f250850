# Sourced by scripts/test.sh and bench/run.sh: starts a throwaway PostgreSQL
# cluster from the installed binaries, unless PG_TEST_DSN names a server
# already. pg_start exports
#   PG_TEST_DSN     postgres://postgres:...@127.0.0.1:PORT/postgres
#   PG_TEST_PGDATA  the cluster's directory (for tests that stop and restart it)
#   PG_TEST_PGCTL   the pg_ctl binary
#   PG_TEST_RUNAS   the user pg_ctl must run as ("" for the current user)
# and pg_stop removes the cluster. initdb refuses to run as root, so as root
# the cluster belongs to the postgres user. The test cluster trades
# durability for speed (fsync off); PG_TEST_DURABLE=1 keeps PostgreSQL's
# durable defaults, as the benchmark does.

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

pg_start() {
  if [ -n "${PG_TEST_DSN:-}" ]; then
    echo "pg.sh: using PG_TEST_DSN from the environment" >&2
    return 0
  fi
  local bindir
  bindir=$(pg_bindir)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "pg.sh: installing postgresql from Debian's packages" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bindir=$(pg_bindir)
  fi
  local runas="" as=()
  if [ "$(id -u)" -eq 0 ]; then
    runas=postgres
    as=(runuser -u postgres --)
  fi
  PG_TEST_PGDATA=$(mktemp -d /tmp/gotrack-pg.XXXXXX)
  [ -z "$runas" ] || chown "$runas" "$PG_TEST_PGDATA"
  local pwfile="$PG_TEST_PGDATA.pw" password="gotrack-test-$RANDOM$RANDOM"
  printf '%s\n' "$password" > "$pwfile"
  [ -z "$runas" ] || chown "$runas" "$pwfile"
  "${as[@]}" "$bindir/initdb" -D "$PG_TEST_PGDATA" -U postgres --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync -E UTF8 >/dev/null
  rm -f "$pwfile"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)))
  cat >> "$PG_TEST_PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_TEST_PGDATA'
max_connections = 100
shared_buffers = 256MB
CONF
  if [ -z "${PG_TEST_DURABLE:-}" ]; then
    printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >> "$PG_TEST_PGDATA/postgresql.conf"
  fi
  "${as[@]}" "$bindir/pg_ctl" -D "$PG_TEST_PGDATA" -l "$PG_TEST_PGDATA/server.log" -w -t 60 start >/dev/null
  export PG_TEST_DSN="postgres://postgres:$password@127.0.0.1:$port/postgres?sslmode=disable"
  export PG_TEST_PGDATA PG_TEST_PGCTL="$bindir/pg_ctl" PG_TEST_RUNAS="$runas"
  echo "pg.sh: throwaway PostgreSQL on 127.0.0.1:$port ($PG_TEST_PGDATA)" >&2
}

pg_stop() {
  [ -n "${PG_TEST_PGDATA:-}" ] || return 0
  local as=()
  [ -z "${PG_TEST_RUNAS:-}" ] || as=(runuser -u "$PG_TEST_RUNAS" --)
  "${as[@]}" "$PG_TEST_PGCTL" -D "$PG_TEST_PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_TEST_PGDATA"
}
