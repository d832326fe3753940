#!/bin/sh
# cli-errors.sh - kosmosg-generate against bad command lines and bad files (issue 18): each case
# must end with a clear message naming the culprit, a nonzero exit, no crash or hang, and no
# generation when the problem could be seen before it.
#
# usage: tests/cli-errors.sh KOSMOSG_GENERATE
# Env: KG_TINY_MODEL (the converted tiny model). Needs python3 (standard library only) for the
# damaged copies (tests/mutate-model.py), PNGs and latents files.
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
refuse "--precision bfloat16" 'expected auto, fp32, bf16 or fp16' $base --precision bfloat16 -o "$work/t.png"
ls "$work"/*.png >/dev/null 2>&1 && bad "a PNG was written by a refused command line" ||
    ok "no PNG written by the refused command lines"

here=$(cd "$(dirname "$0")" && pwd)
mut="python3 $here/mutate-model.py"
# fail_run NAME EXPECTED_TEXT ARGS...: a nonzero exit (no signal, no timeout) with the text;
# the model may have been loaded (the problem shows during the work).
fail_run() {
    name=$1 want=$2
    shift 2
    timeout 60 "$cli" "$@" >"$work/out" 2>"$work/err"
    rc=$?
    msg=$(grep "kosmosg-generate:" "$work/err" | head -c 600 | tr '\n' ' ')
    if [ "$rc" -ne 0 ] && [ "$rc" -lt 124 ] && grep -qF -- "$want" "$work/err"; then
        ok "$name: exit $rc: $msg"
    else
        bad "$name: exit $rc (wanted nonzero with \"$want\"): $msg $(tail -c 300 "$work/err")"
    fi
}
# PNG W H ALPHA OUT: a test image (alpha: 0 none, 1 an alpha channel with transparent pixels)
png() {
    python3 - "$@" <<'PY'
import struct, sys, zlib
w, h, alpha, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = []
for y in range(h):
    row = b'\0'
    for x in range(w):
        rgb = bytes(((x * 7 + y * 3) % 256, (x * y) % 256, (x + 5 * y) % 256))
        row += rgb + (bytes([0 if (x + y) % 3 == 0 else (x * 40) % 256]) if alpha else b'')
    rows.append(row)
def chunk(t, d):
    return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
ihdr = struct.pack('>IIBBBBB', w, h, 8, 6 if alpha else 2, 0, 0, 0)
open(out, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b''.join(rows))) + chunk(b'IEND', b''))
PY
}
# LATENTS VALUE OUT: a [1, 4, 8, 8] F32 'latents' tensor, element 5 set to VALUE
latents() {
    python3 - "$@" <<'PY'
import json, struct, sys
vals = [0.1 * ((i * 37) % 11 - 5) for i in range(256)]
vals[5] = float(sys.argv[1])
head = json.dumps({'latents': {'dtype': 'F32', 'shape': [1, 4, 8, 8], 'data_offsets': [0, 1024]}}).encode()
head += b' ' * (-len(head) % 8)
open(sys.argv[2], 'wb').write(struct.pack('<Q', len(head)) + head + struct.pack('<256f', *vals))
PY
}
no_temp_left() {
    if ls -a "$1" | grep -q '^\..*\.[A-Za-z0-9]\{6\}$'; then
        bad "$2: temporary files left in $1: $(ls -a "$1" | tr '\n' ' ')"
    else
        ok "$2: no temporary file left"
    fi
}

echo "== precision the backend cannot run: refused, not run in another"
fail_run "--precision fp16 on the CPU" 'precision fp16 is not available on the CPU backend' $base --precision fp16 -o "$work/t.png"
[ -e "$work/t.png" ] && bad "fp16 on the CPU wrote an image" || ok "no image from fp16 on the CPU"

echo "== FIFOs and other non-files: refused, never waited on"
mkfifo "$work/fifo"
refuse "FIFO as model" 'not a regular file' -m "$work/fifo" -p a --size 64x64 -o "$work/f.png"
png 40 30 0 "$work/ref.png"
refuse "FIFO as -i" 'not a regular file' $base -p "<i>" -i "$work/fifo" -o "$work/f.png"
refuse "FIFO as --latents" 'not a regular file' $base --latents "$work/fifo" -o "$work/f.png"
refuse "FIFO as -o" 'not a regular file' $base -o "$work/fifo"
refuse "FIFO as --dump" 'not a regular file' $base --dump "$work/fifo" -o "$work/f.png"
refuse "directory as model" 'not a regular file' -m "$work" -p a --size 64x64 -o "$work/f.png"
refuse "/dev/zero as -i" 'not a regular file' $base -p "<i>" -i /dev/zero -o "$work/f.png"

echo "== long paths: the cause survives (messages shortened in the middle)"
long="$work/$(printf 'd%.0s' $(seq 1 200))/$(printf 'e%.0s' $(seq 1 200))/$(printf 'f%.0s' $(seq 1 200))/model.safetensors"
refuse "a 600-byte missing model path" 'model.safetensors: cannot open: No such file or directory' -m "$long" -p a --size 64x64 -o "$work/l.png"
mkdir -p "$work/$(printf 'd%.0s' $(seq 1 200))"
cp "$model" "$work/$(printf 'd%.0s' $(seq 1 200))/m.st"
long2="$work/$(printf 'd%.0s' $(seq 1 200))/m.st"
$mut "$model" "$long2" --config mllm ln_eps 1e30
refuse "a config error in a long-named model" 'ln_eps 1e+30: expected a number in (0, 0.1]' -m "$long2" -p a --size 64x64 -o "$work/l.png"

echo "== outputs checked before the work"
refuse "-o in a missing directory" 'No such file or directory' $base -o "$work/missing/o.png"
mkdir "$work/ro"
chmod 555 "$work/ro"
if touch "$work/ro/probe" 2>/dev/null; then
    rm -f "$work/ro/probe"
    echo "SKIP read-only directory cases (running as a user who can write anywhere)"
else
    refuse "-o in a read-only directory" 'Permission denied' $base -o "$work/ro/o.png"
    refuse "--dump in a read-only directory" 'Permission denied' $base --dump "$work/ro/d.st" -o "$work/o.png"
fi
refuse "--dump in a missing directory" 'No such file or directory' $base --dump "$work/missing/d.st" -o "$work/o.png"
refuse "--dump a directory" 'not a regular file' $base --dump "$work/ro" -o "$work/o.png"
no_temp_left "$work" "refused outputs"

echo "== disk full: an error with errno, no partial file, an existing file kept"
printf 'precious' >"$work/keep.png"
printf 'precious' >"$work/keep.st"
# 64x64 PNGs are ~9 KB and the dump ~150 KB; 8 blocks of 512 bytes fit neither
(ulimit -f 8 && fail_run "-o over the file size limit" 'File too large' $base -o "$work/keep.png")
[ "$(cat "$work/keep.png")" = precious ] && ok "existing -o file unchanged after the failed write" ||
    bad "existing -o file damaged: $(head -c 40 "$work/keep.png" | od -c | head -2)"
(ulimit -f 100 && fail_run "--dump over the file size limit" 'File too large' $base --dump "$work/keep.st" -o "$work/k2.png")
[ "$(cat "$work/keep.st")" = precious ] && ok "existing --dump file unchanged after the failed write" ||
    bad "existing --dump file damaged"
[ -e "$work/k2.png" ] && bad "the PNG of a run whose dump failed was written" || ok "no PNG from the run whose dump failed"
no_temp_left "$work" "failed writes"

echo "== non-finite values: detected, the stage named, no image"
$mut "$model" "$work/m.st" --fill diffusion_unet.unet.conv_in.weight nan
fail_run "NaN U-Net weights" 'denoising step 1 of 1 (U-Net + scheduler) produced a non-finite value (NaN' -m "$work/m.st" -p a --size 64x64 -s 1 --threads 1 -o "$work/n.png"
$mut "$model" "$work/m.st" --fill gpt_model.decoder.embed_tokens.weight inf
fail_run "Inf MLLM embeddings" 'encoding the prompt (CLIP, connector, MLLM, AlignerNet) produced a non-finite value' -m "$work/m.st" -p a --size 64x64 -s 1 --threads 1 -o "$work/n.png"
$mut "$model" "$work/m.st" --fill vae.vae.decoder.conv_out.weight inf
fail_run "Inf VAE weights" 'the VAE decoder produced a non-finite value' -m "$work/m.st" -p a --size 64x64 -s 1 --threads 1 -o "$work/n.png"
$mut "$model" "$work/m.st" --config scheduler beta_end 0.999
fail_run "degenerate scheduler (beta_end 0.999)" 'a degenerate noise schedule' -m "$work/m.st" -p a --size 64x64 -s 1 --threads 1 -o "$work/n.png"
latents nan "$work/lat.st"
fail_run "NaN in --latents" 'initial latents: element 5 of 256 is NaN' $base --latents "$work/lat.st" -o "$work/n.png"
latents inf "$work/lat.st"
fail_run "Inf in --latents" 'initial latents: element 5 of 256 is Inf' $base --latents "$work/lat.st" -o "$work/n.png"
ls "$work"/n*.png >/dev/null 2>&1 && bad "an image was written from non-finite values" || ok "no image from non-finite values"

echo "== model config values: bounded, finite, no repeated keys"
cfg() {
    name=$1 want=$2
    shift 2
    $mut "$model" "$work/c.st" --config "$@"
    refuse "$name" "$want" -m "$work/c.st" -p a --size 64x64 -s 1 --threads 1 -o "$work/c.png"
}
cfg "mllm.max_positions 1e7" 'max_positions 10000000: at most 65536' mllm max_positions 10000000
cfg "mllm.max_positions 1e8" 'max_positions 100000000: at most 65536' mllm max_positions 100000000
cfg "mllm.ln_eps inf" 'ln_eps inf: expected a number in (0, 0.1]' mllm ln_eps 1e999
cfg "mllm.ln_eps 1e30" 'ln_eps 1e+30: expected a number in (0, 0.1]' mllm ln_eps 1e30
cfg "clip.ln_eps 0" 'ln_eps 0: expected a number in (0, 0.1]' clip ln_eps 0
cfg "clip.ln_eps a string" "key 'ln_eps' is not a number" clip ln_eps '"1e-5"'
cfg "clip.mlp_ratio 1e300" 'mlp_ratio 1e+300' clip mlp_ratio 1e300
cfg "aligner.ln_eps -1" 'ln_eps -1: expected a number in (0, 0.1]' aligner ln_eps -1
cfg "unet.norm_eps 1e30" 'norm_eps 1e+30: expected a number in (0, 0.1]' unet norm_eps 1e30
cfg "duplicate key in a config" 'duplicate object key "dim"' mllm dim '40, "dim": 41'

echo "== RGBA references: alpha dropped (PIL convert(\"RGB\")), as the elements do"
png 40 30 1 "$work/rgba.png"
python3 - "$work/rgba.png" "$work/rgb.png" <<'PY'
import struct, sys, zlib
d = open(sys.argv[1], 'rb').read()
w, h = struct.unpack('>II', d[16:24])
i, idat = 8, b''
while i < len(d):
    n, t = struct.unpack('>I4s', d[i:i + 8])
    if t == b'IDAT':
        idat += d[i + 8:i + 8 + n]
    i += 12 + n
raw = zlib.decompress(idat)
rows = [raw[y * (1 + 4 * w) + 1:(y + 1) * (1 + 4 * w)] for y in range(h)]
rgb = b''.join(b'\0' + b''.join(r[4 * x:4 * x + 3] for x in range(w)) for r in rows)
def chunk(t, c):
    return struct.pack('>I', len(c)) + t + c + struct.pack('>I', zlib.crc32(t + c) & 0xffffffff)
open(sys.argv[2], 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(rgb)) + chunk(b'IEND', b''))
PY
timeout 60 "$cli" $base -p "<i>" -i "$work/rgba.png" -g 1 --seed 3 -o "$work/from-rgba.png" 2>"$work/err" &&
    timeout 60 "$cli" $base -p "<i>" -i "$work/rgb.png" -g 1 --seed 3 -o "$work/from-rgb.png" 2>>"$work/err" &&
    cmp -s "$work/from-rgba.png" "$work/from-rgb.png" &&
    ok "an RGBA reference gives the bytes of the same image without its alpha channel" ||
    bad "RGBA and RGB references differ: $(tail -c 300 "$work/err")"

echo "== LoRA"
loras="$here/data/lora"
refuse "--lora :0.5" 'expected FILE or FILE:SCALE' $base --lora :0.5 -o "$work/l.png"
fail_run "--lora of another U-Net" "lora_unet_down_blocks_2_attentions_0_proj_in.lora_down.weight" \
    $base --lora "$loras/unet_tiny4.kohya.safetensors" -o "$work/l.png"
fail_run "--lora missing file" "nope.safetensors" $base --lora "$work/nope.safetensors:0.5" -o "$work/l.png"
[ -e "$work/l.png" ] && bad "a PNG was written despite a bad LoRA" || ok "no PNG written for a bad LoRA"
timeout 60 "$cli" $base -s 4 -g 1 --scheduler lcm --lora "$loras/kosmosg_tiny.kohya.safetensors:0.7" \
        -o "$work/lcm.png" 2>"$work/err" && [ -s "$work/lcm.png" ] &&
    grep -q "kohya layout, 242 U-Net layers at scale 0.7; 3 text-encoder tensors ignored" "$work/err" &&
    ok "--scheduler lcm with a LoRA: image written, the LoRA reported with its ignored text-encoder tensors" ||
    bad "--scheduler lcm with a LoRA: $(tail -c 300 "$work/err")"

echo "== ControlNet options and files (issue 15)"
cnet=${KG_CONTROLNET_FILE:-}
other=${KG_CONTROLNET_OTHER:-}
png 64 64 0 "$work/ctl.png"
refuse "--control without --controlnet" 'needs a --controlnet FILE' $base --control "$work/ctl.png" -o "$work/c.png"
refuse "--controlnet without --control" 'without a --control IMAGE' $base --controlnet x.st -o "$work/c.png"
refuse "--control-scale without --control" 'without a --control IMAGE' $base --control-scale 0.5 -o "$work/c.png"
refuse "2 --controlnet for 3 --control" '2 --controlnet for 3 --control' $base --control a --control b --control c --controlnet x --controlnet y -o "$work/c.png"
refuse "--control-scale abc" 'expected a number in -100..100' $base --control "$work/ctl.png" --controlnet x --control-scale abc -o "$work/c.png"
refuse "--control-start after --control-end" 'is not before --control-end' $base --control "$work/ctl.png" --controlnet x --control-start 0.8 --control-end 0.2 -o "$work/c.png"
refuse "--control-end 1.5" 'expected a number in 0..1' $base --control "$work/ctl.png" --controlnet x --control-end 1.5 -o "$work/c.png"
refuse "--control-canny 100" 'expected LOW:HIGH' $base --control "$work/ctl.png" --controlnet x --control-canny 100 -o "$work/c.png"
refuse "--control-canny without --control" 'control-canny given without a --control IMAGE' $base --control-canny 100:200 -o "$work/c.png"
refuse "--control missing file" '--control /nonexistent/ctl.png: cannot open' $base --control /nonexistent/ctl.png --controlnet x -o "$work/c.png"
if [ -n "$cnet" ] && [ -n "$other" ]; then
    fail_run "model file as --controlnet" 'is not a ControlNet file' $base --control "$work/ctl.png" --controlnet "$model" -o "$work/c.png"
    fail_run "ControlNet for another U-Net" "does not fit the model's U-Net" $base --control "$work/ctl.png" --controlnet "$other" -o "$work/c.png"
    fail_run "ControlNet file as -m" 'is a ControlNet file, not a Kosmos-G model' -m "$cnet" -p a --size 64x64 -o "$work/c.png"
    fail_run "missing --controlnet file" 'No such file' $base --control "$work/ctl.png" --controlnet "$work/none.st" -o "$work/c.png"
    timeout 60 "$cli" $base --control "$work/ctl.png" --controlnet "$cnet" --control-scale 0.5 -o "$work/cn.png" 2>"$work/err" &&
        [ -s "$work/cn.png" ] && ok "--control with --controlnet generates $(tail -1 "$work/err")" ||
        bad "--control run failed: $(tail -c 300 "$work/err")"
    timeout 60 "$cli" $base --control "$work/ctl.png" --controlnet "$cnet" --control-canny 50:120 -o "$work/cc.png" 2>"$work/err" &&
        [ -s "$work/cc.png" ] && ok "--control-canny generates" ||
        bad "--control-canny run failed: $(tail -c 300 "$work/err")"
else
    bad "KG_CONTROLNET_FILE / KG_CONTROLNET_OTHER not set"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
