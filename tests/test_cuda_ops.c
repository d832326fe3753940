/* test_cuda_ops.c - every CUDA op against the CPU op on the same inputs.
 *
 * Usage: test_cuda_ops [f16|bf16|f32 [small]] (default f16; small: only the
 * odd-shape cases, for compute-sanitizer). Inputs are rounded to
 * fp16 (bf16 for the bf16 backend) first, so both backends see identical
 * values; every CUDA output is
 * poisoned with NaN bit patterns before the op, so an element the kernel
 * never wrote fails the NaN check. Shapes are the real model's (GroupNorm
 * C 320/640/1280 at 64/32/16/8 squared, U-Net and VAE convolutions, MLLM
 * GEMMs, every attention case of the models) plus odd ones. Float results
 * must reach NMSE <= 5e-4 (f16/bf16) or 1e-6 (f32); integer-valued GEMM
 * and conv inputs must give exactly the CPU's result. A last round runs
 * GEMM, conv and attention again on the plain kernels (the fallbacks of
 * cuBLASLt, cuDNN and the tensor-core attention). Exits 77 (skipped) when
 * there is no CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/backend_cuda.h"
#include "cuda/cuda_kernels.h"
#include "testutil.h"

typedef struct pair {
    kg_tensor g, c; /* the CUDA and the CPU tensor */
} pair;

static kg_backend *G, *C;
static kg_ctx gc, cc;
static double tol;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 53);
}

static kg_dtype round_dt = KG_F16;

/* fp16 (bf16 for a bf16 backend, so both backends hold the same values) */
static float round_input(float v)
{
    return round_dt == KG_BF16 ? kg_bf16_to_f32(kg_f32_to_bf16(v))
                               : kg_f16_to_f32(kg_f32_to_f16(v));
}

static size_t numel(int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return n;
}

static float *host_buf(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    return p;
}

/* uniform in [lo, hi) rounded to fp16, or integers in [lo, hi] when integer */
static float *values(size_t n, double lo, double hi, int integer)
{
    float *p = host_buf(n);
    for (size_t i = 0; i < n; i++)
        p[i] = integer ? (float)floor(lo + urand() * (hi - lo + 1.0))
                       : round_input((float)(lo + urand() * (hi - lo)));
    return p;
}

static pair new_pair(int ndim, const int64_t *shape)
{
    pair p;
    p.g = kg_new(&gc, ndim, shape);
    p.c = kg_new(&cc, ndim, shape);
    return p;
}

static pair input(int ndim, const int64_t *shape, double lo, double hi, int integer)
{
    pair p = new_pair(ndim, shape);
    float *h = values(numel(ndim, shape), lo, hi, integer);
    kg_upload_f32(&gc, &p.g, h);
    kg_upload_f32(&cc, &p.c, h);
    free(h);
    return p;
}

/* all bytes 0xff: a NaN in f32, f16 and bf16 */
static void poison(kg_ctx *c, kg_tensor *t)
{
    size_t nb = kg_tensor_nbytes(t);
    void *h = malloc(nb ? nb : 1);
    if (!h) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    memset(h, 0xff, nb);
    kg_upload(c, t, h);
    free(h);
}

static pair output(int ndim, const int64_t *shape)
{
    pair p = new_pair(ndim, shape);
    poison(&gc, &p.g);
    poison(&cc, &p.c);
    return p;
}

static int synced(const char *name)
{
    kg_error err = {0};
    kg_status s = G->ops->sync(G);
    if (s != KG_OK) {
        kg_ctx_status(&gc, &err);
        kgt_check(0, "%s: CUDA backend error %s: %s", name, kg_status_name(s), err.msg);
        kg_ctx_clear_error(&gc);
        return 0;
    }
    if (kg_ctx_status(&cc, &err) != KG_OK) {
        kgt_check(0, "%s: CPU backend error: %s", name, err.msg);
        kg_ctx_clear_error(&cc);
        return 0;
    }
    return 1;
}

