/* layout.cu - ops that move data: nearest upsample, concat, permute, copy
 * with float dtype conversion, embedding gather. concat, permute and same-
 * dtype copy work on any dtype by moving elements of the same byte size. */
#include "cuda_common.cuh"

#define LAYOUT_THREADS 256

/* an unsigned type of each element size */
#define KG_SIZE_DISPATCH(es, U, ...) \
    do {                             \
        if ((es) == 1) {             \
            typedef uint8_t U;       \
            __VA_ARGS__;             \
        } else if ((es) == 2) {      \
            typedef uint16_t U;      \
            __VA_ARGS__;             \
        } else if ((es) == 4) {      \
            typedef uint32_t U;      \
            __VA_ARGS__;             \
        } else {                     \
            typedef uint64_t U;      \
            __VA_ARGS__;             \
        }                            \
    } while (0)

/* y [planes, 2h, 2w] from x [planes, h, w] */
template <typename U>
static __global__ void upsample_kernel(U *y, const U *x, int64_t n, int64_t h, int64_t w)
{
    KG_GRID_STRIDE(i, n)
    {
        int64_t ox = i % (2 * w), oy = i / (2 * w) % (2 * h), p = i / (4 * h * w);
        y[i] = x[(p * h + oy / 2) * w + ox / 2];
    }
}

template <typename U>
static void upsample_cuda(U *y, const U *x, int64_t n, int64_t h, int64_t w, cudaStream_t s)
{
    upsample_kernel<U><<<kg_grid(n, LAYOUT_THREADS), LAYOUT_THREADS, 0, s>>>(y, x, n, h, w);
}

