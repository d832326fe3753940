/* winograd.c - 3x3, stride 1, pad 1 convolution as Winograd F(2x2, 3x3)
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * Each 2x2 output tile comes from a 4x4 input patch d: Y = A^T [(G g G^T) . (B^T d B)] A.
 * Over all channels the elementwise product becomes 16 GEMMs, one per patch position k:
 * M_k[Co, tiles] = U_k[Co, Ci] V_k[Ci, tiles], 2.25x fewer multiplications than direct
 * convolution (16 per tile instead of 36), which is what the VAE decoder's 512x512 maps
 * need (98% of its 2.5 TFLOP are 3x3 convs). The transforms use only 0, +-1 and +-1/2, so
 * the rounding stays at the scale of the direct form's (the golden tests' 1e-4 hold).
 *
 * U (the transformed weights, [16][Co][Ci]) is built per call into the backend's
 * Winograd buffer; the tiles are cut into chunks of whole tile rows of one image, each
 * chunk on one pool thread: input transform into V ([16][Ci][tiles]) in the thread's
 * scratch, 16 single-threaded GEMMs into M ([16][Co][tiles]) beside it, output transform
 * (+ bias) into y. The transforms run along whole rows (rows combine first, then the
 * columns, split into even and odd positions) so they vectorise.
 *
 * bf16 weights: U is transformed from the bf16 weights in fp32 and rounded to bf16,
 * V is rounded to bf16 after its transform, and the 16 GEMMs multiply those (oneDNN's
 * bf16 GEMM, or the fp32 one on the rounded values in the fallback). The two extra
 * roundings (of U and V rather than of w and x) keep the error at bf16's scale: the
 * op tests measure it against the fp32 convolution by NMSE. */
#include "cpu_kernels.h"

#include <stdatomic.h>
#include <string.h>

/* tiles per chunk the scratch split aims at */
#define TARGET_TILES 256

typedef struct wino_job {
    const kg_cpu *cpu;
    int64_t ci, co, h, w, th, tw, rows; /* tile rows per chunk */
    int64_t chunks_per_image;
    const float *x;
    const void *wt; /* float, or uint16_t when bf16 */
    const float *b;
    float *u, *y;
    int bf16;
} wino_job;

/* U_k[o][i] = (G g G^T)_k, G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], for a block of
 * WT_BLOCK input channels at a time, stored as 16 contiguous runs (one per k):
 * storing each (o, i)'s 16 values straight into U's 16 planes, Co Ci apart, one
 * channel at a time made this transform 40% of a 640-channel 32x32 conv. bf16:
 * from the bf16 weights, U rounded to bf16 (stored as bf16 for oneDNN, as floats
 * for the fallback). */
#define WT_BLOCK 64
static void weight_transform(void *ctx, int64_t o, int tid)
{
    const wino_job *j = ctx;
    int64_t ci = j->ci, co = j->co;
    int dnnl = j->bf16 && j->cpu->bf16_mode == KG_CPU_BF16_DNNL;
    for (int64_t i0 = 0; i0 < ci; i0 += WT_BLOCK) {
        int64_t nb = ci - i0 < WT_BLOCK ? ci - i0 : WT_BLOCK;
        /* gb: g of the block's channels, one row per tap; then t = G g in place
         * (rows 1 and 2; row 0 is g's, row 3 goes to t3); u = t G^T. Loops over
         * the block's channels, so they vectorise. */
        float gb[9][WT_BLOCK], t3[3][WT_BLOCK], ub[16][WT_BLOCK];
        for (int64_t ii = 0; ii < nb; ii++)
            for (int q = 0; q < 9; q++)
                gb[q][ii] =
                    j->bf16
                        ? kg_cpu_bf16_float(((const uint16_t *)j->wt)[(o * ci + i0 + ii) * 9 + q])
                        : ((const float *)j->wt)[(o * ci + i0 + ii) * 9 + q];
        for (int c = 0; c < 3; c++)
            for (int64_t ii = 0; ii < nb; ii++) {
                float g0 = gb[c][ii], g1 = gb[3 + c][ii], g2 = gb[6 + c][ii];
                gb[3 + c][ii] = 0.5f * (g0 + g1 + g2);
                gb[6 + c][ii] = 0.5f * (g0 - g1 + g2);
                t3[c][ii] = g2;
            }
        for (int r = 0; r < 4; r++) {
            const float *t = r < 3 ? gb[3 * r] : t3[0]; /* t[c * WT_BLOCK + ii] */
            for (int64_t ii = 0; ii < nb; ii++) {
                float t0 = t[ii], t1 = t[WT_BLOCK + ii], t2 = t[2 * WT_BLOCK + ii];
                ub[4 * r + 0][ii] = t0;
                ub[4 * r + 1][ii] = 0.5f * (t0 + t1 + t2);
                ub[4 * r + 2][ii] = 0.5f * (t0 - t1 + t2);
                ub[4 * r + 3][ii] = t2;
            }
        }
        for (int k = 0; k < 16; k++) {
            int64_t at = ((int64_t)k * co + o) * ci + i0;
            if (!j->bf16)
                memcpy(j->u + at, ub[k], (size_t)nb * sizeof(float));
            else if (dnnl)
                for (int64_t ii = 0; ii < nb; ii++)
                    ((uint16_t *)j->u)[at + ii] = kg_cpu_bf16_bits(ub[k][ii]);
            else
                for (int64_t ii = 0; ii < nb; ii++)
                    j->u[at + ii] = kg_cpu_bf16_float(kg_cpu_bf16_bits(ub[k][ii]));
        }
    }
}

