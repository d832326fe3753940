/* norm.c - group norm, layer norm and L2 normalisation.
 *
 * Statistics are accumulated in double: a group of an SD1.5 feature map
 * holds up to ~160k elements, where a float sum drifts past the 1e-4
 * tolerance the golden tests use. Mean first, then the variance of the
 * deviations (biased, as PyTorch normalises). */
#include "cpu_kernels.h"

#include <math.h>

typedef struct gn_job {
    const kg_cpu *cpu;
    const float *x, *gamma, *beta;
    float *y;
    int64_t groups, cpg, spatial, n;
    float eps;
    int silu;
} gn_job;

static void group_norm_item(void *ctx, int64_t t, int tid)
{
    const gn_job *j = ctx;
    const float *xs = j->x + t * j->n;
    float *ys = j->y + t * j->n;
    int64_t c0 = t % j->groups * j->cpg, n = j->n, spatial = j->spatial;
    double sum = 0.0, sq = 0.0;
    float mean, rstd;
    for (int64_t i = 0; i < n; i++)
        sum += xs[i];
    mean = (float)(sum / (double)n);
    for (int64_t i = 0; i < n; i++) {
        double d = (double)xs[i] - sum / (double)n;
        sq += d * d;
    }
    rstd = (float)(1.0 / sqrt(sq / (double)n + (double)j->eps));
    for (int64_t ch = 0; ch < j->cpg; ch++) {
        float sc = rstd * j->gamma[c0 + ch], sh = j->beta[c0 + ch] - mean * sc;
        const float *xc = xs + ch * spatial;
        float *yc = ys + ch * spatial;
        if (j->silu)
            kg_cpu_silu_affine(j->cpu, yc, xc, spatial, 1.0f, sc, sh);
        else
            for (int64_t i = 0; i < spatial; i++)
                yc[i] = xc[i] * sc + sh;
    }
}

void kg_cpu_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, int groups, float eps, int silu)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t nb = x->shape[0], c = x->shape[1];
    int64_t spatial = nb && c ? kg_tensor_numel(x) / (nb * c) : 0;
    gn_job j = {cpu,        x->data, gamma->data,          beta->data, y->data, groups,
                c / groups, spatial, c / groups * spatial, eps,        silu};
    kg_cpu_parallel(cpu, nb * groups, (double)kg_tensor_numel(x), group_norm_item, &j);
}

typedef struct row_job {
    const kg_cpu *cpu;
    const float *x, *gamma, *beta;
    float *y;
    int64_t d;
    float eps;
} row_job;

static void layer_norm_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const row_job *j = ctx;
    int64_t d = j->d;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * d;
        float *yr = j->y + r * d;
        double sum = 0.0, sq = 0.0, mean;
        float m, rstd;
        for (int64_t i = 0; i < d; i++)
            sum += xr[i];
        mean = sum / (double)d;
        for (int64_t i = 0; i < d; i++)
            sq += ((double)xr[i] - mean) * ((double)xr[i] - mean);
        m = (float)mean;
        rstd = (float)(1.0 / sqrt(sq / (double)d + (double)j->eps));
        for (int64_t i = 0; i < d; i++)
            yr[i] = (xr[i] - m) * rstd * j->gamma[i] + (j->beta ? j->beta[i] : 0.0f);
    }
}

/* rows of d elements: 16 rows per item, inline below 16k elements */
static void run_rows(const kg_cpu *cpu, const kg_tensor *x, kg_range_fn fn, row_job *j)
{
    int64_t d = x->shape[x->ndim - 1], rows = d ? kg_tensor_numel(x) / d : 0;
    j->d = d;
    kg_cpu_parallel_range(cpu, rows, 16, rows * d > 16384 ? 0 : rows, fn, j);
}

void kg_cpu_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, float eps)
{
    kg_cpu *cpu = kg_cpu_of(be);
    row_job j = {cpu, x->data, gamma->data, beta ? beta->data : NULL, y->data, 0, eps};
    run_rows(cpu, x, layer_norm_rows, &j);
}

static void l2_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const row_job *j = ctx;
    int64_t d = j->d;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = j->x + r * d;
        float *yr = j->y + r * d;
        double sq = 0.0, norm;
        for (int64_t i = 0; i < d; i++)
            sq += (double)xr[i] * xr[i];
        norm = sqrt(sq);
        if (norm < (double)j->eps)
            norm = j->eps;
        for (int64_t i = 0; i < d; i++)
            yr[i] = (float)(xr[i] / norm);
    }
}

void kg_cpu_l2_normalize(kg_backend *be, kg_tensor *y, const kg_tensor *x, float eps)
{
    kg_cpu *cpu = kg_cpu_of(be);
    row_job j = {cpu, x->data, NULL, NULL, y->data, 0, eps};
    run_rows(cpu, x, l2_rows, &j);
}
