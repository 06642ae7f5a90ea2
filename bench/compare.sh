#!/usr/bin/env bash
# bench/compare.sh: the same `sori bench` scenarios against sori and its peers
# (bench/peers/: Node.js + ws, uWebSockets, Nchan on nginx), one invocation,
# loopback only, bounded in time. See docs/BENCHMARKS.md for the method.
#
# For each round, each case and each server (the servers' order rotates every
# round so none always goes first): start the server pinned to CPU 0 on a free
# loopback port with a fresh data dir, wait until it accepts connections, run
# `taskset -c 1 build/sori bench ... --server-pid PID`, stop the server by its
# PID. Every bench JSON line, tagged with server, case and round, goes to
# build/bench/results-<stamp>.jsonl; the table (medians over rounds, and
# sori's ratios to each peer) is printed and saved as results-<stamp>.md.
#
# usage: bench/compare.sh [--rounds N] [--duration SECS] [--servers "LIST"]
#                         [--cases "LIST"] [--subs N] [--rates "R1 R2"]
#                         [--window W] [--conns N] [--quick] [--no-setup]
#   servers: sori (sync durability, the default), sori-async, node-ws, uws, nchan,
#            and sori-tls (sori with --tls-cert, the bench on wss://; not in the
#            default list: --servers "sori sori-tls" gives TLS's cost as a ratio)
#   cases:   fanout-closed (1 room, --subs subscribers, 1 publisher, --window
#            sends in flight), fanout-rate-R (the same room, open loop at R
#            msg/s), connections (--conns idle connections over 2 source
#            addresses and 100 rooms: bytes of server RSS per connection)
#   --quick: 1 round, 2 s windows, 200 subscribers, 2000 connections (a smoke test)
#   --no-setup: do not build or install anything; skip what is missing
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ROUNDS=3
DURATION=5
WARMUP=1
SUBS=1000
WINDOW=16
RATES="100 300"
CONNS=10000
SERVERS="sori sori-async node-ws uws nchan"
CASES=""
SETUP=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --subs) SUBS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --quick) ROUNDS=1; DURATION=2; SUBS=200; CONNS=2000; shift ;;
    --no-setup) SETUP=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$CASES" ]; then
    CASES="fanout-closed"
    for r in $RATES; do CASES="$CASES fanout-rate-$r"; done
    CASES="$CASES connections"
fi

SORI=$ROOT/build/sori
OUT=$ROOT/build/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$OUT/results-$STAMP.jsonl
LOGDIR=$OUT/logs-$STAMP
mkdir -p "$OUT" "$LOGDIR"
TMP=$(mktemp -d /tmp/sori-compare.XXXXXX)

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- the server being measured: started and stopped by PID only ----
SRV_PID=""
stop_server() {
    [ -n "$SRV_PID" ] || return 0
    if kill -0 "$SRV_PID" 2>/dev/null; then
        kill -TERM "$SRV_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SRV_PID" 2>/dev/null || true
    fi
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
}
cleanup() {
    stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port seconds
    local end=$((SECONDS + $2))
    while [ $SECONDS -lt $end ]; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$SRV_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- setup: build sori, install and build the peers ----
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}
apt_install() {
    [ $SETUP = 1 ] || return 1
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends "$@" \
        >"$LOGDIR/apt.log" 2>&1 ||
        { as_root apt-get update -qq >>"$LOGDIR/apt.log" 2>&1 &&
          as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends "$@" \
              >>"$LOGDIR/apt.log" 2>&1; }
}

AVAILABLE=""
SKIPPED=""
skip() { SKIPPED="$SKIPPED $1"; log "skipping $1: $2"; }

if [ $SETUP = 1 ]; then make -s -C "$ROOT" all >&2; fi
[ -x "$SORI" ] || { echo "compare.sh: no $SORI (run make)" >&2; exit 1; }

