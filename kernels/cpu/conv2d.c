/* conv2d.c - convolution as GEMM: y_b[Co, P] = w[Co, Ci*kh*kw] col[Ci*kh*kw, P].
 *
 * The im2col matrix of a whole SD1.5 feature map would be ~47 MB, so the
 * output positions P are cut into column chunks, each expanded into the
 * calling thread's share of the fixed scratch and multiplied right away
 * while it is still in cache. A 1x1, stride-1, unpadded conv needs no
 * expansion: x_b itself is the [Ci, P] matrix.
 *
 * bf16 weights (w->dtype KG_BF16): the same paths, with the GEMMs of
 * gemm_bf16.c on the im2col columns (or x) made into bf16 activations. */
#include "cpu_kernels.h"

#include <stdatomic.h>
#include <string.h>

/* Target size of one im2col chunk: a few L2-sized GEMM panels. */
#define COL_CHUNK_BYTES ((size_t)8 << 20)
/* Fewer output columns per GEMM and the packing of w dominates. */
#define MIN_COLS 256

typedef struct conv_geom {
    int64_t ci, h, w, kh, kw, ho, wo;
    int stride, pad;
} conv_geom;

/* col[r, j] for rows r0 .. r1-1 and output positions p0 .. p0+pc-1 of one
 * batch item, one output row segment at a time; stride 1 copies whole runs
 * of x. */
static void im2col(const conv_geom *g, const float *x, int64_t r0, int64_t r1, int64_t p0,
                   int64_t pc, float *col)
{
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = r / (g->kh * g->kw), ky = r / g->kw % g->kh, kx = r % g->kw;
        const float *xc = x + c * g->h * g->w;
        float *dst = col + r * pc;
        int64_t oy = p0 / g->wo, ox = p0 % g->wo;
        for (int64_t j = 0; j < pc; j += g->wo - ox, ox = 0, oy++) {
            int64_t seg = g->wo - ox < pc - j ? g->wo - ox : pc - j;
            int64_t iy = oy * g->stride - g->pad + ky, ix0 = ox * g->stride - g->pad + kx;
            const float *row = xc + iy * g->w;
            float *d = dst + j;
            if (iy < 0 || iy >= g->h) {
                memset(d, 0, (size_t)seg * sizeof *d);
            } else if (g->stride == 1) {
                int64_t lo = ix0 < 0 ? -ix0 : 0, hi = g->w - ix0 < seg ? g->w - ix0 : seg;
                if (hi < lo)
                    hi = lo;
                memset(d, 0, (size_t)lo * sizeof *d);
                memcpy(d + lo, row + ix0 + lo, (size_t)(hi - lo) * sizeof *d);
                memset(d + hi, 0, (size_t)(seg - hi) * sizeof *d);
            } else {
                for (int64_t t = 0; t < seg; t++) {
                    int64_t ix = ix0 + t * g->stride;
                    d[t] = ix >= 0 && ix < g->w ? row[ix] : 0.0f;
                }
            }
        }
    }
}

typedef struct im2col_job {
    const conv_geom *g;
    const float *xb;
    int64_t kc, P, parts;
    float *col;
} im2col_job;

static void im2col_part(void *ctx, int64_t t, int tid)
{
    const im2col_job *j = ctx;
    im2col(j->g, j->xb, j->kc * t / j->parts, j->kc * (t + 1) / j->parts, 0, j->P, j->col);
}

/* Few output positions (deep U-Net levels, 8x8 .. 16x16): one im2col of the
 * whole item, filled by all threads, then a GEMM split over output channels. */
static int conv_shared(kg_cpu *cpu, const conv_geom *g, int64_t nb, int64_t co, const float *xd,
                       const void *wd, int bf16, const float *bd, float *yd)
{
    int64_t P = g->ho * g->wo, kc = g->ci * g->kh * g->kw;
    int direct = g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0;
    int nt = cpu->n_threads;
    if ((size_t)(kc * P) > cpu->scratch_floats_per_thread * (size_t)nt)
        return 0;
    for (int64_t bi = 0; bi < nb; bi++) {
        const float *xb = xd + bi * g->ci * g->h * g->w, *col = xb;
        float *yb = yd + bi * co * P;
        if (!direct) {
            im2col_job j = {g, xb, kc, P, 4 * nt, cpu->scratch};
            kg_cpu_parallel(cpu, j.parts, (double)(kc * P), im2col_part, &j);
            col = cpu->scratch;
        }
        if (bf16) {
            /* the whole operand, in the lowp buffer (as bf16) or the scratch */
            void *act = cpu->bf16_mode == KG_CPU_BF16_DNNL ? (void *)cpu->lowp : cpu->scratch;
            kg_cpu_bf16_act_par(cpu, act, P, col, P, kc, P);
            kg_cpu_gemm_wb(cpu, 1, 0, co, P, kc, wd, kc, act, P, yb, P);
        } else {
            kg_cpu_sgemm(cpu, 0, co, P, kc, 1.0f, wd, kc, col, P, 0.0f, yb, P);
        }
        if (bd)
            for (int64_t o = 0; o < co; o++)
                for (int64_t j = 0; j < P; j++)
                    yb[o * P + j] += bd[o];
    }
    return 1;
}

typedef struct conv_job {
    const kg_cpu *cpu;
    const conv_geom *g;
    int64_t co, P, kc, pc, per_item;
    int direct, bf16;
    const float *xd;
    const void *wd; /* float, or uint16_t bf16 when bf16 */
    const float *bd;
    float *yd;
} conv_job;

