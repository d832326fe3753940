/* cpu_kernels.h - private to the CPU backend: its state and the op functions
 * that backend_cpu.c puts in the table, one file per op family.
 *
 * Threading: every op splits its work with OpenMP over n_threads. BLAS is
 * kept single-threaded and called from inside those OpenMP regions, so the
 * two thread pools never compete for the same cores. Loops hand out work
 * dynamically in pieces of a few thousand elements (or a few rows): when
 * the OS preempts one thread on a busy machine, the other keeps working
 * instead of waiting at the op's closing barrier for a fixed half. */
#ifndef KG_CPU_KERNELS_H
#define KG_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Fixed scratch, allocated once when the backend is created, split evenly
 * between threads; ops chunk their work (im2col columns, attention query
 * blocks) so each chunk fits a thread's share. */
#define KG_CPU_SCRATCH_BYTES ((size_t)64 << 20)

typedef struct kg_cpu {
    int n_threads;
    float *scratch;
    size_t scratch_floats_per_thread;
} kg_cpu;

static inline kg_cpu *kg_cpu_of(kg_backend *be)
{
    return (kg_cpu *)be->impl;
}

/* Scratch region of OpenMP thread `tid`. */
static inline float *kg_cpu_scratch(const kg_cpu *cpu, int tid)
{
    return cpu->scratch + (size_t)tid * cpu->scratch_floats_per_thread;
}

int kg_cpu_thread_id(void);

/* vmath.c - vectorised row loops (AVX2 picked at run time).
 * y = exp(x - shift), returning the sum of y (y may alias x). */
float kg_cpu_exp_shift_sum(float *y, const float *x, int64_t n, float shift);
/* v = x sc + sh; y = v sigmoid(a v): SiLU (a = 1), QuickGELU (a = 1.702) */
void kg_cpu_silu_affine(float *y, const float *x, int64_t n, float a, float sc, float sh);
/* y = gelu(x) (exact erf form), times m when m is not NULL (GEGLU) */
void kg_cpu_gelu_mul(float *y, const float *x, const float *m, int64_t n);
/* max of x (n >= 1); -inf when every element is -inf */
float kg_cpu_max(const float *x, int64_t n);

/* gemm.c - row-major C[M, N] = alpha A[M, K] op(B) + beta C, op(B) = B[K, N]
 * (trans_b = 0) or B[N, K]^T (trans_b = 1). The _st form runs on the calling
 * thread (BLAS or the _c kernel); kg_cpu_sgemm splits M or N over the
 * backend's threads. */
void kg_cpu_sgemm_c(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                    int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kg_cpu_sgemm_st(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kg_cpu_sgemm(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);
void kg_cpu_linear(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b);

/* conv2d.c */
void kg_cpu_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b, int stride, int pad);

/* norm.c */
void kg_cpu_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, int groups, float eps, int silu);
void kg_cpu_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, float eps);
void kg_cpu_softmax(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cpu_l2_normalize(kg_backend *be, kg_tensor *y, const kg_tensor *x, float eps);

/* attention.c */
void kg_cpu_attention(kg_backend *be, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                      const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                      int causal);

/* elementwise.c */
void kg_cpu_activation(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act);
void kg_cpu_geglu(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cpu_binary(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                   kg_binary_op op, kg_bcast bcast);
void kg_cpu_axpby(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
                  const kg_tensor *b);
void kg_cpu_fill(kg_backend *be, kg_tensor *y, float value);

/* layout.c */
void kg_cpu_upsample_nearest2x(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cpu_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim);
void kg_cpu_permute(kg_backend *be, kg_tensor *y, const kg_tensor *x, const int perm[KG_MAX_DIMS]);
void kg_cpu_copy(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cpu_embedding(kg_backend *be, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids);
void kg_cpu_upload_f32(kg_backend *be, kg_tensor *dst, const float *src);
void kg_cpu_download_f32(kg_backend *be, float *dst, const kg_tensor *src);

#endif
