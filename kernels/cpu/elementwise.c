/* elementwise.c - activations, GEGLU, broadcast add/mul, axpby, fill. */
#include "cpu_kernels.h"

#include <math.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768
/* elements per work item of the flat loops */
#define CHUNK 4096

void kg_cpu_activation(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = kg_tensor_numel(x), n_chunks = (n + CHUNK - 1) / CHUNK;
    const float *xd = x->data;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic) if (n > PAR_MIN)
    for (int64_t t = 0; t < n_chunks; t++) {
        int64_t i0 = t * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        if (act == KG_ACT_GELU)
            kg_cpu_gelu_mul(yd + i0, xd + i0, NULL, m);
        else
            kg_cpu_silu_affine(yd + i0, xd + i0, m, act == KG_ACT_SILU ? 1.0f : 1.702f, 1.0f,
                               0.0f);
    }
}

void kg_cpu_geglu(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = y->shape[y->ndim - 1], rows = n ? kg_tensor_numel(y) / n : 0;
    const float *xd = x->data;
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) if (rows * n > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *val = xd + r * 2 * n, *gate = val + n;
        float *yr = yd + r * n;
        kg_cpu_gelu_mul(yr, gate, val, n);
    }
}

void kg_cpu_binary(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                   kg_binary_op op, kg_bcast bcast)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = kg_tensor_numel(a), nb = kg_tensor_numel(b);
    const float *ad = a->data, *bd = b->data;
    float *yd = y->data;
    int add = op == KG_BIN_ADD;
    int64_t inner, outer;

    if (n == 0 || nb == 0)
        return;
    if (bcast == KG_BCAST_SAME) {
#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 8192) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            yd[i] = add ? ad[i] + bd[i] : ad[i] * bd[i];
        return;
    }
    /* y viewed as [outer, inner]; b runs along inner (tile) or outer (spread) */
    inner = bcast == KG_BCAST_TILE ? nb : n / nb;
    outer = n / inner;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) if (n > PAR_MIN)
    for (int64_t r = 0; r < outer; r++) {
        const float *ar = ad + r * inner;
        float *yr = yd + r * inner;
        if (bcast == KG_BCAST_SPREAD) {
            float s = bd[r];
            if (add)
                for (int64_t i = 0; i < inner; i++)
                    yr[i] = ar[i] + s;
            else
                for (int64_t i = 0; i < inner; i++)
                    yr[i] = ar[i] * s;
        } else if (add) {
            for (int64_t i = 0; i < inner; i++)
                yr[i] = ar[i] + bd[i];
        } else {
            for (int64_t i = 0; i < inner; i++)
                yr[i] = ar[i] * bd[i];
        }
    }
}

void kg_cpu_axpby(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
                  const kg_tensor *b)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = kg_tensor_numel(a);
    const float *ad = a->data, *bd = b ? b->data : NULL;
    float *yd = y->data;

    if (bd) {
#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 8192) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            yd[i] = alpha * ad[i] + beta * bd[i];
    } else {
#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 8192) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            yd[i] = alpha * ad[i];
    }
}

void kg_cpu_fill(kg_backend *be, kg_tensor *y, float value)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = kg_tensor_numel(y);
    float *yd = y->data;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 8192) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        yd[i] = value;
}
