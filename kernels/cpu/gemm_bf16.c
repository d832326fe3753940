/* gemm_bf16.c - matrix multiplies on bf16 weights (precision bf16 on the CPU:
 * linear and conv weights stored as bf16, activations fp32).
 *
 * The activations are rounded to bf16 (nearest even, as kg_f32_to_bf16) and
 * every product is formed exactly in fp32 (8-bit x 8-bit significands) and
 * summed in fp32, in one of two modes picked once at backend creation:
 *
 * - KG_CPU_BF16_DNNL: oneDNN's gemm_bf16bf16f32 on bf16 copies of the
 *   activations, where oneDNN runs bf16 natively (its effective ISA includes
 *   avx512_core_bf16: AVX512-BF16 or AMX). oneDNN 2.6 also has an emulation for
 *   plain avx512_core, but on this project's AMD EPYC it ran a 1024^3 GEMM at
 *   85 GFLOP/s against 216 for sgemm, so there the fallback is the faster path.
 * - KG_CPU_BF16_WIDEN (the fallback; AVX2-only CPUs, KOSMOSG_CPU_ISA=avx2 or
 *   base, builds without oneDNN): the weights are widened to fp32 panel by
 *   panel into the thread's lowp region and multiplied by the fp32 GEMM
 *   (kg_cpu_sgemm_st) with the rounded activations.
 *
 * Debian's oneDNN 2.6.3 exports dnnl_gemm_bf16bf16f32 but its public header
 * does not declare it; meson checks that it links (KG_HAVE_DNNL_GEMM_BF16). */
#include "cpu_kernels.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "tensor.h"

#if defined(KG_HAVE_DNNL)
#include <oneapi/dnnl/dnnl.h>
#endif

#if defined(KG_HAVE_DNNL) && defined(KG_HAVE_DNNL_GEMM_BF16)
/* src/common/gemm.cpp of oneDNN 2.6: row-major, like dnnl_sgemm; its
 * bfloat16_t is a 16-bit struct with the bf16 bits. */
dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N,
                                    dnnl_dim_t K, float alpha, const uint16_t *A, dnnl_dim_t lda,
                                    const uint16_t *B, dnnl_dim_t ldb, float beta, float *C,
                                    dnnl_dim_t ldc);
#define KG_BF16_DNNL 1
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define KG_BF16_X86 1
#endif

/* ----------------------------------------------------------- conversions */

/* kg_f32_to_bf16 without branches, so the loops below vectorise */
static inline __attribute__((always_inline)) uint32_t rne_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) & 0xffff0000u
                                           : (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

static inline __attribute__((always_inline)) void to_bf16_body(uint16_t *d, const float *s,
                                                               int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        d[i] = (uint16_t)(rne_bits(s[i]) >> 16);
}

static inline __attribute__((always_inline)) void round_body(float *d, const float *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = rne_bits(s[i]);
        float f;
        memcpy(&f, &u, sizeof f);
        d[i] = f;
    }
}

static inline __attribute__((always_inline)) void widen_body(float *d, const uint16_t *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)s[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        d[i] = f;
    }
}

#ifdef KG_BF16_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define AVX2 __attribute__((target("avx2,fma")))
AVX512 static void to_bf16_avx512(uint16_t *d, const float *s, int64_t n)
{
    to_bf16_body(d, s, n);
}
AVX2 static void to_bf16_avx2(uint16_t *d, const float *s, int64_t n)
{
    to_bf16_body(d, s, n);
}
AVX512 static void round_avx512(float *d, const float *s, int64_t n)
{
    round_body(d, s, n);
}
AVX2 static void round_avx2(float *d, const float *s, int64_t n)
{
    round_body(d, s, n);
}
AVX512 static void widen_avx512(float *d, const uint16_t *s, int64_t n)
{
    widen_body(d, s, n);
}
AVX2 static void widen_avx2(float *d, const uint16_t *s, int64_t n)
{
    widen_body(d, s, n);
}
#endif

static void to_bf16(const kg_cpu *cpu, uint16_t *d, const float *s, int64_t n)
{
#ifdef KG_BF16_X86
    if (cpu->isa >= KG_CPU_ISA_AVX512) {
        to_bf16_avx512(d, s, n);
        return;
    }
    if (cpu->isa >= KG_CPU_ISA_AVX2) {
        to_bf16_avx2(d, s, n);
        return;
    }
#endif
    to_bf16_body(d, s, n);
}

static void round_f32(const kg_cpu *cpu, float *d, const float *s, int64_t n)
{
#ifdef KG_BF16_X86
    if (cpu->isa >= KG_CPU_ISA_AVX512) {
        round_avx512(d, s, n);
        return;
    }
    if (cpu->isa >= KG_CPU_ISA_AVX2) {
        round_avx2(d, s, n);
        return;
    }
#endif
    round_body(d, s, n);
}

