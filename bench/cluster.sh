#!/usr/bin/env bash
# bench/cluster.sh: fan-out across a 2-node cluster (PostgreSQL + Redis)
# against single nodes, in the same run, on loopback, bounded in time. See
# docs/BENCHMARKS.md "Cluster: two nodes" for the method and the figures.
#
#   bench/cluster.sh [--rounds N] [--duration SECS] [--warmup SECS]
#                    [--rooms R] [--subs S] [--window W] [--modes "LIST"] [--no-pin]
#                    [--loads "LIST"] [--join-delay SECS]
#
# It needs a PostgreSQL and a Redis: run under scripts/pg-test.sh and
# scripts/redis-test.sh (throw-away servers on 127.0.0.1, stopped at the end);
# started without SORI_STORE_URL and SORI_REDIS_URL, it re-runs itself under
# both. Every run starts its own sori node(s) on free loopback ports with
# fresh data dirs, on a fresh database (CREATE DATABASE per run, dropped after)
# and an emptied Redis (FLUSHALL), runs `build/sori bench`, and stops the
# nodes it started by PID, one after the other.
#
# modes (--modes, default "cluster cluster-half pg sqlite"; all those given run
# in every round, their order rotating from round to round):
#   cluster       2 nodes (--redis, sync durability), R rooms (default 2), room
#                 r's publisher on node r mod 2 and its S subscribers on the
#                 other node: every delivery but the publisher's own copy
#                 crosses nodes (Redis PUBLISH -> the other node -> its sockets)
#   cluster-half  2 nodes, every publisher on node 1, each room's subscribers
#                 split evenly over both nodes: half the deliveries cross
#   pg            1 node on the same PostgreSQL, no Redis, same rooms and load
#   sqlite        1 node on SQLite (the default store), same load
# more modes, not in the default list (name them with --modes):
#   cluster-async like cluster (all cross), both nodes with --durability async
#                 (default --flush-ms): Redis assigns each message's seq (one
#                 EVAL per message; EXISTS, INCR and PUBLISH run inside the
#                 script), the store write follows within --flush-ms
#   pg-async      1 node on the same PostgreSQL with --durability async
# loads (each run in every mode):
#   closed        1 publisher per room keeping W sends in flight (--window, 16):
#                 as much as the setup gives
#   rate-M        open loop: each publisher sends M msg/s, evenly paced
#                 (default rate-500: 1000 msg/s, 251 000 deliveries/s with the
#                 defaults), a load every setup here keeps up with, so the CPU
#                 figures compare the same work
# Each run: R rooms of 1 publisher and S subscribers (default 250), measured
# over --duration (default 5 s) after --warmup (1 s). The bench waits --join-delay (0.5 s)
# between creating the rooms and joining them: a join on node B right after
# the room was created on node A can be refused (not_found) until B has heard
# of the room (docs/BENCHMARKS.md). A run where any join or create failed is
# reported as invalid and left out of the medians.
#
# CPU (by PID, /proc/PID/stat utime + stime over the measured window, via
# `sori bench --cpu`): each sori node; redis-server; the PostgreSQL postmaster
# and all its children (backends, WAL writer, checkpointer...). With the pin
# (default), every server process (nodes, PostgreSQL, Redis) runs on CPU 0 and
# the bench on CPU 1, as in compare.sh; --no-pin leaves placement to Linux.
# At the window's edges (`sori bench --window-hook`) it snapshots Redis's INFO
# commandstats, PostgreSQL's next transaction id and WAL position, and each
# node's /metrics: Redis commands, write transactions and WAL bytes per message.
# After the window it also counts the messages in the store: with async
# durability, the messages accepted but not yet written then (should be at most
# about --flush-ms worth).
#
# Outputs in build/bench/: cluster-<stamp>.jsonl (one line per run: the bench's
# JSON plus mode, round, CPU and the Redis/PostgreSQL counters),
# cluster-<stamp>.md (the tables, bench/cluster_table.py), cluster-logs-<stamp>/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

case " $* " in *" -h "*|*" --help "*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
if [ -z "${SORI_STORE_URL:-}" ] || [ -z "${SORI_REDIS_URL:-}" ]; then
    exec "$ROOT/scripts/pg-test.sh" "$ROOT/scripts/redis-test.sh" "$ROOT/bench/cluster.sh" "$@"
