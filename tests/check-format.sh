#!/bin/sh
# check-format.sh SRCDIR - the C/CUDA sources in the project style (.clang-format: engine/,
# kernels/, tools/, tests/ except tests/gst/) are exactly what clang-format 14 makes of them.
# gst/, tests/gst/ and examples/ follow gst-indent (their .clang-format disables formatting).
# Exit 77 (skip) without clang-format 14: other versions format differently.
set -u
src=$1
cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$cf" ] || ! "$cf" --version | grep -q 'version 14\.'; then
    echo "check-format: clang-format 14 not found, skipping"
    exit 77
fi
cd "$src" || exit 1
files=$(find engine kernels tools tests -path tests/gst -prune -o \
    \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -type f -print | sort)
n=0
bad=0
for f in $files; do
    n=$((n + 1))
    if ! "$cf" --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "check-format: $f differs from clang-format's output (run: $cf -i $f)"
        bad=$((bad + 1))
    fi
done
echo "check-format: $n files checked with $("$cf" --version | head -1), $bad not formatted"
[ "$bad" -eq 0 ]
