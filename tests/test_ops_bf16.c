/* test_ops_bf16.c - the CPU backend's linear and conv2d on KG_BF16 weights
 * (precision bf16: weights stored as bf16, x, y and bias fp32).
 *
 * Each case runs the op table's kernel directly (kg_ops accepts bf16 weights
 * only on a backend whose weight dtype is bf16) and checks, with the measured
 * value printed next to each tolerance:
 * - that the bf16 kernel ran: the backend's per-path op counter and its bf16
 *   GEMM counter moved (a silent fp32 path cannot pass), and that the fp32
 *   kernels do not move kg_backend_cpu_bf16_gemms;
 * - "same products": against a double-precision sum over the bf16-rounded
 *   x and w (allclose 1e-4 / 1e-3, the fp32 op tests' tolerance), and against
 *   the fp32 kernel run on those rounded inputs (max-abs / max|y| <= 1e-5):
 *   both bf16 modes form exactly these products and differ only in fp32
 *   summation order;
 * - against the fp32 kernel on the unrounded inputs: NMSE <= 1e-4 (bf16
 *   rounding of x and w; measured ~1e-6 .. 1e-5), for outputs of 16 or more
 *   elements.
 * The cases cover vector tails and odd K, N (not multiples of 16), the row and
 * column work splits, and every conv path.
 *
 * The backend picks the oneDNN mode where oneDNN runs bf16 natively (this
 * project's AMD EPYC: AVX512-BF16) and the widening fallback elsewhere; the
 * default run checks the mode it expects from cpuid, then runs every case in
 * the fallback too. Under KOSMOSG_CPU_ISA=avx2 / base (the isa suite) only the
 * fallback may run, and the describe line must say so. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_kernels.h"
#include "tensor.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3
#define SAME_REL 1e-5
#define NMSE_TOL 1e-4

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float *rand_buf(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(-1.0 + 2.0 * urand());
    return p;
}

/* copy of p rounded to bf16 precision */
static float *rounded(const float *p, size_t n)
{
    float *r = malloc((n ? n : 1) * sizeof *r);
    for (size_t i = 0; i < n; i++)
        r[i] = kg_bf16_to_f32(kg_f32_to_bf16(p[i]));
    return r;
}

static kg_tensor up(kg_ctx *c, kg_dtype dt, const float *host, int ndim, const int64_t *shape)
{
    kg_tensor t = kg_new_dt(c, dt, ndim, shape);
    kg_upload_f32(c, &t, host);
    return t;
}

static const char *mode_name(const kg_cpu *cpu)
{
    return cpu->bf16_mode == KG_CPU_BF16_DNNL ? "oneDNN" : "fallback";
}

/* The three comparisons of the header comment. ref_r: double sum over the
 * rounded inputs (NULL: not the same products, e.g. Winograd), y32r / y32:
 * the fp32 kernel on the rounded / unrounded inputs. */
static void compare(const char *name, const float *y, const double *ref_r, const float *y32r,
                    const float *y32, size_t n)
{
    double max_abs = 0, max_ref = 0, err2 = 0, ref2 = 0;
    int finite = 1;
    char label[200];
    for (size_t i = 0; i < n; i++)
        finite &= isfinite(y[i]) != 0;
    if (!kgt_check(finite, "%s: output finite", name))
        return;
    if (ref_r) {
        snprintf(label, sizeof label, "%s vs double on bf16-rounded x, w", name);
        kgt_compare(label, y, ref_r, n, ATOL, RTOL);
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)y[i] - y32r[i]);
            max_abs = d > max_abs ? d : max_abs;
            max_ref = fabs(y32r[i]) > max_ref ? fabs(y32r[i]) : max_ref;
        }
        kgt_check(max_abs <= SAME_REL * max_ref,
                  "%s vs fp32 kernel on rounded x, w: max-abs %.3g = %.3g of max|y| %.3g "
                  "(tol %.0e)",
                  name, max_abs, max_ref > 0 ? max_abs / max_ref : 0.0, max_ref, SAME_REL);
    }
    if (n < 16)
        return; /* a ratio of a few squares says nothing (cancellation near 0) */
    for (size_t i = 0; i < n; i++) {
        double d = (double)y[i] - y32[i];
        err2 += d * d;
        ref2 += (double)y32[i] * y32[i];
    }
    kgt_check(err2 <= NMSE_TOL * ref2, "%s vs fp32 kernel on fp32 x, w: NMSE %.3g (tol %.0e)", name,
              ref2 > 0 ? err2 / ref2 : err2, NMSE_TOL);
}

