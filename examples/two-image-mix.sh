#!/bin/sh
# Two-image mixing: sink_0 is the first <i>, sink_1 the second (use the pads'
# "index" property to swap them without relinking). 768x512 output.
# usage: two-image-mix.sh MODEL A.png B.png OUT.png ["<i> prompt <i>"]
set -eu
model=$1 a=$2 b=$3 out=$4 prompt=${5:-"<i> wearing <i>"}
exec gst-launch-1.0 kosmosgfilter name=k model-location="$model" prompt="$prompt" seed=7 ! \
    video/x-raw,width=768,height=512 ! pngenc ! filesink location="$out" \
    filesrc location="$a" ! pngdec ! k.sink_0 \
    filesrc location="$b" ! pngdec ! k.sink_1
