/* norm.cu - group norm (+SiLU), layer norm and L2 normalisation.
 *
 * One block per normalised set (group or row; large groups are split, see
 * below); statistics in fp32 over
 * fp32 partial sums, mean first and then the variance of the deviations
 * (biased, as PyTorch normalises), like the CPU reference. */
#include "cuda_common.cuh"

#define NORM_THREADS 512
#define ROW_THREADS 256

/* x [B, C, spatial]: block t normalises group t % groups of item t / groups */
template <typename T>
static __global__ void __launch_bounds__(NORM_THREADS)
    group_norm_kernel(T *y, const T *x, const T *gamma, const T *beta, int groups, int64_t cpg,
                      int64_t spatial, float eps, int silu)
{
    __shared__ float sh[33];
    int64_t n = cpg * spatial, c0 = (int64_t)(blockIdx.x % groups) * cpg;
    const T *xs = x + (int64_t)blockIdx.x * n;
    T *ys = y + (int64_t)blockIdx.x * n;
    float sum = 0.0f, sq = 0.0f, mean, rstd;

    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        sum += kg_ld(xs[i]);
    mean = kg_block_sum(sum, sh) / (float)n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float d = kg_ld(xs[i]) - mean;
        sq += d * d;
    }
    rstd = rsqrtf(kg_block_sum(sq, sh) / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        int64_t ch = c0 + i / spatial;
        float v = (kg_ld(xs[i]) - mean) * rstd * kg_ld(gamma[ch]) + kg_ld(beta[ch]);
        if (silu)
            v = v / (1.0f + expf(-v));
        ys[i] = kg_st<T>(v);
    }
}

template <typename T>
static void group_norm_cuda(T *y, const T *x, const T *gamma, const T *beta, int64_t nb, int groups,
                            int64_t cpg, int64_t spatial, float eps, int silu, cudaStream_t s)
{
    group_norm_kernel<T><<<(unsigned)(nb * groups), NORM_THREADS, 0, s>>>(y, x, gamma, beta, groups,
                                                                          cpg, spatial, eps, silu);
}

/* Large groups (the VAE's 1M-element groups at 512x512 would leave all but
 * B x 32 SMs idle) are spread over GN_CHUNK-element chunks, one block each,
 * in three passes: chunk sums; the group mean from them, then chunk sums of
 * squared deviations; normalisation. Every block reduces the partials of
 * its group in the same order, so all chunks use the same statistics. */
#define GN_SPLIT_MIN 65536
#define GN_CHUNK 16384
#define GN_THREADS 256

/* group mean (and, with psq, rstd) from the group's s partials */
static __device__ void gn_stats(const float *psum, const float *psq, int64_t t, int s, int64_t n,
                                float eps, float *sh)
{
    if (threadIdx.x == 0) {
        float sum = 0.0f, sq = 0.0f;
        for (int k = 0; k < s; k++)
            sum += psum[t * s + k];
        sh[0] = sum / (float)n;
        if (psq) {
            for (int k = 0; k < s; k++)
                sq += psq[t * s + k];
            sh[1] = rsqrtf(sq / (float)n + eps);
        }
    }
    __syncthreads();
}

template <typename T>
static __global__ void __launch_bounds__(GN_THREADS)
    gn_sum_kernel(const T *x, int64_t n, float *psum)
{
    __shared__ float sh[33];
    int64_t t = blockIdx.x, i0 = (int64_t)blockIdx.y * GN_CHUNK;
    int64_t i1 = i0 + GN_CHUNK < n ? i0 + GN_CHUNK : n;
    const T *xs = x + t * n;
    float sum = 0.0f;
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
        sum += kg_ld(xs[i]);
    sum = kg_block_sum(sum, sh);
    if (threadIdx.x == 0)
        psum[t * gridDim.y + blockIdx.y] = sum;
}

template <typename T>
static __global__ void __launch_bounds__(GN_THREADS)
    gn_sq_kernel(const T *x, int64_t n, const float *psum, float *psq)
{
    __shared__ float sh[33];
    __shared__ float st[2];
    int64_t t = blockIdx.x, i0 = (int64_t)blockIdx.y * GN_CHUNK;
    int64_t i1 = i0 + GN_CHUNK < n ? i0 + GN_CHUNK : n;
    const T *xs = x + t * n;
    float sq = 0.0f, mean;
    gn_stats(psum, NULL, t, (int)gridDim.y, n, 0.0f, st);
    mean = st[0];
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        float d = kg_ld(xs[i]) - mean;
        sq += d * d;
    }
    sq = kg_block_sum(sq, sh);
    if (threadIdx.x == 0)
        psq[t * gridDim.y + blockIdx.y] = sq;
}

template <typename T>
static __global__ void __launch_bounds__(GN_THREADS)
    gn_apply_kernel(T *y, const T *x, const T *gamma, const T *beta, int groups, int64_t cpg,
                    int64_t spatial, const float *psum, const float *psq, float eps, int silu)
{
    __shared__ float st[2];
    int64_t t = blockIdx.x, n = cpg * spatial, i0 = (int64_t)blockIdx.y * GN_CHUNK;
    int64_t i1 = i0 + GN_CHUNK < n ? i0 + GN_CHUNK : n, c0 = (t % groups) * cpg;
    const T *xs = x + t * n;
    T *ys = y + t * n;
    float mean, rstd;
    gn_stats(psum, psq, t, (int)gridDim.y, n, eps, st);
    mean = st[0];
    rstd = st[1];
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        int64_t ch = c0 + i / spatial;
        float v = (kg_ld(xs[i]) - mean) * rstd * kg_ld(gamma[ch]) + kg_ld(beta[ch]);
        if (silu)
            v = v / (1.0f + expf(-v));
        ys[i] = kg_st<T>(v);
    }
}

