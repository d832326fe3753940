#!/bin/sh
# Image variation: one reference image, bound to the prompt's <i>.
# usage: image-variation.sh MODEL IN.png OUT.png ["<i> prompt"]
set -eu
model=$1 in=$2 out=$3 prompt=${4:-"<i> in the snow"}
exec gst-launch-1.0 filesrc location="$in" ! pngdec ! \
    kosmosgfilter model-location="$model" prompt="$prompt" ! \
    pngenc ! filesink location="$out"
