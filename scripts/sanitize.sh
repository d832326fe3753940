#!/usr/bin/env bash
# sanitize.sh - builds the whole project with AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included) into build-asan and runs the test suite there. Any sanitizer
# report fails the test that triggered it: UBSan halts on the first error, ASan always does,
# and LeakSanitizer reports leaks at exit with a nonzero status.
#
# usage: scripts/sanitize.sh [extra meson test arguments]
# Left out: the fuzz suite (its own clang sanitizer build, see tests/fuzz/run-fuzz.sh) and
# gst-launch-smoke (gst-launch-1.0 is not instrumented; leak-gst covers gst-launch under
# LeakSanitizer in the normal build). KG_SANITIZE_GST=0 also leaves out the GStreamer suite.
# The registry is built in the test process (GST_REGISTRY_FORK=no): the uninstrumented
# gst-plugin-scanner cannot load an ASan-built plugin ("ASan runtime does not come first").
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${KG_ASAN_BUILD:-build-asan}
opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled -Dbuildtype=debugoptimized)
if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null
else
    meson setup "$dir" "${opts[@]}" >/dev/null
fi
ninja -C "$dir"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export KG_STRESS_CYCLES=${KG_STRESS_CYCLES:-200} KG_STRESS_GST_N=${KG_STRESS_GST_N:-20}
export GST_REGISTRY_FORK=no
# GLib's library constructor keeps one block forever (tests/lsan-gst.supp); gst-inspect-1.0, run
# by gst-errors, is not instrumented but loads the ASan plugin: allow that load order
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan-gst.supp:fast_unwind_on_malloc=0
export ASAN_OPTIONS=$ASAN_OPTIONS:verify_asan_link_order=0
skip=(--no-suite fuzz)
if [ "${KG_SANITIZE_GST:-1}" != 1 ]; then
    skip+=(--no-suite gst)
fi
meson test -C "$dir" --print-errorlogs --num-processes 2 "${skip[@]}" --timeout-multiplier 3 "$@"
