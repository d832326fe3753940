#!/bin/sh
# model-file-cli.sh - kosmosg-generate keeps going when its model file changes on disk while it
# generates (tiny model, CPU): the copy it loaded is truncated to 0 bytes, or overwritten in place
# with zeros, once the CLI reports its first denoising step. The run must exit 0 (before the
# weights were the process's own memory: SIGBUS, exit 135) and write a PNG byte-identical to a run
# on an untouched file (not silently computed with the new contents).
#
# usage: tests/model-file-cli.sh CLI      (needs KG_TINY_MODEL)
set -eu

cli=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/kg-model-file-cli.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
# enough steps at 128x128 that the change lands mid-generation even on a fast machine
args="-p a_red_house_by_the_sea -s 40 --size 128x128 --seed 11 --backend cpu --threads 1"

cp "$KG_TINY_MODEL" "$work/ref.safetensors"
# shellcheck disable=SC2086
"$cli" -m "$work/ref.safetensors" $args -o "$work/ref.png" 2>"$work/ref.log"

fail=0
for change in truncate zero; do
    cp "$KG_TINY_MODEL" "$work/model.safetensors"
    rm -f "$work/out.png"
    # shellcheck disable=SC2086
    "$cli" -m "$work/model.safetensors" $args -o "$work/out.png" 2>"$work/$change.log" &
    pid=$!
    i=0
    until grep -q '^step 1/' "$work/$change.log" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 6000 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "FAIL ($change): the CLI never reported step 1"; cat "$work/$change.log"; exit 1
        fi
        sleep 0.01
    done
    case $change in
    truncate) truncate -s 0 "$work/model.safetensors" ;;
    zero) size=$(stat -c %s "$work/model.safetensors")
          head -c "$size" /dev/zero | dd of="$work/model.safetensors" conv=notrunc status=none ;;
    esac
    mid=yes
    grep -q '^decoded images' "$work/$change.log" && mid=no
    rc=0
    wait "$pid" || rc=$?
    pid=
    steps=$(grep -c '^step ' "$work/$change.log" || true)
    echo "$change: exit $rc, changed mid-generation: $mid, $steps steps reported"
    if [ "$mid" != yes ]; then
        echo "FAIL ($change): the generation had ended before the file changed; the case proves nothing"
        fail=1
    elif [ $rc -ne 0 ]; then
        echo "FAIL ($change): the CLI exited $rc"; cat "$work/$change.log"; fail=1
    elif ! cmp -s "$work/ref.png" "$work/out.png"; then
        echo "FAIL ($change): the PNG differs from the untouched file's"; fail=1
    else
        echo "ok ($change): PNG identical to the untouched run"
    fi
done
exit $fail
