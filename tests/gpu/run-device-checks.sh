#!/usr/bin/env bash
# run-device-checks.sh - the CUDA checks, in one go, on a machine with a GPU.
#
# Usage, from the repository root of a copy of this tree:
#   tests/gpu/run-device-checks.sh [OUT_DIR]        (default: $OUT, else ./device-out)
# Builds the engine and every tests/test_cuda_*.c straight with gcc + nvcc
# (no meson: a bare GPU machine may lack the golden files and the Python
# packages the meson configuration wants), runs each CUDA test, then
# compute-sanitizer (memcheck, racecheck, synccheck) on the small subset of
# the parity suite. Writes OUT_DIR/run.log (everything, set -x) and
# OUT_DIR/summary.md (one table row per step). Every step has a timeout and
# the whole run stops starting new steps after KG_DEVICE_BUDGET_S seconds
# (default 420), so it ends well inside 8 minutes.
#
# Environment: KG_DEVICE_BUILD (build folder, default /tmp/kg-device-build),
# KG_CUDA_ARCH (default 90), KG_GOLDEN / KG_TINY_MODEL (passed to the tests
# when set; the tiny model is otherwise looked for in device-data/ and in a
# carried build*/tests/), KG_DEVICE_BUDGET_S.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT_DIR=${1:-${OUT:-$ROOT/device-out}}
BUILD=${KG_DEVICE_BUILD:-/tmp/kg-device-build}
ARCH=${KG_CUDA_ARCH:-90}
BUDGET=${KG_DEVICE_BUDGET_S:-420}
JOBS=$(nproc 2>/dev/null || echo 4)
T0=$(date +%s)

MODE=${KG_DEVICE_MODE:-all} # "build": only the build (the script runs itself so timeout can bound it)

mkdir -p "$OUT_DIR" "$BUILD/obj"
LOG=$OUT_DIR/run.log
SUMMARY=$OUT_DIR/summary.md
ROWS=()
if [ "$MODE" = all ]; then
    : >"$LOG"
    exec > >(tee -a "$LOG") 2>&1
fi

elapsed() { echo $(($(date +%s) - T0)); }

# step NAME LIMIT_S COMMAND...: runs with a timeout bounded by the budget,
# logs its output and adds a summary row (verdict, rc, seconds, counts).
step() {
    local name=$1 limit=$2 left rc s e verdict counts
    shift 2
    left=$((BUDGET - $(elapsed)))
    if [ "$left" -lt 15 ]; then
        ROWS+=("| $name | NOT RUN (time budget spent) | - | - | - |")
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "===== $name (limit ${limit}s, elapsed $(elapsed)s)"
    s=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$BUILD/step.log" 2>&1
    rc=$?
    e=$(($(date +%s) - s))
    cat "$BUILD/step.log"
    counts=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$BUILD/step.log" | tail -n 1)
    case $rc in
    0) verdict=PASS ;;
    77) verdict=SKIP ;;
    124 | 137) verdict=TIMEOUT ;;
    *) verdict=FAIL ;;
    esac
    ROWS+=("| $name | $verdict | $rc | $e | ${counts:--} |")
    echo "===== $name: $verdict (rc $rc, ${e}s)"
    return 0
}

write_summary() {
    {
        echo "# CUDA device checks"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), total $(elapsed) s"
        echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
        echo "- device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
        echo "- nvcc: $(nvcc --version 2>/dev/null | tail -n 1); cuDNN header: ${CUDNN_INC:-not found}; BLAS: ${BLAS_NOTE:-none}"
        echo
        echo "| step | verdict | rc | seconds | checks |"
        echo "| --- | --- | --- | --- | --- |"
        printf '%s\n' "${ROWS[@]}"
        echo
        echo "The per-check lines (NMSE per op and shape) are in run.log."
    } >"$SUMMARY"
}
[ "$MODE" = all ] && trap write_summary EXIT

set -x

# ------------------------------------------------------------- toolchain
export PATH=/usr/local/cuda/bin:$PATH
if [ "$MODE" = all ]; then
    nvidia-smi || true
    nvcc --version || true