/* Checks that op path `path` ran once more and issued bf16 GEMMs. */
static void expect_ran(const kg_cpu *cpu, const char *name, int path, long long ops0,
                       long long gemms0)
{
    static const char *const paths[KG_CPU_BF16_N_PATHS] = {"linear", "conv column chunks",
                                                           "conv shared im2col", "Winograd"};
    long long ops = cpu->bf16_ops[path] - ops0, gemms = cpu->bf16_gemms - gemms0;
    kgt_check(ops == 1 && gemms > 0, "%s: bf16 %s path ran (%lld op, %lld bf16 GEMM calls, %s)",
              name, paths[path], ops, gemms, mode_name(cpu));
}

/* kg_backend_cpu_bf16_gemms (what the e2e tests read) ignores fp32 GEMMs */
static void fp32_not_counted(kg_backend *be, const char *name, long long gemms0)
{
    long long d = (long long)kg_backend_cpu_bf16_gemms(be) - gemms0;
    if (d != 0)
        kgt_check(0, "%s: the fp32 kernels moved the bf16 GEMM count by %lld", name, d);
}

/* ------------------------------------------------------------------ linear */

static void test_linear(kg_ctx *c, int64_t m, int64_t k, int64_t n, int bias)
{
    kg_backend *be = c->be;
    const kg_cpu *cpu = kg_cpu_of(be);
    size_t mark = kg_mark(c);
    char name[128];
    float *x = rand_buf((size_t)(m * k)), *w = rand_buf((size_t)(n * k)), *b = rand_buf((size_t)n);
    float *xr = rounded(x, (size_t)(m * k)), *wr = rounded(w, (size_t)(n * k));
    kg_tensor tx = up(c, KG_F32, x, 2, (int64_t[]){m, k});
    kg_tensor txr = up(c, KG_F32, xr, 2, (int64_t[]){m, k});
    kg_tensor tw16 = up(c, KG_BF16, w, 2, (int64_t[]){n, k});
    kg_tensor tw = up(c, KG_F32, w, 2, (int64_t[]){n, k});
    kg_tensor twr = up(c, KG_F32, wr, 2, (int64_t[]){n, k});
    kg_tensor tb = up(c, KG_F32, b, 1, (int64_t[]){n});
    kg_tensor y = kg_new2(c, m, n), y32r = kg_new2(c, m, n), y32 = kg_new2(c, m, n);
    double *ref = calloc((size_t)(m * n), sizeof *ref);
    long long ops0 = cpu->bf16_ops[KG_CPU_BF16_LINEAR], gemms0 = cpu->bf16_gemms;
    float *got, *g32r, *g32;

    snprintf(name, sizeof name, "linear bf16 (%s) %lldx%lldx%lld%s", mode_name(cpu), (long long)m,
             (long long)k, (long long)n, bias ? " +bias" : "");
    be->ops->linear(be, &y, &tx, &tw16, bias ? &tb : NULL);
    if (kgt_ctx_ok(c, name)) {
        expect_ran(cpu, name, KG_CPU_BF16_LINEAR, ops0, gemms0);
        gemms0 = kg_backend_cpu_bf16_gemms(be);
        be->ops->linear(be, &y32r, &txr, &twr, bias ? &tb : NULL);
        be->ops->linear(be, &y32, &tx, &tw, bias ? &tb : NULL);
        fp32_not_counted(be, name, gemms0);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = bias ? b[j] : 0.0;
                for (int64_t q = 0; q < k; q++)
                    s += (double)xr[i * k + q] * wr[j * k + q];
                ref[i * n + j] = s;
            }
        got = kgt_download(c, &y);
        g32r = kgt_download(c, &y32r);
        g32 = kgt_download(c, &y32);
        compare(name, got, ref, g32r, g32, (size_t)(m * n));
        free(got);
        free(g32r);
        free(g32);
    }
    free(ref);
    free(x);
    free(w);
    free(b);
    free(xr);
    free(wr);
    kg_reset(c, mark);
}

