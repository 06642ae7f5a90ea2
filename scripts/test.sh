#!/usr/bin/env bash
# Runs every test suite and ends with one line "N passed, M failed":
#   1. build (release), cmocka unit tests
#   2. pytest integration tests against build/sori, on SQLite, again on a
#      throw-away PostgreSQL (scripts/pg-test.sh), again over TLS
#      (SORI_TEST_TLS=1); the store conformance suite on PostgreSQL
#   3. the same unit and integration tests under ASan+UBSan (build/asan)
#   4. the unit and integration tests under ThreadSanitizer (build/tsan)
#   5. every libFuzzer target replaying its corpus (build/fuzz)
# The browser tests (tests/e2e, Chromium via playwright-core) run after the
# integration tests of the release and ASan builds; the cluster tests
# (tests/cluster: several nodes on a throw-away PostgreSQL and Redis) in
# every build; test_bus runs under scripts/redis-test.sh.
# Environment: SORI_TEST_QUICK=1 skips 3-4; PYTEST_ARGS passes flags to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
JOBS=${JOBS:-2}
total_pass=0
total_fail=0
summary=()
log_dir=build/test-logs
mkdir -p "$log_dir"

note() { printf '\n=== %s ===\n' "$*"; }
count() { # name pass fail
  total_pass=$((total_pass + $2)); total_fail=$((total_fail + $3))
  summary+=("$(printf '%-28s %5d passed, %d failed' "$1" "$2" "$3")")
}

build() { # variant
  note "build $1"
  if ! make --no-print-directory -j"$JOBS" VARIANT="$1" "${@:2}" >"$log_dir/build-$1.log" 2>&1; then
    tail -40 "$log_dir/build-$1.log"
    count "build $1" 0 1
    return 1
  fi
  return 0
}

unit() { # outdir label
  local pass=0 fail=0
  for t in "$1"/tests/test_*; do
    [ -x "$t" ] || continue
    case $t in */test_bus) out=$(scripts/redis-test.sh "$t" 2>&1) ;; *) out=$("$t" 2>&1) ;; esac; rc=$?
    p=$(grep -oE '\[  PASSED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' | tail -1)
    f=$(grep -oE '\[  FAILED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' | tail -1)
    p=${p:-0}; f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    if [ "$f" -ne 0 ] || grep -qE 'runtime error:|ERROR: (Address|Leak)Sanitizer' <<<"$out"; then
      echo "$out" | tail -60; [ "$f" -eq 0 ] && f=1
    fi
    printf '  %-32s %3d passed, %d failed\n' "$(basename "$t")" "$p" "$f"
    pass=$((pass + p)); fail=$((fail + f))
  done
  count "$2" "$pass" "$fail"
}

