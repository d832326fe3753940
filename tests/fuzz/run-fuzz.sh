#!/bin/sh
# run-fuzz.sh - builds one libFuzzer target with clang (fuzzer + ASan + UBSan)
# straight from the engine sources and fuzzes it for a bounded time on a
# copy of its seed corpus (tests/fuzz/corpus_<target>/).
#
# usage: tests/fuzz/run-fuzz.sh [TARGET] [SECONDS]
#   TARGET: safetensors (default), model, spm, tokenizer, prompt, image, cli
#   SECONDS: fuzzing time, default 60 (a lone number is taken as SECONDS
#   for the safetensors target, as before)
# Environment: CLANG (default clang); KG_GOLDEN (default ../shared/golden
# beside the source tree; the tokenizer files come from there);
# KG_TINY_MODEL (the converted tiny model; the model target needs it);
# KG_FUZZ_KEEP=DIR copies the grown corpus to DIR afterwards.
# Exit status: 0 clean, 1 a crash / leak / sanitizer report / invariant
# failure / timeout (the input is kept and printed), 77 (meson's "skipped")
# when clang or its libFuzzer runtime is missing.
set -eu

case "${1:-}" in
'' | *[!0-9]*) target=${1:-safetensors}; secs=${2:-60} ;;
*) target=safetensors; secs=$1 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${CLANG:-clang}
e=$root/engine
: "${KG_GOLDEN:=$root/../shared/golden}"
export KG_GOLDEN

dict=
# Sources whose hot loops are numeric: compiled without comparison tracing (trace-cmp), which
# would otherwise take ~70% of the time and gains nothing there.
nocmp="tensor.c"
case $target in
safetensors)
    srcs="$e/json.c $e/safetensors.c $e/status.c $e/tensor.c"
    maxlen=4096 dict=$here/safetensors.dict ;;
model)
    # exactly what meson compiles into the engine library
    srcs="$(sed -n "s|^ *'\([a-z0-9_]*\.c\)',.*|$e/\1|p" "$e/meson.build")
$(sed -n "s|^ *'\([a-z0-9_]*\.c\)',.*|$root/kernels/cpu/\1|p" "$root/kernels/cpu/meson.build")"
    maxlen=262144 dict=$here/safetensors.dict
    nocmp="$nocmp $(sed -n "s|^ *'\([a-z0-9_]*\.c\)',.*|\1|p" "$root/kernels/cpu/meson.build")"
    if [ -z "${KG_TINY_MODEL:-}" ] || [ ! -f "$KG_TINY_MODEL" ]; then
        echo "run-fuzz: the model target needs KG_TINY_MODEL (the converted tiny model)" >&2
        exit 1
    fi ;;
spm)
    srcs="$e/tokenizer.c $e/spm_model.c $e/status.c $e/tensor.c"
    maxlen=262144 ;;
tokenizer)
    srcs="$e/tokenizer.c $e/spm_model.c $e/status.c $e/tensor.c"
    maxlen=1024 dict=$here/text.dict ;;
prompt)
    srcs="$e/prompt.c $e/tokenizer.c $e/spm_model.c $e/status.c $e/tensor.c"
    maxlen=1024 dict=$here/text.dict ;;
cli)
    # kosmosg-generate's parser; it calls the engine for defaults and scheduler names, so the
    # engine comes along (without coverage tracing: only the parser is explored)
    srcs="$root/tools/cli_args.c $(sed -n "s|^ *'\([a-z0-9_]*\.c\)',.*|$e/\1|p" "$e/meson.build")
$(sed -n "s|^ *'\([a-z0-9_]*\.c\)',.*|$root/kernels/cpu/\1|p" "$root/kernels/cpu/meson.build")"
    nocmp="$nocmp $(sed -n "s|^ *'\([a-z0-9_]*\.c\)',.*|\1|p" "$e/meson.build" "$root/kernels/cpu/meson.build" | grep -v '^status.c$' | tr '\n' ' ')"
    maxlen=2048 dict=$here/cli.dict ;;
image)
    srcs="$e/image.c $e/status.c $e/tensor.c"
    nocmp="$nocmp image.c fuzz_image.c"
    maxlen=4096 ;;
*)
    echo "run-fuzz: unknown target '$target'" >&2
    exit 2 ;;
esac

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "run-fuzz: $cc not found; install clang and libclang-rt-14-dev" >&2
    exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kg-fuzz-$target.XXXXXX")
keep=0
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

if ! printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' |
    "$cc" -x c -fsanitize=fuzzer,address,undefined - -o "$work/probe" 2>"$work/probe.log"; then
    cat "$work/probe.log" >&2
    echo "run-fuzz: $cc cannot link -fsanitize=fuzzer; install libclang-rt-14-dev" >&2
    exit 77
fi

# Objects are compiled two at a time (the model target needs the whole engine).
flags="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -I$e -I$root/kernels -I$root/tools -I$here"
mkdir "$work/obj"
for s in "$here/fuzz_$target.c" $srcs; do
    extra=-DKG_FUZZ_TRACE_CMP=1
    case " $nocmp " in *" $(basename "$s") "*) extra=-fno-sanitize-coverage=trace-cmp ;; esac
    echo "$extra $s"
done | CC=$cc FLAGS=$flags OBJ=$work/obj xargs -P 2 -L 1 sh -c \
    'exec $CC $FLAGS $0 -Wno-unknown-pragmas -c "$1" -o "$OBJ/$(basename "$1" .c).o"'
"$cc" -fsanitize=fuzzer,address,undefined "$work"/obj/*.o -lm -lpthread -o "$work/fuzz_$target"

mkdir "$work/corpus" "$work/artifacts"
cp "$here/corpus_$target"/* "$work/corpus/"
dictopt=
[ -n "$dict" ] && dictopt="-dict=$dict"

set +e
"$work/fuzz_$target" -max_total_time="$secs" -max_len="$maxlen" -timeout=20 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 $dictopt -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    "$work/corpus" >"$work/log" 2>&1
rc=$?
set -e

grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added' "$work/log" || true
if [ -n "${KG_FUZZ_KEEP:-}" ]; then
    mkdir -p "$KG_FUZZ_KEEP"
    cp "$work/corpus"/* "$KG_FUZZ_KEEP/"
fi
if [ "$rc" -ne 0 ] || ls "$work/artifacts/"* >/dev/null 2>&1; then
    keep=1
    tail -n 60 "$work/log"
    for a in "$work/artifacts/"*; do
        [ -f "$a" ] || continue
        echo "run-fuzz: failing input $a:"
        od -A d -t x1z "$a" | head -n 40
    done
    echo "run-fuzz: $target FAILED (exit $rc); everything is kept in $work"
    exit 1
fi
echo "run-fuzz: $target clean after ${secs} s"
