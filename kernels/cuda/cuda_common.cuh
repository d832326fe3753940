/* cuda_common.cuh - device helpers shared by the .cu files: element types,
 * float load/store, warp and block reductions, launch geometry. */
#ifndef KG_CUDA_COMMON_CUH
#define KG_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "cuda_kernels.h"

#define KG_FULL_MASK 0xffffffffu

/* Every float element is read into fp32 and written back with
 * round-to-nearest-even, so all arithmetic happens in fp32. */
static __device__ __forceinline__ float kg_ld(float x)
{
    return x;
}
static __device__ __forceinline__ float kg_ld(__half x)
{
    return __half2float(x);
}
static __device__ __forceinline__ float kg_ld(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T> static __device__ __forceinline__ T kg_st(float v);
template <> __device__ __forceinline__ float kg_st<float>(float v)
{
    return v;
}
template <> __device__ __forceinline__ __half kg_st<__half>(float v)
{
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 kg_st<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

/* Runs the statement with T bound to the element type of float dtype dt. */
#define KG_FLOAT_DISPATCH(dt, T, ...) \
    do {                              \
        if ((dt) == KG_F16) {         \
            typedef __half T;         \
            __VA_ARGS__;              \
        } else if ((dt) == KG_BF16) { \
            typedef __nv_bfloat16 T;  \
            __VA_ARGS__;              \
        } else {                      \
            typedef float T;          \
            __VA_ARGS__;              \
        }                             \
    } while (0)

static __device__ __forceinline__ float kg_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(KG_FULL_MASK, v, o);
    return v;
}

static __device__ __forceinline__ float kg_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(KG_FULL_MASK, v, o));
    return v;
}

/* Block-wide sum / max; every thread of the block must call it and gets the
 * result. sh holds 33 floats; the leading barrier lets callers reuse sh. */
static __device__ __forceinline__ float kg_block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = kg_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    if (w == 0) {
        v = kg_warp_sum(lane < nw ? sh[lane] : 0.0f);
        if (lane == 0)
            sh[32] = v;
    }
    __syncthreads();
    return sh[32];
}

static __device__ __forceinline__ float kg_block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = kg_warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[w] = v;
    __syncthreads();
    if (w == 0) {
        v = kg_warp_max(lane < nw ? sh[lane] : -INFINITY);
        if (lane == 0)
            sh[32] = v;
    }
    __syncthreads();
    return sh[32];
}

/* Blocks for a grid-stride loop over n elements (kernels loop, so the cap
 * only bounds the launch, not the work). */
static inline unsigned kg_grid(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    return b > 65536 ? 65536u : (unsigned)b;
}

#define KG_GRID_STRIDE(i, n)                                                  \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

#endif
