#!/usr/bin/env bash
# A private PostgreSQL server for lift-search's tests, from Debian's `postgresql` package (CI and developers).
#
#   eval "$(bash tests/pg_server.sh start)"   # starts it (once) and prints the exports the tests read:
#                                             #   LIFT_SEARCH_TEST_PG=postgresql://lift@127.0.0.1:PORT/lift_test
#                                             #   PGPASSWORD=...  (the URL holds no password, like an index's)
#   python -m pytest                          # the PostgreSQL tests now run instead of skipping
#   bash tests/pg_server.sh stop
#
# LIFT_PG_DIR (default /tmp/lift-pg) holds the data, the log and the Unix socket; LIFT_PG_PORT (default 55432)
# is its TCP port on 127.0.0.1. The server runs as the `postgres` user when started by root (initdb refuses
# root), else as the caller. Role `lift` (password `lift-test`, may create databases: each test session
# makes its own and drops it) owns database `lift_test`; TCP logins need the password (scram-sha-256).
set -euo pipefail
dir=${LIFT_PG_DIR:-/tmp/lift-pg}
port=${LIFT_PG_PORT:-55432}
role=lift password=lift-test database=lift_test

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg_server.sh: no PostgreSQL server found: apt-get install -y postgresql" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  owner=postgres
  run() { runuser -u postgres -- "$@"; }
else
  owner=$(id -un)
  run() { "$@"; }
fi
sql() { run "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA "$@"; }

case "${1:-start}" in
  start)
    mkdir -p "$dir"
    chown "$owner" "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      run "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
        || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi
    if [ -z "$(sql -c "SELECT 1 FROM pg_roles WHERE rolname = '$role'")" ]; then
      sql -c "CREATE ROLE $role LOGIN CREATEDB PASSWORD '$password'"
    fi
    if [ -z "$(sql -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
      sql -c "CREATE DATABASE $database OWNER $role"
    fi
    echo "export LIFT_SEARCH_TEST_PG=postgresql://$role@127.0.0.1:$port/$database PGPASSWORD=$password"
    ;;
  stop)
    if [ -f "$dir/data/PG_VERSION" ] && run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      run "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
