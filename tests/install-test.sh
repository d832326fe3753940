#!/bin/sh
# install-test.sh - what `meson install` delivers, used as an outsider would.
#
#   install-test.sh consumer  BUILD PREFIX LIBDIR INCLUDEDIR PLUGINDIR CONSUMER_C
#       meson install --destdir into a temporary folder; the installed include folder holds
#       kosmosg.h only, and every function it declares is exported by libkosmosg.so (nothing
#       else is); a C program compiled with nothing but `pkg-config --cflags --libs kosmosg`
#       of the installed .pc (-std=c99 -pedantic -Werror) opens the tiny model and generates
#       one image; the plugin is in GStreamer's plugin folder for the prefix.
#   install-test.sh no-cuda   BUILD PREFIX LIBDIR INCLUDEDIR PLUGINDIR
#       the installed plugin and libkosmosg name no CUDA library (readelf NEEDED), and
#       gst-inspect-1.0 / gst-launch-1.0 load and run the plugin with the CUDA libraries hidden:
#       the loader is started with --inhibit-cache (no /etc/ld.so.cache: cudart, cuBLASLt and
#       cuDNN live in folders only the cache lists), registry scanning in-process. A control
#       first shows libcudart cannot be loaded that way. backend=cpu makes an image; backend=cuda
#       is refused naming the missing library; backend=auto falls back to the CPU with a warning;
#       with no CUDA module at all, backend=cuda's error names KOSMOSG_CUDA_MODULE (a build
#       without CUDA, KG_BUILD_HAS_CUDA=0: the error says the build has no CUDA backend).
#
# Env: KG_TINY_MODEL, CC (compiler), MESON (meson), KG_BUILD_HAS_CUDA (1 or 0).
set -eu

mode=$1 build=$2 prefix=$3 libdir=$4 includedir=$5 plugindir=$6
dest=$(mktemp -d "${TMPDIR:-/tmp}/kg-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $includedir in /*) ;; *) includedir=$prefix/$includedir ;; esac
${MESON:-meson} install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$dest.log" 2>&1 ||
    { cat "$dest.log"; rm -f "$dest.log"; fail "meson install --destdir"; }
rm -f "$dest.log"
lib=$dest$libdir
plugin=$dest$plugindir/libgstkosmosg.so
[ -f "$plugin" ] || fail "no plugin at $plugindir (GStreamer's plugin folder for prefix $prefix)"
echo "installed: $(cd "$dest" && find . -type f | sort | tr '\n' ' ')"

if [ "$mode" = consumer ]; then
    consumer_c=$7
    hdrs=$(cd "$dest$includedir" && find . -type f | sort | tr '\n' ' ')
    [ "$hdrs" = "./kosmosg/kosmosg.h " ] || fail "installed headers: $hdrs (want kosmosg/kosmosg.h only)"
    # every function the header declares is exported, and only those
    declared=$(sed -n 's/^[a-z0-9_ ]*[ *]\(kg_[a-z0-9_]*\)(.*/\1/p' "$dest$includedir/kosmosg/kosmosg.h" | sort -u)
    exported=$(nm -D --defined-only "$lib/libkosmosg.so" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort -u)
    [ -n "$declared" ] || fail "no function found in the installed kosmosg.h"
    [ "$declared" = "$exported" ] || {
        echo "declared: $declared"; echo "exported: $exported"; fail "libkosmosg.so exports differ from kosmosg.h"; }
    echo "libkosmosg.so exports the $(echo "$declared" | wc -l) functions of kosmosg.h, nothing else"
    export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" PKG_CONFIG_LIBDIR="$lib/pkgconfig"
    flags=$(pkg-config --cflags --libs kosmosg) || fail "pkg-config kosmosg"
    echo "pkg-config --cflags --libs kosmosg: $flags"
    # shellcheck disable=SC2086
    ${CC:-cc} -std=c99 -Wall -Wextra -pedantic -Werror "$consumer_c" $flags -o "$dest/consumer" ||
        fail "the consumer does not build from the installed header and .pc alone"
    LD_LIBRARY_PATH=$lib "$dest/consumer" "$KG_TINY_MODEL" || fail "the consumer failed"
    echo "ok: consumer built with pkg-config alone generated an image"
    exit 0
fi

# ---- no-cuda
# libgstcuda-1.0 (the plugin's CUDA memory, -Dgst-cuda) is no CUDA library: it loads libcuda
# itself at run time (dlopen), which its own NEEDED list shows
gstcuda=$(ldconfig -p 2>/dev/null | sed -n 's/.*libgstcuda-1.0.so.0 .*=> //p' | head -n 1)
for f in "$plugin" "$lib/libkosmosg.so" ${gstcuda:+"$gstcuda"}; do
    needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
    echo "$(basename "$f") NEEDED: $needed"
    for n in $needed; do
        case $n in libgstcuda-1.0.so*) ;; *cuda*|*cublas*|*cudnn*) fail "$(basename "$f") links a CUDA library ($n)" ;; esac
    done