/* NMSE of the CUDA result against the CPU result; exact: bit-equal floats */
static void compare(const char *name, const pair *y, int exact)
{
    size_t n = (size_t)kg_tensor_numel(&y->c), bad = 0, worst = 0, diff = 0;
    float *g, *c;
    double se = 0.0, sr = 0.0, max_abs = 0.0, ref_max = 0.0, nmse;

    if (!synced(name))
        return;
    g = host_buf(n);
    c = host_buf(n);
    kg_download_f32(&gc, g, &y->g);
    kg_download_f32(&cc, c, &y->c);
    if (!synced(name))
        goto done;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] - (double)c[i];
        if (!isfinite(g[i])) {
            bad++;
            continue;
        }
        se += d * d;
        sr += (double)c[i] * c[i];
        if (fabs(d) > max_abs) {
            max_abs = fabs(d);
            worst = i;
        }
        if (fabs(c[i]) > ref_max)
            ref_max = fabs(c[i]);
        diff += g[i] != c[i];
    }
    nmse = sr > 0.0 ? se / sr : se / (double)(n ? n : 1);
    if (bad)
        kgt_check(0, "%s: %zu of %zu CUDA elements are NaN/Inf (unwritten or overflow)", name, bad,
                  n);
    else if (exact)
        kgt_check(diff == 0,
                  "%s: exact, %zu of %zu elements differ (max-abs %.3g at %zu, |ref| <= %g)", name,
                  diff, n, max_abs, worst, ref_max);
    else
        kgt_check(nmse <= tol, "%s: NMSE %.3e (<= %.0e), max-abs %.3g at %zu (|ref| <= %.3g)", name,
                  nmse, tol, max_abs, worst, ref_max);
done:
    free(g);
    free(c);
}

typedef struct marks {
    size_t g, c;
} marks;

static marks begin(void)
{
    marks m = {kg_mark(&gc), kg_mark(&cc)};
    return m;
}

static void end(marks m)
{
    kg_reset(&gc, m.g);
    kg_reset(&cc, m.c);
}

/* ------------------------------------------------------------------ GEMM */

static void t_linear(int64_t b0, int64_t m, int64_t k, int64_t n, int bias, int integer)
{
    marks mk = begin();
    char name[128];
    double wr = integer ? 1.0 : 1.0 / sqrt((double)k);
    pair x = input(3, (int64_t[]){b0, m, k}, -1, 1, integer);
    pair w = input(2, (int64_t[]){n, k}, integer ? -1 : -wr, integer ? 1 : wr, integer);
    pair b = input(1, (int64_t[]){n}, integer ? -3 : -0.5, integer ? 3 : 0.5, integer);
    pair y = output(3, (int64_t[]){b0, m, n});
    kg_linear(&gc, &y.g, &x.g, &w.g, bias ? &b.g : NULL);
    kg_linear(&cc, &y.c, &x.c, &w.c, bias ? &b.c : NULL);
    snprintf(name, sizeof name, "linear [%lld, %lld, %lld] x [%lld, %lld]^T%s%s", (long long)b0,
             (long long)m, (long long)k, (long long)n, (long long)k, bias ? " + b" : "",
             integer ? " (integers)" : "");
    compare(name, &y, integer);
    end(mk);
}

/* x rows starting one row in: a pointer aligned to only 2 bytes for odd k */
static void t_linear_unaligned(void)
{
    marks mk = begin();
    int64_t m = 9, k = 5, n = 7;
    pair x = input(2, (int64_t[]){m + 1, k}, -1, 1, 0);
    pair w = input(2, (int64_t[]){n, k}, -1, 1, 0);
    pair b = input(1, (int64_t[]){n}, -1, 1, 0);
    pair y = output(2, (int64_t[]){m, n});
    kg_tensor xg = kg_tensor_rows(&x.g, 1, m), xc = kg_tensor_rows(&x.c, 1, m);
    kg_linear(&gc, &y.g, &xg, &w.g, &b.g);
    kg_linear(&cc, &y.c, &xc, &w.c, &b.c);
    compare("linear on a row view (unaligned pointer) [9, 5] x [7, 5]^T + b", &y, 0);
    end(mk);
}

/* ------------------------------------------------------------------ conv */

static void t_conv(int64_t nb, int64_t ci, int64_t h, int64_t w, int64_t co, int64_t kk, int stride,
                   int pad, int integer)
{
    marks mk = begin();
    char name[160];
    int64_t ho = (h + 2 * pad - kk) / stride + 1, wo = (w + 2 * pad - kk) / stride + 1;
    double wr = integer ? 1.0 : 1.0 / sqrt((double)(ci * kk * kk));
    pair x = input(4, (int64_t[]){nb, ci, h, w}, -1, 1, integer);
    pair wt = input(4, (int64_t[]){co, ci, kk, kk}, -wr, wr, integer);
    pair b = input(1, (int64_t[]){co}, integer ? -3 : -0.5, integer ? 3 : 0.5, integer);
    pair y = output(4, (int64_t[]){nb, co, ho, wo});
    kg_conv2d(&gc, &y.g, &x.g, &wt.g, &b.g, stride, pad);
    kg_conv2d(&cc, &y.c, &x.c, &wt.c, &b.c, stride, pad);
    snprintf(name, sizeof name, "conv2d [%lld, %lld, %lld, %lld] -> %lld, %lldx%lld s%d p%d%s",
             (long long)nb, (long long)ci, (long long)h, (long long)w, (long long)co, (long long)kk,
             (long long)kk, stride, pad, integer ? " (integers)" : "");
    compare(name, &y, integer);
    end(mk);
}