static void widen(const kg_cpu *cpu, float *d, const uint16_t *s, int64_t n)
{
#ifdef KG_BF16_X86
    if (cpu->isa >= KG_CPU_ISA_AVX512) {
        widen_avx512(d, s, n);
        return;
    }
    if (cpu->isa >= KG_CPU_ISA_AVX2) {
        widen_avx2(d, s, n);
        return;
    }
#endif
    widen_body(d, s, n);
}

void kg_cpu_bf16_round(const kg_cpu *cpu, float *x, int64_t n)
{
    round_f32(cpu, x, x, n);
}

void kg_cpu_bf16_act(const kg_cpu *cpu, void *dst, int64_t ldd, const float *src, int64_t lds,
                     int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        if (cpu->bf16_mode == KG_CPU_BF16_DNNL)
            to_bf16(cpu, (uint16_t *)dst + r * ldd, src + r * lds, cols);
        else
            round_f32(cpu, (float *)dst + r * ldd, src + r * lds, cols);
    }
}

typedef struct act_job {
    const kg_cpu *cpu;
    void *dst;
    int64_t ldd;
    const float *src;
    int64_t lds, cols;
} act_job;

static void act_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const act_job *j = ctx;
    size_t el = j->cpu->bf16_mode == KG_CPU_BF16_DNNL ? sizeof(uint16_t) : sizeof(float);
    kg_cpu_bf16_act(j->cpu, (char *)j->dst + (size_t)(r0 * j->ldd) * el, j->ldd,
                    j->src + r0 * j->lds, j->lds, r1 - r0, j->cols);
}

void kg_cpu_bf16_act_par(const kg_cpu *cpu, void *dst, int64_t ldd, const float *src, int64_t lds,
                         int64_t rows, int64_t cols)
{
    act_job j = {cpu, dst, ldd, src, lds, cols};
    int64_t chunk = cols ? 65536 / cols : rows;
    kg_cpu_parallel_range(cpu, rows, chunk > 0 ? chunk : 1, 262144 / (cols ? cols : 1), act_rows,
                          &j);
}

/* ----------------------------------------------------------------- GEMMs */

void kg_cpu_gemm_bf16_st(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K,
                         const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float *C,
                         int64_t ldc)
{
    kg_cpu *mut = (kg_cpu *)cpu;
    if (M <= 0 || N <= 0)
        return;
    atomic_fetch_add_explicit(&mut->bf16_gemms, 1, memory_order_relaxed);
#ifdef KG_BF16_DNNL
    if (dnnl_gemm_bf16bf16f32('N', trans_b ? 'T' : 'N', M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C,
                              ldc) == dnnl_success)
        return;
#else
    (void)trans_b, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc;
#endif
    /* not reached in WIDEN mode; a failure is oneDNN out of memory */
    atomic_store(&mut->gemm_failed, 1);
}

/* Widens rows [r0, r0 + nr) x columns [c0, c0 + nc) of the row-major bf16
 * matrix w (stride ldw) into p (stride nc). */
static void widen_block(const kg_cpu *cpu, float *p, const uint16_t *w, int64_t ldw, int64_t r0,
                        int64_t nr, int64_t c0, int64_t nc)
{
    for (int64_t r = 0; r < nr; r++)
        widen(cpu, p + r * nc, w + (r0 + r) * ldw + c0, nc);
}

