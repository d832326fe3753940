/* gemm.c - the one matrix multiply the linear, conv and attention kernels
 * share: oneDNN's sgemm (JIT kernels picked by the CPU's instruction set, up
 * to the ISA cap; one single-threaded call per work item of our pool) when
 * built with KG_HAVE_DNNL, else a cache-blocked C kernel with an AVX2 and a
 * baseline version. The C kernel is always compiled so the tests check it in
 * oneDNN builds too.
 *
 * Why not OpenBLAS (the first version used it): Debian's 0.3.21 picks its
 * kernel from a list of CPU models, so it ran the SSE3 PRESCOTT kernel on a
 * Sapphire Rapids Xeon (3x slower), and under a memory limit it loops forever
 * in its buffer allocation instead of failing. oneDNN dispatches on cpuid
 * features and returns dnnl_out_of_memory. */
#include "cpu_kernels.h"

#include <string.h>

#include <stdatomic.h>
#include <stdio.h>

#if defined(KG_HAVE_DNNL)
#include <sys/mman.h>

#include <oneapi/dnnl/dnnl.h>

#define KG_DNNL_JIT_HEADROOM (64 << 20)
#endif

/* Register tile of the C kernel: MR rows x NR columns of C in 12 vector
 * accumulators (fits the 16 AVX2 registers with two B vectors and one
 * broadcast). KC x NC is the packed panel of B: 128 KiB on the calling
 * thread's stack. */
#define MR 6
#define NR 16
#define KC 256
#define NC 128

typedef float v8f __attribute__((vector_size(32), aligned(4)));

#if defined(__GNUC__) && defined(__x86_64__)
#define KG_GEMM_X86 1
#endif

/* Packs op(B)[k0:k0+kc, n0:n0+nc] as NR-wide column strips, k-major,
 * zero-padding the last strip. */
static void pack_b(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0,
                   int64_t nc, float *bp)
{
    for (int64_t j0 = 0; j0 < nc; j0 += NR) {
        int64_t nr = nc - j0 < NR ? nc - j0 : NR;
        for (int64_t k = 0; k < kc; k++) {
            float *dst = bp + k * NR;
            for (int64_t j = 0; j < nr; j++)
                dst[j] =
                    trans_b ? B[(n0 + j0 + j) * ldb + k0 + k] : B[(k0 + k) * ldb + n0 + j0 + j];
            for (int64_t j = nr; j < NR; j++)
                dst[j] = 0.0f;
        }
        bp += kc * NR;
    }
}

/* The kernel body, compiled twice: for AVX2 + FMA and for the baseline. */
static inline __attribute__((always_inline)) void
sgemm_c_body(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    float bp[KC * NC] __attribute__((aligned(64)));
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof *c);
        else if (beta != 1.0f)
            for (int64_t j = 0; j < N; j++)
                c[j] *= beta;
    }
    for (int64_t n0 = 0; n0 < N; n0 += NC) {
        int64_t nc = N - n0 < NC ? N - n0 : NC;
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            int64_t kc = K - k0 < KC ? K - k0 : KC;
            pack_b(trans_b, B, ldb, k0, kc, n0, nc, bp);
            for (int64_t i0 = 0; i0 < M; i0 += MR) {
                int64_t mr = M - i0 < MR ? M - i0 : MR;
                const float *a[MR];
                for (int64_t r = 0; r < MR; r++)
                    a[r] = A + (i0 + (r < mr ? r : 0)) * lda + k0;
                for (int64_t j0 = 0; j0 < nc; j0 += NR) {
                    const float *b = bp + j0 * kc;
                    v8f acc[MR][2];
                    float out[MR][NR];
                    int64_t nr = nc - j0 < NR ? nc - j0 : NR;
                    memset(acc, 0, sizeof acc);
                    for (int64_t k = 0; k < kc; k++) {
                        v8f b0, b1;
                        memcpy(&b0, b + k * NR, sizeof b0);
                        memcpy(&b1, b + k * NR + 8, sizeof b1);
                        for (int r = 0; r < MR; r++) {
                            v8f av = {a[r][k], a[r][k], a[r][k], a[r][k],
                                      a[r][k], a[r][k], a[r][k], a[r][k]};
                            acc[r][0] += av * b0;
                            acc[r][1] += av * b1;
                        }
                    }
                    memcpy(out, acc, sizeof out);
                    for (int64_t r = 0; r < mr; r++) {
                        float *c = C + (i0 + r) * ldc + n0 + j0;
                        for (int64_t j = 0; j < nr; j++)
                            c[j] += alpha * out[r][j];
                    }
                }
            }
        }
    }
}