/* V_k[c][t0 + tx] for the tiles of tile row ty: B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
 * row[] is a zero-padded copy of an input row (w + 3 wide, position p at row[p + 1]);
 * rows combine into u0..u3 first, then each u splits into even (a) and odd (b) columns:
 * tile tx reads u[2tx-1 .. 2tx+2] = a[tx], b[tx], a[tx+1], b[tx+1]. */
static void input_transform(const wino_job *j, const float *xc, int64_t ty, float *v, int64_t ldv,
                            float *work)
{
    int64_t w = j->w, h = j->h, tw = j->tw, wp = 2 * tw + 2;
    float *r[4], *a = work + 4 * wp, *bb = a + (tw + 1);
    for (int q = 0; q < 4; q++) {
        int64_t iy = 2 * ty - 1 + q;
        r[q] = work + q * wp;
        memset(r[q], 0, (size_t)wp * sizeof(float));
        if (iy >= 0 && iy < h)
            memcpy(r[q] + 1, xc + iy * w, (size_t)w * sizeof(float));
    }
    for (int rq = 0; rq < 4; rq++) {
        /* row rq of B^T d: u = r[i1] + sg * r[i2] */
        static const int i1s[4] = {0, 1, 2, 1}, i2s[4] = {2, 2, 1, 3};
        static const float sgs[4] = {-1.0f, 1.0f, -1.0f, -1.0f};
        const float *ra = r[i1s[rq]], *rb = r[i2s[rq]];
        float sg = sgs[rq];
        for (int64_t tx = 0; tx <= tw; tx++) {
            a[tx] = ra[2 * tx] + sg * rb[2 * tx];
            bb[tx] = ra[2 * tx + 1] + sg * rb[2 * tx + 1];
        }
        {
            float *v0 = v + (int64_t)(rq * 4 + 0) * ldv, *v1 = v + (int64_t)(rq * 4 + 1) * ldv;
            float *v2 = v + (int64_t)(rq * 4 + 2) * ldv, *v3 = v + (int64_t)(rq * 4 + 3) * ldv;
            for (int64_t tx = 0; tx < tw; tx++) {
                v0[tx] = a[tx] - a[tx + 1];
                v1[tx] = bb[tx] + a[tx + 1];
                v2[tx] = a[tx + 1] - bb[tx];
                v3[tx] = bb[tx] - bb[tx + 1];
            }
        }
    }
}

/* y rows 2ty, 2ty+1 from M_k[t0 + tx]: A^T = [1 1 1 0; 0 1 -1 -1] */
static void output_transform(const wino_job *j, const float *m, int64_t ldm, int64_t ty, float bias,
                             float *yc, float *work)
{
    int64_t w = j->w, h = j->h, tw = j->tw;
    float *s = work; /* s[r][c][tx]: 2 x 4 rows of tw */
    for (int c = 0; c < 4; c++) {
        const float *m0 = m + (int64_t)(0 * 4 + c) * ldm, *m1 = m + (int64_t)(1 * 4 + c) * ldm;
        const float *m2 = m + (int64_t)(2 * 4 + c) * ldm, *m3 = m + (int64_t)(3 * 4 + c) * ldm;
        float *s0 = s + (int64_t)c * tw, *s1 = s + (int64_t)(4 + c) * tw;
        for (int64_t tx = 0; tx < tw; tx++) {
            s0[tx] = m0[tx] + m1[tx] + m2[tx];
            s1[tx] = m1[tx] - m2[tx] - m3[tx];
        }
    }
    for (int rr = 0; rr < 2; rr++) {
        int64_t oy = 2 * ty + rr;
        const float *c0 = s + (int64_t)(rr * 4 + 0) * tw, *c1 = s + (int64_t)(rr * 4 + 1) * tw;
        const float *c2 = s + (int64_t)(rr * 4 + 2) * tw, *c3 = s + (int64_t)(rr * 4 + 3) * tw;
        float *out = yc + oy * w;
        if (oy >= h)
            break;
        for (int64_t tx = 0; tx < w / 2; tx++) {
            out[2 * tx] = c0[tx] + c1[tx] + c2[tx] + bias;
            out[2 * tx + 1] = c1[tx] - c2[tx] - c3[tx] + bias;
        }
        if (w % 2)
            out[w - 1] = c0[tw - 1] + c1[tw - 1] + c2[tw - 1] + bias;
    }
}