/* ----------------------------------------------------------------- norms */

static void t_group_norm(int ndim, const int64_t *shape, int groups, int silu)
{
    marks mk = begin();
    char name[128], s[64];
    /* a mean far from 0 exercises the two-pass variance */
    pair x = input(ndim, shape, 2.0, 4.0, 0);
    pair ga = input(1, (int64_t[]){shape[1]}, 0.5, 1.5, 0);
    pair be = input(1, (int64_t[]){shape[1]}, -0.5, 0.5, 0);
    pair y = output(ndim, shape);
    if (silu) {
        kg_group_norm_silu(&gc, &y.g, &x.g, &ga.g, &be.g, groups, 1e-6f);
        kg_group_norm_silu(&cc, &y.c, &x.c, &ga.c, &be.c, groups, 1e-6f);
    } else {
        kg_group_norm(&gc, &y.g, &x.g, &ga.g, &be.g, groups, 1e-5f);
        kg_group_norm(&cc, &y.c, &x.c, &ga.c, &be.c, groups, 1e-5f);
    }
    snprintf(name, sizeof name, "group_norm%s %s, %d groups", silu ? "+silu" : "",
             kg_shape_str(&x.c, s, sizeof s), groups);
    compare(name, &y, 0);
    end(mk);
}

static void t_layer_norm(int ndim, const int64_t *shape, int bias)
{
    marks mk = begin();
    char name[128], s[64];
    int64_t d = shape[ndim - 1];
    pair x = input(ndim, shape, -2.0, 3.0, 0);
    pair ga = input(1, &d, 0.5, 1.5, 0);
    pair be = input(1, &d, -0.5, 0.5, 0);
    pair y = output(ndim, shape);
    kg_layer_norm(&gc, &y.g, &x.g, &ga.g, bias ? &be.g : NULL, 1e-5f);
    kg_layer_norm(&cc, &y.c, &x.c, &ga.c, bias ? &be.c : NULL, 1e-5f);
    snprintf(name, sizeof name, "layer_norm %s%s", kg_shape_str(&x.c, s, sizeof s),
             bias ? "" : " (no bias)");
    compare(name, &y, 0);
    end(mk);
}

static void t_l2(int ndim, const int64_t *shape, double lo, double hi)
{
    marks mk = begin();
    char name[128], s[64];
    pair x = input(ndim, shape, lo, hi, 0);
    pair y = output(ndim, shape);
    kg_l2_normalize(&gc, &y.g, &x.g, 1e-12f);
    kg_l2_normalize(&cc, &y.c, &x.c, 1e-12f);
    snprintf(name, sizeof name, "l2_normalize %s in [%g, %g)", kg_shape_str(&x.c, s, sizeof s), lo,
             hi);
    compare(name, &y, 0);
    end(mk);
}

/* ------------------------------------------------------------- attention */

/* pad_mode: 0 none, 1 random keys masked, 2 random + every key of item 0 masked */
static void t_attention(const char *what, int64_t nb, int64_t lq, int64_t lk, int heads, int64_t dh,
                        int64_t dv, int causal, int pad_mode)
{
    marks mk = begin();
    char name[192];
    pair q = input(3, (int64_t[]){nb, lq, heads * dh}, -1.5, 1.5, 0);
    pair k = input(3, (int64_t[]){nb, lk, heads * dh}, -1.5, 1.5, 0);
    pair v = input(3, (int64_t[]){nb, lk, heads * dv}, -1, 1, 0);
    pair o = output(3, (int64_t[]){nb, lq, heads * dv});
    kg_tensor pg = {0}, pc = {0};
    float scale = (float)(1.0 / sqrt((double)dh));
    if (pad_mode) {
        unsigned char *h = malloc((size_t)(nb * lk));
        for (int64_t i = 0; i < nb * lk; i++)
            h[i] = (pad_mode == 2 && i < lk) || urand() < 0.3;
        pg = kg_new_dt(&gc, KG_U8, 2, (int64_t[]){nb, lk});
        pc = kg_new_dt(&cc, KG_U8, 2, (int64_t[]){nb, lk});
        kg_upload(&gc, &pg, h);
        kg_upload(&cc, &pc, h);
        free(h);
    }
    kg_attention(&gc, &o.g, &q.g, &k.g, &v.g, pad_mode ? &pg : NULL, heads, scale, causal);
    kg_attention(&cc, &o.c, &q.c, &k.c, &v.c, pad_mode ? &pc : NULL, heads, scale, causal);
    snprintf(name, sizeof name, "attention %s: B %lld, Lq %lld, Lk %lld, %d heads, d %lld/%lld%s%s",
             what, (long long)nb, (long long)lq, (long long)lk, heads, (long long)dh, (long long)dv,
             causal ? ", causal" : "",
             pad_mode == 2 ? ", key pad (item 0 fully masked)"
             : pad_mode    ? ", key pad"
                           : "");
    compare(name, &o, 0);
    end(mk);
}

