#!/usr/bin/env bash
# Runs a command against a throw-away Redis, and lets that command crash and
# restart it.
#
#   scripts/redis-test.sh CMD [ARGS...]
#     Starts redis-server on 127.0.0.1 at a free port (no persistence:
#     --save '' --appendonly no; its dir, log and pid file in a new temp
#     dir), waits until that very server answers (INFO's process_id is its
#     PID), runs CMD with these in its environment:
#       SORI_REDIS_URL   redis://127.0.0.1:PORT
#       SORI_REDIS_PORT  PORT
#       SORI_REDIS_DIR   the temp dir (redis.pid, redis.log)
#       SORI_REDIS_CTL   the absolute path of this script, for the controls below
#     then stops exactly that server by its PID (SIGTERM, SIGKILL after 5 s),
#     removes the temp dir, and exits with CMD's status. Also on Ctrl-C or
#     SIGTERM (trap).
#
#   "$SORI_REDIS_CTL" --kill    SIGKILL the server (a crash); returns once it is gone
#   "$SORI_REDIS_CTL" --start   start it again on the same port (empty: no
#                               persistence); returns once it answers
#   "$SORI_REDIS_CTL" --stop    SIGTERM, then SIGKILL after 5 s
#     The controls find the server through SORI_REDIS_DIR and SORI_REDIS_PORT
#     and only ever signal the PID in SORI_REDIS_DIR/redis.pid, after checking
#     that it is a redis-server. Exit status 0 on success.
set -uo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

die() { echo "redis-test: $*" >&2; exit 2; }

# alive PID: the process exists and is not a zombie
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# is_ours PID: a live redis-server
is_ours() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'redis-server'
}

# start_server DIR PORT: starts redis-server and waits (at most 10 s) until
# it answers; 0, or 1 if it exited (port taken) or never answered.
start_server() {
  local dir=$1 port=$2 pid i
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$dir" --logfile "$dir/redis.log" </dev/null >>"$dir/redis.out" 2>&1 &
  pid=$!
  disown "$pid" 2>/dev/null # no "Killed" line from bash when a test crashes it
  echo "$pid" >"$dir/redis.pid"
  for i in $(seq 1 500); do
    alive "$pid" || return 1
    if redis-cli -h 127.0.0.1 -p "$port" INFO server 2>/dev/null | tr -d '\r' | grep -qx "process_id:$pid"; then
      return 0
    fi
    sleep 0.02
  done
  kill -9 "$pid" 2>/dev/null
  return 1
}

# stop_server DIR SIGNAL: signals the recorded server and waits (at most 5 s
# for TERM, then KILL) until it is gone.
stop_server() {
  local dir=$1 sig=$2 pid i
  pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0
  [ -n "$pid" ] || return 0
  is_ours "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null
  for i in $(seq 1 250); do
    alive "$pid" || return 0
    sleep 0.02
  done
  kill -9 "$pid" 2>/dev/null
  for i in $(seq 1 250); do
    alive "$pid" || return 0
    sleep 0.02
  done
  return 1
}

case "${1:-}" in
--kill | --start | --stop)
  [ -n "${SORI_REDIS_DIR:-}" ] && [ -d "$SORI_REDIS_DIR" ] || die "SORI_REDIS_DIR is not set: run under scripts/redis-test.sh"
  [ -n "${SORI_REDIS_PORT:-}" ] || die "SORI_REDIS_PORT is not set"
  case "$1" in
  --kill) stop_server "$SORI_REDIS_DIR" KILL ;;
  --stop) stop_server "$SORI_REDIS_DIR" TERM ;;
  --start)
    pid=$(cat "$SORI_REDIS_DIR/redis.pid" 2>/dev/null)
    [ -n "$pid" ] && is_ours "$pid" && die "the server (pid $pid) is still running"
    start_server "$SORI_REDIS_DIR" "$SORI_REDIS_PORT" || die "redis-server did not come back on port $SORI_REDIS_PORT (see $SORI_REDIS_DIR/redis.log)"
    ;;
  esac
  exit $?
  ;;
"" | -h | --help)
  sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
  [ -n "${1:-}" ]; exit $?
  ;;
esac

command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
  die "redis-server and redis-cli are needed (scripts/deps.sh installs redis-server)"

dir=$(mktemp -d "${TMPDIR:-/tmp}/sori-redis.XXXXXX") || die "cannot create a temp dir"
cleanup() {
  stop_server "$dir" TERM
  case "$dir" in */sori-redis.*) rm -rf "$dir" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=
for attempt in $(seq 1 20); do
  p=$((20000 + RANDOM % 40000))
  if start_server "$dir" "$p"; then port=$p; break; fi
done
[ -n "$port" ] || { tail -5 "$dir/redis.log" >&2; die "could not start redis-server on a free port"; }

export SORI_REDIS_URL="redis://127.0.0.1:$port" SORI_REDIS_PORT="$port" SORI_REDIS_DIR="$dir" SORI_REDIS_CTL="$self"
"$@"
rc=$?
exit $rc
