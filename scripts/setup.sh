#!/usr/bin/env bash
# Installs every build/test dependency on a fresh Debian 12 machine (apt) and
# builds the project into ./build. CUDA (and the plugin's CUDA memory, through
# gstreamer-cuda-1.0 from libgstreamer-plugins-bad1.0-dev) is compiled when the
# toolkit is at /usr/local/cuda (it needs no GPU to build).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential meson ninja-build pkg-config \
    libdnnl-dev libpng-dev check \
    libglib2.0-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
    gstreamer1.0-opencv libgstreamer-plugins-bad1.0-dev \
    python3 python3-numpy python3-torch python3-hypothesis \
    clang clang-format libclang-rt-14-dev >/dev/null

if [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi

if [ -d build ]; then
    meson setup --reconfigure build
else
    meson setup build
fi
ninja -C build