/* ------------------------------------------------------------ elementwise */

static void t_activation(int ndim, const int64_t *shape, kg_act act)
{
    static const char *names[] = {"gelu", "quick_gelu", "silu"};
    marks mk = begin();
    char name[128], s[64];
    pair x = input(ndim, shape, -6.0, 6.0, 0);
    pair y = output(ndim, shape);
    void (*fn)(kg_ctx *, kg_tensor *, const kg_tensor *) = act == KG_ACT_GELU ? kg_gelu
                                                           : act == KG_ACT_QUICK_GELU
                                                               ? kg_quick_gelu
                                                               : kg_silu;
    fn(&gc, &y.g, &x.g);
    fn(&cc, &y.c, &x.c);
    snprintf(name, sizeof name, "%s %s", names[act], kg_shape_str(&x.c, s, sizeof s));
    compare(name, &y, 0);
    end(mk);
}

static void t_geglu(int64_t rows, int64_t h)
{
    marks mk = begin();
    char name[128];
    pair x = input(2, (int64_t[]){rows, 2 * h}, -4.0, 4.0, 0);
    pair y = output(2, (int64_t[]){rows, h});
    kg_geglu(&gc, &y.g, &x.g);
    kg_geglu(&cc, &y.c, &x.c);
    snprintf(name, sizeof name, "geglu [%lld, %lld]", (long long)rows, (long long)(2 * h));
    compare(name, &y, 0);
    end(mk);
}

static void t_binary(int ndim, const int64_t *shape, int bnd, const int64_t *bshape,
                     kg_binary_op op, kg_bcast bc, int in_place)
{
    static const char *modes[] = {"same", "tile", "spread"};
    marks mk = begin();
    char name[160], s1[64], s2[64];
    pair a = input(ndim, shape, -2, 2, 0);
    pair b = input(bnd, bshape, -2, 2, 0);
    pair y = in_place ? a : output(ndim, shape);
    if (op == KG_BIN_ADD) {
        void (*fn)(kg_ctx *, kg_tensor *, const kg_tensor *, const kg_tensor *) =
            bc == KG_BCAST_SAME   ? kg_add
            : bc == KG_BCAST_TILE ? kg_add_tile
                                  : kg_add_spread;
        fn(&gc, &y.g, &a.g, &b.g);
        fn(&cc, &y.c, &a.c, &b.c);
    } else {
        gc.be->ops->binary(gc.be, &y.g, &a.g, &b.g, KG_BIN_MUL, bc);
        cc.be->ops->binary(cc.be, &y.c, &a.c, &b.c, KG_BIN_MUL, bc);
    }
    snprintf(name, sizeof name, "%s (%s) %s by %s%s", op == KG_BIN_ADD ? "add" : "mul", modes[bc],
             kg_shape_str(&a.c, s1, sizeof s1), kg_shape_str(&b.c, s2, sizeof s2),
             in_place ? ", in place" : "");
    compare(name, &y, 0);
    end(mk);
}

static void t_axpby(int64_t n, int with_b)
{
    marks mk = begin();
    char name[96];
    pair a = input(1, &n, -2, 2, 0);
    pair b = input(1, &n, -2, 2, 0);
    pair y = output(1, &n);
    kg_axpby(&gc, &y.g, 0.7f, &a.g, -1.3f, with_b ? &b.g : NULL);
    kg_axpby(&cc, &y.c, 0.7f, &a.c, -1.3f, with_b ? &b.c : NULL);
    snprintf(name, sizeof name, "axpby [%lld]%s", (long long)n, with_b ? "" : " (b NULL)");
    compare(name, &y, 0);
    end(mk);
}

static void t_fill(int64_t n)
{
    marks mk = begin();
    char name[64];
    pair y = output(1, &n);
    kg_fill(&gc, &y.g, 0.375f);
    kg_fill(&cc, &y.c, 0.375f);
    snprintf(name, sizeof name, "fill [%lld]", (long long)n);
    compare(name, &y, 1);
    end(mk);
}

/* ---------------------------------------------------------------- layout */

