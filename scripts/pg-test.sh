#!/usr/bin/env bash
# Runs one command against a throw-away PostgreSQL server, then removes it.
#
#   scripts/pg-test.sh build/tests/test_store
#
# Starts Debian's PostgreSQL server binaries (/usr/lib/postgresql/N/bin, the
# newest N) on a free loopback port (127.0.0.1 only) with its data, socket and
# log in a fresh temp directory, creates a database, and runs the command with
#   SORI_STORE_TYPE=postgresql
#   SORI_STORE_URL=postgresql://sori:PASSWORD@127.0.0.1:PORT/sori
# in its environment (also PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE for
# psql, and SORI_PG_CTL: a script whose "stop" and "start" stop and start this
# server, and only it, for restart tests). The exit status is the command's. On any exit (success, failure,
# Ctrl-C) it stops the server it started, and only that one (pg_ctl on its own
# data directory, then its postmaster PID), and removes the temp directory.
# Run as root, the server runs as an unprivileged user: $SORI_PG_USER, else
# "postgres" (Debian's package creates it), else "sori-pg", created with
# useradd when missing. The command itself runs as the caller.
# SORI_PG_KEEP_LOG=1 prints the server log at the end.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 command [args...]" >&2
  exit 2
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
  echo "pg-test: no PostgreSQL server binaries under /usr/lib/postgresql (scripts/deps.sh installs them)" >&2
  exit 1
fi

run_as=()
pg_user=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
  pg_user=${SORI_PG_USER:-}
  if [ -z "$pg_user" ]; then
    if id -u postgres >/dev/null 2>&1; then
      pg_user=postgres
    else
      pg_user=sori-pg
      if ! id -u "$pg_user" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$pg_user"
      fi
    fi
  fi
  run_as=(runuser -u "$pg_user" --)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sori-pg.XXXXXX")
chmod 700 "$tmp"
[ ${#run_as[@]} -eq 0 ] || chown "$pg_user:" "$tmp"
data="$tmp/data"
pid=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -f "$data/postmaster.pid" ]; then
    pid=$(head -1 "$data/postmaster.pid" 2>/dev/null || true)
  fi
  if [ -n "$pid" ]; then
    if ! "${run_as[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1; then
      # pg_ctl failed: stop our postmaster (and only it: a PID whose command
      # line names our data directory) by its PID.
      if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$data"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  fi
  if [ "${SORI_PG_KEEP_LOG:-0}" = 1 ] && [ -f "$tmp/log" ]; then
    echo "---- pg-test: server log ----" >&2
    cat "$tmp/log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
cmd_pid=""
stop_cmd() { # signal: stop the command we started (by its PID), then clean up
  if [ -n "$cmd_pid" ] && kill -0 "$cmd_pid" 2>/dev/null; then
    kill -TERM "$cmd_pid" 2>/dev/null || true
    wait "$cmd_pid" 2>/dev/null || true
  fi
  exit "$1"
}
trap cleanup EXIT
trap 'stop_cmd 130' INT
trap 'stop_cmd 143' TERM

password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$password" >"$tmp/pw"
chmod 600 "$tmp/pw"
[ ${#run_as[@]} -eq 0 ] || chown "$pg_user:" "$tmp/pw"

"${run_as[@]}" "$bindir/initdb" -D "$data" -U sori --pwfile="$tmp/pw" --auth=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 --no-sync >"$tmp/initdb.log" 2>&1 || {
  cat "$tmp/initdb.log" >&2
  echo "pg-test: initdb failed" >&2
  exit 1
}
rm -f "$tmp/pw"

free_port() {
  # A random port in 20000-59999 that nothing on 127.0.0.1 answers on; the
  # server's own bind is the real test (start is retried on failure).
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

server_opts() {
  echo "-c listen_addresses=127.0.0.1 -c port=$1 -c unix_socket_directories=$tmp -c max_connections=100 -c shared_buffers=32MB"
}

started=0
for _ in 1 2 3 4 5; do
  port=$(free_port)
  if "${run_as[@]}" "$bindir/pg_ctl" -D "$data" -l "$tmp/log" -w -t 60 -o "$(server_opts "$port")" \
    start >/dev/null 2>&1; then
    started=1
    break
  fi
  [ -f "$data/postmaster.pid" ] && break # it runs but did not answer: give up
done
if [ "$started" != 1 ]; then
  cat "$tmp/log" >&2 2>/dev/null || true
  echo "pg-test: the server did not start" >&2
  exit 1
fi
pid=$(head -1 "$data/postmaster.pid")

# stop/start this server (same data directory, port and user) for tests.
runq=""
[ ${#run_as[@]} -eq 0 ] || runq=$(printf '%q ' "${run_as[@]}")
{
  echo '#!/usr/bin/env bash'
  echo 'case "${1:-}" in'
  echo "  stop) exec $runq$(printf '%q ' "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop) ;;"
  echo "  start) exec $runq$(printf '%q ' "$bindir/pg_ctl" -D "$data" -l "$tmp/log" -w -t 60 \
    -o "$(server_opts "$port")" start) ;;"
  echo '  *) echo "usage: $0 stop|start" >&2; exit 2 ;;'
  echo 'esac'
} >"$tmp/ctl"
chmod 755 "$tmp/ctl"
export SORI_PG_CTL="$tmp/ctl"

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=sori PGPASSWORD=$password PGDATABASE=sori
"$bindir/createdb" sori
export SORI_STORE_TYPE=postgresql
export SORI_STORE_URL="postgresql://sori:$password@127.0.0.1:$port/sori"
echo "pg-test: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (pid $pid, user $pg_user)" >&2

# In the background with wait, so that a signal to this script is handled at
# once (bash runs traps only between foreground commands); stdin passed on.
set +e
"$@" <&0 &
cmd_pid=$!
wait "$cmd_pid"
rc=$?
cmd_pid=""
set -e
exit "$rc"