for s in $SERVERS; do
    case "$s" in
    sori|sori-async) AVAILABLE="$AVAILABLE $s" ;;
    sori-tls)
        if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/tls.key" \
            -out "$TMP/tls.crt" -days 2 -subj /CN=127.0.0.1 >"$LOGDIR/openssl.log" 2>&1; then
            AVAILABLE="$AVAILABLE $s"
        else
            skip sori-tls "openssl could not make a certificate (see $LOGDIR/openssl.log)"
        fi ;;
    node-ws)
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm || true; fi
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then skip node-ws "no node/npm"; continue; fi
        d=$ROOT/build/peers/node-ws
        mkdir -p "$d"
        cp bench/peers/node-ws/package.json bench/peers/node-ws/server.js "$d/"
        if [ $SETUP = 1 ] && ! (cd "$d" && npm install --no-audit --no-fund --loglevel=error >"$LOGDIR/npm.log" 2>&1); then
            skip node-ws "npm install failed (see $LOGDIR/npm.log)"; continue
        fi
        [ -d "$d/node_modules/ws" ] || { skip node-ws "ws is not installed"; continue; }
        AVAILABLE="$AVAILABLE $s" ;;
    uws)
        rc=0
        if [ $SETUP = 1 ]; then bench/peers/uws/build.sh >"$LOGDIR/uws-build.log" 2>&1 || rc=$?; fi
        if [ -x build/peers/uws/uws-chat ] && [ $rc = 0 ]; then AVAILABLE="$AVAILABLE $s"
        elif [ $rc = 3 ]; then skip uws "$(tail -1 "$LOGDIR/uws-build.log")"
        else skip uws "build failed (see $LOGDIR/uws-build.log)"; fi ;;
    nchan)
        if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
            apt_install nginx libnginx-mod-nchan || true
        fi
        if command -v nginx >/dev/null && [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
            AVAILABLE="$AVAILABLE $s"
        else
            skip nchan "no nginx with libnginx-mod-nchan"
        fi ;;
    *) echo "compare.sh: unknown server $s" >&2; exit 2 ;;
    esac
done
[ -n "$AVAILABLE" ] || { echo "compare.sh: no server to measure" >&2; exit 1; }

# ---- versions and the machine, for the report ----
META=$OUT/meta-$STAMP.json
{
    cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
    node_v=$(node --version 2>/dev/null || echo none)
    ws_v=$(node -p 'require("'"$ROOT"'/build/peers/node-ws/node_modules/ws/package.json").version' 2>/dev/null || echo none)
    uws_v=$(cat build/peers/uws/version 2>/dev/null || echo none)
    nginx_v=$(dpkg-query -W -f='${Version}' nginx 2>/dev/null || echo none)
    nchan_v=$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo none)
    sori_v="$($SORI version 2>/dev/null | head -1) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes'))"
    python3 - "$cpu" "$(nproc)" "$(uname -r)" "$sori_v" "$node_v" "$ws_v" "$uws_v" "$nginx_v" "$nchan_v" \
        "$ROUNDS" "$DURATION" "$WARMUP" "$SUBS" "$WINDOW" "$RATES" "$CONNS" "$CASES" "$AVAILABLE" "$SKIPPED" <<'EOF'
import json, sys
k = ["cpu", "nproc", "kernel", "sori", "node", "ws", "uws", "nginx", "nchan", "rounds", "duration", "warmup",
     "subs", "window", "rates", "conns", "cases", "servers", "skipped"]
print(json.dumps(dict(zip(k, sys.argv[1:]))))
EOF
} >"$META"

# ---- servers ----
start_server() { # name -> sets SRV_PID, SRV_URL, BENCH_EXTRA; 0 or 1
    local name=$1 port dir
    port=$(free_port)
    dir=$(mktemp -d "$TMP/$name.XXXX")
    BENCH_EXTRA=()
    case "$name" in
    sori|sori-async)
        local dur=sync
        [ "$name" = sori-async ] && dur=async
        taskset -c 0 "$SORI" serve --host 127.0.0.1 --port "$port" --data-dir "$dir/data" --workers 1 \
            --allow-guests --rate 1000000 --burst 1000000 --durability "$dur" --log-level warn \
            >"$dir/log" 2>&1 &
        SRV_PID=$!
        SRV_URL="ws://127.0.0.1:$port/ws" ;;
    sori-tls)
        taskset -c 0 "$SORI" serve --host 127.0.0.1 --port "$port" --data-dir "$dir/data" --workers 1 \
            --allow-guests --rate 1000000 --burst 1000000 --log-level warn \
            --tls-cert "$TMP/tls.crt" --tls-key "$TMP/tls.key" >"$dir/log" 2>&1 &
        SRV_PID=$!
        SRV_URL="wss://127.0.0.1:$port/ws" ;;
    node-ws)
        taskset -c 0 node "$ROOT/build/peers/node-ws/server.js" --host 127.0.0.1 --port "$port" >"$dir/log" 2>&1 &
        SRV_PID=$!
        SRV_URL="ws://127.0.0.1:$port/ws" ;;
    uws)
        taskset -c 0 "$ROOT/build/peers/uws/uws-chat" --host 127.0.0.1 --port "$port" >"$dir/log" 2>&1 &
        SRV_PID=$!
        SRV_URL="ws://127.0.0.1:$port/ws" ;;
    nchan)
        sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" bench/peers/nchan/nginx.conf.in >"$dir/nginx.conf"
        taskset -c 0 nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/log" 2>&1 &
        SRV_PID=$!
        SRV_URL="ws://127.0.0.1:$port/chat/"
        BENCH_EXTRA=(--peer-protocol nchan) ;;
    esac
    SRV_LOG=$dir/log
    if ! wait_port "$port" 15; then
        log "$name did not start (log: $SRV_LOG)"; cp "$SRV_LOG" "$LOGDIR/$name-failed.log" 2>/dev/null || true
        stop_server; return 1
    fi
    MEASURE_PID=$SRV_PID
    if [ "$name" = nchan ]; then # the worker does the work; the master only supervises
        MEASURE_PID=""
        for _ in $(seq 1 50); do
            MEASURE_PID=$(pgrep -P "$SRV_PID" | head -1 || true)
            [ -n "$MEASURE_PID" ] && break
            sleep 0.1
        done
        [ -n "$MEASURE_PID" ] || { log "nchan: no worker process"; stop_server; return 1; }
    fi
    return 0
}

