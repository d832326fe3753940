/* norm.cu - group norm (+SiLU), layer norm, softmax and L2 normalisation.
 *
 * One block per normalised set (group or row); statistics in fp32 over
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

extern "C" void kg_cuda_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                   const kg_tensor *gamma, const kg_tensor *beta, int groups,
                                   float eps, int silu)
{
    int64_t nb = x->shape[0], c = x->shape[1];
    int64_t spatial = kg_tensor_numel(x) / (nb * c);
    if (kg_tensor_numel(x) == 0)
        return;
    KG_FLOAT_DISPATCH(x->dtype, T,
                      group_norm_cuda<T>((T *)y->data, (const T *)x->data, (const T *)gamma->data,
                                         (const T *)beta->data, nb, groups, c / groups, spatial, eps,
                                         silu, kg_cuda_of(be)->stream));
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
static __global__ void __launch_bounds__(ROW_THREADS) softmax_kernel(T *y, const T *x, int64_t d)
{
    __shared__ float sh[33];
    const T *xr = x + (int64_t)blockIdx.x * d;
    T *yr = y + (int64_t)blockIdx.x * d;
    float mx = -INFINITY, sum = 0.0f, inv;

    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        mx = fmaxf(mx, kg_ld(xr[i]));
    mx = kg_block_max(mx, sh);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        sum += expf(kg_ld(xr[i]) - mx);
    inv = 1.0f / kg_block_sum(sum, sh);
    /* y may alias x: every read of the row above happens before the
     * barrier inside kg_block_sum, every write below after it */
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
        yr[i] = kg_st<T>(expf(kg_ld(xr[i]) - mx) * inv);
}

template <typename T>
static void softmax_cuda(T *y, const T *x, int64_t rows, int64_t d, cudaStream_t s)
{
    softmax_kernel<T><<<(unsigned)rows, ROW_THREADS, 0, s>>>(y, x, d);
}

extern "C" void kg_cuda_softmax(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    int64_t d = x->shape[x->ndim - 1], rows = kg_tensor_numel(x) / d;
    if (rows == 0)
        return;
    KG_FLOAT_DISPATCH(x->dtype, T,
                      softmax_cuda<T>((T *)y->data, (const T *)x->data, rows, d,
                                      kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "softmax");
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