void kg_cpu_gemm_wb_st(const kg_cpu *cpu, int tid, int w_is_a, int trans_b, int64_t M, int64_t N,
                       int64_t K, const void *A, int64_t lda, const void *B, int64_t ldb, float *C,
                       int64_t ldc)
{
    float *panel;
    int64_t cap, kb, step;
    if (M <= 0 || N <= 0)
        return;
    if (cpu->bf16_mode == KG_CPU_BF16_DNNL) {
        kg_cpu_gemm_bf16_st(cpu, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
    atomic_fetch_add_explicit(&((kg_cpu *)cpu)->bf16_gemms, 1, memory_order_relaxed);
    /* panels of the weights, as many whole rows (of K) as fit the region;
     * K itself in blocks when a row does not fit, summed with beta 1 */
    panel = (float *)kg_cpu_lowp(cpu, tid);
    cap = (int64_t)(cpu->scratch_floats_per_thread / 2);
    kb = K < cap ? K : cap;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        int64_t kc = K - k0 < kb ? K - k0 : kb;
        float beta = k0 ? 1.0f : 0.0f;
        if (w_is_a) {
            /* A = w[M, K] (stride lda), B fp32 [K, N] or [N, K] */
            const float *b = (const float *)B + (trans_b ? k0 : k0 * ldb);
            step = cap / kc;
            for (int64_t i0 = 0; i0 < M; i0 += step) {
                int64_t mr = M - i0 < step ? M - i0 : step;
                widen_block(cpu, panel, A, lda, i0, mr, k0, kc);
                kg_cpu_sgemm_st(cpu, trans_b, mr, N, kc, 1.0f, panel, kc, b, ldb, beta,
                                C + i0 * ldc, ldc);
            }
        } else if (trans_b) {
            /* B = w[N, K] (stride ldb), A fp32 [M, K] */
            step = cap / kc;
            for (int64_t j0 = 0; j0 < N; j0 += step) {
                int64_t nr = N - j0 < step ? N - j0 : step;
                widen_block(cpu, panel, B, ldb, j0, nr, k0, kc);
                kg_cpu_sgemm_st(cpu, 1, M, nr, kc, 1.0f, (const float *)A + k0, lda, panel, kc,
                                beta, C + j0, ldc);
            }
        } else {
            /* B = w[K, N] (stride ldb): whole rows of kc x nr column blocks */
            step = cap / kc;
            for (int64_t j0 = 0; j0 < N; j0 += step) {
                int64_t nr = N - j0 < step ? N - j0 : step;
                widen_block(cpu, panel, B, ldb, k0, kc, j0, nr);
                kg_cpu_sgemm_st(cpu, 0, M, nr, kc, 1.0f, (const float *)A + k0, lda, panel, nr,
                                beta, C + j0, ldc);
            }
        }
    }
}

typedef struct wb_split {
    const kg_cpu *cpu;
    int w_is_a, trans_b;
    int64_t M, N, K;
    const char *A, *B;
    int64_t lda, ldb;
    size_t ela, elb; /* element sizes of A and B */
    float *C;
    int64_t ldc;
    int split_m;
    int64_t per, total;
} wb_split;

static void wb_piece(void *ctx, int64_t t, int tid)
{
    const wb_split *p = ctx;
    int64_t s = t * p->per;
    int64_t n = p->total - s < p->per ? p->total - s : p->per;
    if (p->split_m)
        kg_cpu_gemm_wb_st(p->cpu, tid, p->w_is_a, p->trans_b, n, p->N, p->K,
                          p->A + (size_t)(s * p->lda) * p->ela, p->lda, p->B, p->ldb,
                          p->C + s * p->ldc, p->ldc);
    else
        kg_cpu_gemm_wb_st(p->cpu, tid, p->w_is_a, p->trans_b, p->M, n, p->K, p->A, p->lda,
                          p->B + (size_t)(p->trans_b ? s * p->ldb : s) * p->elb, p->ldb, p->C + s,
                          p->ldc);
}

void kg_cpu_gemm_wb(const kg_cpu *cpu, int w_is_a, int trans_b, int64_t M, int64_t N, int64_t K,
                    const void *A, int64_t lda, const void *B, int64_t ldb, float *C, int64_t ldc)
{
    size_t act = cpu->bf16_mode == KG_CPU_BF16_DNNL ? sizeof(uint16_t) : sizeof(float);
    wb_split sp = {.cpu = cpu,
                   .w_is_a = w_is_a,
                   .trans_b = trans_b,
                   .M = M,
                   .N = N,
                   .K = K,
                   .A = A,
                   .B = B,
                   .lda = lda,
                   .ldb = ldb,
                   .ela = w_is_a ? sizeof(uint16_t) : act,
                   .elb = w_is_a ? act : sizeof(uint16_t),
                   .C = C,
                   .ldc = ldc};
    int64_t n_pieces = kg_cpu_gemm_split(cpu, M, N, K, &sp.split_m, &sp.per);
    sp.total = sp.split_m ? M : N;
    kg_pool_run(cpu->pool, n_pieces, wb_piece, &sp);
}

/* ---------------------------------------------------------------- linear */

typedef struct lin_job {
    const kg_cpu *cpu;
    int64_t M, N, K;
    const float *x;
    const uint16_t *w;
    float *y;
    int split_m;
    int64_t per, total;
} lin_job;

/* One piece of y: its rows of x (all of them when the piece is columns)
 * rounded into this thread's activation buffer, in blocks that fit, each
 * multiplied by the piece's rows of w. */
static void lin_piece(void *ctx, int64_t t, int tid)
{
    const lin_job *j = ctx;
    const kg_cpu *cpu = j->cpu;
    int64_t s = t * j->per, n = j->total - s < j->per ? j->total - s : j->per;
    int64_t m0 = j->split_m ? s : 0, m1 = j->split_m ? s + n : j->M;
    int64_t n0 = j->split_m ? 0 : s, nn = j->split_m ? j->N : n, K = j->K;
    int64_t rb = (int64_t)cpu->scratch_floats_per_thread / K;
    void *act = cpu->bf16_mode == KG_CPU_BF16_DNNL ? (void *)kg_cpu_lowp(cpu, tid)
                                                   : (void *)kg_cpu_scratch(cpu, tid);
    for (int64_t r0 = m0; r0 < m1; r0 += rb) {
        int64_t r = m1 - r0 < rb ? m1 - r0 : rb;
        kg_cpu_bf16_act(cpu, act, K, j->x + r0 * K, K, r, K);
        kg_cpu_gemm_wb_st(cpu, tid, 0, 1, r, nn, K, act, K, j->w + n0 * K, K, j->y + r0 * j->N + n0,
                          j->N);
    }
}

int kg_cpu_linear_bf16(kg_backend *be, int64_t M, int64_t N, int64_t K, const float *x,
                       const uint16_t *w, float *y)
{
    kg_cpu *cpu = kg_cpu_of(be);
    lin_job j = {.cpu = cpu, .M = M, .N = N, .K = K, .x = x, .w = w, .y = y};
    int64_t n_pieces;
    if ((size_t)K > cpu->scratch_floats_per_thread) {
        kg_backend_fail(be, KG_ERR_NOMEM, "linear: a %lld-wide bf16 row exceeds the scratch",
                        (long long)K);
        return 0;
    }
    atomic_fetch_add_explicit(&cpu->bf16_ops[KG_CPU_BF16_LINEAR], 1, memory_order_relaxed);
    n_pieces = kg_cpu_gemm_split(cpu, M, N, K, &j.split_m, &j.per);
    j.total = j.split_m ? M : N;
    kg_pool_run(cpu->pool, n_pieces, lin_piece, &j);
    return 1;
}

/* ------------------------------------------------------------------ setup */

kg_status kg_cpu_bf16_init(kg_cpu *cpu, kg_error *err)
{
    cpu->bf16_mode = KG_CPU_BF16_WIDEN;
#ifdef KG_BF16_DNNL
    {
        /* oneDNN's bf16 GEMM only where it runs bf16 natively, and only at our
         * own AVX-512 level (the cap applies to both) */
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        static const int64_t ms[] = {1, 2, 3, 4, 5, 8, 17, 40, 96, 200};
        static const int64_t ns[] = {1, 2, 3, 17, 48, 100};
        static const int64_t ks[] = {1, 3, 16, 40, 300};
        uint16_t *a = cpu->lowp, *b = a + 200 * 300;
        float *c = (float *)(b + 300 * 100);
        dnnl_status_t rc = dnnl_success;
        int saved;
        if (cpu->isa < KG_CPU_ISA_AVX512 ||
            ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) !=
                (unsigned)dnnl_cpu_isa_avx512_core_bf16)
            return KG_OK;
        /* generate the kernels now, as kg_cpu_gemm_init does for sgemm (a
         * failed allocation inside the generator cannot be caught later) */
        memset(a, 0, (size_t)(200 * 300 + 300 * 100) * sizeof *a);
        saved = kg_cpu_omp_single();
        for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
            for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
                for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++)
                    for (int tb = 0; tb < 2 && rc == dnnl_success; tb++) {
                        int64_t M = ms[im], N = ns[in], K = ks[ik];
                        rc = dnnl_gemm_bf16bf16f32('N', tb ? 'T' : 'N', M, N, K, 1.0f, a, K, b,
                                                   tb ? K : N, 0.0f, c, N);
                    }
        kg_cpu_omp_restore(saved);
        if (rc == dnnl_unimplemented)
            return KG_OK;
        if (rc != dnnl_success)
            return kg_error_set(err, KG_ERR_NOMEM,
                                "cpu backend: oneDNN gemm_bf16bf16f32 cannot start (status %d)",
                                (int)rc);
        cpu->bf16_mode = KG_CPU_BF16_DNNL;
    }
#else
    (void)err;
#endif
    return KG_OK;
}

int kg_cpu_bf16_describe(const kg_cpu *cpu, char *buf, size_t n)
{
#if defined(KG_HAVE_DNNL)
    const dnnl_version_t *v = dnnl_version();
    const char *isa = kg_cpu_dnnl_isa_name(dnnl_get_effective_cpu_isa());
    if (cpu->bf16_mode == KG_CPU_BF16_DNNL)
        return snprintf(buf, n, "oneDNN %d.%d.%d gemm_bf16bf16f32, JIT ISA %s", v->major, v->minor,
                        v->patch, isa);
    return snprintf(buf, n, "own fallback (bf16 weights widened to fp32, oneDNN sgemm %s)", isa);
#else
    return snprintf(buf, n, "own fallback (bf16 weights widened to fp32, %s)",
                    kg_cpu_gemm_name(cpu));
#endif
}