extern "C" void kg_cuda_upsample_nearest2x(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    int64_t n = kg_tensor_numel(y);
    if (n == 0)
        return;
    KG_SIZE_DISPATCH(kg_dtype_size(x->dtype), U,
                     upsample_cuda<U>((U *)y->data, (const U *)x->data, n, x->shape[2], x->shape[3],
                                      kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "upsample_nearest2x");
}

/* y [planes, ho, wo] from x [planes, h, w]: torch's nearest source index for a given size,
 * min(floor(o * (float)in / out), in - 1) in float arithmetic */
template <typename U>
static __global__ void upsample_any_kernel(U *y, const U *x, int64_t n, int64_t h, int64_t w,
                                           int64_t ho, int64_t wo, float sh, float sw)
{
    KG_GRID_STRIDE(i, n)
    {
        int64_t ox = i % wo, oy = i / wo % ho, p = i / (ho * wo);
        int64_t sy = (int64_t)floorf((float)oy * sh), sx = (int64_t)floorf((float)ox * sw);
        sy = sy < h - 1 ? sy : h - 1;
        sx = sx < w - 1 ? sx : w - 1;
        y[i] = x[(p * h + sy) * w + sx];
    }
}

extern "C" void kg_cuda_upsample_nearest(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    int64_t n = kg_tensor_numel(y), h = x->shape[2], w = x->shape[3];
    int64_t ho = y->shape[2], wo = y->shape[3];
    float sh = (float)h / (float)ho, sw = (float)w / (float)wo;
    if (n == 0)
        return;
    KG_SIZE_DISPATCH(kg_dtype_size(x->dtype), U,
                     upsample_any_kernel<U>
                     <<<kg_grid(n, LAYOUT_THREADS), LAYOUT_THREADS, 0, kg_cuda_of(be)->stream>>>(
                         (U *)y->data, (const U *)x->data, n, h, w, ho, wo, sh, sw));
    kg_cuda_check_launch(be, "upsample_nearest");
}

/* y viewed as [outer, na + nb] elements: a's rows then b's rows */
template <typename U>
static __global__ void concat_kernel(U *y, const U *a, const U *b, int64_t n, int64_t na,
                                     int64_t nb)
{
    KG_GRID_STRIDE(i, n)
    {
        int64_t r = i / (na + nb), c = i % (na + nb);
        y[i] = c < na ? a[r * na + c] : b[r * nb + c - na];
    }
}

template <typename U>
static void concat_cuda(U *y, const U *a, const U *b, int64_t n, int64_t na, int64_t nb,
                        cudaStream_t s)
{
    concat_kernel<U><<<kg_grid(n, LAYOUT_THREADS), LAYOUT_THREADS, 0, s>>>(y, a, b, n, na, nb);
}

extern "C" void kg_cuda_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                               int dim)
{
    int64_t inner = 1, n = kg_tensor_numel(y);
    for (int i = dim + 1; i < y->ndim; i++)
        inner *= y->shape[i];
    if (n == 0)
        return;
    KG_SIZE_DISPATCH(kg_dtype_size(y->dtype), U,
                     concat_cuda<U>((U *)y->data, (const U *)a->data, (const U *)b->data, n,
                                    a->shape[dim] * inner, b->shape[dim] * inner,
                                    kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "concat");
}

typedef struct perm_geom {
    int64_t n[KG_MAX_DIMS];  /* y's dims (unused ones 1) */
    int64_t st[KG_MAX_DIMS]; /* x stride (elements) of each y dim */
} perm_geom;

template <typename U>
static __global__ void permute_kernel(U *y, const U *x, int64_t total, perm_geom g)
{
    KG_GRID_STRIDE(i, total)
    {
        int64_t r = i, off = 0;
        for (int d = KG_MAX_DIMS - 1; d >= 0; d--) {
            off += r % g.n[d] * g.st[d];
            r /= g.n[d];
        }
        y[i] = x[off];
    }
}

template <typename U>
static void permute_cuda(U *y, const U *x, int64_t total, const perm_geom &g, cudaStream_t s)
{
    permute_kernel<U><<<kg_grid(total, LAYOUT_THREADS), LAYOUT_THREADS, 0, s>>>(y, x, total, g);
}

extern "C" void kg_cuda_permute(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                const int perm[KG_MAX_DIMS])
{
    int64_t xs[KG_MAX_DIMS], total = kg_tensor_numel(y);
    perm_geom g;
    xs[KG_MAX_DIMS - 1] = 1;
    for (int d = KG_MAX_DIMS - 1; d > 0; d--)
        xs[d - 1] = xs[d] * (d < x->ndim ? x->shape[d] : 1);
    for (int d = 0; d < KG_MAX_DIMS; d++) {
        g.st[d] = xs[perm[d]];
        g.n[d] = d < y->ndim ? y->shape[d] : 1;
    }
    if (total == 0)
        return;
    KG_SIZE_DISPATCH(
        kg_dtype_size(x->dtype), U,
        permute_cuda<U>((U *)y->data, (const U *)x->data, total, g, kg_cuda_of(be)->stream));
    kg_cuda_check_launch(be, "permute");
}

template <typename TD, typename TS>
static __global__ void convert_kernel(TD *y, const TS *x, int64_t n)
{
    KG_GRID_STRIDE(i, n)
    y[i] = kg_st<TD>(kg_ld(x[i]));
}

template <typename TD, typename TS>
static void convert_cuda(TD *y, const TS *x, int64_t n, cudaStream_t s)
{
    convert_kernel<TD, TS><<<kg_grid(n, LAYOUT_THREADS), LAYOUT_THREADS, 0, s>>>(y, x, n);
}

extern "C" void kg_cuda_convert(kg_backend *be, void *dst, kg_dtype dd, const void *src,
                                kg_dtype sd, int64_t n)
{
    kg_cuda *cu = kg_cuda_of(be);
    if (n == 0)
        return;
    if (dd == sd) {
        kg_cuda_check(be,
                      cudaMemcpyAsync(dst, src, (size_t)n * kg_dtype_size(dd),
                                      cudaMemcpyDeviceToDevice, cu->stream),
                      "copy");
        return;
    }
    KG_FLOAT_DISPATCH(
        dd, TD,
        KG_FLOAT_DISPATCH(sd, TS, convert_cuda<TD, TS>((TD *)dst, (const TS *)src, n, cu->stream)));
    kg_cuda_check_launch(be, "dtype conversion");
}

extern "C" void kg_cuda_copy(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cuda_convert(be, y->data, y->dtype, x->data, x->dtype, kg_tensor_numel(x));
}

/* y [n_ids, d] = table[ids]; an id outside [0, rows) writes zeros and is
 * reported through the device flags (sync() turns it into the error). */
template <typename T, typename I>
static __global__ void embedding_kernel(T *y, const T *table, const I *ids, int64_t total,
                                        int64_t d, int64_t rows, kg_cuda_flags *flags)
{
    KG_GRID_STRIDE(i, total)
    {
        int64_t pos = i / d, id = (int64_t)ids[pos];
        if (id >= 0 && id < rows) {
            y[i] = table[id * d + i % d];
        } else {
            y[i] = kg_st<T>(0.0f);
            if (atomicCAS(&flags->embed_bad, 0, 1) == 0) {
                flags->embed_id = id;
                flags->embed_pos = pos;
                flags->embed_rows = rows;
            }
        }
    }
}

template <typename T, typename I>
static void embedding_cuda(T *y, const T *table, const I *ids, int64_t total, int64_t d,
                           int64_t rows, kg_cuda_flags *flags, cudaStream_t s)
{
    embedding_kernel<T, I><<<kg_grid(total, LAYOUT_THREADS), LAYOUT_THREADS, 0, s>>>(
        y, table, ids, total, d, rows, flags);
}

extern "C" void kg_cuda_embedding(kg_backend *be, kg_tensor *y, const kg_tensor *table,
                                  const kg_tensor *ids)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t d = table->shape[1], total = kg_tensor_numel(y);
    if (total == 0)
        return;
    if (ids->dtype == KG_I64)
        KG_FLOAT_DISPATCH(table->dtype, T,
                          embedding_cuda<T, long long>((T *)y->data, (const T *)table->data,
                                                       (const long long *)ids->data, total, d,
                                                       table->shape[0], cu->flags_dev, cu->stream));
    else
        KG_FLOAT_DISPATCH(table->dtype, T,
                          embedding_cuda<T, int>((T *)y->data, (const T *)table->data,
                                                 (const int *)ids->data, total, d, table->shape[0],
                                                 cu->flags_dev, cu->stream));
    kg_cuda_check_launch(be, "embedding");
}
