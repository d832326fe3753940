#!/bin/sh
# run-fuzz.sh - builds the safetensors libFuzzer target with clang
# (fuzzer + ASan + UBSan) straight from the engine sources and fuzzes it
# for a bounded time on a copy of the seed corpus.
#
# usage: tests/fuzz/run-fuzz.sh [SECONDS]   (default 60)
# Exit status: 0 clean, 1 a crash / sanitizer report / invariant failure
# (the input is kept and printed), 77 (meson's "skipped") when clang or its
# libFuzzer runtime is missing.
set -eu

secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${CLANG:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run-fuzz: $cc not found; install clang and libclang-rt-14-dev" >&2
    exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kg-fuzz.XXXXXX")
keep=0
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

if ! printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' |
    "$cc" -x c -fsanitize=fuzzer,address,undefined - -o "$work/probe" 2>"$work/probe.log"; then
    cat "$work/probe.log" >&2
    echo "run-fuzz: $cc cannot link -fsanitize=fuzzer; install libclang-rt-14-dev" >&2
    exit 77
fi

"$cc" -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$root/engine" \
    "$here/fuzz_safetensors.c" "$root/engine/json.c" "$root/engine/safetensors.c" \
    "$root/engine/status.c" "$root/engine/tensor.c" -lm -o "$work/fuzz_safetensors"

mkdir "$work/corpus" "$work/artifacts"
cp "$here"/corpus_safetensors/* "$work/corpus/"

set +e
"$work/fuzz_safetensors" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -dict="$here/safetensors.dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    "$work/corpus" >"$work/log" 2>&1
rc=$?
set -e

grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added' "$work/log" || true
if [ "$rc" -ne 0 ] || ls "$work/artifacts/"* >/dev/null 2>&1; then
    keep=1
    tail -n 60 "$work/log"
    for a in "$work/artifacts/"*; do
        [ -f "$a" ] || continue
        echo "run-fuzz: failing input $a:"
        od -A d -t x1z "$a" | head -n 40
    done
    echo "run-fuzz: FAILED (exit $rc); everything is kept in $work"
    exit 1
fi
echo "run-fuzz: clean after ${secs} s"