fi

ROUNDS=3
DURATION=5
WARMUP=1
ROOMS=2
SUBS=250
WINDOW=16
MODES="cluster cluster-half pg sqlite"
PIN=1
JOIN_DELAY=0.5
LOADS="closed rate-500"
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rooms) ROOMS=$2; shift 2 ;;
    --subs) SUBS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --no-pin) PIN=0; shift ;;
    --join-delay) JOIN_DELAY=$2; shift 2 ;;
    --loads) LOADS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

for m in $MODES; do
    case "$m" in
    cluster|cluster-half|cluster-async|pg|pg-async|sqlite) ;;
    *) echo "cluster.sh: unknown mode $m (see --help)" >&2; exit 2 ;;
    esac
done

SORI=$ROOT/build/sori
[ -x "$SORI" ] || { echo "cluster.sh: no $SORI (run make)" >&2; exit 1; }
OUT=$ROOT/build/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$OUT/cluster-$STAMP.jsonl
LOGDIR=$OUT/cluster-logs-$STAMP
mkdir -p "$OUT" "$LOGDIR"
TMP=$(mktemp -d /tmp/sori-cluster.XXXXXX)
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- the shared servers (started by pg-test.sh and redis-test.sh) ----
PG_PID=$(head -1 "$(dirname "$SORI_PG_CTL")/data/postmaster.pid")
REDIS_PID=$(cat "$SORI_REDIS_DIR/redis.pid")
REDIS_PORT=$SORI_REDIS_PORT
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
kill -0 "$PG_PID" && kill -0 "$REDIS_PID" || { echo "cluster.sh: PostgreSQL or Redis is not running" >&2; exit 1; }
if [ $PIN = 1 ]; then
    # the servers on CPU 0 (PostgreSQL's future backends inherit the postmaster's mask)
    for p in "$PG_PID" $(pgrep -P "$PG_PID") "$REDIS_PID"; do taskset -a -p -c 0 "$p" >/dev/null; done
    ON0=(taskset -c 0)
    ON1=(taskset -c 1)
else
    ON0=()
    ON1=()
fi

