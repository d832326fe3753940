/* test_ops.c - every CPU op against a plain double-precision definition.
 *
 * Inputs are random; shapes are chosen to hit vector tails and thread
 * splits (7, 23, 25, 9x7 ...). Each reference below is the textbook loop,
 * written independently of kernels/cpu. The compute ops run on backends
 * with 1, 2 and 3 threads (the work splits differ); the plain C GEMM that
 * builds without BLAS use is checked directly. Also covered: kg_ops shape
 * validation (KG_ERR_SHAPE with a message) and the arena measure pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_kernels.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float *rand_buf(size_t n, double lo, double hi)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(lo + (hi - lo) * urand());
    return p;
}

static double *dbuf(size_t n)
{
    return calloc(n ? n : 1, sizeof(double));
}

/* An arena tensor holding a copy of host data (random when host is NULL). */
static kg_tensor up(kg_ctx *c, const float *host, int ndim, const int64_t *shape)
{
    kg_tensor t = kg_new(c, ndim, shape);
    size_t n = (size_t)kg_tensor_numel(&t);
    float *tmp = host ? NULL : rand_buf(n, -1.0, 1.0);
    kg_upload_f32(c, &t, host ? host : tmp);
    free(tmp);
    return t;
}

/* Compares a tensor with a double reference and releases both buffers. */
static void expect(kg_ctx *c, const char *name, const kg_tensor *t, double *ref)
{
    float *got;
    if (!kgt_ctx_ok(c, name)) {
        free(ref);
        return;
    }
    got = kgt_download(c, t);
    kgt_compare(name, got, ref, (size_t)kg_tensor_numel(t), ATOL, RTOL);
    free(got);
    free(ref);
}

static const float *host(const kg_tensor *t)
{
    return t->data; /* the CPU backend keeps tensors in host memory */
}

/* ------------------------------------------------------------------ linear */

static void test_linear(kg_ctx *c, int64_t m, int64_t k, int64_t n, int bias)
{
    size_t mark = kg_mark(c);
    char name[96];
    kg_tensor x = up(c, NULL, 2, (int64_t[]){m, k});
    kg_tensor w = up(c, NULL, 2, (int64_t[]){n, k});
    kg_tensor b = up(c, NULL, 1, (int64_t[]){n});
    kg_tensor y = kg_new2(c, m, n);
    double *ref = dbuf((size_t)(m * n));
    kg_linear(c, &y, &x, &w, bias ? &b : NULL);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = bias ? host(&b)[j] : 0.0;
            for (int64_t q = 0; q < k; q++)
                s += (double)host(&x)[i * k + q] * host(&w)[j * k + q];
            ref[i * n + j] = s;
        }
    snprintf(name, sizeof name, "linear %lldx%lldx%lld%s", (long long)m, (long long)k, (long long)n,
             bias ? " +bias" : "");
    expect(c, name, &y, ref);
    kg_reset(c, mark);
}

/* The fallback GEMM, with strides larger than the matrices and beta != 0, in
 * its AVX2 (where the CPU has it) and baseline versions. */
static void test_gemm_c(kg_cpu_isa isa, int trans_b, int64_t m, int64_t k, int64_t n, float alpha,
                        float beta)
{
    char name[96];
    int64_t lda = k + 3, ldb = (trans_b ? k : n) + 5, ldc = n + 2;
    float *a = rand_buf((size_t)(m * lda), -1.0, 1.0);
    float *b = rand_buf((size_t)((trans_b ? n : k) * ldb), -1.0, 1.0);
    float *cm = rand_buf((size_t)(m * ldc), -1.0, 1.0);
    float *got = malloc((size_t)(m * n) * sizeof *got);
    double *ref = dbuf((size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t q = 0; q < k; q++)
                acc += (double)a[i * lda + q] * (trans_b ? b[j * ldb + q] : b[q * ldb + j]);
            ref[i * n + j] = alpha * acc + beta * (double)cm[i * ldc + j];
        }
    kg_cpu fake = {.n_threads = 1, .isa = isa};
    kg_cpu_sgemm_c(&fake, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, cm, ldc);
    for (int64_t i = 0; i < m; i++)
        memcpy(got + i * n, cm + i * ldc, (size_t)n * sizeof *got);
    snprintf(name, sizeof name, "C gemm (%s)%s %lldx%lldx%lld alpha %g beta %g",
             isa == KG_CPU_ISA_BASE ? "base" : "avx2", trans_b ? " B^T" : "", (long long)m,
             (long long)k, (long long)n, alpha, beta);
    kgt_compare(name, got, ref, (size_t)(m * n), ATOL, RTOL);
    free(a);
    free(b);
    free(cm);
    free(got);
    free(ref);
}

/* 3-d input: the leading dims fold into rows */
static void test_linear_3d(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    kg_tensor x = up(c, NULL, 3, (int64_t[]){2, 9, 23});
    kg_tensor w = up(c, NULL, 2, (int64_t[]){7, 23});
    kg_tensor y = kg_new3(c, 2, 9, 7);
    double *ref = dbuf(2 * 9 * 7);
    kg_linear(c, &y, &x, &w, NULL);
    for (int64_t i = 0; i < 18; i++)
        for (int64_t j = 0; j < 7; j++)
            for (int64_t q = 0; q < 23; q++)
                ref[i * 7 + j] += (double)host(&x)[i * 23 + q] * host(&w)[j * 23 + q];
    expect(c, "linear [2,9,23] x [7,23]^T", &y, ref);
    kg_reset(c, mark);
}

/* ------------------------------------------------------------------ conv2d */

