#!/usr/bin/env bash
# Runs every libFuzzer target in build/fuzz for N seconds (default 60),
# growing its corpus in a scratch copy; new crashes are written to
# build/fuzz/findings/. Keep a reproducer in tests/fuzz/corpus/<target>/ once
# the bug it found is fixed. Usage: scripts/fuzz.sh [seconds]
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
mkdir -p build/fuzz/findings
status=0
for t in build/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t"); name=${name#fuzz_}
  work=build/fuzz/corpus-$name
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
  dict=()
  [ -f tests/fuzz/"$name".dict ] && dict=(-dict=tests/fuzz/"$name".dict)
  echo "== $name: ${secs}s"
  if ! "$t" -max_total_time="$secs" -artifact_prefix=build/fuzz/findings/"$name"- "${dict[@]}" "$work" \
      2>build/fuzz/"$name".log; then
    echo "!! $name found a problem: see build/fuzz/findings/ and build/fuzz/$name.log"; status=1
  fi
  grep -E '^#[0-9]+.*DONE|stat::number_of_executed_units' build/fuzz/"$name".log | tail -1
done
exit $status