#ifdef KG_GEMM_X86
__attribute__((target("avx2,fma"))) static void
sgemm_c_avx2(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
             const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    sgemm_c_body(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
#endif

static void sgemm_c_base(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                         int64_t ldc)
{
    sgemm_c_body(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kg_cpu_sgemm_c(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc)
{
#ifdef KG_GEMM_X86
    if (kg_cpu_avx2(cpu)) {
        sgemm_c_avx2(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    sgemm_c_base(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Work split of kg_cpu_sgemm (see there). */
#define PIECES 4
#define MIN_PIECE 192

void kg_cpu_sgemm_st(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc)
{
    if (M <= 0 || N <= 0)
        return;
#if defined(KG_HAVE_DNNL)
    /* row-major, like ours; the thread's OpenMP count is 1 (pool.c), so this
     * runs on the calling thread only */
    if (dnnl_sgemm('N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) !=
        dnnl_success)
        atomic_store(&((kg_cpu *)cpu)->gemm_failed, 1);
#else
    kg_cpu_sgemm_c(cpu, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

kg_status kg_cpu_gemm_init(kg_cpu *cpu, kg_error *err)
{
#if defined(KG_HAVE_DNNL)
    /* oneDNN generates its GEMM kernels on the first call, and a failed
     * allocation there is a C++ exception that our C frames cannot catch
     * (the process aborts). Generating them here, once the ISA cap is set,
     * keeps a forward pass under memory pressure to plain malloc failures,
     * which dnnl_sgemm reports as dnnl_out_of_memory. oneDNN builds each
     * family of kernels (blocked GEMM, small-M, GEMV, tails) as a table at the
     * first call that needs one, so the warm-up sweeps small shapes of every
     * kind, both layouts of B, beta 0 and 1 (ONEDNN_JIT_DUMP=1 lists the same
     * kernels after a whole generation as after this).
     * The generator itself does not survive a failed allocation either (it
     * crashes), so first make sure KG_DNNL_JIT_HEADROOM of address space is
     * available; the kernels take a few MiB. */
    static const int64_t ms[] = {1, 2, 3, 4, 5, 8, 17, 40, 96, 200};
    static const int64_t ns[] = {1, 2, 3, 4, 17, 48, 100};
    static const int64_t ks[] = {1, 3, 16, 40, 300};
    float *a, *b, *c;
    int saved;
    dnnl_status_t rc = dnnl_success;
    void *probe = mmap(NULL, KG_DNNL_JIT_HEADROOM, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (probe == MAP_FAILED)
        return kg_error_set(err, KG_ERR_NOMEM,
                            "cpu backend: no %d MiB of address space left for oneDNN's kernels",
                            KG_DNNL_JIT_HEADROOM >> 20);
    munmap(probe, KG_DNNL_JIT_HEADROOM);
    /* operands from the scratch: 200 x 300 + 300 x 100 + 200 x 100 floats */
    a = cpu->scratch;
    b = a + 200 * 300;
    c = b + 300 * 100;
    memset(a, 0, (size_t)(200 * 300 + 300 * 100) * sizeof *a);
    saved = kg_cpu_omp_single();
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
            for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++)
                for (int v = 0; v < 4 && rc == dnnl_success; v++) {
                    int64_t M = ms[im], N = ns[in], K = ks[ik];
                    int tb = v & 1;
                    rc = dnnl_sgemm('N', tb ? 'T' : 'N', M, N, K, 1.0f, a, K, b, tb ? K : N,
                                    v & 2 ? 1.0f : 0.0f, c, N);
                }
    kg_cpu_omp_restore(saved);
    if (rc != dnnl_success)
        return kg_error_set(err, KG_ERR_NOMEM, "cpu backend: oneDNN sgemm cannot start (status %d)",
                            (int)rc);
#else
    (void)cpu;
    (void)err;
#endif
    return KG_OK;
}

void kg_cpu_gemm_status(kg_backend *be, const char *op)
{
    kg_cpu *cpu = kg_cpu_of(be);
    if (atomic_exchange(&cpu->gemm_failed, 0))
        kg_backend_fail(be, KG_ERR_NOMEM,
                        "%s: the GEMM (oneDNN sgemm or gemm_bf16bf16f32) cannot get memory", op);
}

const char *kg_cpu_gemm_name(const kg_cpu *cpu)
{
#if defined(KG_HAVE_DNNL)
    return "oneDNN sgemm (JIT)";
#else
    return kg_cpu_avx2(cpu) ? "own C sgemm, AVX2+FMA" : "own C sgemm, baseline";
#endif
}

typedef struct sgemm_split {
    const kg_cpu *cpu;
    int trans_b;
    int64_t M, N, K;
    float alpha;
    const float *A;
    int64_t lda;
    const float *B;
    int64_t ldb;
    float beta;
    float *C;
    int64_t ldc;
    int split_m;
    int64_t per, total;
} sgemm_split;

static void sgemm_piece(void *ctx, int64_t t, int tid)
{
    const sgemm_split *p = ctx;
    int64_t s = t * p->per;
    int64_t n = p->total - s < p->per ? p->total - s : p->per;
    if (p->split_m)
        kg_cpu_sgemm_st(p->cpu, p->trans_b, n, p->N, p->K, p->alpha, p->A + s * p->lda, p->lda,
                        p->B, p->ldb, p->beta, p->C + s * p->ldc, p->ldc);
    else
        kg_cpu_sgemm_st(p->cpu, p->trans_b, p->M, n, p->K, p->alpha, p->A, p->lda,
                        p->trans_b ? p->B + s * p->ldb : p->B + s, p->ldb, p->beta, p->C + s,
                        p->ldc);
}

int64_t kg_cpu_gemm_split(const kg_cpu *cpu, int64_t M, int64_t N, int64_t K, int *split_m,
                          int64_t *per)
{
    int nt = cpu->n_threads;
    /* Split the larger side into contiguous pieces (rows in multiples of 8,
     * columns in multiples of 16, to keep the tiles whole): up to PIECES per
     * thread, handed out dynamically so a thread the OS preempts on a busy
     * machine does not hold up the rest, but none thinner than MIN_PIECE. */
    int sm = M >= N || M >= 256;
    int64_t unit = sm ? 8 : 16;
    int64_t total = sm ? M : N;
    int64_t pieces = total / MIN_PIECE < PIECES * nt ? total / MIN_PIECE : PIECES * nt;
    int64_t pp, n_pieces;
    if (pieces < nt)
        pieces = nt;
    pp = ((total + pieces - 1) / pieces + unit - 1) / unit * unit;
    n_pieces = (total + pp - 1) / pp;
    if (nt <= 1 || (double)M * N * K < 2e6 || n_pieces < 2) {
        /* one piece, still through the pool: it runs on this thread with
         * oneDNN kept sequential */
        pp = total;
        n_pieces = 1;
    }
    *split_m = sm;
    *per = pp;
    return n_pieces;
}

void kg_cpu_sgemm(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc)
{
    int split_m;
    int64_t per, n_pieces = kg_cpu_gemm_split(cpu, M, N, K, &split_m, &per);
    sgemm_split sp = {cpu, trans_b, M,    N, K,   alpha,   A,   lda,
                      B,   ldb,     beta, C, ldc, split_m, per, split_m ? M : N};
    kg_pool_run(cpu->pool, n_pieces, sgemm_piece, &sp);
}

typedef struct bias_rows {
    float *y;
    const float *b;
    int64_t n;
} bias_rows;

static void add_bias_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const bias_rows *p = ctx;
    for (int64_t i = r0; i < r1; i++)
        for (int64_t j = 0; j < p->n; j++)
            p->y[i * p->n + j] += p->b[j];
}

void kg_cpu_linear(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b)
{
    kg_cpu *cpu = kg_cpu_of(be);
    int64_t N = w->shape[0], K = w->shape[1];
    int64_t M = kg_tensor_numel(y) / (N ? N : 1);
    float *yd = y->data;

    if (K == 0) {
        /* an empty sum: y = bias, or 0 */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                yd[i * N + j] = b ? ((const float *)b->data)[j] : 0.0f;
        return;
    }
    if (w->dtype == KG_BF16) {
        if (!kg_cpu_linear_bf16(be, M, N, K, x->data, w->data, yd))
            return;
    } else {
        kg_cpu_sgemm(cpu, 1, M, N, K, 1.0f, x->data, K, w->data, K, 0.0f, yd, N);
    }
    kg_cpu_gemm_status(be, "linear");
    if (b) {
        bias_rows br = {yd, b->data, N};
        kg_cpu_parallel_range(cpu, M, M * N > 65536 ? 16 : M, 0, add_bias_rows, &br);
    }
}
