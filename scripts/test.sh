#!/usr/bin/env bash
# Runs the whole test suite: every meson test of ./build (made by scripts/setup.sh),
# then the same suite under AddressSanitizer + UndefinedBehaviorSanitizer in
# ./build-asan (scripts/sanitize.sh; KG_SKIP_SANITIZE=1 leaves it out). Ends with
# one summary line "N passed, N failed, N skipped" over both runs.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/cuda/bin:$PATH"

ninja -C build || exit 1
meson test -C build --print-errorlogs --num-processes 2 "$@"
rc=$?
logs=(build/meson-logs/testlog.json)
if [ "${KG_SKIP_SANITIZE:-0}" != 1 ]; then
    echo "=== the same suite under ASan + UBSan (scripts/sanitize.sh) ==="
    bash scripts/sanitize.sh || rc=1
    logs+=(build-asan/meson-logs/testlog.json)
fi
python3 - "${logs[@]}" <<'PY'
import json, sys
p = f = s = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        f += 1
        print(f"missing test log {path}")
        continue
    for line in lines:
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
