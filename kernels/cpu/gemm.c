/* gemm.c - the one matrix multiply the linear, conv and attention kernels
 * share: OpenBLAS (single-threaded, called from our OpenMP regions) when
 * built with KG_HAVE_BLAS, else a cache-blocked C kernel. The C kernel is
 * always compiled so the tests check it in BLAS builds too. */
#include "cpu_kernels.h"

#include <string.h>

#if defined(KG_HAVE_BLAS)
#include <cblas.h>
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

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KG_GEMM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KG_GEMM_CLONES
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
                dst[j] = trans_b ? B[(n0 + j0 + j) * ldb + k0 + k]
                                 : B[(k0 + k) * ldb + n0 + j0 + j];
            for (int64_t j = nr; j < NR; j++)
                dst[j] = 0.0f;
        }
        bp += kc * NR;
    }
}

KG_GEMM_CLONES
void kg_cpu_sgemm_c(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
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

/* Work split of kg_cpu_sgemm (see there). */
#define PIECES 4
#define MIN_PIECE 192

void kg_cpu_sgemm_st(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0)
        return;
#if defined(KG_HAVE_BLAS)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#else
    kg_cpu_sgemm_c(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void kg_cpu_sgemm(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc)
{
    int nt = cpu->n_threads;
    /* Split the larger side into contiguous pieces (rows in multiples of 8,
     * columns in multiples of 16, to keep the tiles whole): up to PIECES per
     * thread, handed out dynamically so a thread the OS preempts on a busy
     * machine does not hold up the rest, but none thinner than MIN_PIECE. */
    int split_m = M >= N || M >= 256;
    int64_t unit = split_m ? 8 : 16;
    int64_t total = split_m ? M : N;
    int64_t pieces = total / MIN_PIECE < PIECES * nt ? total / MIN_PIECE : PIECES * nt;
    int64_t per, n_pieces;
    if (pieces < nt)
        pieces = nt;
    per = ((total + pieces - 1) / pieces + unit - 1) / unit * unit;
    n_pieces = (total + per - 1) / per;
    if (nt <= 1 || (double)M * N * K < 2e6 || n_pieces < 2) {
        kg_cpu_sgemm_st(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic)
    for (int64_t t = 0; t < n_pieces; t++) {
        int64_t s = t * per;
        int64_t n = total - s < per ? total - s : per;
        if (split_m)
            kg_cpu_sgemm_st(trans_b, n, N, K, alpha, A + s * lda, lda, B, ldb, beta, C + s * ldc,
                            ldc);
        else
            kg_cpu_sgemm_st(trans_b, M, n, K, alpha, A, lda, trans_b ? B + s * ldb : B + s, ldb,
                            beta, C + s, ldc);
    }
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
    kg_cpu_sgemm(cpu, 1, M, N, K, 1.0f, x->data, K, w->data, K, 0.0f, yd, N);
    if (b) {
        const float *bd = b->data;
#pragma omp parallel for num_threads(cpu->n_threads) schedule(dynamic, 16) if (M * N > 65536)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                yd[i * N + j] += bd[j];
    }
}