fi
CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")

py_site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)

# first folder holding $1 among the candidates $2..
find_in() {
    local f=$1 d
    shift
    for d in "$@"; do
        if ls "$d"/$f >/dev/null 2>&1; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

INC_DIRS=("$CUDA_HOME/include" /usr/local/include /usr/include /usr/include/x86_64-linux-gnu)
LIB_DIRS=("$CUDA_HOME/lib64" "$CUDA_HOME/lib" /usr/local/lib /usr/lib/x86_64-linux-gnu)
if [ -n "$py_site" ]; then
    for p in "$py_site"/nvidia/cudnn "$py_site"/nvidia/cublas "$py_site"/nvidia/cu13 "$py_site"/nvidia/cuda_runtime; do
        INC_DIRS+=("$p/include")
        LIB_DIRS+=("$p/lib")
    done
fi
CUDNN_INC=$(find_in cudnn.h "${INC_DIRS[@]}")
CUDNN_LIB=$(find_in 'libcudnn.so*' "${LIB_DIRS[@]}")
LT_LIB=$(find_in 'libcublasLt.so*' "${LIB_DIRS[@]}")
RT_LIB=$(find_in 'libcudart.so*' "${LIB_DIRS[@]}")
echo "cudnn.h in '$CUDNN_INC', libcudnn in '$CUDNN_LIB', cublasLt in '$LT_LIB', cudart in '$RT_LIB'"

# link a library by its unversioned name when present, else its .so.N
libflag() {
    local name=$1 dir=$2 f
    if [ -e "$dir/lib$name.so" ]; then
        echo "-l$name"
    else
        f=$(ls "$dir"/lib$name.so.* 2>/dev/null | sort | head -n 1)
        echo "-l:$(basename "$f")"
    fi
}

# The CPU side's GEMM: oneDNN where the machine has it (as meson's -Ddnnl=auto), else our C kernel.
BLAS_C=()
BLAS_L=()
BLAS_NOTE="none (own C GEMM)"
if [ -e /usr/include/oneapi/dnnl/dnnl.h ] && ls /usr/lib/x86_64-linux-gnu/libdnnl.so* >/dev/null 2>&1; then
    BLAS_C=(-DKG_HAVE_DNNL=1)
    BLAS_L=(-ldnnl)
    BLAS_NOTE=oneDNN
fi

# -fPIC: the GStreamer plugin below links the same archive
CFLAGS=(-std=c11 -O2 -fPIC -D_GNU_SOURCE -fopenmp -DKG_HAVE_CUDA=1 ${BLAS_C[@]+"${BLAS_C[@]}"} -I"$ROOT/engine"
    -I"$ROOT/kernels" -I"$ROOT/tests" -I"$CUDA_HOME/include" "-DKG_LORA_DATA=\"$ROOT/tests/data/lora\"")
[ -n "$CUDNN_INC" ] && CFLAGS+=(-I"$CUDNN_INC")
NVFLAGS=(-O3 -std=c++17 -Xcompiler=-fPIC "-gencode=arch=compute_$ARCH,code=sm_$ARCH" -I"$ROOT/engine" -I"$ROOT/kernels")
[ -n "$CUDNN_INC" ] && NVFLAGS+=(-I"$CUDNN_INC")
LIBS=()
RPATH=""
for d in "$CUDNN_LIB" "$LT_LIB" "$RT_LIB"; do
    [ -n "$d" ] && LIBS+=(-L"$d") && RPATH="$RPATH:$d"
done
LIBS+=($(libflag cudnn "${CUDNN_LIB:-/nonexistent}") $(libflag cublasLt "${LT_LIB:-/nonexistent}")
    $(libflag cudart "${RT_LIB:-/nonexistent}") ${BLAS_L[@]+"${BLAS_L[@]}"} -fopenmp -lstdc++ -lm -lpthread -ldl
    -Wl,-rpath,"${RPATH#:}")
export LD_LIBRARY_PATH="${RPATH#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ----------------------------------------------------------------- build
compile_one() {
    local f=$1 o
    o=$BUILD/obj/$(echo "${f#$ROOT/}" | tr '/' '_').o
    case $f in
    *.cu) nvcc "${NVFLAGS[@]}" -c "$f" -o "$o" ;;
    *) gcc "${CFLAGS[@]}" -c "$f" -o "$o" ;;
    esac
}

