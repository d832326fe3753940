/* norm.c - group norm, layer norm, softmax and L2 normalisation.
 *
 * Statistics are accumulated in double: a group of an SD1.5 feature map
 * holds up to ~160k elements, where a float sum drifts past the 1e-4
 * tolerance the golden tests use. Mean first, then the variance of the
 * deviations (biased, as PyTorch normalises). */
#include "cpu_kernels.h"

#include <math.h>

void kg_cpu_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, int groups, float eps, int silu)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t nb = x->shape[0], c = x->shape[1];
    int64_t spatial = nb && c ? kg_tensor_numel(x) / (nb * c) : 0;
    int64_t cpg = c / groups, n = cpg * spatial;
    const float *xd = x->data, *gd = gamma->data, *bd = beta->data;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic)
    for (int64_t t = 0; t < nb * groups; t++) {
        const float *xs = xd + t * n;
        float *ys = yd + t * n;
        int64_t c0 = t % groups * cpg;
        double sum = 0.0, sq = 0.0;
        float mean, rstd;
        for (int64_t i = 0; i < n; i++)
            sum += xs[i];
        mean = (float)(sum / (double)n);
        for (int64_t i = 0; i < n; i++) {
            double d = (double)xs[i] - sum / (double)n;
            sq += d * d;
        }
        rstd = (float)(1.0 / sqrt(sq / (double)n + (double)eps));
        for (int64_t ch = 0; ch < cpg; ch++) {
            float sc = rstd * gd[c0 + ch], sh = bd[c0 + ch] - mean * sc;
            const float *xc = xs + ch * spatial;
            float *yc = ys + ch * spatial;
            if (silu)
                kg_cpu_silu_affine(yc, xc, spatial, 1.0f, sc, sh);
            else
                for (int64_t i = 0; i < spatial; i++)
                    yc[i] = xc[i] * sc + sh;
        }
    }
}

void kg_cpu_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, float eps)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t d = x->shape[x->ndim - 1], rows = d ? kg_tensor_numel(x) / d : 0;
    const float *xd = x->data, *gd = gamma->data, *bd = beta ? beta->data : NULL;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) if (rows * d > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xd + r * d;
        float *yr = yd + r * d;
        double sum = 0.0, sq = 0.0, mean;
        float m, rstd;
        for (int64_t i = 0; i < d; i++)
            sum += xr[i];
        mean = sum / (double)d;
        for (int64_t i = 0; i < d; i++)
            sq += ((double)xr[i] - mean) * ((double)xr[i] - mean);
        m = (float)mean;
        rstd = (float)(1.0 / sqrt(sq / (double)d + (double)eps));
        for (int64_t i = 0; i < d; i++)
            yr[i] = (xr[i] - m) * rstd * gd[i] + (bd ? bd[i] : 0.0f);
    }
}

void kg_cpu_softmax(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t d = x->shape[x->ndim - 1], rows = d ? kg_tensor_numel(x) / d : 0;
    const float *xd = x->data;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) if (rows * d > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xd + r * d;
        float *yr = yd + r * d;
        float inv = 1.0f / kg_cpu_exp_shift_sum(yr, xr, d, kg_cpu_max(xr, d));
        for (int64_t i = 0; i < d; i++)
            yr[i] *= inv;
    }
}

void kg_cpu_l2_normalize(kg_backend *be, kg_tensor *y, const kg_tensor *x, float eps)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t d = x->shape[x->ndim - 1], rows = d ? kg_tensor_numel(x) / d : 0;
    const float *xd = x->data;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) if (rows * d > 16384)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xd + r * d;
        float *yr = yd + r * d;
        double sq = 0.0, norm;
        for (int64_t i = 0; i < d; i++)
            sq += (double)xr[i] * xr[i];
        norm = sqrt(sq);
        if (norm < (double)eps)
            norm = eps;
        for (int64_t i = 0; i < d; i++)
            yr[i] = (float)(xr[i] / norm);
    }
}