/* ------------------------------------------------------------------ conv2d */

/* Paths: what kg_cpu_conv2d picks (kernels/cpu/conv2d.c, winograd.c). */
#define WINO KG_CPU_BF16_WINOGRAD
#define CHUNKS KG_CPU_BF16_CONV_CHUNKS
/* not Winograd: few output positions (under 256 per thread) share one
 * im2col when there are several threads, more take per-thread chunks */
#define NOWINO -1

static void test_conv(kg_ctx *c, int64_t nb, int64_t ci, int64_t h, int64_t w, int64_t co,
                      int64_t kh, int64_t kw, int stride, int pad, int bias, int path)
{
    kg_backend *be = c->be;
    const kg_cpu *cpu = kg_cpu_of(be);
    size_t mark = kg_mark(c);
    char name[160];
    int64_t ho = (h + 2 * pad - kh) / stride + 1, wo = (w + 2 * pad - kw) / stride + 1;
    size_t nx = (size_t)(nb * ci * h * w), nw = (size_t)(co * ci * kh * kw);
    size_t ny = (size_t)(nb * co * ho * wo);
    float *x = rand_buf(nx), *wt = rand_buf(nw), *b = rand_buf((size_t)co);
    float *xr = rounded(x, nx), *wr = rounded(wt, nw);
    kg_tensor tx = up(c, KG_F32, x, 4, (int64_t[]){nb, ci, h, w});
    kg_tensor txr = up(c, KG_F32, xr, 4, (int64_t[]){nb, ci, h, w});
    kg_tensor tw16 = up(c, KG_BF16, wt, 4, (int64_t[]){co, ci, kh, kw});
    kg_tensor tw = up(c, KG_F32, wt, 4, (int64_t[]){co, ci, kh, kw});
    kg_tensor twr = up(c, KG_F32, wr, 4, (int64_t[]){co, ci, kh, kw});
    kg_tensor tb = up(c, KG_F32, b, 1, (int64_t[]){co});
    kg_tensor y = kg_new4(c, nb, co, ho, wo), y32r = kg_new4(c, nb, co, ho, wo);
    kg_tensor y32 = kg_new4(c, nb, co, ho, wo);
    double *ref = NULL;
    long long ops0, gemms0 = cpu->bf16_gemms;
    float *got, *g32r, *g32;

    if (path == NOWINO)
        path = cpu->n_threads > 1 && nb * ho * wo < cpu->n_threads * 256 ? KG_CPU_BF16_CONV_SHARED
                                                                         : KG_CPU_BF16_CONV_CHUNKS;
    ops0 = cpu->bf16_ops[path];
    snprintf(name, sizeof name,
             "conv2d bf16 (%s) x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] s%d p%d%s",
             mode_name(cpu), (long long)nb, (long long)ci, (long long)h, (long long)w,
             (long long)co, (long long)ci, (long long)kh, (long long)kw, stride, pad,
             bias ? " +bias" : "");
    be->ops->conv2d(be, &y, &tx, &tw16, bias ? &tb : NULL, stride, pad);
    if (kgt_ctx_ok(c, name)) {
        expect_ran(cpu, name, path, ops0, gemms0);
        gemms0 = kg_backend_cpu_bf16_gemms(be);
        be->ops->conv2d(be, &y32r, &txr, &twr, bias ? &tb : NULL, stride, pad);
        be->ops->conv2d(be, &y32, &tx, &tw, bias ? &tb : NULL, stride, pad);
        fp32_not_counted(be, name, gemms0);
        /* Winograd rounds its transforms (U, V), not x and w: no same-products check */
        if (path != WINO) {
            ref = calloc(ny, sizeof *ref);
            for (int64_t bi = 0; bi < nb; bi++)
                for (int64_t o = 0; o < co; o++)
                    for (int64_t oy = 0; oy < ho; oy++)
                        for (int64_t ox = 0; ox < wo; ox++) {
                            double s = bias ? b[o] : 0.0;
                            for (int64_t i = 0; i < ci; i++)
                                for (int64_t ky = 0; ky < kh; ky++)
                                    for (int64_t kx = 0; kx < kw; kx++) {
                                        int64_t iy = oy * stride - pad + ky;
                                        int64_t ix = ox * stride - pad + kx;
                                        if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                            continue;
                                        s += (double)xr[((bi * ci + i) * h + iy) * w + ix] *
                                             wr[((o * ci + i) * kh + ky) * kw + kx];
                                    }
                            ref[((bi * co + o) * ho + oy) * wo + ox] = s;
                        }
        }
        got = kgt_download(c, &y);
        g32r = kgt_download(c, &y32r);
        g32 = kgt_download(c, &y32);
        compare(name, got, ref, g32r, g32, ny);
        free(got);
        free(g32r);
        free(g32);
    }
    free(ref);
    free(x);
    free(wt);
    free(b);
    free(xr);
    free(wr);
    kg_reset(c, mark);
}

