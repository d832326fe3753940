#!/bin/sh
# Text only, four images: kosmosgsrc writes out-00.png .. out-03.png, then EOS.
# (kosmosgfilter with no sink pad does the same.)
# usage: text-only.sh MODEL "prompt" [OUTDIR]
set -eu
model=$1 prompt=$2 dir=${3:-.}
exec gst-launch-1.0 kosmosgsrc model-location="$model" prompt="$prompt" num-images=4 ! \
    pngenc ! multifilesink location="$dir/out-%02d.png"