static void test_conv(kg_ctx *c, int64_t nb, int64_t ci, int64_t h, int64_t w, int64_t co,
                      int64_t kh, int64_t kw, int stride, int pad, int bias)
{
    size_t mark = kg_mark(c);
    char name[128];
    int64_t ho = (h + 2 * pad - kh) / stride + 1, wo = (w + 2 * pad - kw) / stride + 1;
    kg_tensor x = up(c, NULL, 4, (int64_t[]){nb, ci, h, w});
    kg_tensor wt = up(c, NULL, 4, (int64_t[]){co, ci, kh, kw});
    kg_tensor b = up(c, NULL, 1, (int64_t[]){co});
    kg_tensor y = kg_new4(c, nb, co, ho, wo);
    double *ref = dbuf((size_t)(nb * co * ho * wo));
    kg_conv2d(c, &y, &x, &wt, bias ? &b : NULL, stride, pad);
    for (int64_t bi = 0; bi < nb; bi++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t oy = 0; oy < ho; oy++)
                for (int64_t ox = 0; ox < wo; ox++) {
                    double s = bias ? host(&b)[o] : 0.0;
                    for (int64_t i = 0; i < ci; i++)
                        for (int64_t ky = 0; ky < kh; ky++)
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                s += (double)host(&x)[((bi * ci + i) * h + iy) * w + ix] *
                                     host(&wt)[((o * ci + i) * kh + ky) * kw + kx];
                            }
                    ref[((bi * co + o) * ho + oy) * wo + ox] = s;
                }
    snprintf(name, sizeof name, "conv2d x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] s%d p%d%s",
             (long long)nb, (long long)ci, (long long)h, (long long)w, (long long)co, (long long)ci,
             (long long)kh, (long long)kw, stride, pad, bias ? " +bias" : "");
    expect(c, name, &y, ref);
    kg_reset(c, mark);
}

/* ------------------------------------------------------------------- norms */

static void test_group_norm(kg_ctx *c, int ndim, const int64_t *shape, int groups, float eps,
                            int silu)
{
    size_t mark = kg_mark(c);
    char name[96];
    kg_tensor x = kg_new(c, ndim, shape);
    int64_t n = kg_tensor_numel(&x), nb = shape[0], ch = shape[1], sp = n / (nb * ch);
    int64_t cpg = ch / groups;
    /* an offset mean makes a one-pass float variance visibly wrong */
    float *xh = rand_buf((size_t)n, 2.0, 4.0);
    kg_tensor g = up(c, NULL, 1, (int64_t[]){ch});
    kg_tensor b = up(c, NULL, 1, (int64_t[]){ch});
    kg_tensor y = kg_new(c, ndim, shape);
    double *ref = dbuf((size_t)n);
    kg_upload_f32(c, &x, xh);
    if (silu)
        kg_group_norm_silu(c, &y, &x, &g, &b, groups, eps);
    else
        kg_group_norm(c, &y, &x, &g, &b, groups, eps);
    for (int64_t bi = 0; bi < nb; bi++)
        for (int64_t gi = 0; gi < groups; gi++) {
            const float *xs = xh + (bi * ch + gi * cpg) * sp;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < cpg * sp; i++)
                mean += xs[i];
            mean /= (double)(cpg * sp);
            for (int64_t i = 0; i < cpg * sp; i++)
                var += (xs[i] - mean) * (xs[i] - mean);
            var /= (double)(cpg * sp);
            for (int64_t i = 0; i < cpg * sp; i++) {
                int64_t chn = gi * cpg + i / sp;
                double v = (xs[i] - mean) / sqrt(var + eps) * host(&g)[chn] + host(&b)[chn];
                ref[(bi * ch + gi * cpg) * sp + i] = silu ? v / (1.0 + exp(-v)) : v;
            }
        }
    snprintf(name, sizeof name, "group_norm%s %dd C=%lld groups=%d eps=%g", silu ? "_silu" : "",
             ndim, (long long)ch, groups, eps);
    expect(c, name, &y, ref);
    free(xh);
    kg_reset(c, mark);
}

static void test_layer_norm(kg_ctx *c, int64_t rows, int64_t d, int bias, int inplace)
{
    size_t mark = kg_mark(c);
    char name[96];
    float *xh = rand_buf((size_t)(rows * d), -3.0, 5.0);
    kg_tensor x = up(c, xh, 2, (int64_t[]){rows, d});
    kg_tensor g = up(c, NULL, 1, (int64_t[]){d});
    kg_tensor b = up(c, NULL, 1, (int64_t[]){d});
    kg_tensor y = inplace ? x : kg_new2(c, rows, d);
    double *ref = dbuf((size_t)(rows * d));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xh + r * d;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < d; i++)
            mean += xr[i];
        mean /= (double)d;
        for (int64_t i = 0; i < d; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)d;
        for (int64_t i = 0; i < d; i++)
            ref[r * d + i] =
                (xr[i] - mean) / sqrt(var + 1e-5) * host(&g)[i] + (bias ? host(&b)[i] : 0.0);
    }
    kg_layer_norm(c, &y, &x, &g, bias ? &b : NULL, 1e-5f);
    snprintf(name, sizeof name, "layer_norm %lldx%lld%s%s", (long long)rows, (long long)d,
             bias ? " +bias" : "", inplace ? " in place" : "");
    expect(c, name, &y, ref);
    free(xh);
    kg_reset(c, mark);
}

static void test_l2_normalize(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    int64_t rows = 7, d = 23;
    float *xh = rand_buf((size_t)(rows * d), -1.0, 1.0);
    kg_tensor x, y;
    double *ref = dbuf((size_t)(rows * d));
    for (int64_t i = 0; i < d; i++) {
        xh[2 * d + i] = 0.0f;  /* zero row: x / eps = 0 */
        xh[3 * d + i] = 1e-9f; /* norm below eps: divided by eps */
    }
    x = up(c, xh, 2, (int64_t[]){rows, d});
    y = kg_new2(c, rows, d);
    kg_l2_normalize(c, &y, &x, 1e-6f);
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t i = 0; i < d; i++)
            s += (double)xh[r * d + i] * xh[r * d + i];
        s = fmax(sqrt(s), 1e-6);
        for (int64_t i = 0; i < d; i++)
            ref[r * d + i] = xh[r * d + i] / s;
    }
    expect(c, "l2_normalize 7x23 (zero row, tiny row)", &y, ref);
    free(xh);
    kg_reset(c, mark);
}

/* --------------------------------------------------------------- attention */

typedef struct attn_case {
    int64_t b, lq, lk;
    int heads;
    int64_t dh, dv;
    int causal;
    int pad;    /* 0 none, 1 random keys padded, 2 also one batch item fully padded */
    int stride; /* reference checks every stride-th query row (long cases) */
} attn_case;