# The store conformance suite against a throw-away PostgreSQL server.
store_pg() { # outdir label
  local out rc p f
  out=$(timeout 600 scripts/pg-test.sh "$1/tests/test_store" 2>&1); rc=$?
  p=$(grep -oE '\[  PASSED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' | tail -1); p=${p:-0}
  f=$(grep -oE '\[  FAILED  \] [0-9]+' <<<"$out" | grep -oE '[0-9]+$' | tail -1); f=${f:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$f" -ne 0 ] || grep -qE 'runtime error:|ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer' <<<"$out"; then
    echo "$out" | tail -60; [ "$f" -eq 0 ] && f=1
  fi
  printf '  %-32s %3d passed, %d failed\n' "test_store (postgresql)" "$p" "$f"
  count "$2" "$p" "$f"
}

integration() { # binary label [runner...]; SUITE= another test directory
  local bin=$1 label=$2
  shift 2
  note "integration: $label"
  local out rc p f e
  out=$(SORI_BIN="$bin" timeout 1500 "$@" $PY -m pytest -q -p no:cacheprovider "${SUITE:-tests/integration}" \
        ${PYTEST_ARGS:-} 2>&1); rc=$?
  echo "$out" | tail -30
  p=$(grep -oE '[0-9]+ passed' <<<"$out" | tail -1 | grep -oE '^[0-9]+'); p=${p:-0}
  f=$(grep -oE '[0-9]+ failed' <<<"$out" | tail -1 | grep -oE '^[0-9]+'); f=${f:-0}
  e=$(grep -oE '[0-9]+ errors?' <<<"$out" | tail -1 | grep -oE '^[0-9]+'); e=${e:-0}
  f=$((f + e))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count "$label" "$p" "$f"
}

cluster() { # binary label: several nodes on a throw-away PostgreSQL and Redis
  SUITE=tests/cluster integration "$1" "$2" scripts/pg-test.sh scripts/redis-test.sh
}

e2e() { # binary label
  note "browser: $2"
  local out rc p f
  out=$(SORI_BIN="$1" timeout 900 node --test --test-reporter=tap tests/e2e/ 2>&1); rc=$?
  echo "$out" | grep -E '^(not )?ok |^# (pass|fail)' | tail -30
  [ "$rc" -ne 0 ] && echo "$out" | grep -A25 '^not ok' | head -80
  p=$(grep -oE '^# pass [0-9]+' <<<"$out" | grep -oE '[0-9]+$'); p=${p:-0}
  f=$(grep -oE '^# fail [0-9]+' <<<"$out" | grep -oE '[0-9]+$'); f=${f:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  count "$2" "$p" "$f"
}

fuzz_replay() {
  note "fuzz corpus replay"
  local pass=0 fail=0
  for t in build/fuzz/fuzz_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t"); name=${name#fuzz_}
    corpus=tests/fuzz/corpus/$name
    [ -d "$corpus" ] || { echo "  no corpus for $name"; fail=$((fail + 1)); continue; }
    n=$(find "$corpus" -type f | wc -l)
    if "$t" -runs=0 "$corpus" >"$log_dir/fuzz-$name.log" 2>&1 && \
       find "$corpus" -type f -print0 | xargs -0 -r "$t" >>"$log_dir/fuzz-$name.log" 2>&1; then
      printf '  %-24s %4d inputs ok\n' "$name" "$n"; pass=$((pass + 1))
    else
      tail -30 "$log_dir/fuzz-$name.log"; fail=$((fail + 1))
    fi
  done
  count "fuzz corpus replay" "$pass" "$fail"
}

if build release all unit; then
  note "unit (release)"; unit build "unit (release)"
  note "store on postgresql (release)"; store_pg build "store on postgresql (release)"
  integration build/sori "integration (release)"
  integration build/sori "integration on postgresql (release)" scripts/pg-test.sh
  # the same suite with every server on TLS (--tls-cert) and every client on https/wss
  integration build/sori "integration over TLS (release)" env SORI_TEST_TLS=1
  # the same suite with every server a cluster node (--redis): the cluster's paths
  integration build/sori "integration as cluster nodes (release)" env SORI_TEST_CLUSTER=1 \
    scripts/pg-test.sh scripts/redis-test.sh
  cluster build/sori "cluster (release)"
  e2e build/sori "browser (release)"
  export SORI_TEST_TLS=1  # the browser client over https:// and wss://
  e2e build/sori "browser over TLS (release)"
  unset SORI_TEST_TLS
fi
if [ "${SORI_TEST_QUICK:-0}" != 1 ]; then
  if build asan all unit; then
    note "unit (asan+ubsan)"
    ASAN_OPTIONS=detect_leaks=1 unit build/asan "unit (asan+ubsan)"
    ASAN_OPTIONS=detect_leaks=1 store_pg build/asan "store on postgresql (asan+ubsan)"
    integration build/asan/sori "integration (asan+ubsan)"
    cluster build/asan/sori "cluster (asan+ubsan)"
    e2e build/asan/sori "browser (asan+ubsan)"
  fi
  if build tsan all unit; then
    note "unit (tsan)"
    unit build/tsan "unit (tsan)"
    integration build/tsan/sori "integration (tsan)"
    cluster build/tsan/sori "cluster (tsan)"
  fi
fi
if build fuzz fuzz-bins; then fuzz_replay; fi

note "summary"
printf '%s\n' "${summary[@]}"
echo
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