case_args() { # case -> BENCH_ARGS
    case "$1" in
    fanout-closed) BENCH_ARGS=(--scenario fanout --rooms 1 --subs "$SUBS" --pubs 1 --window "$WINDOW"
                               --duration "$DURATION" --warmup "$WARMUP") ;;
    fanout-rate-*) BENCH_ARGS=(--scenario fanout --rooms 1 --subs "$SUBS" --pubs 1 --rate "${1#fanout-rate-}"
                               --duration "$DURATION" --warmup "$WARMUP") ;;
    connections) BENCH_ARGS=(--scenario connections --conns "$CONNS" --rooms 100 --sources 2
                             --duration "$DURATION" --connect-concurrency 256) ;;
    *) echo "compare.sh: unknown case $1" >&2; exit 2 ;;
    esac
}

# ---- the rounds ----
read -r -a SRV_LIST <<<"$AVAILABLE"
N=${#SRV_LIST[@]}
total=$((ROUNDS * N * $(wc -w <<<"$CASES")))
done_runs=0
log "servers:$AVAILABLE; cases: $CASES; $ROUNDS round(s); $total runs; results in $RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    for case_ in $CASES; do
        case_args "$case_"
        for i in $(seq 0 $((N - 1))); do
            srv=${SRV_LIST[$(((i + round - 1) % N))]}
            done_runs=$((done_runs + 1))
            if ! start_server "$srv"; then
                echo "{\"server\":\"$srv\",\"case\":\"$case_\",\"round\":$round,\"failed\":\"server did not start\"}" >>"$RESULTS"
                continue
            fi
            log "[$done_runs/$total] round $round, $case_, $srv (pid $MEASURE_PID)"
            line=""
            rc=0
            line=$(timeout -k 5 $((${DURATION%.*} + ${WARMUP%.*} + 120)) taskset -c 1 "$SORI" bench \
                --url "$SRV_URL" --server-pid "$MEASURE_PID" --connect-timeout 60 "${BENCH_EXTRA[@]}" \
                "${BENCH_ARGS[@]}" 2>"$LOGDIR/$round-$case_-$srv.err") || rc=$?
            alive=1
            kill -0 "$SRV_PID" 2>/dev/null || alive=0
            stop_server
            if [ $rc != 0 ] || [ -z "$line" ]; then
                log "  bench exit $rc (see $LOGDIR/$round-$case_-$srv.err)"
                echo "{\"server\":\"$srv\",\"case\":\"$case_\",\"round\":$round,\"failed\":\"bench exit $rc\"}" >>"$RESULTS"
                continue
            fi
            python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(server=sys.argv[2], case=sys.argv[3], round=int(sys.argv[4]), server_alive_after=sys.argv[5]=="1"); print(json.dumps(r))' \
                "$line" "$srv" "$case_" "$round" "$alive" >>"$RESULTS"
            grep -E 'deliveries/s|latency µs|server RSS|bench CPU' "$LOGDIR/$round-$case_-$srv.err" | sed 's/^ */    /' >&2 || true
        done
    done
done

python3 "$ROOT/bench/table.py" "$META" "$RESULTS" | tee "$OUT/results-$STAMP.md"
log "results: $RESULTS, table: $OUT/results-$STAMP.md"