static void test_attention(kg_ctx *c, const attn_case *a)
{
    size_t mark = kg_mark(c);
    char name[160];
    int64_t dq = a->heads * a->dh, dv = a->heads * a->dv;
    float scale = (float)(1.0 / sqrt((double)a->dh));
    /* q in [-6, 6]: logits of std ~2 make the softmax peaked, so outputs
     * are not all near the mean of v and masking mistakes show */
    float *qh = rand_buf((size_t)(a->b * a->lq * dq), -6.0, 6.0);
    kg_tensor q = up(c, qh, 3, (int64_t[]){a->b, a->lq, dq});
    kg_tensor k = up(c, NULL, 3, (int64_t[]){a->b, a->lk, dq});
    kg_tensor v = up(c, NULL, 3, (int64_t[]){a->b, a->lk, dv});
    kg_tensor o = kg_new3(c, a->b, a->lq, dv);
    kg_tensor pad = kg_new_dt(c, KG_U8, 2, (int64_t[]){a->b, a->lk});
    unsigned char *ph = malloc((size_t)(a->b * a->lk));
    int64_t n_rows = (a->lq + a->stride - 1) / a->stride;
    double *ref = dbuf((size_t)(a->b * n_rows * dv)), *sc = dbuf((size_t)a->lk);
    float *got, *sel = malloc((size_t)(a->b * n_rows * dv) * sizeof *sel);
    for (int64_t i = 0; i < a->b * a->lk; i++)
        ph[i] = a->pad && urand() < 0.3;
    if (a->pad == 2)
        memset(ph + (a->b - 1) * a->lk, 1, (size_t)a->lk);
    kg_upload(c, &pad, ph);
    kg_attention(c, &o, &q, &k, &v, a->pad ? &pad : NULL, a->heads, scale, a->causal);
    for (int64_t bi = 0; bi < a->b; bi++)
        for (int64_t r = 0; r < n_rows; r++) {
            int64_t i = r * a->stride;
            for (int h = 0; h < a->heads; h++) {
                const float *qi = host(&q) + (bi * a->lq + i) * dq + h * a->dh;
                double mx = -INFINITY, s = 0;
                for (int64_t j = 0; j < a->lk; j++) {
                    const float *kj = host(&k) + (bi * a->lk + j) * dq + h * a->dh;
                    double d = 0;
                    for (int64_t e = 0; e < a->dh; e++)
                        d += (double)qi[e] * kj[e];
                    sc[j] = (a->causal && j > i) || (a->pad && ph[bi * a->lk + j]) ? -INFINITY
                                                                                   : d * scale;
                    mx = fmax(mx, sc[j]);
                }
                for (int64_t j = 0; j < a->lk; j++) {
                    sc[j] = mx == -INFINITY ? 0.0 : exp(sc[j] - mx);
                    s += sc[j];
                }
                for (int64_t e = 0; e < a->dv; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < a->lk; j++)
                        acc += sc[j] * host(&v)[(bi * a->lk + j) * dv + h * a->dv + e];
                    ref[(bi * n_rows + r) * dv + h * a->dv + e] = s > 0 ? acc / s : 0.0;
                }
            }
        }
    snprintf(name, sizeof name, "attention B%lld Lq%lld Lk%lld H%d dh%lld dv%lld%s%s%s",
             (long long)a->b, (long long)a->lq, (long long)a->lk, a->heads, (long long)a->dh,
             (long long)a->dv, a->causal ? " causal" : "",
             a->pad == 2 ? " pad+fully-masked"
             : a->pad    ? " pad"
                         : "",
             a->stride > 1 ? " (sampled rows)" : "");
    if (kgt_ctx_ok(c, name)) {
        got = kgt_download(c, &o);
        for (int64_t bi = 0; bi < a->b; bi++)
            for (int64_t r = 0; r < n_rows; r++)
                memcpy(sel + (bi * n_rows + r) * dv, got + (bi * a->lq + r * a->stride) * dv,
                       (size_t)dv * sizeof *sel);
        kgt_compare(name, sel, ref, (size_t)(a->b * n_rows * dv), ATOL, RTOL);
        free(got);
    }
    free(qh);
    free(ph);
    free(ref);
    free(sc);
    free(sel);
    kg_reset(c, mark);
}

/* ------------------------------------------------------------- elementwise */

static double ref_act(double x, kg_act act)
{
    switch (act) {
    case KG_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case KG_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case KG_ACT_SILU: return x / (1.0 + exp(-x));
    }
    return NAN;
}

static void test_activations(kg_ctx *c, int64_t n)
{
    static const char *names[] = {"gelu", "quick_gelu", "silu"};
    for (int a = 0; a < 3; a++) {
        size_t mark = kg_mark(c);
        char name[64];
        float *xh = rand_buf((size_t)n, -9.0, 9.0);
        kg_tensor x = up(c, xh, 2, (int64_t[]){n / 7, 7});
        double *ref = dbuf((size_t)n);
        for (int64_t i = 0; i < n; i++)
            ref[i] = ref_act(xh[i], (kg_act)a);
        /* in place: y aliases x */
        if (a == 0)
            kg_gelu(c, &x, &x);
        else if (a == 1)
            kg_quick_gelu(c, &x, &x);
        else
            kg_silu(c, &x, &x);
        snprintf(name, sizeof name, "%s n=%lld in place", names[a], (long long)n);
        expect(c, name, &x, ref);
        free(xh);
        kg_reset(c, mark);
    }
}

static void test_geglu(kg_ctx *c, int64_t rows, int64_t n)
{
    size_t mark = kg_mark(c);
    char name[64];
    kg_tensor x = up(c, NULL, 3, (int64_t[]){1, rows, 2 * n});
    kg_tensor y = kg_new3(c, 1, rows, n);
    double *ref = dbuf((size_t)(rows * n));
    kg_geglu(c, &y, &x);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++)
            ref[r * n + i] =
                host(&x)[r * 2 * n + i] * ref_act(host(&x)[r * 2 * n + n + i], KG_ACT_GELU);
    snprintf(name, sizeof name, "geglu %lldx%lld -> %lld", (long long)rows, (long long)(2 * n),
             (long long)n);
    expect(c, name, &y, ref);
    kg_reset(c, mark);
}