/* Rows of K that do not fit a thread's scratch: blocks of x rows and, in the
 * fallback, of K (the scratch cut to 4096 floats per thread). */
static void small_scratch(kg_ctx *c)
{
    kg_cpu *cpu = kg_cpu_of(c->be);
    size_t saved = cpu->scratch_floats_per_thread;
    cpu->scratch_floats_per_thread = 4096;
    printf("-- scratch cut to 4096 floats per thread\n");
    test_linear(c, 5, 3000, 37, 1);
    test_linear(c, 300, 1000, 20, 0);
    /* 1x1: column blocks of the chunk; 3x3: narrow chunks (no Winograd) */
    test_conv(c, 1, 300, 23, 25, 5, 1, 1, 1, 0, 1, CHUNKS);
    test_conv(c, 1, 8, 23, 25, 16, 3, 3, 1, 1, 1, CHUNKS);
    test_conv(c, 1, 40, 32, 33, 24, 3, 3, 1, 1, 1, CHUNKS);
    cpu->scratch_floats_per_thread = saved;
}

static void suite(kg_ctx *c)
{
    test_linear(c, 1, 1, 1, 1);
    test_linear(c, 7, 23, 25, 1);
    test_linear(c, 77, 768, 9, 0);
    test_linear(c, 513, 70, 90, 1);   /* threaded split over rows */
    test_linear(c, 9, 300, 1000, 1);  /* threaded split over columns */
    test_linear(c, 300, 1283, 77, 1); /* K and N not multiples of 16 */
    test_linear(c, 2, 4097, 33, 0);

    /* small maps (under 256 positions per thread): one shared im2col */
    test_conv(c, 2, 3, 9, 7, 5, 3, 3, 1, 1, 1, NOWINO);
    test_conv(c, 1, 4, 9, 7, 6, 3, 3, 2, 1, 1, NOWINO);
    test_conv(c, 1, 6, 7, 9, 4, 3, 3, 2, 0, 0, NOWINO);
    test_conv(c, 1, 33, 17, 15, 45, 3, 3, 1, 1, 1, NOWINO); /* K 297, N 45 */
    test_conv(c, 2, 5, 9, 7, 7, 1, 1, 1, 0, 1, NOWINO);     /* 1x1: x itself */
    test_conv(c, 1, 3, 9, 9, 4, 1, 1, 2, 0, 1, NOWINO);     /* 1x1 stride 2: im2col */
    /* larger ones: per-thread column chunks (shared with 3 threads up to 767) */
    test_conv(c, 2, 3, 28, 42, 8, 14, 14, 14, 0, 0, NOWINO); /* CLIP patch embedding */
    test_conv(c, 1, 8, 23, 25, 16, 3, 3, 1, 1, 1, NOWINO);
    test_conv(c, 3, 8, 17, 19, 16, 3, 3, 1, 1, 1, NOWINO);   /* chunks across items */
    test_conv(c, 1, 37, 30, 34, 19, 3, 3, 1, 1, 1, NOWINO);  /* 1020 pixels: not Winograd */
    test_conv(c, 1, 300, 23, 25, 5, 1, 1, 1, 0, 0, NOWINO);  /* 1x1 */
    test_conv(c, 1, 320, 32, 32, 77, 1, 1, 1, 0, 1, NOWINO); /* 1x1, wider */
    test_conv(c, 1, 16, 47, 45, 9, 3, 3, 2, 1, 1, NOWINO);   /* VAE-style downsample */
    /* Winograd F(2x2, 3x3): odd sizes (half tiles), several items, wide channels */
    test_conv(c, 1, 64, 32, 32, 32, 3, 3, 1, 1, 1, WINO);
    test_conv(c, 2, 16, 33, 35, 24, 3, 3, 1, 1, 1, WINO);
    test_conv(c, 1, 40, 64, 47, 8, 3, 3, 1, 1, 0, WINO);
    test_conv(c, 1, 7, 31, 129, 5, 3, 3, 1, 1, 1, WINO);
    test_conv(c, 1, 96, 40, 40, 130, 3, 3, 1, 1, 1, WINO);
}

