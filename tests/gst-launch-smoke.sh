#!/bin/sh
# gst-launch-smoke.sh - the user-facing pipelines, run with gst-launch-1.0 on
# the tiny model: image variation (one PNG, also through uridecodebin whose
# pad appears after PAUSED), two-image mixing, text only.
# Each must end normally and write a valid PNG of the requested size.
# Then examples/live-mix: a bad prompt on stdin is refused with a warning
# and the run goes on; an error makes it exit 1.
# usage: gst-launch-smoke.sh LIVE_MIX_EXECUTABLE
# Env: KG_TINY_MODEL, GST_PLUGIN_PATH (the build's gst dir), GST_REGISTRY.
set -eu

live_mix=${1:?usage: gst-launch-smoke.sh LIVE_MIX_EXECUTABLE}
model=${KG_TINY_MODEL:?KG_TINY_MODEL is not set}
dir=$(mktemp -d "${TMPDIR:-/tmp}/kosmosg-smoke.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# Checks that $1 is a PNG of $2 x $3 pixels (signature + IHDR).
check_png() {
    python3 - "$1" "$2" "$3" <<'PY'
import struct, sys, zlib
path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', f'{path}: not a PNG'
length, kind = struct.unpack('>I4s', data[8:16])
assert kind == b'IHDR', f'{path}: first chunk {kind!r}'
iw, ih = struct.unpack('>II', data[16:24])
assert zlib.crc32(data[12:16 + length]) == struct.unpack('>I', data[16 + length:20 + length])[0], 'IHDR crc'
assert (iw, ih) == (w, h), f'{path}: {iw}x{ih}, expected {w}x{h}'
assert data.rstrip(b'\0').endswith(b'IEND\xaeB`\x82'), f'{path}: no IEND'
print(f'ok: {path} is a {iw}x{ih} PNG')
PY
}

run() {
    echo "gst-launch-1.0 $*"
    gst-launch-1.0 -q "$@"
}

run videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=96,height=72 ! pngenc ! \
    filesink location="$dir/a.png"
run videotestsrc pattern=ball num-buffers=1 ! video/x-raw,format=RGBA,width=80,height=120 ! \
    pngenc ! filesink location="$dir/b.png"

# image variation: one reference
run filesrc location="$dir/a.png" ! pngdec ! \
    kosmosgfilter model-location="$model" backend=cpu prompt="<i> in the snow" \
        num-inference-steps=2 seed=1 ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/variation.png"
check_png "$dir/variation.png" 64 64

# the same with a LoRA on the U-Net (kohya file for the tiny model's U-Net): another image
lora=${KG_LORA_DIR:?KG_LORA_DIR is not set}/kosmosg_tiny.kohya.safetensors
run filesrc location="$dir/a.png" ! pngdec ! \
    kosmosgfilter model-location="$model" backend=cpu prompt="<i> in the snow" \
        num-inference-steps=2 seed=1 loras="$lora:0.8" ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/variation-lora.png"
check_png "$dir/variation-lora.png" 64 64
if cmp -s "$dir/variation.png" "$dir/variation-lora.png"; then
    echo "FAIL: loras=...:0.8 gave the same image as no LoRA"; exit 1
fi
echo "ok: the LoRA changes the image"

# few-step sampling: the LCM scheduler (for an LCM-LoRA) at 4 steps without guidance
run kosmosgsrc model-location="$model" backend=cpu prompt="a red bicycle" scheduler=lcm \
        num-inference-steps=4 guidance-scale=1 seed=3 loras="$lora" ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/lcm.png"
check_png "$dir/lcm.png" 64 64

# the reference pad appears after PAUSED (uridecodebin's pads are dynamic):
# the filter waits for it instead of refusing the placeholder
run uridecodebin uri="file://$dir/a.png" ! \
    kosmosgfilter model-location="$model" backend=cpu prompt="<i> in the snow" \
        num-inference-steps=2 seed=1 ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/uridecode.png"
check_png "$dir/uridecode.png" 64 64

# two-image mixing: sink_0 and sink_1 bound to the two placeholders
run kosmosgfilter name=k model-location="$model" backend=cpu prompt="<i> wearing <i>" \
        num-inference-steps=2 seed=2 ! \
    video/x-raw,width=64,height=128 ! pngenc ! filesink location="$dir/mix.png" \
    filesrc location="$dir/a.png" ! pngdec ! k.sink_0 \
    filesrc location="$dir/b.png" ! pngdec ! k.sink_1
check_png "$dir/mix.png" 64 128

# sink_N::index through GstChildProxy: swapping the pads' indexes gives the
# bytes of swapping the inputs, and differs from the plain binding
mix() { # out first second [extra properties]
    out=$1; first=$2; second=$3; shift 3
    run kosmosgfilter name=k model-location="$model" backend=cpu prompt="<i> wearing <i>" \
            num-inference-steps=2 seed=3 "$@" ! \
        video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/$out" \
        filesrc location="$dir/$first" ! pngdec ! k.sink_0 \
        filesrc location="$dir/$second" ! pngdec ! k.sink_1
}
mix index-swapped.png a.png b.png sink_0::index=1 sink_1::index=0
mix inputs-swapped.png b.png a.png
mix plain.png a.png b.png
cmp "$dir/index-swapped.png" "$dir/inputs-swapped.png"
if cmp -s "$dir/index-swapped.png" "$dir/plain.png"; then
    echo "FAIL: sink_N::index changed nothing"; exit 1
fi
echo "ok: sink_0::index=1 sink_1::index=0 binds the pads in swapped order"

# ControlNet (issue 15): a ready control map (depth/pose/scribble PNG) with two reference images;
# control_0::location / ::conditioning-scale through GstChildProxy; the map changes the image
controlnet=${KG_CONTROLNET_FILE:?KG_CONTROLNET_FILE is not set}
run videotestsrc pattern=checkers-8 num-buffers=1 ! video/x-raw,format=RGB,width=64,height=64 ! \
    pngenc ! filesink location="$dir/map.png"
run kosmosgfilter name=k model-location="$model" backend=cpu prompt="<i> wearing <i>" \
        num-inference-steps=2 seed=3 \
        control_0::location="$controlnet" control_0::conditioning-scale=0.8 ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/control.png" \
    filesrc location="$dir/a.png" ! pngdec ! k.sink_0 \
    filesrc location="$dir/b.png" ! pngdec ! k.sink_1 \
    filesrc location="$dir/map.png" ! pngdec ! k.control_0
check_png "$dir/control.png" 64 64
if cmp -s "$dir/control.png" "$dir/plain.png"; then
    echo "FAIL: the control map changed nothing"; exit 1
fi
echo "ok: a control map with two reference images"
# canny maps: the element's own Canny (OpenCV's algorithm on RGB, as the demo) on a photo,
# text-only prompt, the ControlNet acting in the first half of the steps only
run kosmosgfilter name=k model-location="$model" backend=cpu prompt="a red bicycle" \
        num-inference-steps=2 seed=4 control-guidance-end=0.5 \
        control_0::location="$controlnet" control_0::canny=true ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/canny.png" \
    filesrc location="$dir/a.png" ! pngdec ! k.control_0
check_png "$dir/canny.png" 64 64
# and with the opencv plugin's edgedetect (gstreamer1.0-opencv; grey Canny) where it is installed
if gst-inspect-1.0 edgedetect > /dev/null 2>&1; then
    run kosmosgfilter name=k model-location="$model" backend=cpu prompt="a red bicycle" \
            num-inference-steps=2 seed=4 control_0::location="$controlnet" ! \
        video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/edgedetect.png" \
        filesrc location="$dir/a.png" ! pngdec ! videoconvert ! \
        edgedetect threshold1=100 threshold2=200 aperture=3 mask=false ! videoconvert ! k.control_0
    check_png "$dir/edgedetect.png" 64 64
else
    echo "skip: no edgedetect element (gstreamer1.0-opencv not installed)"
fi
# a control pad without a ControlNet fails the pipeline naming the pad
if timeout 120 gst-launch-1.0 -q kosmosgfilter name=k model-location="$model" backend=cpu \
        prompt="a cat" num-inference-steps=2 ! video/x-raw,width=64,height=64 ! fakesink \
        filesrc location="$dir/map.png" ! pngdec ! k.control_0 > "$dir/err3.txt" 2>&1; then
    echo "FAIL: a control pad without location was accepted"; exit 1
fi
grep -q "Control pad control_0 has no ControlNet" "$dir/err3.txt" || { cat "$dir/err3.txt"; exit 1; }
echo "ok: control pad without a ControlNet refused"

# per-step progress as GST_MESSAGE_PROGRESS, which gst-launch-1.0 prints
gst-launch-1.0 kosmosgsrc model-location="$model" backend=cpu prompt="a red bicycle" \
    num-inference-steps=2 ! video/x-raw,width=64,height=64 ! fakesink > "$dir/progress.txt" 2>&1
for line in "Progress: (generate) Denoising step 1 of 2" "Progress: (generate) Denoising step 2 of 2" \
        "Progress: (generate) Generated"; do
    grep -qF "$line" "$dir/progress.txt" || { cat "$dir/progress.txt"; echo "FAIL: no '$line'"; exit 1; }
done
echo "ok: gst-launch prints the per-step progress"

# text only: kosmosgsrc, and kosmosgfilter without sink pads
run kosmosgsrc model-location="$model" backend=cpu prompt="a red bicycle" num-inference-steps=2 ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/text.png"
check_png "$dir/text.png" 64 64
run kosmosgfilter model-location="$model" backend=cpu prompt="a red bicycle" num-inference-steps=2 ! \
    video/x-raw,width=64,height=64 ! pngenc ! filesink location="$dir/text2.png"
check_png "$dir/text2.png" 64 64

# a refused size fails the pipeline with the element's message
if timeout 120 gst-launch-1.0 -q filesrc location="$dir/a.png" ! pngdec ! \
        kosmosgfilter model-location="$model" backend=cpu prompt="<i>" ! \
        video/x-raw,width=250,height=64 ! fakesink > "$dir/err.txt" 2>&1; then
    echo "FAIL: 250x64 output was accepted"; exit 1
fi
# the caps state the model's size step, so gst-launch refuses the link itself
grep -qE "Unsupported output size 250x64|can't handle caps video/x-raw, width=\(int\)250, height=\(int\)64" \
    "$dir/err.txt" || { cat "$dir/err.txt"; exit 1; }
echo "ok: 250x64 refused"

# videoscale to a non-square size: the caps state the model's step, so the
# filter fixates to a size it can make (that very size once the engine takes
# every multiple of 8) and videoscale does the rest
run filesrc location="$dir/a.png" ! pngdec ! \
    kosmosgfilter model-location="$model" backend=cpu prompt="<i> in the snow" \
        num-inference-steps=2 seed=1 ! \
    videoscale ! video/x-raw,width=200,height=136 ! pngenc ! filesink location="$dir/scaled.png"
check_png "$dir/scaled.png" 200 136

# a LoRA that does not exist fails the pipeline naming the file
if timeout 120 gst-launch-1.0 -q kosmosgsrc model-location="$model" backend=cpu prompt="a cat" \
        num-inference-steps=2 loras="$dir/missing.safetensors:0.5" ! \
        video/x-raw,width=64,height=64 ! fakesink > "$dir/err2.txt" 2>&1; then
    echo "FAIL: a missing LoRA was accepted"; exit 1
fi
grep -q "missing.safetensors" "$dir/err2.txt" || { cat "$dir/err2.txt"; exit 1; }
echo "ok: missing LoRA refused"

# live-mix: the refused prompt leaves the two-placeholder one in use
printf 'only one <i>\n' | timeout 120 "$live_mix" --frames 2 --steps 2 --size 64 "$model" \
    "$dir/b.png" > "$dir/live.txt" 2>&1 || { cat "$dir/live.txt"; echo "FAIL: live-mix"; exit 1; }
grep -q "warning: The new prompt is refused" "$dir/live.txt" || { cat "$dir/live.txt"; exit 1; }
test "$(grep -c 'image done: .*prompt "<i> in the style of <i>"' "$dir/live.txt")" = 2 || {
    cat "$dir/live.txt"; echo "FAIL: live-mix did not go on with its prompt"; exit 1; }
echo "ok: live-mix refused the bad prompt and went on"
head -c 100 "$dir/b.png" > "$dir/truncated.png"  # pngdec fails while streaming
if timeout 120 "$live_mix" --frames 1 --steps 2 --size 64 "$model" "$dir/truncated.png" \
        < /dev/null > "$dir/live-err.txt" 2>&1; then
    cat "$dir/live-err.txt"; echo "FAIL: live-mix exited 0 after an error"; exit 1
fi
grep -q "^error:" "$dir/live-err.txt" || { cat "$dir/live-err.txt"; exit 1; }
echo "ok: live-mix exits 1 after an error"
echo "gst-launch smoke: all passed"
