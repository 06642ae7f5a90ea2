#!/usr/bin/env bash
# Runs every libFuzzer target in build/fuzz for N seconds (default 60), one
# at a time, with tests/fuzz/<target>.dict when there is one, growing its
# corpus in a scratch copy (build/fuzz/corpus-<target>); new crashes, leaks,
# timeouts (over 10 s for one input) and OOMs are written to
# build/fuzz/findings/. Keep a reproducer in tests/fuzz/corpus/<target>/ once
# the bug it found is fixed. With FUZZ_MERGE=1, the inputs that add coverage
# are merged back into tests/fuzz/corpus/<target>/ (-merge=1: only new
# features, so the corpora stay small). Targets can be named to run only
# those. Usage: scripts/fuzz.sh [seconds] [target...]
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
mkdir -p build/fuzz/findings
status=0
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for t in build/fuzz/fuzz_*; do [ -x "$t" ] && targets+=("$(basename "${t#build/fuzz/fuzz_}")"); done
fi
for name in "${targets[@]}"; do
  t=build/fuzz/fuzz_$name
  [ -x "$t" ] || { echo "!! no target $t (make fuzz-build)"; status=1; continue; }
  work=build/fuzz/corpus-$name
  mkdir -p "$work" tests/fuzz/corpus/"$name"
  cp -n tests/fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
  dict=()
  [ -f tests/fuzz/"$name".dict ] && dict=(-dict=tests/fuzz/"$name".dict)
  echo "== $name: ${secs}s${dict:+ with $name.dict}"
  if ! "$t" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
      -artifact_prefix=build/fuzz/findings/"$name"- "${dict[@]}" "$work" 2>build/fuzz/"$name".log; then
    echo "!! $name found a problem: see build/fuzz/findings/ and build/fuzz/$name.log"; status=1
  fi
  grep -E 'stat::number_of_executed_units|stat::new_units_added' build/fuzz/"$name".log | tr '\n' ' '
  echo
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    before=$(find tests/fuzz/corpus/"$name" -type f | wc -l)
    "$t" -merge=1 "${dict[@]}" tests/fuzz/corpus/"$name" "$work" >build/fuzz/"$name"-merge.log 2>&1 ||
      { echo "!! $name: merge failed, see build/fuzz/$name-merge.log"; status=1; }
    echo "   corpus: $before -> $(find tests/fuzz/corpus/"$name" -type f | wc -l) inputs"
  fi
done
exit $status