static void t_upsample(int64_t nb, int64_t c, int64_t h, int64_t w)
{
    marks mk = begin();
    char name[96];
    pair x = input(4, (int64_t[]){nb, c, h, w}, -2, 2, 0);
    pair y = output(4, (int64_t[]){nb, c, 2 * h, 2 * w});
    kg_upsample_nearest(&gc, &y.g, &x.g);
    kg_upsample_nearest(&cc, &y.c, &x.c);
    snprintf(name, sizeof name, "upsample_nearest 2x [%lld, %lld, %lld, %lld]", (long long)nb,
             (long long)c, (long long)h, (long long)w);
    compare(name, &y, 1);
    end(mk);
}

/* to a size that is not twice the input (the U-Net at latent sizes not a multiple of 8) */
static void t_upsample_to(int64_t nb, int64_t c, int64_t h, int64_t w, int64_t ho, int64_t wo)
{
    marks mk = begin();
    char name[96];
    pair x = input(4, (int64_t[]){nb, c, h, w}, -2, 2, 0);
    pair y = output(4, (int64_t[]){nb, c, ho, wo});
    kg_upsample_nearest(&gc, &y.g, &x.g);
    kg_upsample_nearest(&cc, &y.c, &x.c);
    snprintf(name, sizeof name, "upsample_nearest [%lld, %lld, %lld, %lld] -> %lldx%lld",
             (long long)nb, (long long)c, (long long)h, (long long)w, (long long)ho, (long long)wo);
    compare(name, &y, 1);
    end(mk);
}

static void t_concat(int ndim, const int64_t *as, const int64_t *bs, int dim)
{
    marks mk = begin();
    char name[128], s1[64], s2[64];
    int64_t ys[KG_MAX_DIMS];
    pair a = input(ndim, as, -2, 2, 0), b = input(ndim, bs, -2, 2, 0), y;
    for (int i = 0; i < ndim; i++)
        ys[i] = i == dim ? as[i] + bs[i] : as[i];
    y = output(ndim, ys);
    kg_concat(&gc, &y.g, &a.g, &b.g, dim);
    kg_concat(&cc, &y.c, &a.c, &b.c, dim);
    snprintf(name, sizeof name, "concat %s + %s along %d", kg_shape_str(&a.c, s1, sizeof s1),
             kg_shape_str(&b.c, s2, sizeof s2), dim);
    compare(name, &y, 1);
    end(mk);
}

static void t_permute(int ndim, const int64_t *shape, int p0, int p1, int p2, int p3)
{
    marks mk = begin();
    char name[128], s[64];
    int p[4] = {p0, p1, p2, p3};
    int64_t ys[KG_MAX_DIMS];
    pair x = input(ndim, shape, -2, 2, 0), y;
    for (int i = 0; i < ndim; i++)
        ys[i] = shape[p[i]];
    y = output(ndim, ys);
    kg_permute(&gc, &y.g, &x.g, p0, p1, p2, p3);
    kg_permute(&cc, &y.c, &x.c, p0, p1, p2, p3);
    snprintf(name, sizeof name, "permute %s by (%d, %d, %d, %d)", kg_shape_str(&x.c, s, sizeof s),
             p0, p1, p2, p3);
    compare(name, &y, 1);
    end(mk);
}

/* act dtype -> F32 -> act dtype, and an integer tensor raw through concat */
static void t_copy_and_ints(void)
{
    marks mk = begin();
    int64_t n = 1000;
    pair x = input(1, &n, -3, 3, 0), y = output(1, &n);
    kg_tensor f = kg_new_dt(&gc, KG_F32, 1, &n);
    int32_t ha[6] = {1, -2, 3, 40000, -5, 6}, hb[2] = {7, -8}, hy[8],
            want[8] = {1, -2, 3, 7, 40000, -5, 6, -8};
    kg_tensor ia = kg_new_dt(&gc, KG_I32, 2, (int64_t[]){2, 3});
    kg_tensor ib = kg_new_dt(&gc, KG_I32, 2, (int64_t[]){2, 1});
    kg_tensor iy = kg_new_dt(&gc, KG_I32, 2, (int64_t[]){2, 4});
    kg_copy(&gc, &f, &x.g);
    kg_copy(&gc, &y.g, &f);
    kg_copy(&cc, &y.c, &x.c);
    compare("copy act -> F32 -> act [1000]", &y, 1);
    kg_upload(&gc, &ia, ha);
    kg_upload(&gc, &ib, hb);
    kg_concat(&gc, &iy, &ia, &ib, 1);
    gc.be->ops->download(gc.be, hy, iy.data, kg_tensor_nbytes(&iy));
    if (synced("concat I32"))
        kgt_check(!memcmp(hy, want, sizeof want),
                  "concat I32 [2, 3] + [2, 1] along 1 moves raw elements");
    end(mk);
}

