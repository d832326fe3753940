/* layout.c - ops that move data without arithmetic: nearest upsample, concat,
 * permute, copy (with float dtype conversion), embedding gather, and the
 * host float32 transfers. concat, permute and copy work on any dtype. */
#include "cpu_kernels.h"

#include <string.h>

#define PAR_MIN 32768

void kg_cpu_upsample_nearest2x(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
    const float *xd = x->data;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) \
    if (planes * h * w > PAR_MIN)
    for (int64_t r = 0; r < planes * h; r++) {
        const float *xr = xd + r * w;
        float *y0 = yd + r * 4 * w, *y1 = y0 + 2 * w;
        for (int64_t j = 0; j < w; j++)
            y0[2 * j] = y0[2 * j + 1] = xr[j];
        memcpy(y1, y0, (size_t)(2 * w) * sizeof *y1);
    }
}

void kg_cpu_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim)
{
    kg_cpu *cpu = kg_cpu_of(be);
    size_t es = kg_dtype_size(y->dtype);
    int64_t outer = 1, inner = 1;
    size_t na, nbb;
    const char *ad = a->data, *bd = b->data;
    char *yd = y->data;

    for (int i = 0; i < dim; i++)
        outer *= y->shape[i];
    for (int i = dim + 1; i < y->ndim; i++)
        inner *= y->shape[i];
    na = (size_t)(a->shape[dim] * inner) * es;
    nbb = (size_t)(b->shape[dim] * inner) * es;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) \
    if (kg_tensor_numel(y) > PAR_MIN)
    for (int64_t r = 0; r < outer; r++) {
        char *yr = yd + (size_t)r * (na + nbb);
        memcpy(yr, ad + (size_t)r * na, na);
        memcpy(yr + na, bd + (size_t)r * nbb, nbb);
    }
}

/* Side of the square blocks a transposing permute copies through. */
#define TB 16

static inline void copy_elem(char *y, const char *x, size_t es)
{
    if (es == 4)
        memcpy(y, x, 4);
    else if (es == 2)
        memcpy(y, x, 2);
    else
        memcpy(y, x, es);
}

