/* layout.c - ops that move data without arithmetic: nearest upsample, concat,
 * permute, copy (with float dtype conversion), embedding gather, and the
 * host float32 transfers. concat, permute and copy work on any dtype. */
#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#define PAR_MIN 32768

typedef struct up_job {
    const float *x;
    float *y;
    int64_t w;
} up_job;

static void upsample_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const up_job *j = ctx;
    int64_t w = j->w;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * w;
        float *y0 = j->y + r * 4 * w, *y1 = y0 + 2 * w;
        for (int64_t i = 0; i < w; i++)
            y0[2 * i] = y0[2 * i + 1] = xr[i];
        memcpy(y1, y0, (size_t)(2 * w) * sizeof *y1);
    }
}

void kg_cpu_upsample_nearest2x(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
    up_job j = {x->data, y->data, w};
    kg_cpu_parallel_range(cpu, planes * h, 16, planes * h * w > PAR_MIN ? 0 : planes * h,
                          upsample_rows, &j);
}

typedef struct cat_job {
    const char *a, *b;
    char *y;
    size_t na, nb;
} cat_job;

static void cat_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const cat_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        char *yr = j->y + (size_t)r * (j->na + j->nb);
        memcpy(yr, j->a + (size_t)r * j->na, j->na);
        memcpy(yr + j->na, j->b + (size_t)r * j->nb, j->nb);
    }
}

/* torch's nearest_neighbor_compute_source_index for a given output size:
 * min(floor(o * (float)in / out), in - 1) in float arithmetic */
static int64_t nearest_src(int64_t o, float scale, int64_t in)
{
    int64_t s = (int64_t)floorf((float)o * scale);
    return s < in - 1 ? s : in - 1;
}

typedef struct up_any_job {
    const float *x;
    float *y;
    int64_t h, w, ho, wo;
    float sh, sw;
} up_any_job;

static void upsample_any_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const up_any_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        int64_t p = r / j->ho, i = r % j->ho;
        const float *xr = j->x + (p * j->h + nearest_src(i, j->sh, j->h)) * j->w;
        float *yr = j->y + r * j->wo;
        for (int64_t c = 0; c < j->wo; c++)
            yr[c] = xr[nearest_src(c, j->sw, j->w)];
    }
}

void kg_cpu_upsample_nearest(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t planes = x->shape[0] * x->shape[1], ho = y->shape[2], wo = y->shape[3];
    up_any_job j = {x->data,
                    y->data,
                    x->shape[2],
                    x->shape[3],
                    ho,
                    wo,
                    (float)x->shape[2] / (float)ho,
                    (float)x->shape[3] / (float)wo};
    kg_cpu_parallel_range(cpu, planes * ho, 16, planes * ho * wo > PAR_MIN ? 0 : planes * ho,
                          upsample_any_rows, &j);
}