static void t_embedding(kg_dtype idt)
{
    marks mk = begin();
    int64_t v = 1000, d = 64, n = 34;
    pair table = input(2, (int64_t[]){v, d}, -1, 1, 0);
    pair y = output(2, (int64_t[]){n, d});
    kg_tensor ig = kg_new_dt(&gc, idt, 1, &n), ic = kg_new_dt(&cc, idt, 1, &n);
    int64_t ids64[34];
    int32_t ids32[34];
    kg_error err = {0};
    kg_status st;
    for (int64_t i = 0; i < n; i++) {
        ids64[i] = i == 0 ? 0 : i == 1 ? v - 1 : (int64_t)(urand() * (double)v);
        ids32[i] = (int32_t)ids64[i];
    }
    kg_upload(&gc, &ig, idt == KG_I64 ? (void *)ids64 : (void *)ids32);
    kg_upload(&cc, &ic, idt == KG_I64 ? (void *)ids64 : (void *)ids32);
    kg_embedding(&gc, &y.g, &table.g, &ig);
    kg_embedding(&cc, &y.c, &table.c, &ic);
    compare(idt == KG_I64 ? "embedding [1000, 64] by 34 I64 ids"
                          : "embedding [1000, 64] by 34 I32 ids",
            &y, 1);

    /* an id past the table: sticky error at sync naming the id, no stray read */
    ids64[5] = v + 7;
    ids32[5] = (int32_t)(v + 7);
    kg_upload(&gc, &ig, idt == KG_I64 ? (void *)ids64 : (void *)ids32);
    kg_embedding(&gc, &y.g, &table.g, &ig);
    st = G->ops->sync(G);
    kg_ctx_status(&gc, &err);
    kgt_check(st == KG_ERR_INVALID_ARG && strstr(err.msg, "1007") && strstr(err.msg, "position 5"),
              "embedding id out of range -> %s \"%s\"", kg_status_name(st), err.msg);
    kg_ctx_clear_error(&gc);
    kgt_check(G->ops->sync(G) == KG_OK, "the device flag is cleared after it was reported");
    end(mk);
}

/* ------------------------------------------------------------------ main */

/* small, odd and exact cases: quick, and the subset compute-sanitizer runs */
static void odd_shapes(void)
{
    t_linear(1, 1, 1, 1, 1, 0);
    t_linear(3, 5, 7, 11, 1, 0);
    t_linear(2, 33, 100, 65, 1, 1);
    t_linear_unaligned();
    t_conv(1, 3, 5, 7, 2, 3, 2, 0, 0);
    t_conv(2, 5, 9, 9, 3, 1, 2, 0, 0);
    t_conv(1, 6, 11, 13, 5, 5, 1, 2, 0);
    t_group_norm(4, (int64_t[]){1, 6, 3, 5}, 3, 0);
    t_group_norm(3, (int64_t[]){2, 4, 7}, 2, 1);
    t_layer_norm(3, (int64_t[]){3, 5, 7}, 1);
    t_l2(2, (int64_t[]){2, 768}, -1, 1);
    t_l2(2, (int64_t[]){3, 5}, 0, 0);
    t_attention("U-Net cross 8x8", 2, 64, 77, 8, 160, 160, 0, 0);
    t_attention("MLLM", 2, 136, 136, 32, 64, 64, 1, 0);
    t_attention("AlignerNet", 3, 77, 40, 12, 64, 64, 0, 2);
    t_attention("odd", 1, 1, 1, 1, 1, 1, 0, 0);
    t_attention("odd", 2, 33, 45, 3, 17, 9, 0, 1);
    t_attention("odd causal + pad", 2, 50, 50, 2, 24, 24, 1, 1);
    t_attention("odd wide v", 1, 20, 70, 1, 8, 300, 0, 0);
    t_activation(1, (int64_t[]){7}, KG_ACT_GELU);
    t_geglu(3, 5);
    t_binary(2, (int64_t[]){3, 5}, 2, (int64_t[]){3, 5}, KG_BIN_MUL, KG_BCAST_SAME, 1);
    t_binary(4, (int64_t[]){2, 3, 5, 7}, 1, (int64_t[]){2}, KG_BIN_ADD, KG_BCAST_SPREAD, 1);
    t_axpby(7, 0);
    t_fill(12345);
    t_upsample(1, 1, 1, 3);
    t_upsample_to(2, 3, 3, 2, 5, 4);
    t_upsample_to(1, 640, 5, 4, 9, 7);
    t_concat(2, (int64_t[]){3, 5}, (int64_t[]){3, 2}, 1);
    t_permute(2, (int64_t[]){5, 7}, 1, 0, 2, 3);
    t_permute(3, (int64_t[]){3, 4, 5}, 2, 0, 1, 3);
    t_copy_and_ints();
    t_embedding(KG_I32);
    t_embedding(KG_I64);
}