# ---- the nodes of one run: started and stopped by PID only ----
NODE_PIDS=()
NODE_NAMES=()
stop_nodes() { # one after the other: see docs/BENCHMARKS.md (a node stopping while another stops may abort)
    local i pid
    NODE_RCS=()
    for i in "${!NODE_PIDS[@]}"; do
        pid=${NODE_PIDS[$i]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        local rc=0
        wait "$pid" 2>/dev/null || rc=$?
        NODE_RCS+=("$rc")
    done
    NODE_PIDS=()
}
RUN_DB=""
cleanup() {
    stop_nodes
    [ -z "$RUN_DB" ] || dropdb --if-exists "$RUN_DB" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() { # port pid seconds: /healthz answers 200 (with --redis: the bus is up)
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        kill -0 "$2" 2>/dev/null || return 1
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz" 2>/dev/null)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

start_node() { # name dir port extra-args...: appends to NODE_PIDS
    local name=$1 dir=$2 port=$3
    shift 3
    mkdir -p "$dir"
    "${ON0[@]}" "$SORI" serve --host 127.0.0.1 --port "$port" --data-dir "$dir/data" --workers 1 \
        --allow-guests --rate 1000000 --burst 1000000 --secret "$SECRET" --log-level warn "$@" \
        >"$dir/log" 2>&1 &
    NODE_PIDS+=($!)
    NODE_NAMES+=("$name")
    NODE_PORTS+=("$port")
    NODE_LOGS+=("$dir/log")
}

# the window hook: Redis, PostgreSQL and node counters at the window's edges
HOOK=$TMP/hook.sh
cat >"$HOOK" <<'EOF'
#!/usr/bin/env bash
# $1: start|end; HOOK_DIR, HOOK_PORTS, HOOK_DB, REDIS_PORT, PG* from the environment
phase=$1
# Each snapshot carries its time (PostgreSQL's clock_timestamp(), Redis's TIME
# on the same connection just before INFO, the middle of each node's /metrics
# request): cluster_table.py divides rates over each counter's own interval,
# so the few ms between two snapshots do not skew a ratio of two counters.
pg() { psql -X -q -At -d "$HOOK_DB" -c "select pg_snapshot_xmax(pg_current_snapshot()), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'), extract(epoch from clock_timestamp())" >"$HOOK_DIR/pg-$phase.txt" 2>&1; }
# messages in the store after the window (async modes: what is not written yet
# is the accepted count minus this; taken last, outside the measured window)
rows() { psql -X -q -At -d "$HOOK_DB" -c "select count(*) from messages" >"$HOOK_DIR/rows-$phase.txt" 2>&1; }
nodes() {
    local p t0
    for p in $HOOK_PORTS; do
        t0=$EPOCHREALTIME
        curl -s "http://127.0.0.1:$p/metrics" | grep -E '^sori_(messages_in|deliveries)_total ' | sed "s/^/$p /"
        echo "$p time $t0 $EPOCHREALTIME"
    done >"$HOOK_DIR/metrics-$phase.txt"
}
redis() { printf 'TIME\nINFO commandstats\n' | redis-cli -h 127.0.0.1 -p "$REDIS_PORT" >"$HOOK_DIR/redis-$phase.txt"; }
if [ "$phase" = start ]; then pg; nodes; redis; else redis; nodes; pg; rows; fi
EOF
chmod +x "$HOOK"

run_one() { # load mode round -> appends one line to $RESULTS
    local load=$1 mode=$2 round=$3
    local tag=$round-$load-$mode
    local dir=$TMP/$tag
    mkdir -p "$dir"
    NODE_NAMES=()
    NODE_PORTS=()
    NODE_LOGS=()
    RUN_DB="bench_${round}_${load//-/_}_${mode//-/_}"
    local db_url=${SORI_STORE_URL%/*}/$RUN_DB
    dropdb --if-exists "$RUN_DB" >/dev/null 2>&1 || true
    createdb "$RUN_DB"
    rcli FLUSHALL >/dev/null
    local p1 p2 args=()
    p1=$(free_port)
    p2=$(free_port)
    local u1=ws://127.0.0.1:$p1/ws u2=ws://127.0.0.1:$p2/ws
    case "$mode" in
    cluster|cluster-half|cluster-async)
        local dur=()
        [ "$mode" = cluster-async ] && dur=(--durability async)
        start_node sori1 "$dir/n1" "$p1" --node-id 1 --db "$db_url" --redis "$SORI_REDIS_URL" "${dur[@]}"
        start_node sori2 "$dir/n2" "$p2" --node-id 2 --db "$db_url" --redis "$SORI_REDIS_URL" "${dur[@]}" ;;
    pg) start_node sori "$dir/n1" "$p1" --db "$db_url" ;;
    pg-async) start_node sori "$dir/n1" "$p1" --db "$db_url" --durability async ;;
    sqlite) start_node sori "$dir/n1" "$p1" ;;
    *) echo "cluster.sh: unknown mode $mode (see --help)" >&2; exit 2 ;;
    esac
    local i
    for i in "${!NODE_PIDS[@]}"; do
        if ! wait_ready "${NODE_PORTS[$i]}" "${NODE_PIDS[$i]}" 20; then
            log "$mode: ${NODE_NAMES[$i]} did not become ready (log: ${NODE_LOGS[$i]})"
            cp "${NODE_LOGS[$i]}" "$LOGDIR/$tag-${NODE_NAMES[$i]}.log" 2>/dev/null || true
            stop_nodes
            echo "{\"load\":\"$load\",\"mode\":\"$mode\",\"round\":$round,\"failed\":\"node did not start\"}" >>"$RESULTS"
            return 0
        fi
    done
    case "$mode" in
    cluster|cluster-async) args=(--pub-url "$u1,$u2" --url "$u2,$u1" --spread room) ;;
    cluster-half) args=(--pub-url "$u1" --url "$u1,$u2") ;;
    *) args=(--url "$u1") ;;
    esac
    local cpu="" ports=""
    for i in "${!NODE_PIDS[@]}"; do
        cpu="$cpu${NODE_NAMES[$i]}=${NODE_PIDS[$i]},"
        ports="$ports ${NODE_PORTS[$i]}"
    done
    cpu="${cpu}redis=$REDIS_PID,pg=$PG_PID+"
    [ "$mode" = sqlite ] && cpu=${cpu%,pg=*} # PostgreSQL idles then; keep it out
    local loadargs=(--window "$WINDOW")
    [ "$load" = closed ] || loadargs=(--rate "${load#rate-}")
    log "[$done_runs/$total] round $round, $load, $mode (pids ${NODE_PIDS[*]})"
    local line="" rc=0 err=$LOGDIR/$tag.err
    line=$(HOOK_DIR=$dir HOOK_PORTS=$ports HOOK_DB=$RUN_DB REDIS_PORT=$REDIS_PORT \
        timeout -k 5 $((${DURATION%.*} + ${WARMUP%.*} + 60)) "${ON1[@]}" "$SORI" bench "${args[@]}" \
        --scenario fanout --rooms "$ROOMS" --subs "$SUBS" --pubs 1 "${loadargs[@]}" \
        --duration "$DURATION" --warmup "$WARMUP" --connect-timeout 20 --join-delay "$JOIN_DELAY" \
        --server-pid "${NODE_PIDS[0]}" --cpu "$cpu" --window-hook "$HOOK" 2>"$err") || rc=$?
    local alive=""
    for i in "${!NODE_PIDS[@]}"; do kill -0 "${NODE_PIDS[$i]}" 2>/dev/null && alive="${alive}1" || alive="${alive}0"; done
    stop_nodes
    for i in "${!NODE_NAMES[@]}"; do
        cp "${NODE_LOGS[$i]}" "$LOGDIR/$tag-${NODE_NAMES[$i]}.log" 2>/dev/null || true
    done
    for f in "$dir"/*-start.txt "$dir"/*-end.txt; do # the hook's snapshots
        if [ -f "$f" ]; then cp "$f" "$LOGDIR/$tag-hook-$(basename "$f")"; fi
    done
    dropdb --if-exists "$RUN_DB" >/dev/null 2>&1 || true
    RUN_DB=""
    if [ $rc != 0 ] || [ -z "$line" ]; then
        log "  bench exit $rc (see $err)"
        echo "{\"load\":\"$load\",\"mode\":\"$mode\",\"round\":$round,\"failed\":\"bench exit $rc\"}" >>"$RESULTS"
        return 0
    fi
    python3 "$ROOT/bench/cluster_table.py" --merge "$line" "$load" "$mode" "$round" "$dir" "$alive" "${NODE_RCS[*]}" \
        "${NODE_NAMES[*]}" "$LOGDIR/$tag" >>"$RESULTS"
    grep -E 'deliveries/s|latency µs|another URL|CPU in the window|lost|warning' "$err" | sed 's/^ */    /' >&2 || true
}

read -r -a MODE_LIST <<<"$MODES"
N=${#MODE_LIST[@]}
total=$((ROUNDS * N * $(wc -w <<<"$LOADS")))
done_runs=0
{
    python3 - "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')" "$(nproc)" "$(uname -r)" \
        "$($SORI version 2>/dev/null | head -1) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+changes'))" \
        "$(psql -X -At -c 'show server_version' 2>/dev/null)" "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')" \
        "$ROUNDS" "$DURATION" "$WARMUP" "$ROOMS" "$SUBS" "$WINDOW" "$MODES" "$PIN" "$LOADS" "$JOIN_DELAY" <<'EOF'
import json, sys
k = ["cpu", "nproc", "kernel", "sori", "postgresql", "redis", "rounds", "duration", "warmup", "rooms", "subs",
     "window", "modes", "pinned", "loads", "join_delay"]
print(json.dumps(dict(zip(k, sys.argv[1:]))))
EOF
} >"$OUT/cluster-meta-$STAMP.json"
log "modes: $MODES; loads: $LOADS; $ROUNDS round(s); $ROOMS rooms x (1 publisher + $SUBS subscribers); results in $RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    for load in $LOADS; do
        for i in $(seq 0 $((N - 1))); do
            mode=${MODE_LIST[$(((i + round - 1) % N))]}
            done_runs=$((done_runs + 1))
            run_one "$load" "$mode" "$round"
        done
    done
done

python3 "$ROOT/bench/cluster_table.py" "$OUT/cluster-meta-$STAMP.json" "$RESULTS" | tee "$OUT/cluster-$STAMP.md"
log "results: $RESULTS, table: $OUT/cluster-$STAMP.md, logs: $LOGDIR"