build() {
    local f o fail=0 pids=() n=0
    rm -f "$BUILD"/obj/*.o "$BUILD"/libkg.a "$BUILD"/test_cuda_*
    # .cu first: they take longest
    for f in "$ROOT"/kernels/cuda/*.cu "$ROOT"/engine/*.c "$ROOT"/kernels/cpu/*.c "$ROOT"/kernels/cuda/*.c; do
        compile_one "$f" &
        pids+=($!)
        n=$((n + 1))
        if [ $((n % JOBS)) -eq 0 ]; then
            for p in "${pids[@]}"; do wait "$p" || fail=1; done
            pids=()
        fi
    done
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    [ $fail = 0 ] || echo "some sources did not compile (see above); linking what there is"
    ar rcs "$BUILD/libkg.a" "$BUILD"/obj/*.o || return 1
    gcc "${CFLAGS[@]}" -c "$ROOT/tests/testutil.c" -o "$BUILD/testutil.o" || return 1
    for f in "$ROOT"/tests/test_cuda_*.c; do
        o=$BUILD/$(basename "$f" .c)
        gcc "${CFLAGS[@]}" "$f" "$BUILD/testutil.o" "$BUILD/libkg.a" "${LIBS[@]}" -o "$o" || fail=1
    done
    # the benchmark, once it can run on the CUDA backend
    if grep -q kg_backend_cuda_new "$ROOT/tools/kosmosg-bench.c" 2>/dev/null; then
        gcc "${CFLAGS[@]}" -I"$ROOT/tools" "$ROOT/tools/kosmosg-bench.c" "$ROOT/tools/st_writer.c" "$ROOT/tools/outfile.c" "$BUILD/libkg.a" "${LIBS[@]}" \
            -o "$BUILD/kosmosg-bench" || fail=1
    fi
    return $fail
}

if [ "$MODE" = build ]; then
    build
    exit $?
fi
step "build (gcc + nvcc sm_$ARCH, $JOBS jobs)" 240 env KG_DEVICE_MODE=build bash "$0" "$OUT_DIR"

# ----------------------------------------------------------------- tests
# the tiny model: $KG_TINY_MODEL, else one carried in device-data/ or a carried build folder
if [ -z "${KG_TINY_MODEL:-}" ]; then
    KG_TINY_MODEL=$(ls "$ROOT"/device-data/kosmosg_tiny.safetensors "$ROOT"/build*/tests/kosmosg_tiny.safetensors 2>/dev/null | head -n 1)
fi
TEST_ENV=()
[ -n "${KG_GOLDEN:-}" ] && TEST_ENV+=("KG_GOLDEN=$KG_GOLDEN")
[ -n "${KG_TINY_MODEL:-}" ] && TEST_ENV+=("KG_TINY_MODEL=$KG_TINY_MODEL")


if [ -x "$BUILD/test_cuda_init" ]; then
    step "test_cuda_init" 60 env ${TEST_ENV[@]+"${TEST_ENV[@]}"} "$BUILD/test_cuda_init"
fi
for m in f16 bf16 f32; do
    [ -x "$BUILD/test_cuda_ops" ] && step "test_cuda_ops $m" 150 env ${TEST_ENV[@]+"${TEST_ENV[@]}"} "$BUILD/test_cuda_ops" "$m"
done
for m in f16 f32; do
    [ -x "$BUILD/test_cuda_e2e" ] && step "test_cuda_e2e $m (tiny model: ${KG_TINY_MODEL:-none})" 120 env ${TEST_ENV[@]+"${TEST_ENV[@]}"} "$BUILD/test_cuda_e2e" "$m"
done
for t in "$BUILD"/test_cuda_*; do
    case $(basename "$t") in
    test_cuda_init | test_cuda_ops | test_cuda_e2e) continue ;;
    esac
    [ -x "$t" ] && step "$(basename "$t")" 120 env ${TEST_ENV[@]+"${TEST_ENV[@]}"} "$t"
