#!/bin/sh
# cli-errors.sh - kosmosg-generate against bad command lines and bad files (issue 18): each case
# must end with a clear message naming the culprit, a nonzero exit, no crash or hang, and no
# generation when the problem could be seen before it.
#
# usage: tests/cli-errors.sh KOSMOSG_GENERATE
# Env: KG_TINY_MODEL (the converted tiny model).
set -u

cli=$1
model=${KG_TINY_MODEL:?KG_TINY_MODEL is not set}
work=$(mktemp -d "${TMPDIR:-/tmp}/kg-cli-errors.XXXXXX")
trap 'rm -rf "$work"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "PASS $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# refuse NAME EXPECTED_TEXT ARGS...: a nonzero exit (not a signal), EXPECTED_TEXT in stderr,
# and the model never loaded (the CLI found the problem before any work).
refuse() {
    name=$1 want=$2
    shift 2
    timeout 60 "$cli" "$@" >"$work/out" 2>"$work/err"
    rc=$?
    msg=$(head -c 600 "$work/err" | tr '\n' ' ')
    if [ "$rc" -ne 0 ] && [ "$rc" -lt 124 ] && grep -qF -- "$want" "$work/err" &&
        ! grep -q "^loaded " "$work/err"; then
        ok "$name: exit $rc: $msg"
    else
        bad "$name: exit $rc (wanted nonzero, before loading, with \"$want\"): $msg"
    fi
}

base="-m $model -p a --size 64x64 -s 1 --backend cpu --threads 1"

echo "== option values"
refuse "-o %n" '"%n" is not understood' $base -o "$work/x%n.png"
refuse "-o %s" '"%s" is not understood' $base -o "$work/x%s.png"
refuse "-o %p" '"%p" is not understood' $base -o "$work/x%p.png"
refuse "-o %d%d" 'at most one' $base -n 2 -o "$work/x%d%d.png"
refuse "-n 2 without %d" 'has no %d but 2 images' $base -n 2 -o "$work/same.png"
refuse "--threads 100000" 'expected an integer in 1..1024' $base --threads 100000 -o "$work/t.png"
refuse "--threads 50000" 'expected an integer in 1..1024' $base --threads 50000 -o "$work/t.png"
refuse "--threads -1" 'expected an integer in 1..1024' $base --threads -1 -o "$work/t.png"
refuse "--threads many" 'expected an integer in 1..1024' $base --threads many -o "$work/t.png"
refuse "--steps 4294967297" 'expected an integer in 1..1000' $base --steps 4294967297 -o "$work/t.png"
refuse "--size 64x64junk" 'expected WxH' $base --size 64x64junk -o "$work/t.png"
refuse "--seed empty" 'empty value' $base --seed "" -o "$work/t.png"
refuse "--seed 2^64" 'expected -1 (random)' $base --seed 18446744073709551616 -o "$work/t.png"
refuse "-g nan" 'expected a number in 0..100' $base -g nan -o "$work/t.png"
ls "$work"/*.png >/dev/null 2>&1 && bad "a PNG was written by a refused command line" ||
    ok "no PNG written by the refused command lines"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
