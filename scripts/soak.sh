#!/usr/bin/env bash
# make soak: the long soak and chaos tests (tests/soak/, docs/OPERATIONS.md
# "Soak and chaos tests") against the release build, one after the other,
# each starting and stopping (by PID) its own servers on 127.0.0.1, and
# ends with one line "N passed, M failed". Not part of make test.
#
#   churn     tests/soak/soak_churn.py  --duration $SOAK_CHURN_S   (600)
#   flood     tests/soak/soak_flood.py  --duration $SOAK_FLOOD_S   (120)
#   crash     tests/soak/soak_crash.py  --cycles $SOAK_CRASH_CYCLES (20) on
#             SQLite, on PostgreSQL (scripts/pg-test.sh) and a 2-node
#             cluster (scripts/pg-test.sh scripts/redis-test.sh)
#   valgrind  the integration tests ($SOAK_VALGRIND_TESTS: all of them by
#             default, ~17 min) with every server under valgrind memcheck
#             (SORI_TEST_VALGRIND=1), then tests/cluster the same way
#
# SOAK_SMOKE=1 runs short versions (churn 60 s, flood 30 s, crash 3 cycles,
# valgrind on one file); SOAK_ONLY="churn flood" runs a subset. Logs go to
# build/soak-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
log_dir=build/soak-logs
mkdir -p "$log_dir"
if [ "${SOAK_SMOKE:-0}" = 1 ]; then
  : "${SOAK_CHURN_S:=60}" "${SOAK_FLOOD_S:=30}" "${SOAK_CRASH_CYCLES:=3}"
  : "${SOAK_VALGRIND_TESTS:=tests/integration/test_chat_guarantees.py}"
fi
CHURN_S=${SOAK_CHURN_S:-600}
FLOOD_S=${SOAK_FLOOD_S:-120}
CRASH_CYCLES=${SOAK_CRASH_CYCLES:-20}
VALGRIND_TESTS=${SOAK_VALGRIND_TESTS:-tests/integration}
ONLY=${SOAK_ONLY:-churn flood crash valgrind}
pass=0
fail=0
summary=()

run() { # name command...
  local name=$1 rc t0 t1
  shift
  printf '\n=== %s: %s ===\n' "$name" "$*"
  t0=$(date +%s)
  "$@" 2>&1 | tee "$log_dir/$name.log" | grep -vE '^  wave|^  cycle' ; rc=${PIPESTATUS[0]}
  t1=$(date +%s)
  if [ "$rc" -eq 0 ]; then pass=$((pass + 1)); r=PASS; else fail=$((fail + 1)); r="FAIL (exit $rc)"; fi
  summary+=("$(printf '%-22s %-14s %5d s' "$name" "$r" $((t1 - t0)))")
}

want() { [[ " $ONLY " == *" $1 "* ]]; }

echo "sori soak: commit $(git rev-parse --short HEAD) $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
want churn && run churn timeout $((CHURN_S + 1200)) $PY tests/soak/soak_churn.py --duration "$CHURN_S"
want flood && run flood timeout $((FLOOD_S + 600)) $PY tests/soak/soak_flood.py --duration "$FLOOD_S"
if want crash; then
  budget=$((CRASH_CYCLES * 40 + 600))
  run crash-sqlite timeout $budget $PY tests/soak/soak_crash.py --store sqlite --cycles "$CRASH_CYCLES"
  run crash-postgresql timeout $budget scripts/pg-test.sh $PY tests/soak/soak_crash.py --store postgresql \
    --cycles "$CRASH_CYCLES"
  run crash-cluster timeout $budget scripts/pg-test.sh scripts/redis-test.sh $PY tests/soak/soak_crash.py \
    --store cluster --cycles "$CRASH_CYCLES"
fi
if want valgrind; then
  if ! command -v valgrind >/dev/null; then
    # scripts/deps.sh does not install it (yet): apt-get install valgrind
    echo "valgrind: not installed (apt-get install valgrind)"; fail=$((fail + 1))
    summary+=("$(printf '%-22s %-14s' valgrind 'FAIL (missing)')")
  else
    # shellcheck disable=SC2086 # a list of test files
    run valgrind env SORI_TEST_VALGRIND=1 timeout 7200 $PY -m pytest -q -p no:cacheprovider $VALGRIND_TESTS \
      ${PYTEST_ARGS:-}
    [ "${SOAK_SMOKE:-0}" = 1 ] || run valgrind-cluster env SORI_TEST_VALGRIND=1 timeout 3600 \
      scripts/pg-test.sh scripts/redis-test.sh $PY -m pytest -q -p no:cacheprovider tests/cluster ${PYTEST_ARGS:-}
  fi
fi

printf '\n=== soak summary ===\n'
printf '%s\n' "${summary[@]}"
echo
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