done

# ------------------------------- the GStreamer plugin's CUDA memory output (gst/gstkosmosgcuda.c)
# Built straight with gcc against the static engine above when the machine has the GStreamer
# development files with gstreamer-cuda-1.0 (libgstreamer-plugins-bad1.0-dev); a bare GPU machine
# usually lacks them, and then this shows as NOT RUN. It checks (1) tests/gst/test_gst_cuda.c's
# device cases (GstCudaMemory out, same pixels as system memory, context announced and
# queried), (2) kosmosgsrc backend=cuda ! CUDA-memory caps ! cudadownload: every image written
# by the engine straight into CUDA memory (the element's LOG line per buffer, no host copy on
# its side; cudadownload's download is the pipeline's own), and (3) the same into nvh264enc
# through cudaconvert, when nvcodec has them.
gst_cuda_checks() {
    local pc="gstreamer-1.0 gstreamer-base-1.0 gstreamer-video-1.0 gstreamer-cuda-1.0"
    local plug=$BUILD/gst
    if ! pkg-config --exists $pc gstreamer-check-1.0 2>/dev/null; then
        ROWS+=("| gst CUDA memory | NOT RUN (no GStreamer development files with gstreamer-cuda-1.0) | - | - | - |")
        return 0
    fi
    mkdir -p "$plug"
    if ! gcc "${CFLAGS[@]}" -shared -fPIC -DKG_HAVE_GST_CUDA=1 -DGST_USE_UNSTABLE_API -DVERSION='"device"' \
        -DPACKAGE='"kosmosg-gst"' -DGST_PACKAGE_NAME='"kosmosg-gst device check"' \
        -DGST_PACKAGE_ORIGIN='"Unknown package origin"' $(pkg-config --cflags $pc) \
        "$ROOT"/gst/*.c "$BUILD/libkg.a" $(pkg-config --libs $pc) "${LIBS[@]}" -o "$plug/libgstkosmosg.so" ||
        ! gcc "${CFLAGS[@]}" -DKG_HAVE_GST_CUDA=1 "$ROOT/tests/gst/test_gst_cuda.c" "$BUILD/libkg.a" \
            $(pkg-config --cflags --libs gstreamer-check-1.0 gstreamer-video-1.0) "${LIBS[@]}" -o "$BUILD/test_gst_cuda"; then
        ROWS+=("| gst CUDA memory | FAIL (the plugin or test_gst_cuda did not build) | - | - | - |")
        return 0
    fi
    local genv=(GST_PLUGIN_PATH="$plug" GST_PLUGIN_PATH_1_0="$plug" GST_REGISTRY="$BUILD/gst.registry" CK_FORK=no
        ${TEST_ENV[@]+"${TEST_ENV[@]}"})
    step "test_gst_cuda (device cases: GstCudaMemory out, same pixels, context)" 120 env "${genv[@]}" "$BUILD/test_gst_cuda"
    if [ -z "${KG_TINY_MODEL:-}" ] || ! command -v gst-launch-1.0 >/dev/null; then
        ROWS+=("| gst-launch CUDA memory | NOT RUN (no tiny model or gst-launch-1.0) | - | - | - |")
        return 0
    fi
    local launch="kosmosgsrc model-location=$KG_TINY_MODEL backend=cuda num-inference-steps=2 num-images=3 prompt=a"
    if env "${genv[@]}" gst-inspect-1.0 cudadownload >/dev/null 2>&1; then
        step "gst-launch: kosmosgsrc ! CUDAMemory ! cudadownload (3 images, each engine-written)" 90 \
            env "${genv[@]}" bash -c "GST_DEBUG=kosmosgcuda:6 gst-launch-1.0 $launch ! 'video/x-raw(memory:CUDAMemory),width=64,height=64' ! cudadownload ! fakesink 2>&1 | tee '$BUILD/zc.log'; test \$(grep -c 'written by the engine into CUDA memory, no host copy' '$BUILD/zc.log') -eq 3"
    else
        ROWS+=("| gst-launch cudadownload | NOT RUN (nvcodec's cudadownload not found) | - | - | - |")
    fi
    if env "${genv[@]}" gst-inspect-1.0 nvh264enc >/dev/null 2>&1 && env "${genv[@]}" gst-inspect-1.0 cudaconvert >/dev/null 2>&1; then
        step "gst-launch: kosmosgsrc ! CUDAMemory ! cudaconvert ! nvh264enc" 90 \
            env "${genv[@]}" bash -c "GST_DEBUG=kosmosgcuda:6 gst-launch-1.0 $launch ! 'video/x-raw(memory:CUDAMemory),width=64,height=64' ! cudaconvert ! nvh264enc ! fakesink 2>&1 | tee '$BUILD/zc2.log'; test \$(grep -c 'written by the engine into CUDA memory, no host copy' '$BUILD/zc2.log') -eq 3"
    else
        ROWS+=("| gst-launch nvh264enc | NOT RUN (nvcodec's nvh264enc/cudaconvert not found) | - | - | - |")
    fi
}
gst_cuda_checks

# ------------------ golden e2e cases and the whole-model benchmark on CUDA (docs/gpu-parity.md)
# test_e2e needs the golden e2e files: $KG_GOLDEN or a carried device-data/golden.
GOLDEN_DIR=${KG_GOLDEN:-$(ls -d "$ROOT"/device-data/golden 2>/dev/null | head -n 1)}
if [ -n "$GOLDEN_DIR" ] && [ -n "${KG_TINY_MODEL:-}" ] && [ -e "$GOLDEN_DIR/kosmosg/e2e_two_images_dpms.safetensors" ] &&
    gcc "${CFLAGS[@]}" -I"$ROOT/tools" "$ROOT/tests/test_e2e.c" "$ROOT/tools/st_writer.c" "$ROOT/tools/outfile.c" "$BUILD/testutil.o" \
        "$BUILD/libkg.a" "${LIBS[@]}" -lpng -o "$BUILD/test_e2e"; then
    for c in two_images_dpms text_negative_dpms variation_g1_dpms two_images_ddim text_pndm app512_dpms; do
        step "test_e2e api $c (cuda vs float64 golden)" 90 \
            env KG_GOLDEN="$GOLDEN_DIR" KG_TINY_MODEL="$KG_TINY_MODEL" KG_TEST_BACKEND=cuda "$BUILD/test_e2e" api "$c"
    done
else
    ROWS+=("| test_e2e on cuda | NOT RUN (needs golden e2e files in \$KG_GOLDEN or device-data/golden, the tiny model, libpng) | - | - | - |")
fi
[ -x "$BUILD/kosmosg-bench" ] &&
    step "kosmosg-bench --component all (cuda)" 150 "$BUILD/kosmosg-bench" --component all --backend cuda --warmup 1 --reps 3

# compute-sanitizer last: the parity, e2e and benchmark steps above matter more within the budget
# ------------------------------------------------------- compute-sanitizer
SAN=$(command -v compute-sanitizer || ls "$CUDA_HOME"/bin/compute-sanitizer 2>/dev/null ||
    ls /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -n 1)
if [ -n "$SAN" ] && [ -x "$BUILD/test_cuda_ops" ]; then
    for tool in memcheck racecheck synccheck; do
        step "compute-sanitizer $tool: test_cuda_ops f16 small" 120 \
            env ${TEST_ENV[@]+"${TEST_ENV[@]}"} "$SAN" --tool "$tool" --error-exitcode 3 "$BUILD/test_cuda_ops" f16 small
    done
    step "compute-sanitizer memcheck: test_cuda_init" 60 \
        env ${TEST_ENV[@]+"${TEST_ENV[@]}"} "$SAN" --tool memcheck --leak-check full --error-exitcode 3 "$BUILD/test_cuda_init"
else
    ROWS+=("| compute-sanitizer | NOT RUN (not found or no test binary) | - | - | - |")
fi

set +x
echo "done in $(elapsed) s; summary in $SUMMARY"