static void test_binary(kg_ctx *c, int add, kg_bcast bc, int an, const int64_t *as, int bn,
                        const int64_t *bs)
{
    size_t mark = kg_mark(c);
    char name[128];
    kg_tensor a = up(c, NULL, an, as), b = up(c, NULL, bn, bs);
    kg_tensor y = kg_new(c, an, as);
    int64_t n = kg_tensor_numel(&a), nbe = kg_tensor_numel(&b);
    double *ref = dbuf((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = bc == KG_BCAST_SAME ? i : bc == KG_BCAST_TILE ? i % nbe : i / (n / nbe);
        ref[i] = add ? (double)host(&a)[i] + host(&b)[j] : (double)host(&a)[i] * host(&b)[j];
    }
    if (!add)
        c->be->ops->binary(c->be, &y, &a, &b, KG_BIN_MUL, bc);
    else if (bc == KG_BCAST_SAME)
        kg_add(c, &y, &a, &b);
    else if (bc == KG_BCAST_TILE)
        kg_add_tile(c, &y, &a, &b);
    else
        kg_add_spread(c, &y, &a, &b);
    snprintf(name, sizeof name, "%s %s a %dd n=%lld b n=%lld", add ? "add" : "mul",
             bc == KG_BCAST_SAME   ? "same"
             : bc == KG_BCAST_TILE ? "tile"
                                   : "spread",
             an, (long long)n, (long long)nbe);
    expect(c, name, &y, ref);
    kg_reset(c, mark);
}

static void test_axpby(kg_ctx *c, int64_t n)
{
    size_t mark = kg_mark(c);
    kg_tensor a = up(c, NULL, 1, &n), b = up(c, NULL, 1, &n), y = kg_new1(c, n);
    double *r1 = dbuf((size_t)n), *r2 = dbuf((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        r1[i] = 0.7 * host(&a)[i] - 1.3 * host(&b)[i];
        r2[i] = -2.5 * host(&a)[i];
    }
    kg_axpby(c, &y, 0.7f, &a, -1.3f, &b);
    expect(c, "axpby 0.7 a - 1.3 b", &y, r1);
    kg_scale(c, &a, &a, -2.5f);
    expect(c, "scale -2.5 in place", &a, r2);
    kg_reset(c, mark);
}

static void test_fill(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    kg_tensor y = kg_new3(c, 3, 7, 25);
    double *ref = dbuf(3 * 7 * 25);
    for (int i = 0; i < 3 * 7 * 25; i++)
        ref[i] = -0.375;
    kg_fill(c, &y, -0.375f);
    expect(c, "fill 3x7x25", &y, ref);
    kg_reset(c, mark);
}

/* ------------------------------------------------------------------ layout */

static void test_upsample(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    kg_tensor x = up(c, NULL, 4, (int64_t[]){2, 3, 9, 7});
    kg_tensor y = kg_new4(c, 2, 3, 18, 14);
    double *ref = dbuf(2 * 3 * 18 * 14);
    kg_upsample_nearest(c, &y, &x);
    for (int64_t p = 0; p < 6; p++)
        for (int64_t i = 0; i < 18; i++)
            for (int64_t j = 0; j < 14; j++)
                ref[(p * 18 + i) * 14 + j] = host(&x)[(p * 9 + i / 2) * 7 + j / 2];
    expect(c, "upsample_nearest 2x [2,3,9,7]", &y, ref);
    kg_reset(c, mark);
}

/* The U-Net's upsampler at sizes that are not multiples of 2^levels (diffusers forwards the
 * skip's size): torch's nearest index for these sizes, written out by hand (F.interpolate with
 * size=, torch 1.13: min(floor(o * (float)in / out), in - 1)). */
static void test_upsample_to_size(kg_ctx *c)
{
    /* 2 -> 3, 3 -> 5, 5 -> 9, 1 -> 2 and 4 -> 7 */
    static const struct {
        int64_t in, out;
        int64_t idx[9];
    } cases[] = {
        {2, 3, {0, 0, 1}}, {3, 5, {0, 0, 1, 1, 2}},       {5, 9, {0, 0, 1, 1, 2, 2, 3, 3, 4}},
        {1, 2, {0, 0}},    {4, 7, {0, 0, 1, 1, 2, 2, 3}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t mark = kg_mark(c);
        int64_t hi = cases[k].in, ho = cases[k].out, wi = cases[(k + 1) % 5].in,
                wo = cases[(k + 1) % 5].out;
        char name[96];
        kg_tensor x = up(c, NULL, 4, (int64_t[]){2, 3, hi, wi});
        kg_tensor y = kg_new4(c, 2, 3, ho, wo);
        double *ref = dbuf((size_t)(6 * ho * wo));
        kg_upsample_nearest(c, &y, &x);
        for (int64_t p = 0; p < 6; p++)
            for (int64_t i = 0; i < ho; i++)
                for (int64_t j = 0; j < wo; j++)
                    ref[(p * ho + i) * wo + j] =
                        host(&x)[(p * hi + cases[k].idx[i]) * wi + cases[(k + 1) % 5].idx[j]];
        snprintf(name, sizeof name, "upsample_nearest %lldx%lld -> %lldx%lld", (long long)hi,
                 (long long)wi, (long long)ho, (long long)wo);
        expect(c, name, &y, ref);
        kg_reset(c, mark);
    }
}

static void test_concat(kg_ctx *c, int dim)
{
    size_t mark = kg_mark(c);
    char name[64];
    int64_t as[4] = {2, 3, 5, 7}, bs[4] = {2, 3, 5, 7}, ys[4] = {2, 3, 5, 7}, idx[4];
    kg_tensor a, b, y;
    double *ref;
    bs[dim] = 4;
    ys[dim] = as[dim] + bs[dim];
    a = up(c, NULL, 4, as);
    b = up(c, NULL, 4, bs);
    y = kg_new(c, 4, ys);
    ref = dbuf((size_t)kg_tensor_numel(&y));
    kg_concat(c, &y, &a, &b, dim);
    for (idx[0] = 0; idx[0] < ys[0]; idx[0]++)
        for (idx[1] = 0; idx[1] < ys[1]; idx[1]++)
            for (idx[2] = 0; idx[2] < ys[2]; idx[2]++)
                for (idx[3] = 0; idx[3] < ys[3]; idx[3]++) {
                    int64_t yi = ((idx[0] * ys[1] + idx[1]) * ys[2] + idx[2]) * ys[3] + idx[3];
                    int from_b = idx[dim] >= as[dim];
                    const int64_t *s = from_b ? bs : as;
                    int64_t j[4] = {idx[0], idx[1], idx[2], idx[3]};
                    if (from_b)
                        j[dim] -= as[dim];
                    ref[yi] =
                        host(from_b ? &b : &a)[((j[0] * s[1] + j[1]) * s[2] + j[2]) * s[3] + j[3]];
                }
    snprintf(name, sizeof name, "concat [2,3,5,7] dim %d", dim);
    expect(c, name, &y, ref);
    kg_reset(c, mark);
}

static void test_permute(kg_ctx *c, int ndim, const int64_t *xs, const int *p)
{
    size_t mark = kg_mark(c);
    char name[96];
    int64_t s[4] = {1, 1, 1, 1}, ys[4], i[4], st[4] = {1, 1, 1, 1};
    kg_tensor x, y, x16, y16;
    double *ref, *ref16;
    float *got16;
    for (int d = 0; d < ndim; d++)
        s[d] = xs[d];
    for (int d = 2; d >= 0; d--)
        st[d] = st[d + 1] * s[d + 1];
    for (int d = 0; d < 4; d++)
        ys[d] = d < ndim ? s[p[d]] : 1;
    x = up(c, NULL, ndim, xs);
    y = kg_new(c, ndim, ys);
    ref = dbuf((size_t)kg_tensor_numel(&x));
    for (i[0] = 0; i[0] < ys[0]; i[0]++)
        for (i[1] = 0; i[1] < ys[1]; i[1]++)
            for (i[2] = 0; i[2] < ys[2]; i[2]++)
                for (i[3] = 0; i[3] < ys[3]; i[3]++) {
                    int64_t xi = 0;
                    for (int d = 0; d < ndim; d++)
                        xi += i[d] * st[p[d]];
                    ref[((i[0] * ys[1] + i[1]) * ys[2] + i[2]) * ys[3] + i[3]] = host(&x)[xi];
                }
    kg_permute(c, &y, &x, p[0], p[1], p[2], p[3]);
    snprintf(name, sizeof name, "permute %dd (%d,%d,%d,%d)", ndim, p[0], p[1], p[2], p[3]);
    ref16 = dbuf((size_t)kg_tensor_numel(&x));
    memcpy(ref16, ref, (size_t)kg_tensor_numel(&x) * sizeof *ref16);
    expect(c, name, &y, ref);
    /* the same permutation on 2-byte elements; values are exact halves */
    x16 = kg_new_dt(c, KG_F16, ndim, xs);
    y16 = kg_new_dt(c, KG_F16, ndim, ys);
    kg_copy(c, &x16, &x);
    kg_permute(c, &y16, &x16, p[0], p[1], p[2], p[3]);
    for (int64_t e = 0; e < kg_tensor_numel(&x); e++)
        ref16[e] = kg_f16_to_f32(kg_f32_to_f16((float)ref16[e]));
    got16 = malloc((size_t)kg_tensor_numel(&x) * sizeof *got16);
    kg_download_f32(c, got16, &y16);
    strcat(name, " f16");
    if (kgt_ctx_ok(c, name))
        kgt_compare(name, got16, ref16, (size_t)kg_tensor_numel(&x), 0.0, 0.0);
    free(got16);
    free(ref16);
    kg_reset(c, mark);
}

static void test_copy(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    int64_t n = 1000;
    float *xh = rand_buf((size_t)n, -70000.0, 70000.0);
    kg_tensor x, h, bf, back;
    double *r16 = dbuf((size_t)n), *rbf = dbuf((size_t)n), *rf = dbuf((size_t)n);
    float *g;
    for (int64_t i = 0; i < 10; i++)
        xh[i] = (float)ldexp(urand(), -(int)(i * 3)); /* subnormal halves too */
    x = up(c, xh, 2, (int64_t[]){40, 25});
    h = kg_new_dt(c, KG_F16, 1, &n);
    bf = kg_new_dt(c, KG_BF16, 3, (int64_t[]){5, 8, 25});
    back = kg_new2(c, 25, 40);
    for (int64_t i = 0; i < n; i++) {
        r16[i] = kg_f16_to_f32(kg_f32_to_f16(xh[i]));
        rbf[i] = kg_bf16_to_f32(kg_f32_to_bf16(xh[i]));
        rf[i] = xh[i];
    }
    kg_copy(c, &h, &x);
    g = malloc((size_t)n * sizeof *g);
    kg_download_f32(c, g, &h);
    /* |x| > 65504 overflows to inf in f16: compare finite entries only */
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(r16[i]))
            r16[i] = g[i] = 0.0f;
    if (kgt_ctx_ok(c, "copy f32->f16"))
        kgt_compare("copy f32->f16 (as kg_f32_to_f16)", g, r16, (size_t)n, 0.0, 0.0);
    kg_copy(c, &bf, &x);
    kg_copy(c, &back, &bf);
    expect(c, "copy f32->bf16->f32 (as kg_f32_to_bf16)", &back, rbf);
    kg_copy(c, &back, &x);
    expect(c, "copy f32->f32 reshaped", &back, rf);
    free(g);
    free(r16);
    free(xh);
    kg_reset(c, mark);
}

static void test_embedding(kg_ctx *c, kg_dtype idt)
{
    size_t mark = kg_mark(c);
    char name[64];
    int64_t v = 23, d = 9, n = 7;
    kg_tensor table = up(c, NULL, 2, (int64_t[]){v, d});
    kg_tensor ids = kg_new_dt(c, idt, 1, &n);
    kg_tensor y = kg_new2(c, n, d);
    int64_t idh[7] = {0, 22, 5, 5, 13, 1, 22};
    int32_t id32[7];
    double *ref = dbuf((size_t)(n * d));
    kg_error err = {0};
    for (int i = 0; i < 7; i++)
        id32[i] = (int32_t)idh[i];
    kg_upload(c, &ids, idt == KG_I64 ? (const void *)idh : (const void *)id32);
    kg_embedding(c, &y, &table, &ids);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            ref[i * d + j] = host(&table)[idh[i] * d + j];
    snprintf(name, sizeof name, "embedding %s ids", kg_dtype_name(idt));
    expect(c, name, &y, ref);
    /* an id past the table is an error, not a read out of bounds */
    idh[3] = 23;
    id32[3] = 23;
    kg_upload(c, &ids, idt == KG_I64 ? (const void *)idh : (const void *)id32);
    kg_embedding(c, &y, &table, &ids);
    kg_ctx_status(c, &err);
    kgt_check(err.code == KG_ERR_INVALID_ARG && strstr(err.msg, "23"),
              "embedding %s id 23 of 23 rows -> %s: %s", kg_dtype_name(idt),
              kg_status_name(err.code), err.msg);
    kg_ctx_clear_error(c);
    id32[3] = -1;
    idh[3] = -1;
    kg_upload(c, &ids, idt == KG_I64 ? (const void *)idh : (const void *)id32);
    kg_embedding(c, &y, &table, &ids);
    kgt_check(kg_ctx_status(c, NULL) == KG_ERR_INVALID_ARG, "embedding %s id -1 -> error",
              kg_dtype_name(idt));
    kg_ctx_clear_error(c);
    kg_reset(c, mark);
}

/* Empty reductions: no keys (every row masked -> 0), conv over zero input
 * channels (y = bias). */
static void test_empty(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    kg_tensor q = up(c, NULL, 3, (int64_t[]){1, 3, 8});
    kg_tensor k = kg_new3(c, 1, 0, 8), v = kg_new3(c, 1, 0, 8);
    kg_tensor o = kg_new3(c, 1, 3, 8);
    kg_tensor b = up(c, NULL, 1, (int64_t[]){5});
    kg_tensor x4 = kg_new4(c, 1, 0, 4, 4), w4 = kg_new4(c, 5, 0, 3, 3);
    kg_tensor y4 = kg_new4(c, 1, 5, 4, 4);
    double *r0 = dbuf(24), *r2 = dbuf(80);
    kg_fill(c, &o, 7.0f);
    kg_attention(c, &o, &q, &k, &v, NULL, 2, 1.0f, 0);
    expect(c, "attention with no keys -> 0", &o, r0);
    for (int i = 0; i < 80; i++)
        r2[i] = host(&b)[i / 16];
    kg_conv2d(c, &y4, &x4, &w4, &b, 1, 1);
    expect(c, "conv2d with 0 input channels -> bias", &y4, r2);
    kg_reset(c, mark);
}

/* -------------------------------------------------------------- validation */

static void expect_shape_error(kg_ctx *c, const char *what, const char *needle)
{
    kg_error err = {0};
    kg_status st = kg_ctx_status(c, &err);
    kgt_check(st == KG_ERR_SHAPE && strstr(err.msg, needle) != NULL,
              "%s -> %s: \"%s\" (expects KG_ERR_SHAPE naming \"%s\")", what, kg_status_name(st),
              st ? err.msg : "", needle);
    kg_ctx_clear_error(c);
}

static void test_validation(kg_ctx *c)
{
    size_t mark = kg_mark(c);
    kg_tensor x = up(c, NULL, 2, (int64_t[]){3, 5});
    kg_tensor w = up(c, NULL, 2, (int64_t[]){4, 6});
    kg_tensor y = kg_new2(c, 3, 4);
    kg_tensor x4 = up(c, NULL, 4, (int64_t[]){1, 3, 8, 8});
    kg_tensor w4 = up(c, NULL, 4, (int64_t[]){2, 4, 3, 3});
    kg_tensor y4 = kg_new4(c, 1, 2, 8, 8);
    kg_tensor q = up(c, NULL, 3, (int64_t[]){1, 5, 8});
    kg_tensor k = up(c, NULL, 3, (int64_t[]){1, 6, 8});
    kg_tensor o = kg_new3(c, 1, 5, 8);
    kg_tensor i32 = kg_new_dt(c, KG_I32, 2, (int64_t[]){3, 5});
    float before = 1.0f;

    kg_fill(c, &y, before);

    kg_linear(c, &y, &x, &w, NULL);
    expect_shape_error(c, "linear x[3,5] w[4,6]", "[4, 6]");
    kg_conv2d(c, &y4, &x4, &w4, NULL, 1, 1);
    expect_shape_error(c, "conv2d x Ci=3 w Ci=4", "conv2d");
    kg_attention(c, &o, &q, &k, &k, NULL, 2, 1.0f, 1);
    expect_shape_error(c, "causal attention Lq 5 != Lk 6", "causal");
    kg_attention(c, &o, &q, &k, &k, NULL, 3, 1.0f, 0);
    expect_shape_error(c, "attention 8 channels over 3 heads", "3 heads");
    kg_group_norm(c, &y4, &y4, &x, &x, 3, 1e-5f);
    expect_shape_error(c, "group_norm 2 channels in 3 groups", "3 groups");
    kg_add_tile(c, &y, &y, &x);
    expect_shape_error(c, "add_tile b[3,5] onto a[3,4]", "tile");
    kg_gelu(c, &y, &i32);
    expect_shape_error(c, "gelu on I32", "I32");
    kg_concat(c, &y, &x, &y, 1);
    expect_shape_error(c, "concat into an input", "concat");

    /* after a failure, later ops are skipped until the error is cleared */
    kg_linear(c, &y, &x, &w, NULL);
    kg_fill(c, &y, 42.0f);
    kgt_check(host(&y)[0] == before && kg_ctx_status(c, NULL) == KG_ERR_SHAPE,
              "ops after a sticky error do not run (y[0] %g, was %g)", host(&y)[0], before);
    kg_ctx_clear_error(c);
    kg_reset(c, mark);
}

/* A forward in measure mode: ops validate without running, kg_new counts;
 * end_measure reserves the peak with one allocation, and the real pass then
 * fits without any further backend allocation. */
static int64_t small_forward(kg_ctx *c, float *out)
{
    kg_tensor x = kg_new3(c, 2, 9, 16), w = kg_new2(c, 24, 16), h = kg_new3(c, 2, 9, 24);
    kg_tensor g = kg_new3(c, 2, 9, 12);
    size_t mark = kg_mark(c);
    kg_tensor tmp = kg_new3(c, 2, 9, 24);
    kg_fill(c, &x, 0.5f);
    kg_fill(c, &w, 0.25f);
    kg_linear(c, &h, &x, &w, NULL);
    kg_gelu(c, &tmp, &h);
    kg_reset(c, mark);
    kg_geglu(c, &g, &h);
    if (out && !kg_ctx_measuring(c))
        kg_download_f32(c, out, &g);
    return kg_tensor_numel(&g);
}

static void test_measure(void)
{
    kg_backend *be = kgt_cpu_backend();
    kg_ctx c;
    kg_error err = {0};
    size_t allocs;
    float out[2 * 9 * 12];
    double ref[2 * 9 * 12];
    int64_t n;
    kg_ctx_init(&c, be);
    kg_ctx_begin_measure(&c);
    n = small_forward(&c, NULL);
    kgt_check(kg_ctx_measuring(&c) && be->n_allocs == 0,
              "measure pass: no backend allocation while measuring (%zu)", be->n_allocs);
    kgt_check(kg_ctx_end_measure(&c, &err) == KG_OK, "end_measure: %s", err.msg);
    /* x, w, h and tmp are live at once: 6144 bytes before alignment */
    kgt_check(!kg_ctx_measuring(&c) && be->n_allocs == 1 && c.arena_cap >= 6144,
              "end_measure reserved %zu bytes in %zu allocation(s)", c.arena_cap, be->n_allocs);
    allocs = be->n_allocs;
    small_forward(&c, out);
    /* every h = 16 * 0.5 * 0.25 = 2, so each output is 2 * gelu(2) */
    for (int64_t i = 0; i < n; i++)
        ref[i] = 2.0 * (0.5 * 2.0 * (1.0 + erf(2.0 / sqrt(2.0))));
    if (kgt_check(kg_ctx_status(&c, &err) == KG_OK, "real pass after measure: %s", err.msg))
        kgt_compare("real pass after measure: geglu(linear) result", out, ref, (size_t)n, ATOL,
                    RTOL);
    kgt_check(be->n_allocs == allocs && c.arena.peak <= c.arena_cap,
              "real pass: no allocation (%zu -> %zu), peak %zu <= %zu", allocs, be->n_allocs,
              c.arena.peak, c.arena_cap);
    kg_ctx_release(&c);
    kgt_check(be->bytes_allocated == 0, "all backend bytes released (%zu left)",
              be->bytes_allocated);
    kg_backend_free(be);
}

/* The ops whose work split depends on the thread count. */
static void compute_suite(kg_ctx *c)
{
    static const attn_case cases[] = {
        {2, 7, 9, 2, 40, 40, 0, 1, 1},
        {1, 23, 23, 3, 64, 64, 1, 0, 1},
        {1, 25, 25, 1, 80, 80, 1, 1, 1},
        {2, 5, 77, 2, 160, 160, 0, 2, 1},
        {1, 9, 7, 1, 512, 512, 0, 0, 1},
        {2, 77, 77, 12, 64, 64, 1, 1, 1},
        {1, 150, 150, 2, 40, 40, 1, 1, 1},
        {1, 300, 77, 8, 40, 40, 0, 0, 1},
        {1, 7, 9, 2, 40, 24, 0, 1, 1},
        {1, 4096, 4096, 1, 40, 40, 0, 0, 61},
        {1, 1024, 1024, 1, 512, 512, 1, 0, 37},
        /* v head width not a multiple of 8: the GEMM path; odd q/k width */
        {1, 33, 33, 2, 23, 20, 1, 1, 1},
        {2, 37, 41, 3, 13, 8, 0, 2, 1},
        /* two work items per head on the fused path (510 rows each) */
        {2, 600, 600, 1, 24, 24, 1, 1, 1},
    };
    test_linear(c, 1, 1, 1, 1);
    test_linear(c, 7, 23, 25, 1);
    test_linear(c, 77, 768, 9, 0);
    test_linear(c, 513, 70, 90, 1);  /* threaded split over rows */
    test_linear(c, 9, 300, 1000, 1); /* threaded split over columns */
    test_linear_3d(c);

    /* maps under ~512 positions take the shared-im2col path, larger ones
     * the per-thread column chunks */
    test_conv(c, 2, 3, 9, 7, 5, 3, 3, 1, 1, 1);
    test_conv(c, 1, 4, 9, 7, 6, 3, 3, 2, 1, 1);
    test_conv(c, 1, 6, 7, 9, 4, 3, 3, 2, 0, 0);
    test_conv(c, 1, 5, 8, 8, 7, 3, 3, 1, 0, 1);
    test_conv(c, 2, 5, 9, 7, 7, 1, 1, 1, 0, 1);      /* 1x1: no im2col */
    test_conv(c, 1, 3, 9, 9, 4, 1, 1, 2, 0, 1);      /* 1x1 stride 2 */
    test_conv(c, 2, 3, 28, 42, 8, 14, 14, 14, 0, 0); /* CLIP patch embedding */
    test_conv(c, 1, 64, 32, 32, 32, 3, 3, 1, 1, 1);  /* several column chunks */
    test_conv(c, 1, 8, 23, 25, 16, 3, 3, 1, 1, 1);
    test_conv(c, 3, 8, 17, 19, 16, 3, 3, 1, 1, 1); /* chunks across items */
    test_conv(c, 1, 300, 23, 25, 5, 1, 1, 1, 0, 0);
    test_conv(c, 1, 16, 47, 45, 9, 3, 3, 2, 1, 1); /* VAE-style downsample, chunked */
    /* Winograd F(2x2, 3x3) (3x3, stride 1, pad 1, maps of >= 1024 pixels): odd heights and
     * widths (half tiles), several items, chunks of tile rows, wide channels */
    test_conv(c, 2, 16, 33, 35, 24, 3, 3, 1, 1, 1);
    test_conv(c, 1, 40, 64, 47, 8, 3, 3, 1, 1, 0);
    test_conv(c, 1, 7, 31, 129, 5, 3, 3, 1, 1, 1);
    test_conv(c, 1, 96, 40, 40, 130, 3, 3, 1, 1, 1);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_attention(c, &cases[i]);

    test_group_norm(c, 4, (int64_t[]){2, 32, 9, 7}, 8, 1e-5f, 0);
    test_group_norm(c, 4, (int64_t[]){2, 32, 9, 7}, 32, 1e-6f, 1);
    test_activations(c, 7 * 9000);
}

static void threads_suite(int n_threads)
{
    kg_backend *be = NULL;
    kg_error err = {0};
    kg_ctx c;
    printf("-- CPU backend with %d thread(s)\n", n_threads);
    if (!kgt_check(kg_backend_cpu_new(&be, n_threads, &err) == KG_OK, "cpu backend, %d threads: %s",
                   n_threads, err.msg))
        return;
    kgt_ctx(&c, be, (size_t)96 << 20);
    compute_suite(&c);
    kg_ctx_release(&c);
    kg_backend_free(be);
}

/* KOSMOSG_CPU_ISA, when set, must show in what the backend dispatches: our kernels'
 * level and oneDNN's JIT ISA (the isa-* runs of the golden suites rely on it). */
static void test_isa_cap(kg_backend *be)
{
    const char *cap = getenv("KOSMOSG_CPU_ISA");
    const kg_cpu *cpu = kg_cpu_of(be);
    char line[256];
    kg_backend_cpu_describe(be, line, sizeof line);
    printf("dispatch: %s (KOSMOSG_CPU_ISA=%s)\n", line, cap ? cap : "");
    if (!cap)
        return;
    if (!strcmp(cap, "avx2")) {
        kgt_check(cpu->isa <= KG_CPU_ISA_AVX2, "own kernels capped at avx2 (isa %d)",
                  (int)cpu->isa);
        kgt_check(!strstr(line, "avx512"), "no AVX-512 kernel dispatched under the avx2 cap: %s",
                  line);
    } else if (!strcmp(cap, "base")) {
        kgt_check(cpu->isa == KG_CPU_ISA_BASE, "own kernels at the baseline (isa %d)",
                  (int)cpu->isa);
        kgt_check(!strstr(line, "avx") && !strstr(line, "AVX"),
                  "no AVX kernel dispatched under the base cap: %s", line);
    }
}

int main(void)
{
    kg_backend *be = kgt_cpu_backend();
    kg_ctx c;
    size_t allocs;
    kgt_ctx(&c, be, (size_t)96 << 20);
    allocs = be->n_allocs;

    printf("-- CPU backend with the default thread count\n");
    test_isa_cap(be);
    compute_suite(&c);
    for (int isa = KG_CPU_ISA_BASE; isa <= KG_CPU_ISA_AVX2; isa++) {
        if (isa == KG_CPU_ISA_AVX2 &&
            !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
            break;
        test_gemm_c(isa, 0, 1, 1, 1, 1.0f, 0.0f);
        test_gemm_c(isa, 0, 7, 23, 25, 1.0f, 0.0f);
        test_gemm_c(isa, 1, 13, 300, 37, 0.5f, 1.0f);
        test_gemm_c(isa, 0, 77, 768, 150, 1.0f, -0.5f);
        test_gemm_c(isa, 1, 64, 520, 300, 1.0f, 0.0f); /* several K and N panels */
    }

    test_group_norm(&c, 3, (int64_t[]){1, 64, 23}, 32, 1e-5f, 1);
    test_group_norm(&c, 4, (int64_t[]){1, 64, 64, 64}, 32, 1e-5f, 0); /* 8192-element groups */
    test_layer_norm(&c, 7, 23, 1, 0);
    test_layer_norm(&c, 5, 768, 0, 0);
    test_layer_norm(&c, 77, 1280, 1, 1);
    test_l2_normalize(&c);

    test_activations(&c, 7 * 1001);
    test_geglu(&c, 9, 25);
    test_geglu(&c, 300, 640);
    test_binary(&c, 1, KG_BCAST_SAME, 2, (int64_t[]){9, 7}, 2, (int64_t[]){9, 7});
    test_binary(&c, 0, KG_BCAST_SAME, 1, (int64_t[]){70001}, 1, (int64_t[]){70001});
    test_binary(&c, 1, KG_BCAST_TILE, 3, (int64_t[]){2, 7, 9}, 2, (int64_t[]){7, 9});
    test_binary(&c, 1, KG_BCAST_TILE, 3, (int64_t[]){300, 7, 25}, 1, (int64_t[]){25});
    test_binary(&c, 0, KG_BCAST_TILE, 3, (int64_t[]){2, 7, 9}, 1, (int64_t[]){9});
    test_binary(&c, 1, KG_BCAST_SPREAD, 4, (int64_t[]){2, 3, 5, 7}, 2, (int64_t[]){2, 3});
    test_binary(&c, 0, KG_BCAST_SPREAD, 3, (int64_t[]){2, 7, 9}, 2, (int64_t[]){2, 7});
    test_binary(&c, 1, KG_BCAST_SPREAD, 4, (int64_t[]){2, 320, 9, 23}, 2, (int64_t[]){2, 320});
    test_axpby(&c, 23);
    test_axpby(&c, 100003);
    test_fill(&c);

    test_upsample(&c);
    test_upsample_to_size(&c);
    for (int d = 0; d < 4; d++)
        test_concat(&c, d);
    test_permute(&c, 4, (int64_t[]){2, 3, 5, 7}, (int[]){0, 2, 1, 3});
    test_permute(&c, 4, (int64_t[]){2, 3, 5, 7}, (int[]){0, 2, 3, 1});
    test_permute(&c, 4, (int64_t[]){2, 3, 5, 7}, (int[]){3, 1, 0, 2});
    test_permute(&c, 4, (int64_t[]){2, 64, 23, 25}, (int[]){0, 2, 3, 1});
    test_permute(&c, 3, (int64_t[]){9, 7, 5}, (int[]){1, 0, 2, 3});
    test_permute(&c, 2, (int64_t[]){23, 7}, (int[]){1, 0, 2, 3});
    /* blocked transposes: token <-> channel layouts, block tails */
    test_permute(&c, 3, (int64_t[]){2, 37, 530}, (int[]){0, 2, 1, 3});
    test_permute(&c, 2, (int64_t[]){300, 70}, (int[]){1, 0, 2, 3});
    test_permute(&c, 4, (int64_t[]){2, 23, 25, 64}, (int[]){0, 3, 1, 2});
    test_permute(&c, 4, (int64_t[]){3, 17, 5, 33}, (int[]){3, 0, 2, 1});
    test_copy(&c);
    test_embedding(&c, KG_I32);
    test_embedding(&c, KG_I64);

    test_empty(&c);
    test_validation(&c);
    kgt_check(be->n_allocs == allocs, "no backend allocation during the ops (%zu -> %zu)", allocs,
              be->n_allocs);
    kg_ctx_release(&c);
    kg_backend_free(be);

    threads_suite(1);
    threads_suite(3);
    test_measure();
    return kgt_finish();
}