template <typename T>
static void group_norm_split_cuda(T *y, const T *x, const T *gamma, const T *beta, int64_t nb,
                                  int groups, int64_t cpg, int64_t spatial, float eps, int silu,
                                  float *psum, float *psq, cudaStream_t s)
{
    int64_t n = cpg * spatial;
    dim3 grid((unsigned)(nb * groups), (unsigned)((n + GN_CHUNK - 1) / GN_CHUNK));
    gn_sum_kernel<T><<<grid, GN_THREADS, 0, s>>>(x, n, psum);
    gn_sq_kernel<T><<<grid, GN_THREADS, 0, s>>>(x, n, psum, psq);
    gn_apply_kernel<T>
        <<<grid, GN_THREADS, 0, s>>>(y, x, gamma, beta, groups, cpg, spatial, psum, psq, eps, silu);
}

extern "C" void kg_cuda_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                   const kg_tensor *gamma, const kg_tensor *beta, int groups,
                                   float eps, int silu)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t nb = x->shape[0], c = x->shape[1];
    int64_t spatial = kg_tensor_numel(x) / (nb * c), n = c / groups * spatial;
    int64_t chunks = (n + GN_CHUNK - 1) / GN_CHUNK;
    if (kg_tensor_numel(x) == 0)
        return;
    /* y may alias x: the apply pass reads each element before writing it,
     * and the statistics passes are complete before it starts */
    if (n >= GN_SPLIT_MIN && nb * groups * chunks <= KG_CUDA_GN_PARTIALS && chunks <= 65535) {
        KG_FLOAT_DISPATCH(x->dtype, T,
                          group_norm_split_cuda<T>(
                              (T *)y->data, (const T *)x->data, (const T *)gamma->data,
                              (const T *)beta->data, nb, groups, c / groups, spatial, eps, silu,
                              cu->gn_partials, cu->gn_partials + KG_CUDA_GN_PARTIALS, cu->stream));
        kg_cuda_check_launch(be, "group_norm");
        return;
    }
    KG_FLOAT_DISPATCH(x->dtype, T,
                      group_norm_cuda<T>((T *)y->data, (const T *)x->data, (const T *)gamma->data,
                                         (const T *)beta->data, nb, groups, c / groups, spatial,
                                         eps, silu, cu->stream));
    kg_cuda_check_launch(be, "group_norm");
}

/* one block per row of d elements; beta may be NULL */
template <typename T>
static __global__ void __launch_bounds__(ROW_THREADS)
    layer_norm_kernel(T *y, const T *x, const T *gamma, const T *beta, int64_t d, float eps)
{
    __shared__ float sh[33];
    const T *xr = x + (int64_t)blockIdx.x * d;
    T *yr = y + (int64_t)blockIdx.x * d;
    float sum = 0.0f, sq = 0.0f, mean, rstd;

    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        sum += kg_ld(xr[i]);
    mean = kg_block_sum(sum, sh) / (float)d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = kg_ld(xr[i]) - mean;
        sq += v * v;
    }
    rstd = rsqrtf(kg_block_sum(sq, sh) / (float)d + eps);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        yr[i] = kg_st<T>((kg_ld(xr[i]) - mean) * rstd * kg_ld(gamma[i]) +
                         (beta ? kg_ld(beta[i]) : 0.0f));
}

template <typename T>
static void layer_norm_cuda(T *y, const T *x, const T *gamma, const T *beta, int64_t rows,
                            int64_t d, float eps, cudaStream_t s)
{
    layer_norm_kernel<T><<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, x, gamma, beta, d, eps);
}

extern "C" void kg_cuda_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                   const kg_tensor *gamma, const kg_tensor *beta, float eps)
{
    int64_t d = x->shape[x->ndim - 1], rows = kg_tensor_numel(x) / d;
    if (rows == 0)
        return;
    KG_FLOAT_DISPATCH(x->dtype, T,
                      layer_norm_cuda<T>((T *)y->data, (const T *)x->data, (const T *)gamma->data,
                                         beta ? (const T *)beta->data : (const T *)NULL, rows, d,
                                         eps, kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "layer_norm");
}

template <typename T>
static __global__ void __launch_bounds__(ROW_THREADS)
    l2_normalize_kernel(T *y, const T *x, int64_t d, float eps)
{
    __shared__ float sh[33];
    const T *xr = x + (int64_t)blockIdx.x * d;
    T *yr = y + (int64_t)blockIdx.x * d;
    float sq = 0.0f, norm;

    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = kg_ld(xr[i]);
        sq += v * v;
    }
    norm = fmaxf(sqrtf(kg_block_sum(sq, sh)), eps);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        yr[i] = kg_st<T>(kg_ld(xr[i]) / norm);
}

template <typename T>
static void l2_normalize_cuda(T *y, const T *x, int64_t rows, int64_t d, float eps, cudaStream_t s)
{
    l2_normalize_kernel<T><<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, x, d, eps);
}

extern "C" void kg_cuda_l2_normalize(kg_backend *be, kg_tensor *y, const kg_tensor *x, float eps)
{
    int64_t d = x->shape[x->ndim - 1], rows = kg_tensor_numel(x) / d;
    if (rows == 0)
        return;
    KG_FLOAT_DISPATCH(x->dtype, T,
                      l2_normalize_cuda<T>((T *)y->data, (const T *)x->data, rows, d, eps,
                                           kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "l2_normalize");
}
