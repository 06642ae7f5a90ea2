#!/usr/bin/env bash
# Regenerates the flag table in docs/OPERATIONS.md from `sori config-doc`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SORI_BIN:-build/sori}
table=$("$bin" config-doc)
/usr/bin/python3 - "$table" <<'PY'
import sys
table = sys.argv[1] + "\n"
path = "docs/OPERATIONS.md"
doc = open(path).read()
begin, end = "<!-- flags:begin -->\n", "<!-- flags:end -->"
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + table + end + tail)
PY