/* for the plain kernels: the odd and exact cases of the three ops, one
 * model shape each */
static void plain_shapes(int small)
{
    t_linear(3, 5, 7, 11, 1, 0);
    t_linear(2, 33, 100, 65, 1, 1);
    t_conv(1, 3, 5, 7, 2, 3, 2, 0, 0);
    t_conv(1, 6, 11, 13, 5, 5, 1, 2, 0);
    t_conv(1, 64, 16, 16, 64, 3, 1, 1, 1);
    t_attention("plain odd", 2, 33, 45, 3, 17, 9, 0, 1);
    t_attention("plain MLLM", 2, 136, 136, 32, 64, 64, 1, 0);
    t_attention("plain AlignerNet", 3, 77, 40, 12, 64, 64, 0, 2);
    if (small)
        return;
    t_linear(1, 136, 2048, 2048, 1, 0);
    t_conv(2, 320, 32, 32, 320, 3, 1, 1, 0);
    t_attention("plain U-Net self 32x32", 2, 1024, 1024, 8, 80, 80, 0, 0);
}

/* the shapes of the real models */
static void model_shapes(void)
{
    static const int64_t gn_c[3] = {320, 640, 1280}, gn_hw[4] = {64, 32, 16, 8};

    /* GEMM: MLLM (T = 136), U-Net and CLIP projections */
    t_linear(1, 136, 2048, 2048, 1, 0);
    t_linear(1, 136, 2048, 8192, 1, 0);
    t_linear(1, 136, 8192, 2048, 1, 0);
    t_linear(2, 4096, 320, 320, 0, 0);
    t_linear(2, 77, 768, 320, 0, 0);
    t_linear(2, 257, 1024, 4096, 1, 0);
    t_linear(1, 136, 2048, 2048, 1, 1);
    /* conv: U-Net (batch 2, 64x64 latents) */
    t_conv(2, 4, 64, 64, 320, 3, 1, 1, 0);
    t_conv(2, 320, 64, 64, 320, 3, 1, 1, 0);
    t_conv(2, 320, 64, 64, 320, 3, 2, 1, 0);
    t_conv(2, 640, 32, 32, 640, 3, 1, 1, 0);
    t_conv(2, 1280, 8, 8, 1280, 3, 1, 1, 0);
    t_conv(2, 960, 32, 32, 640, 1, 1, 0, 0);
    t_conv(2, 320, 64, 64, 4, 3, 1, 1, 0);
    /* VAE decoder channel counts at reduced spatial sizes (the CPU reference
     * of a full 512x512 map would dominate the run time) */
    t_conv(1, 4, 64, 64, 4, 1, 1, 0, 0);
    t_conv(1, 4, 64, 64, 512, 3, 1, 1, 0);
    t_conv(1, 512, 64, 64, 512, 3, 1, 1, 0);
    t_conv(1, 256, 128, 128, 256, 3, 1, 1, 0);
    t_conv(1, 128, 128, 128, 3, 3, 1, 1, 0);
    t_conv(1, 64, 16, 16, 64, 3, 1, 1, 1); /* exact */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            t_group_norm(4, (int64_t[]){2, gn_c[i], gn_hw[j], gn_hw[j]}, 32, (i + j) % 2);
    t_group_norm(4, (int64_t[]){1, 128, 256, 256}, 32, 1);
    t_layer_norm(2, (int64_t[]){136, 2048}, 1);
    t_layer_norm(3, (int64_t[]){2, 257, 1024}, 1);
    t_layer_norm(3, (int64_t[]){2, 4096, 320}, 1);
    t_layer_norm(2, (int64_t[]){64, 768}, 0);
    t_l2(3, (int64_t[]){2, 257, 1024}, -1, 1);
    t_attention("U-Net self 64x64", 2, 4096, 4096, 8, 40, 40, 0, 0);
    t_attention("U-Net self 32x32", 2, 1024, 1024, 8, 80, 80, 0, 0);
    t_attention("U-Net self 16x16", 2, 256, 256, 8, 160, 160, 0, 0);
    t_attention("U-Net self 8x8", 2, 64, 64, 8, 160, 160, 0, 0);
    t_attention("U-Net cross", 2, 4096, 77, 8, 40, 40, 0, 0);
    t_attention("VAE mid", 1, 4096, 4096, 1, 512, 512, 0, 0);
    t_attention("CLIP", 2, 257, 257, 16, 64, 64, 0, 0);
    t_attention("connector", 2, 64, 321, 16, 64, 64, 0, 0);
    t_activation(4, (int64_t[]){2, 320, 64, 64}, KG_ACT_GELU);
    t_activation(4, (int64_t[]){2, 320, 64, 64}, KG_ACT_QUICK_GELU);
    t_activation(4, (int64_t[]){2, 320, 64, 64}, KG_ACT_SILU);
    t_geglu(2 * 4096, 1280);
    t_binary(4, (int64_t[]){2, 320, 64, 64}, 4, (int64_t[]){2, 320, 64, 64}, KG_BIN_ADD,
             KG_BCAST_SAME, 0);
    t_binary(3, (int64_t[]){2, 77, 768}, 2, (int64_t[]){77, 768}, KG_BIN_ADD, KG_BCAST_TILE, 0);
    t_binary(3, (int64_t[]){2, 77, 768}, 1, (int64_t[]){768}, KG_BIN_MUL, KG_BCAST_TILE, 0);
    t_binary(4, (int64_t[]){2, 320, 64, 64}, 2, (int64_t[]){2, 320}, KG_BIN_ADD, KG_BCAST_SPREAD,
             0);
    t_binary(3, (int64_t[]){2, 136, 2048}, 2, (int64_t[]){2, 136}, KG_BIN_MUL, KG_BCAST_SPREAD, 0);
    t_axpby(2 * 4 * 64 * 64, 1);
    t_upsample(2, 1280, 8, 8);
    t_upsample(1, 512, 64, 64);
    t_concat(4, (int64_t[]){2, 640, 16, 16}, (int64_t[]){2, 1280, 16, 16}, 1);
    t_concat(3, (int64_t[]){1, 77, 768}, (int64_t[]){2, 77, 768}, 0);
    t_permute(4, (int64_t[]){2, 320, 64, 64}, 0, 2, 3, 1);
    t_permute(4, (int64_t[]){2, 77, 8, 40}, 0, 2, 1, 3);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "f16";
    int small = argc > 2 && !strcmp(argv[2], "small");
    int cpu_seat = getenv("KG_CUDA_OPS_CPU") && atoi(getenv("KG_CUDA_OPS_CPU"));
    kg_dtype dt = !strcmp(mode, "bf16") ? KG_BF16 : !strcmp(mode, "f32") ? KG_F32 : KG_F16;
    kg_error err = {0};
    kg_status st;
    size_t allocs;

    /* KG_CUDA_OPS_CPU=1 puts a second CPU backend in the CUDA seat: the
     * suite then checks itself (every case must pass with NMSE 0) on a
     * machine without a GPU */
    if (cpu_seat) {
        dt = KG_F32;
        st = kg_backend_cpu_new(&G, 0, &err);
    } else {
        st = kg_backend_cuda_new(&G, 0, dt, &err);
    }
    if (st == KG_ERR_NO_DEVICE) {
        printf("SKIP: no CUDA device: %s\n", err.msg);
        return 77;
    }
    if (st != KG_OK) {
        printf("FAIL: CUDA backend init: %s %s\n", kg_status_name(st), err.msg);
        return 1;
    }
    tol = dt == KG_F32 ? 1e-6 : 5e-4;
    round_dt = dt;
    printf("%s backend computing in %s; tolerance NMSE <= %.0e\n", G->ops->name, kg_dtype_name(dt),
           tol);
    C = kgt_cpu_backend();
    kgt_ctx(&gc, G, (size_t)768 << 20);
    kgt_ctx(&cc, C, (size_t)1536 << 20);
    allocs = G->n_allocs;

    odd_shapes();
    if (!small)
        model_shapes();
    if (!cpu_seat) {
        /* the paths cuBLASLt, cuDNN or the tensor-core kernel normally take */
        printf(
            "-- again with the plain kernels (fallback GEMM, direct conv, CUDA-core attention)\n");
        const kg_backend_ops *ops = G->ops;
        kg_backend_ops plain = *ops;
        plain.linear = kg_cuda_gemm_simple;
        plain.conv2d = kg_cuda_conv2d_direct;
        plain.attention = kg_cuda_attention_plain;
        G->ops = &plain;
        plain_shapes(small);
        G->ops = ops;
    }

    kgt_check(G->n_allocs == allocs, "no device allocation inside the ops (%zu -> %zu)", allocs,
              G->n_allocs);
    kg_ctx_release(&gc);
    kg_ctx_release(&cc);
    kgt_check(G->bytes_allocated == 0, "all device bytes released (%zu left)", G->bytes_allocated);
    kg_backend_free(G);
    kg_backend_free(C);
    return kgt_finish();
}