void kg_cpu_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim)
{
    kg_cpu *cpu = kg_cpu_of(be);
    size_t es = kg_dtype_size(y->dtype);
    int64_t outer = 1, inner = 1;
    size_t na, nbb;

    for (int i = 0; i < dim; i++)
        outer *= y->shape[i];
    for (int i = dim + 1; i < y->ndim; i++)
        inner *= y->shape[i];
    na = (size_t)(a->shape[dim] * inner) * es;
    nbb = (size_t)(b->shape[dim] * inner) * es;

    {
        cat_job j = {a->data, b->data, y->data, na, nbb};
        kg_cpu_parallel_range(cpu, outer, 16, kg_tensor_numel(y) > PAR_MIN ? 0 : outer, cat_rows,
                              &j);
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

typedef struct perm_job {
    const char *x;
    char *y;
    size_t es;
    int64_t st[KG_MAX_DIMS], n[KG_MAX_DIMS], ys[KG_MAX_DIMS];
    int ds, o0, o1;
    int64_t nblk;
} perm_job;

/* the last dim is contiguous in x (or nothing is): plain row copies; item
 * r walks y rows (i0, i1) = (r / n[1], r % n[1]) */
static void permute_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const perm_job *j = ctx;
    const int64_t *st = j->st, *n = j->n, *ys = j->ys;
    size_t es = j->es;
    for (int64_t r = r0; r < r1; r++) {
        int64_t i0 = r / n[1], i1 = r % n[1];
        for (int64_t i2 = 0; i2 < n[2]; i2++) {
            const char *xr = j->x + (size_t)(i0 * st[0] + i1 * st[1] + i2 * st[2]) * es;
            char *yr = j->y + (size_t)(i0 * ys[0] + i1 * ys[1] + i2 * ys[2]) * es;
            for (int64_t i3 = 0; i3 < n[3]; i3++)
                copy_elem(yr + (size_t)i3 * es, xr + (size_t)(i3 * st[3]) * es, es);
        }
    }
}

/* a transpose between y dims ds and 3: TB x TB blocks, so both the reads
 * (along ds) and the writes (along 3) stay within a few lines */
static void permute_blocks(void *ctx, int64_t t, int tid)
{
    const perm_job *j = ctx;
    const int64_t *st = j->st, *n = j->n, *ys = j->ys;
    int ds = j->ds, o0 = j->o0, o1 = j->o1;
    size_t es = j->es;
    int64_t a = t / (n[o1] * j->nblk), b = t / j->nblk % n[o1], i0 = t % j->nblk * TB;
    int64_t i1 = n[ds] - i0 < TB ? n[ds] : i0 + TB;
    const char *xb = j->x + (size_t)(a * st[o0] + b * st[o1]) * es;
    char *yb = j->y + (size_t)(a * ys[o0] + b * ys[o1]) * es;
    for (int64_t j0 = 0; j0 < n[3]; j0 += TB) {
        int64_t j1 = n[3] - j0 < TB ? n[3] : j0 + TB;
        for (int64_t i = i0; i < i1; i++)
            for (int64_t jj = j0; jj < j1; jj++)
                copy_elem(yb + (size_t)(i * ys[ds] + jj) * es, xb + (size_t)(i + jj * st[3]) * es,
                          es);
    }
}

void kg_cpu_permute(kg_backend *be, kg_tensor *y, const kg_tensor *x, const int perm[KG_MAX_DIMS])
{
    kg_cpu *cpu = kg_cpu_of(be);
    int nd = y->ndim, lead = KG_MAX_DIMS - nd;
    int64_t xs[KG_MAX_DIMS], rows;
    int big = kg_tensor_numel(y) > PAR_MIN;
    perm_job j = {x->data, y->data, kg_dtype_size(x->dtype), {0}, {0}, {0}, -1, 0, 0, 0};
    int64_t *st = j.st, *n = j.n, *ys = j.ys;

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
            j.ds = d;

    if (j.ds < 0 || st[3] == 1) {
        rows = n[0] * n[1];
        kg_cpu_parallel_range(cpu, rows, 1, big ? 0 : rows, permute_rows, &j);
        return;
    }
    j.o0 = j.ds == 0 ? 1 : 0;
    j.o1 = j.ds == 2 ? 1 : 2;
    j.nblk = (n[j.ds] + TB - 1) / TB;
    if (big)
        kg_pool_run(cpu->pool, n[j.o0] * n[j.o1] * j.nblk, permute_blocks, &j);
    else
        for (int64_t t = 0; t < n[j.o0] * n[j.o1] * j.nblk; t++)
            permute_blocks(&j, t, 0);
}

typedef struct cvt_job {
    void *dst;
    kg_dtype dd;
    const void *src;
    kg_dtype sd;
} cvt_job;

static void convert_range(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const cvt_job *j = ctx;
    const float *sf = j->src;
    const uint16_t *sh = j->src;
    float *df = j->dst;
    uint16_t *dh = j->dst;
    for (int64_t i = i0; i < i1; i++) {
        float v = j->sd == KG_F32   ? sf[i]
                  : j->sd == KG_F16 ? kg_f16_to_f32(sh[i])
                                    : kg_bf16_to_f32(sh[i]);
        if (j->dd == KG_F32)
            df[i] = v;
        else
            dh[i] = j->dd == KG_F16 ? kg_f32_to_f16(v) : kg_f32_to_bf16(v);
    }
}

/* n elements of float dtype sd at src -> float dtype dd at dst. */
static void convert(const kg_cpu *cpu, void *dst, kg_dtype dd, const void *src, kg_dtype sd,
                    int64_t n)
{
    cvt_job j = {dst, dd, src, sd};
    if (dd == sd) {
        memmove(dst, src, (size_t)n * kg_dtype_size(dd));
        return;
    }
    kg_cpu_parallel_range(cpu, n, 8192, PAR_MIN, convert_range, &j);
}

void kg_cpu_copy(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    convert(kg_cpu_of(be), y->data, y->dtype, x->data, x->dtype, kg_tensor_numel(x));
}

void kg_cpu_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    convert(kg_cpu_of(be), dst->data, dst->dtype, src, KG_F32, kg_tensor_numel(dst));
}

void kg_cpu_download_f32(kg_backend *be, float *dst, const kg_tensor *src)
{
    convert(kg_cpu_of(be), dst, KG_F32, src->data, src->dtype, kg_tensor_numel(src));
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