/* conv_chunk on bf16 weights: the chunk's operand (x itself for a 1x1 conv,
 * else the fp32 im2col columns) made into bf16 activations, in column blocks
 * that fit the thread's buffer (one block after an im2col, which fits the
 * scratch); the fallback rounds the im2col columns in place. */
static void conv_chunk_bf16(const conv_job *c, const float *src, int64_t lds, int64_t n, float *yb,
                            int tid)
{
    const kg_cpu *cpu = c->cpu;
    int64_t kc = c->kc, jb = (int64_t)cpu->scratch_floats_per_thread / kc;
    void *act = cpu->bf16_mode == KG_CPU_BF16_DNNL ? (void *)kg_cpu_lowp(cpu, tid)
                : c->direct                        ? (void *)kg_cpu_scratch(cpu, tid)
                                                   : (void *)src;
    for (int64_t j0 = 0; j0 < n; j0 += jb) {
        int64_t jn = n - j0 < jb ? n - j0 : jb;
        kg_cpu_bf16_act(cpu, act, jn, src + j0, lds, kc, jn);
        kg_cpu_gemm_wb_st(cpu, tid, 1, 0, c->co, jn, kc, c->wd, kc, act, jn, yb + j0, c->P);
    }
}

static void conv_chunk(void *ctx, int64_t t, int tid)
{
    const conv_job *c = ctx;
    const conv_geom *g = c->g;
    int64_t bi = t / c->per_item, p0 = t % c->per_item * c->pc, P = c->P, co = c->co;
    int64_t n = P - p0 < c->pc ? P - p0 : c->pc;
    const float *xb = c->xd + bi * g->ci * g->h * g->w;
    float *yb = c->yd + bi * co * P + p0;
    if (c->direct) {
        if (c->bf16)
            conv_chunk_bf16(c, xb + p0, P, n, yb, tid);
        else
            kg_cpu_sgemm_st(c->cpu, 0, co, n, c->kc, 1.0f, c->wd, c->kc, xb + p0, P, 0.0f, yb, P);
    } else {
        float *col = kg_cpu_scratch(c->cpu, tid);
        im2col(g, xb, 0, c->kc, p0, n, col);
        if (c->bf16)
            conv_chunk_bf16(c, col, n, n, yb, tid);
        else
            kg_cpu_sgemm_st(c->cpu, 0, co, n, c->kc, 1.0f, c->wd, c->kc, col, n, 0.0f, yb, P);
    }
    if (c->bd)
        for (int64_t o = 0; o < co; o++)
            for (int64_t j = 0; j < n; j++)
                yb[o * P + j] += c->bd[o];
}

void kg_cpu_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b, int stride, int pad)
{
    kg_cpu *cpu = kg_cpu_of(be);
    conv_geom g = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3],
                   y->shape[2], y->shape[3], stride,      pad};
    int64_t nb = x->shape[0], co = w->shape[0];
    int64_t P = g.ho * g.wo, kc = g.ci * g.kh * g.kw;
    int direct = g.kh == 1 && g.kw == 1 && stride == 1 && pad == 0;
    int nt = cpu->n_threads, bf16 = w->dtype == KG_BF16;
    int64_t pc, per_item, fit = kc ? (int64_t)(cpu->scratch_floats_per_thread / (size_t)kc) : 0;
    const float *xd = x->data, *bd = b ? b->data : NULL;
    const void *wd = w->data;
    float *yd = y->data;

    if (nb * P * co == 0)
        return;
    if (kc == 0) {
        for (int64_t i = 0; i < nb * co * P; i++)
            yd[i] = bd ? bd[i / P % co] : 0.0f;
        return;
    }
    if (g.kh == 3 && g.kw == 3 && stride == 1 && pad == 1 && kg_cpu_conv_winograd(be, y, x, w, b))
        return;
    if (nt > 1 && nb * P < nt * MIN_COLS && conv_shared(cpu, &g, nb, co, xd, wd, bf16, bd, yd)) {
        if (bf16)
            atomic_fetch_add(&cpu->bf16_ops[KG_CPU_BF16_CONV_SHARED], 1);
        kg_cpu_gemm_status(be, "conv2d");
        return;
    }
    /* (a bf16 1x1 conv also converts its columns in the scratch) */
    if ((!direct || bf16) && fit < 1) {
        kg_backend_fail(be, KG_ERR_NOMEM, "conv2d: a %lld-row im2col column exceeds the scratch",
                        (long long)kc);
        return;
    }
    /* column chunks of about COL_CHUNK_BYTES, at least MIN_COLS wide, and
     * for a single item a multiple of the thread count */
    pc = direct ? MIN_COLS : (int64_t)(COL_CHUNK_BYTES / sizeof(float) / (size_t)kc);
    if (pc < MIN_COLS)
        pc = MIN_COLS;
    per_item = (P + pc - 1) / pc;
    if (nb == 1)
        per_item = (per_item + nt - 1) / nt * nt;
    pc = ((P + per_item - 1) / per_item + 15) / 16 * 16;
    if (!direct && pc > fit)
        pc = fit;
    if (pc > P)
        pc = P;
    per_item = (P + pc - 1) / pc;

    {
        conv_job c = {cpu, &g, co, P, kc, pc, per_item, direct, bf16, xd, wd, bd, yd};
        if (bf16)
            atomic_fetch_add(&cpu->bf16_ops[KG_CPU_BF16_CONV_CHUNKS], 1);
        kg_cpu_parallel(cpu, nb * per_item, (double)(nb * P) * co * kc, conv_chunk, &c);
    }
    kg_cpu_gemm_status(be, "conv2d");
}
