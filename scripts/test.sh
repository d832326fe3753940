#!/usr/bin/env bash
# Runs the whole test suite of ./build (made by scripts/setup.sh) and ends
# with one summary line "N passed, N failed, N skipped" over the meson tests.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/cuda/bin:$PATH"

ninja -C build || exit 1
meson test -C build --print-errorlogs --num-processes 2 "$@"
rc=$?
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $rc
