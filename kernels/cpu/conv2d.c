/* conv2d.c - convolution as GEMM: y_b[Co, P] = w[Co, Ci*kh*kw] col[Ci*kh*kw, P].
 *
 * The im2col matrix of a whole SD1.5 feature map would be ~47 MB, so the
 * output positions P are cut into column chunks, each expanded into the
 * calling thread's share of the fixed scratch and multiplied right away
 * while it is still in cache. A 1x1, stride-1, unpadded conv needs no
 * expansion: x_b itself is the [Ci, P] matrix. */
#include "cpu_kernels.h"

/* Target size of one im2col chunk: a few L2-sized GEMM panels. */
#define COL_CHUNK_BYTES ((size_t)1 << 20)

typedef struct conv_geom {
    int64_t ci, h, w, kh, kw, ho, wo;
    int stride, pad;
} conv_geom;

/* col[r, j] for output positions p0 .. p0+pc-1 of one batch item. */
static void im2col(const conv_geom *g, const float *x, int64_t p0, int64_t pc, float *col)
{
    int64_t rows = g->ci * g->kh * g->kw;
    for (int64_t r = 0; r < rows; r++) {
        int64_t c = r / (g->kh * g->kw), ky = r / g->kw % g->kh, kx = r % g->kw;
        const float *xc = x + c * g->h * g->w;
        float *dst = col + r * pc;
        int64_t oy = p0 / g->wo, ox = p0 % g->wo;
        for (int64_t j = 0; j < pc; j++) {
            int64_t iy = oy * g->stride - g->pad + ky, ix = ox * g->stride - g->pad + kx;
            dst[j] = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w ? xc[iy * g->w + ix] : 0.0f;
            if (++ox == g->wo) {
                ox = 0;
                oy++;
            }
        }
    }
}

void kg_cpu_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b, int stride, int pad)
{
    kg_cpu *cpu = kg_cpu_of(be);
    conv_geom g = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3],
                   y->shape[2], y->shape[3], stride, pad};
    int64_t nb = x->shape[0], co = w->shape[0];
    int64_t P = g.ho * g.wo, kc = g.ci * g.kh * g.kw;
    int direct = g.kh == 1 && g.kw == 1 && stride == 1 && pad == 0;
    int64_t pc, n_chunks;
    const float *xd = x->data, *wd = w->data, *bd = b ? b->data : NULL;
    float *yd = y->data;

    if (direct) {
        pc = 256;
    } else {
        int64_t fit = (int64_t)(cpu->scratch_floats_per_thread / (size_t)kc);
        if (fit < 1) {
            kg_backend_fail(be, KG_ERR_NOMEM, "conv2d: %lld-row im2col column exceeds the scratch",
                            (long long)kc);
            return;
        }
        pc = (int64_t)(COL_CHUNK_BYTES / sizeof(float) / (size_t)kc) / 16 * 16;
        if (pc < 16)
            pc = 16;
        if (pc > fit)
            pc = fit;
    }
    if (pc > P)
        pc = P;
    n_chunks = (P + pc - 1) / pc;

#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic)
    for (int64_t t = 0; t < nb * n_chunks; t++) {
        int64_t bi = t / n_chunks, p0 = t % n_chunks * pc;
        int64_t n = P - p0 < pc ? P - p0 : pc;
        const float *xb = xd + bi * g.ci * g.h * g.w;
        float *yb = yd + bi * co * P + p0;
        if (direct) {
            kg_cpu_sgemm_st(0, co, n, kc, 1.0f, wd, kc, xb + p0, P, 0.0f, yb, P);
        } else {
            float *col = kg_cpu_scratch(cpu, kg_cpu_thread_id());
            im2col(&g, xb, p0, n, col);
            kg_cpu_sgemm_st(0, co, n, kc, 1.0f, wd, kc, col, n, 0.0f, yb, P);
        }
        if (bd)
            for (int64_t o = 0; o < co; o++)
                for (int64_t j = 0; j < n; j++)
                    yb[o * P + j] += bd[o];
    }
}
