/* gemm_fallback.cu - a plain tiled GEMM for the linear layers cuBLASLt
 * declines (odd widths or pointers aligned to fewer than 16 bytes, which
 * none of the models' layers have): y[M, N] = x[M, K] w[N, K]^T (+ b),
 * fp32 accumulation, 16 x 16 output tile per block. */
#include "cuda_common.cuh"

#define GF_TILE 16

template <typename T>
static __global__ void __launch_bounds__(GF_TILE *GF_TILE)
    gemm_simple_kernel(T *y, const T *x, const T *w, const T *b, int64_t m, int64_t n, int64_t k)
{
    __shared__ float xs[GF_TILE][GF_TILE + 1], ws[GF_TILE][GF_TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t row = (int64_t)blockIdx.y * GF_TILE + ty, col = (int64_t)blockIdx.x * GF_TILE + tx;
    int64_t wrow = (int64_t)blockIdx.x * GF_TILE + ty;
    float acc = 0.0f;

    for (int64_t k0 = 0; k0 < k; k0 += GF_TILE) {
        /* xs[ty][tx] = x[row, k0 + tx]; ws[ty][tx] = w[wrow, k0 + tx] */
        xs[ty][tx] = row < m && k0 + tx < k ? kg_ld(x[row * k + k0 + tx]) : 0.0f;
        ws[ty][tx] = wrow < n && k0 + tx < k ? kg_ld(w[wrow * k + k0 + tx]) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int e = 0; e < GF_TILE; e++)
            acc += xs[ty][e] * ws[tx][e];
        __syncthreads();
    }
    if (row < m && col < n)
        y[row * n + col] = kg_st<T>(acc + (b ? kg_ld(b[col]) : 0.0f));
}

template <typename T>
static void gemm_simple_cuda(T *y, const T *x, const T *w, const T *b, int64_t m, int64_t n,
                             int64_t k, cudaStream_t s)
{
    dim3 grid((unsigned)((n + GF_TILE - 1) / GF_TILE), (unsigned)((m + GF_TILE - 1) / GF_TILE));
    gemm_simple_kernel<T><<<grid, dim3(GF_TILE, GF_TILE), 0, s>>>(y, x, w, b, m, n, k);
}

extern "C" void kg_cuda_gemm_simple(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                    const kg_tensor *w, const kg_tensor *b)
{
    int64_t k = x->shape[x->ndim - 1], n = w->shape[0], m = kg_tensor_numel(x) / k;
    if ((m + GF_TILE - 1) / GF_TILE > 65535) {
        kg_backend_fail(be, KG_ERR_UNSUPPORTED, "linear: %lld rows exceed the fallback GEMM's grid",
                        (long long)m);
        return;
    }
    KG_FLOAT_DISPATCH(x->dtype, T,
                      gemm_simple_cuda<T>((T *)y->data, (const T *)x->data, (const T *)w->data,
                                          b ? (const T *)b->data : (const T *)NULL, m, n, k,
                                          kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "linear (fallback GEMM)");
}
