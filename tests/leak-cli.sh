#!/bin/sh
# leak-cli.sh - the CLI on the tiny model (64x64, 2 steps, one reference PNG made here) under
# LeakSanitizer, and with KG_LEAK_VALGRIND=1 also under valgrind's memcheck (~40 s of CPU, so
# opt-in): zero leaks, zero memory errors, and a PNG written. "Still reachable" blocks are not
# leaks (libgomp keeps its thread pool until exit) and are listed, not counted.
#
# usage: tests/leak-cli.sh CLI_WITH_LSAN [PLAIN_CLI]
#   CLI_WITH_LSAN: kosmosg-generate linked with -fsanitize=leak (or built with ASan)
#   PLAIN_CLI: the ordinary kosmosg-generate, for valgrind
# Needs KG_TINY_MODEL and python3 (to write the PNG).
set -eu

lsan_cli=$1
plain_cli=${2:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/kg-leak-cli.XXXXXX")
trap 'rm -rf "$work"' EXIT

# a 40x30 RGB PNG, written with zlib only
python3 - "$work/ref.png" <<'PY'
import struct, sys, zlib
w, h = 40, 30
raw = b''.join(b'\0' + bytes(((x * 7 + y * 3) % 256, (x * y) % 256, (x + 5 * y) % 256)[c]
                             for x in range(w) for c in range(3)) for y in range(h))
def chunk(t, d):
    return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
open(sys.argv[1], 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))
                              + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
PY

args="-m $KG_TINY_MODEL -i $work/ref.png -s 2 --size 64x64 --seed 7 --backend cpu --threads 1"
fail=0

echo "== LeakSanitizer: $lsan_cli"
if LSAN_OPTIONS=exitcode=23:report_objects=1 ASAN_OPTIONS=detect_leaks=1:exitcode=23 \
    "$lsan_cli" $args -p "a <i> wearing a hat" -N "blurry" -o "$work/lsan-%d.png" >"$work/lsan.log" 2>&1 &&
    [ -s "$work/lsan-0.png" ] && ! grep -q "Sanitizer" "$work/lsan.log"; then
    echo "no leaks, PNG written"
else
    cat "$work/lsan.log"
    echo "FAIL: LeakSanitizer run"
    fail=1
fi

if [ "${KG_LEAK_VALGRIND:-0}" = 1 ] && [ -n "$plain_cli" ] && command -v valgrind >/dev/null 2>&1; then
    echo "== valgrind memcheck: $plain_cli"
    if valgrind --quiet --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=definite,indirect,possible \
        --error-exitcode=42 "$plain_cli" $args -p "a <i> wearing a hat" -N "blurry" \
        -o "$work/vg-%d.png" >"$work/vg.log" 2>&1 && [ -s "$work/vg-0.png" ]; then
        grep -E "ERROR SUMMARY|definitely|indirectly|possibly|still reachable" "$work/vg.log" || true
        echo "no leaks, no memory errors, PNG written"
    else
        cat "$work/vg.log"
        echo "FAIL: valgrind run"
        fail=1
    fi
    if [ "$fail" = 0 ] && ! cmp -s "$work/lsan-0.png" "$work/vg-0.png"; then
        echo "FAIL: the two runs wrote different images for the same seed"
        fail=1
    fi
else
    echo "== valgrind run skipped (set KG_LEAK_VALGRIND=1 and install valgrind)"
fi
exit $fail