static void wino_chunk(void *ctx, int64_t t, int tid)
{
    const wino_job *j = ctx;
    int64_t bi = t / j->chunks_per_image, ty0 = t % j->chunks_per_image * j->rows;
    int64_t ty1 = ty0 + j->rows < j->th ? ty0 + j->rows : j->th;
    int64_t tw = j->tw, nt = (ty1 - ty0) * tw, ldt = j->rows * tw;
    int64_t ci = j->ci, co = j->co, hw = j->h * j->w;
    float *v = kg_cpu_scratch(j->cpu, tid), *m = v + 16 * ci * ldt;
    float *work = m + 16 * co * ldt;
    const float *xb = j->x + bi * ci * hw;
    float *yb = j->y + bi * co * hw;
    int lowp = j->bf16 && j->cpu->bf16_mode == KG_CPU_BF16_DNNL;
    uint16_t *v16 = lowp ? kg_cpu_lowp(j->cpu, tid) : NULL;

    for (int64_t c = 0; c < ci; c++) {
        for (int64_t ty = ty0; ty < ty1; ty++)
            input_transform(j, xb + c * hw, ty, v + c * ldt + (ty - ty0) * tw, ci * ldt, work);
        /* bf16: the channel's 16 rows of V rounded while they are in cache,
         * into bf16 for oneDNN, in place for the fallback (U holds bf16 values) */
        if (j->bf16)
            kg_cpu_bf16_act(j->cpu, lowp ? (void *)(v16 + c * ldt) : (void *)(v + c * ldt),
                            ci * ldt, v + c * ldt, ci * ldt, 16, nt);
    }
    if (lowp) {
        const uint16_t *u16 = (const uint16_t *)j->u;
        for (int k = 0; k < 16; k++)
            kg_cpu_gemm_bf16_st(j->cpu, 0, co, nt, ci, u16 + (int64_t)k * co * ci, ci,
                                v16 + (int64_t)k * ci * ldt, ldt, m + (int64_t)k * co * ldt, ldt);
    } else {
        if (j->bf16)
            atomic_fetch_add_explicit(&((kg_cpu *)j->cpu)->bf16_gemms, 16, memory_order_relaxed);
        for (int k = 0; k < 16; k++)
            kg_cpu_sgemm_st(j->cpu, 0, co, nt, ci, 1.0f, j->u + (int64_t)k * co * ci, ci,
                            v + (int64_t)k * ci * ldt, ldt, 0.0f, m + (int64_t)k * co * ldt, ldt);
    }
    for (int64_t o = 0; o < co; o++)
        for (int64_t ty = ty0; ty < ty1; ty++)
            output_transform(j, m + o * ldt + (ty - ty0) * tw, co * ldt, ty, j->b ? j->b[o] : 0.0f,
                             yb + o * hw, work);
}

int kg_cpu_conv_winograd(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                         const kg_tensor *b)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t nb = x->shape[0], ci = x->shape[1], h = x->shape[2], wd = x->shape[3];
    int64_t co = w->shape[0], th = (h + 1) / 2, tw = (wd + 1) / 2, rows;
    size_t per_row, fixed, avail = cpu->scratch_floats_per_thread;
    wino_job j;

    if ((size_t)(16 * co * ci) > cpu->wino_floats || h * wd < KG_CPU_WINO_MIN_PIXELS)
        return 0;
    /* per thread: V and M for `rows` tile rows, plus the transforms' row buffers */
    per_row = (size_t)(16 * (ci + co) * tw);
    fixed = (size_t)(4 * (2 * tw + 2) + 2 * (tw + 1) + 8 * tw);
    if (avail < fixed + per_row)
        return 0;
    rows = (TARGET_TILES + tw - 1) / tw;
    if ((size_t)rows * per_row + fixed > avail)
        rows = (int64_t)((avail - fixed) / per_row);
    if (rows > th)
        rows = th;
    /* a single image: at least two chunks per thread, so a preempted thread holds up less */
    if (nb == 1 && th / rows < 2 * cpu->n_threads && rows > 1) {
        rows = th / (2 * cpu->n_threads);
        if (rows < 1)
            rows = 1;
    }
    j = (wino_job){cpu,       ci,      co,
                   h,         wd,      th,
                   tw,        rows,    (th + rows - 1) / rows,
                   x->data,   w->data, b ? b->data : NULL,
                   cpu->wino, y->data, w->dtype == KG_BF16};
    if (j.bf16)
        atomic_fetch_add(&cpu->bf16_ops[KG_CPU_BF16_WINOGRAD], 1);
    kg_pool_run(cpu->pool, co, weight_transform, &j);
    kg_pool_run(cpu->pool, nb * j.chunks_per_image, wino_chunk, &j);
    kg_cpu_gemm_status(be, "conv2d (Winograd)");
    return 1;
}