done
ldso=$(readelf -l /bin/sh | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
[ -x "$ldso" ] || fail "no dynamic loader found"
reg=$dest/registry.bin
hide() {
    env GST_PLUGIN_PATH_1_0="$dest$plugindir" GST_PLUGIN_PATH="$dest$plugindir" \
        GST_PLUGIN_SYSTEM_PATH_1_0="$(pkg-config --variable=pluginsdir gstreamer-1.0)" \
        GST_REGISTRY_1_0="$reg" GST_REGISTRY="$reg" GST_REGISTRY_FORK=no KOSMOSG_CUDA_MODULE= \
        OMP_WAIT_POLICY=passive "$ldso" --inhibit-cache --library-path "$lib" "$@"
}
# control: the hiding works (python's ctypes asks the same loader)
if hide /usr/bin/python3 -c 'import ctypes; ctypes.CDLL("libcudart.so.13")' 2>/dev/null; then
    fail "control: libcudart.so.13 still loads with the cache inhibited; nothing is hidden"
fi
python3 -c 'import ctypes; ctypes.CDLL("libcudart.so.13")' 2>/dev/null &&
    echo "control: libcudart.so.13 loads normally, not with the cache inhibited" ||
    echo "control: libcudart.so.13 is not on this machine at all"
hide "$(command -v gst-inspect-1.0)" kosmosgfilter >"$dest/inspect.txt" 2>&1 ||
    { cat "$dest/inspect.txt"; fail "gst-inspect-1.0 kosmosgfilter with the CUDA libraries hidden"; }
grep -q 'model-location' "$dest/inspect.txt" || fail "gst-inspect printed no properties"
echo "ok: the plugin loads with the CUDA libraries hidden"
launch=$(command -v gst-launch-1.0)
hide "$launch" -q kosmosgsrc model-location="$KG_TINY_MODEL" backend=cpu prompt="a red bicycle" \
    num-inference-steps=2 ! video/x-raw,width=64,height=64 ! fakesink num-buffers=1 \
    >"$dest/cpu.txt" 2>&1 || { cat "$dest/cpu.txt"; fail "backend=cpu with the CUDA libraries hidden"; }
echo "ok: backend=cpu generated with the CUDA libraries hidden"
if hide "$launch" kosmosgsrc model-location="$KG_TINY_MODEL" backend=cuda prompt="a" \
    num-inference-steps=2 ! fakesink num-buffers=1 >"$dest/cuda.txt" 2>&1; then
    fail "backend=cuda succeeded with the CUDA libraries hidden"
fi
grep -i 'cuda' "$dest/cuda.txt" | head -3
grep -q 'CUDA' "$dest/cuda.txt" || fail "backend=cuda was refused without saying why"
hide "$launch" kosmosgsrc model-location="$KG_TINY_MODEL" backend=auto prompt="a red bicycle" \
    num-inference-steps=2 ! video/x-raw,width=64,height=64 ! fakesink num-buffers=1 \
    >"$dest/auto.txt" 2>&1 || { cat "$dest/auto.txt"; fail "backend=auto with the CUDA libraries hidden"; }
grep -i 'warn\|cpu' "$dest/auto.txt" | head -2
echo "ok: backend=auto fell back to the CPU"
cuda_refused() { # $1: output file; backend=cuda must fail
    if hide "$launch" kosmosgsrc model-location="$KG_TINY_MODEL" backend=cuda prompt="a" \
        num-inference-steps=2 ! fakesink num-buffers=1 >"$1" 2>&1; then
        fail "backend=cuda succeeded ($1)"
    fi
}
if [ "${KG_BUILD_HAS_CUDA:-1}" = 0 ]; then
    # a build without CUDA says so, instead of looking for a module it never built
    cuda_refused "$dest/nocudabuild.txt"
    grep 'this build has no CUDA backend' "$dest/nocudabuild.txt" ||
        { cat "$dest/nocudabuild.txt"; fail "backend=cuda in a build without CUDA does not say the build lacks it"; }
    echo "ok: a build without CUDA says so for backend=cuda"
else
    # no CUDA module anywhere (a build tree's plugin, a partial install): the error names the
    # variable that points at it
    rm -f "$lib/kosmosg/libkosmosg-cuda.so"
    if [ -e "$libdir/kosmosg/libkosmosg-cuda.so" ]; then
        echo "skip: a CUDA module is installed at $libdir/kosmosg on this host"
    else
        cuda_refused "$dest/nomodule.txt"
        grep 'KOSMOSG_CUDA_MODULE' "$dest/nomodule.txt" ||
            { cat "$dest/nomodule.txt"; fail "the missing CUDA module's error does not name KOSMOSG_CUDA_MODULE"; }
        echo "ok: without a CUDA module, backend=cuda names KOSMOSG_CUDA_MODULE"
    fi
fi
