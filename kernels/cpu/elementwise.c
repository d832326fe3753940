/* elementwise.c - activations, GEGLU, broadcast add/mul, axpby, fill. */
#include "cpu_kernels.h"

#include <math.h>

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768
/* elements per work item of the flat loops */
#define CHUNK 8192

typedef struct ew_job {
    const kg_cpu *cpu;
    float *y;
    const float *a, *b;
    float alpha, beta;
    int64_t inner; /* broadcast rows; GEGLU output width */
    int op;        /* kg_act, or add (1) / mul (0) */
    kg_bcast bcast;
} ew_job;

static void act_range(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const ew_job *j = ctx;
    if (j->op == KG_ACT_GELU)
        kg_cpu_gelu_mul(j->cpu, j->y + i0, j->a + i0, NULL, i1 - i0);
    else
        kg_cpu_silu_affine(j->cpu, j->y + i0, j->a + i0, i1 - i0,
                           j->op == KG_ACT_SILU ? 1.0f : 1.702f, 1.0f, 0.0f);
}

void kg_cpu_activation(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act)
{
    kg_cpu *cpu = kg_cpu_of(be);
    ew_job j = {cpu, y->data, x->data, NULL, 0, 0, 0, (int)act, KG_BCAST_SAME};
    kg_cpu_parallel_range(cpu, kg_tensor_numel(x), CHUNK, PAR_MIN, act_range, &j);
}

static void geglu_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const ew_job *j = ctx;
    int64_t n = j->inner;
    for (int64_t r = r0; r < r1; r++) {
        const float *val = j->a + r * 2 * n, *gate = val + n;
        kg_cpu_gelu_mul(j->cpu, j->y + r * n, gate, val, n);
    }
}

void kg_cpu_geglu(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = y->shape[y->ndim - 1], rows = n ? kg_tensor_numel(y) / n : 0;
    ew_job j = {cpu, y->data, x->data, NULL, 0, 0, n, 0, KG_BCAST_SAME};
    kg_cpu_parallel_range(cpu, rows, 16, rows * n > PAR_MIN ? 0 : rows, geglu_rows, &j);
}

static void binary_same(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const ew_job *j = ctx;
    if (j->op)
        for (int64_t i = i0; i < i1; i++)
            j->y[i] = j->a[i] + j->b[i];
    else
        for (int64_t i = i0; i < i1; i++)
            j->y[i] = j->a[i] * j->b[i];
}

/* y viewed as [outer, inner]; b runs along inner (tile) or outer (spread) */
static void binary_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const ew_job *j = ctx;
    int64_t inner = j->inner;
    for (int64_t r = r0; r < r1; r++) {
        const float *ar = j->a + r * inner, *bd = j->b;
        float *yr = j->y + r * inner;
        if (j->bcast == KG_BCAST_SPREAD) {
            float s = bd[r];
            if (j->op)
                for (int64_t i = 0; i < inner; i++)
                    yr[i] = ar[i] + s;
            else
                for (int64_t i = 0; i < inner; i++)
                    yr[i] = ar[i] * s;
        } else if (j->op) {
            for (int64_t i = 0; i < inner; i++)
                yr[i] = ar[i] + bd[i];
        } else {
            for (int64_t i = 0; i < inner; i++)
                yr[i] = ar[i] * bd[i];
        }
    }
}

void kg_cpu_binary(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                   kg_binary_op op, kg_bcast bcast)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t n = kg_tensor_numel(a), nb = kg_tensor_numel(b), outer;
    ew_job j = {cpu, y->data, a->data, b->data, 0, 0, 0, op == KG_BIN_ADD, bcast};

    if (n == 0 || nb == 0)
        return;
    if (bcast == KG_BCAST_SAME) {
        kg_cpu_parallel_range(cpu, n, CHUNK, PAR_MIN, binary_same, &j);
        return;
    }
    j.inner = bcast == KG_BCAST_TILE ? nb : n / nb;
    outer = n / j.inner;
    kg_cpu_parallel_range(cpu, outer, 16, n > PAR_MIN ? 0 : outer, binary_rows, &j);
}

static void axpby_range(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const ew_job *j = ctx;
    if (j->b)
        for (int64_t i = i0; i < i1; i++)
            j->y[i] = j->alpha * j->a[i] + j->beta * j->b[i];
    else
        for (int64_t i = i0; i < i1; i++)
            j->y[i] = j->alpha * j->a[i];
}

void kg_cpu_axpby(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
                  const kg_tensor *b)
{
    kg_cpu *cpu = kg_cpu_of(be);
    ew_job j = {cpu, y->data, a->data, b ? b->data : NULL, alpha, beta, 0, 0, KG_BCAST_SAME};
    kg_cpu_parallel_range(cpu, kg_tensor_numel(a), CHUNK, PAR_MIN, axpby_range, &j);
}

static void fill_range(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const ew_job *j = ctx;
    for (int64_t i = i0; i < i1; i++)
        j->y[i] = j->alpha;
}

void kg_cpu_fill(kg_backend *be, kg_tensor *y, float value)
{
    kg_cpu *cpu = kg_cpu_of(be);
    ew_job j = {cpu, y->data, NULL, NULL, value, 0, 0, 0, KG_BCAST_SAME};
    kg_cpu_parallel_range(cpu, kg_tensor_numel(y), CHUNK, PAR_MIN, fill_range, &j);
}