/* The mode the backend chose, and what the describe line says about it. */
static void check_dispatch(kg_backend *be)
{
    const char *cap = getenv("KOSMOSG_CPU_ISA");
    const kg_cpu *cpu = kg_cpu_of(be);
    char line[512];
    if (cap && !*cap)
        cap = NULL; /* as the backend reads it */
    kg_backend_cpu_describe(be, line, sizeof line);
    printf("dispatch: %s (KOSMOSG_CPU_ISA=%s)\n", line, cap ? cap : "");
    if (cpu->bf16_mode == KG_CPU_BF16_DNNL)
        kgt_check(strstr(line, "bf16 GEMM: oneDNN") && strstr(line, "gemm_bf16bf16f32"),
                  "describe names oneDNN's bf16 GEMM");
    else
        kgt_check(strstr(line, "bf16 GEMM: own fallback") != NULL,
                  "describe names the fallback bf16 GEMM");
    if (cap && (!strcmp(cap, "avx2") || !strcmp(cap, "base")))
        kgt_check(cpu->bf16_mode == KG_CPU_BF16_WIDEN, "KOSMOSG_CPU_ISA=%s: the fallback (%s)", cap,
                  mode_name(cpu));
#if defined(__x86_64__) && defined(__GNUC__)
    else if (!cap && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        /* unless built without oneDNN (no "oneDNN" in the line) */
        kgt_check(cpu->bf16_mode == KG_CPU_BF16_DNNL || strstr(line, "oneDNN") == NULL,
                  "AVX512-BF16 CPU with oneDNN: oneDNN's bf16 GEMM (%s)", mode_name(cpu));
#endif
}

int main(void)
{
    kg_backend *be = kgt_cpu_backend();
    kg_cpu *cpu = kg_cpu_of(be);
    kg_ctx c;
    size_t allocs;
    kgt_ctx(&c, be, (size_t)160 << 20);
    allocs = be->n_allocs;

    check_dispatch(be);
    printf("-- %d threads, %s\n", cpu->n_threads, mode_name(cpu));
    suite(&c);
    small_scratch(&c);
    if (cpu->bf16_mode == KG_CPU_BF16_DNNL) {
        cpu->bf16_mode = KG_CPU_BF16_WIDEN;
        printf("-- %d threads, the fallback on the same backend\n", cpu->n_threads);
        suite(&c);
        small_scratch(&c);
        cpu->bf16_mode = KG_CPU_BF16_DNNL;
    }
    kgt_check(be->n_allocs == allocs, "no backend allocation during the ops (%zu -> %zu)", allocs,
              be->n_allocs);
    kg_ctx_release(&c);
    kg_backend_free(be);

    {
        kg_backend *be3 = NULL;
        kg_error err = {0};
        if (kgt_check(kg_backend_cpu_new(&be3, 3, &err) == KG_OK, "cpu backend, 3 threads: %s",
                      err.msg)) {
            printf("-- 3 threads, %s\n", mode_name(kg_cpu_of(be3)));
            kgt_ctx(&c, be3, (size_t)160 << 20);
            suite(&c);
            kg_ctx_release(&c);
            kg_backend_free(be3);
        }
    }
    return kgt_finish();
}