void kg_cpu_permute(kg_backend *be, kg_tensor *y, const kg_tensor *x, const int perm[KG_MAX_DIMS])
{
    kg_cpu *cpu = kg_cpu_of(be);
    size_t es = kg_dtype_size(x->dtype);
    int nd = y->ndim, lead = KG_MAX_DIMS - nd, ds = -1, o0, o1;
    int64_t xs[KG_MAX_DIMS], st[KG_MAX_DIMS], n[KG_MAX_DIMS], ys[KG_MAX_DIMS], nblk, n_tasks;
    const char *xd = x->data;
    char *yd = y->data;

    /* Dims are right-aligned: n[3] is y's last dim. st[d] is the x stride
     * (in elements) of y's dim d, ys[d] its y stride. */
    xs[nd - 1] = 1;
    for (int d = nd - 1; d > 0; d--)
        xs[d - 1] = xs[d] * x->shape[d];
    for (int d = 0; d < KG_MAX_DIMS; d++) {
        n[d] = d < lead ? 1 : y->shape[d - lead];
        st[d] = d < lead ? 0 : xs[perm[d - lead]];
    }
    ys[3] = 1;
    for (int d = 3; d > 0; d--)
        ys[d - 1] = ys[d] * n[d];
    if (kg_tensor_numel(y) == 0)
        return;
    /* the y dim that walks x contiguously, when it is not the last one */
    for (int d = 0; d < 3; d++)
        if (st[d] == 1 && n[d] > 1)
            ds = d;

    if (ds < 0 || st[3] == 1) {
        /* the last dim is contiguous in x (or nothing is): plain row copies */
#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) collapse(2) \
    if (kg_tensor_numel(y) > PAR_MIN)
        for (int64_t i0 = 0; i0 < n[0]; i0++)
            for (int64_t i1 = 0; i1 < n[1]; i1++)
                for (int64_t i2 = 0; i2 < n[2]; i2++) {
                    const char *xr = xd + (size_t)(i0 * st[0] + i1 * st[1] + i2 * st[2]) * es;
                    char *yr = yd + (size_t)(i0 * ys[0] + i1 * ys[1] + i2 * ys[2]) * es;
                    for (int64_t i3 = 0; i3 < n[3]; i3++)
                        copy_elem(yr + (size_t)i3 * es, xr + (size_t)(i3 * st[3]) * es, es);
                }
        return;
    }
    /* a transpose between y dims ds and 3: TB x TB blocks, so both the
     * reads (along ds) and the writes (along 3) stay within a few lines */
    o0 = ds == 0 ? 1 : 0;
    o1 = ds == 2 ? 1 : 2;
    nblk = (n[ds] + TB - 1) / TB;
    n_tasks = n[o0] * n[o1] * nblk;
#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic) \
    if (kg_tensor_numel(y) > PAR_MIN)
    for (int64_t t = 0; t < n_tasks; t++) {
        int64_t a = t / (n[o1] * nblk), b = t / nblk % n[o1], i0 = t % nblk * TB;
        int64_t i1 = n[ds] - i0 < TB ? n[ds] : i0 + TB;
        const char *xb = xd + (size_t)(a * st[o0] + b * st[o1]) * es;
        char *yb = yd + (size_t)(a * ys[o0] + b * ys[o1]) * es;
        for (int64_t j0 = 0; j0 < n[3]; j0 += TB) {
            int64_t j1 = n[3] - j0 < TB ? n[3] : j0 + TB;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    copy_elem(yb + (size_t)(i * ys[ds] + j) * es, xb + (size_t)(i + j * st[3]) * es,
                              es);
        }
    }
}

/* n elements of float dtype sd at src -> float dtype dd at dst. */
static void convert(void *dst, kg_dtype dd, const void *src, kg_dtype sd, int64_t n, int nt)
{
    const float *sf = src;
    const uint16_t *sh = src;
    float *df = dst;
    uint16_t *dh = dst;

    if (dd == sd) {
        memmove(dst, src, (size_t)n * kg_dtype_size(dd));
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 8192) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = sd == KG_F32   ? sf[i]
                  : sd == KG_F16 ? kg_f16_to_f32(sh[i])
                                 : kg_bf16_to_f32(sh[i]);
        if (dd == KG_F32)
            df[i] = v;
        else
            dh[i] = dd == KG_F16 ? kg_f32_to_f16(v) : kg_f32_to_bf16(v);
    }
}

void kg_cpu_copy(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    convert(y->data, y->dtype, x->data, x->dtype, kg_tensor_numel(x), kg_cpu_of(be)->n_threads);
}

void kg_cpu_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    convert(dst->data, dst->dtype, src, KG_F32, kg_tensor_numel(dst), kg_cpu_of(be)->n_threads);
}

void kg_cpu_download_f32(kg_backend *be, float *dst, const kg_tensor *src)
{
    convert(dst, KG_F32, src->data, src->dtype, kg_tensor_numel(src), kg_cpu_of(be)->n_threads);
}

void kg_cpu_embedding(kg_backend *be, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids)
{
    int64_t v = table->shape[0], d = table->shape[1], n = kg_tensor_numel(ids);
    const float *td = table->data;
    float *yd = y->data;

    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids->dtype == KG_I64 ? ((const int64_t *)ids->data)[i]
                                          : ((const int32_t *)ids->data)[i];
        if (id < 0 || id >= v) {
            kg_backend_fail(be, KG_ERR_INVALID_ARG,
                            "embedding: id %lld at position %lld is outside the %lld-row table",
                            (long long)id, (long long)i, (long long)v);
            return;
        }
        memcpy(yd + i * d, td + id * d, (size_t)d * sizeof *yd);
    }
}
