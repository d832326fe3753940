#!/bin/sh
# leak-gst.sh - tiny-model gst-launch-1.0 pipelines under LeakSanitizer (liblsan preloaded into
# the uninstrumented gst-launch): kosmosgfilter with one reference image (64x64, 2 steps, written
# as a PNG) and kosmosgsrc with two images. Zero leaks, exit 0 and a PNG written, or it fails.
#
# usage: tests/leak-gst.sh GST_LAUNCH   (env: KG_TINY_MODEL, GST_PLUGIN_PATH, CC for liblsan)
# Exit 77 (skipped) when liblsan cannot be found.
set -eu

launch=$1
lsan=$(${CC:-cc} -print-file-name=liblsan.so.0 2>/dev/null || true)
case $lsan in
/*) [ -f "$lsan" ] || lsan= ;;
*) lsan= ;;
esac
if [ -z "$lsan" ]; then
    echo "leak-gst: liblsan.so.0 not found (Debian: liblsan0); skipped"
    exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/kg-leak-gst.XXXXXX")
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "$0")" && pwd)
export GST_REGISTRY="$work/registry.bin" OMP_WAIT_POLICY=passive
export LSAN_OPTIONS="exitcode=23:fast_unwind_on_malloc=0:suppressions=$here/lsan-gst.supp"
fail=0

run() {
    name=$1
    shift
    echo "== $name"
    if LD_PRELOAD=$lsan "$launch" -q "$@" >"$work/$name.log" 2>&1 && ! grep -q "Sanitizer" "$work/$name.log"; then
        echo "no leaks"
    else
        cat "$work/$name.log"
        echo "FAIL: $name"
        fail=1
    fi
}

run filter videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=40,height=30 ! \
    kosmosgfilter model-location="$KG_TINY_MODEL" backend=cpu prompt="<i> on a beach" \
    num-inference-steps=2 seed=3 ! video/x-raw,width=64,height=64 ! videoconvert ! pngenc ! \
    filesink location="$work/filter.png"
[ -s "$work/filter.png" ] || { echo "FAIL: no PNG from the filter pipeline"; fail=1; }
run src kosmosgsrc model-location="$KG_TINY_MODEL" backend=cpu prompt="a red square" \
    num-inference-steps=2 num-images=2 seed=4 ! video/x-raw,width=64,height=64 ! fakesink
exit $fail
