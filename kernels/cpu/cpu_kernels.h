/* cpu_kernels.h - private to the CPU backend: its state and the op functions
 * that backend_cpu.c puts in the table, one file per op family.
 *
 * Threading: every op splits its work into items that the backend's own
 * worker pool (pool.c) hands out dynamically, a few per thread: when the OS
 * preempts one thread on a busy machine, the others keep working instead of
 * waiting at the op's end for a fixed share. The pool's idle threads sleep
 * (no OpenMP: see pool.c). oneDNN's GEMM runs one call per work item, single
 * threaded, inside those items.
 *
 * Instruction sets: cpu->isa is what the CPU supports (cpuid, never a list of
 * CPU models), capped by KOSMOSG_CPU_ISA; every kernel with a vector path
 * checks it, and the cap is passed to oneDNN (dnnl_set_max_cpu_isa). */
#ifndef KG_CPU_KERNELS_H
#define KG_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"

/* Fixed scratch, allocated once when the backend is created, split evenly
 * between threads; ops chunk their work (im2col columns, attention query
 * blocks) so each chunk fits a thread's share. */
#define KG_CPU_SCRATCH_BYTES ((size_t)64 << 20)
/* Winograd: the transformed weights of one conv, 16 Co Ci floats (640 x 640 fit), and
 * the smallest map worth the transforms */
#define KG_CPU_WINO_BYTES ((size_t)32 << 20)
#define KG_CPU_WINO_MIN_PIXELS 1024
/* bf16 operands (gemm_bf16.c): per thread as many 16-bit elements as the
 * fp32 scratch holds floats, so any fp32 operand built there converts into it */
#define KG_CPU_LOWP_BYTES (KG_CPU_SCRATCH_BYTES / 2)

/* Instruction-set levels our dispatch distinguishes (x86-64). */
typedef enum kg_cpu_isa {
    KG_CPU_ISA_BASE = 0,   /* SSE2: scalar C kernels, oneDNN at SSE4.1 at most */
    KG_CPU_ISA_AVX2 = 1,   /* AVX2 + FMA */
    KG_CPU_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ (oneDNN's avx512_core) */
} kg_cpu_isa;

/* pool.c: fn(ctx, item, tid) for item in [0, n_items), tid in [0, n_threads)
 * identifying the running thread (0 is the caller). */
typedef struct kg_pool kg_pool;
typedef void (*kg_pool_fn)(void *ctx, int64_t item, int tid);
kg_status kg_pool_new(kg_pool **out, int n_threads, kg_error *err);
void kg_pool_free(kg_pool *p);
/* Runs every item and returns when all are done; not re-entrant. */
void kg_pool_run(kg_pool *p, int64_t n_items, kg_pool_fn fn, void *ctx);
/* Sets the calling thread's OpenMP thread count to 1 (oneDNN then runs
 * sequentially in it) and returns the previous value for kg_cpu_omp_restore. */
int kg_cpu_omp_single(void);
void kg_cpu_omp_restore(int saved);

/* How linear and conv2d multiply KG_BF16 weights (gemm_bf16.c). Both modes
 * round the fp32 activations to bf16 (nearest even) and accumulate in fp32, so
 * they form the same products and differ only in summation order. */
typedef enum kg_cpu_bf16_mode {
    /* weights widened to fp32 panel by panel into the lowp buffer, activations
     * rounded in the fp32 scratch, then the fp32 GEMM: any CPU */
    KG_CPU_BF16_WIDEN = 0,
    /* oneDNN's gemm_bf16bf16f32 on bf16 copies of the activations (lowp):
     * where oneDNN runs bf16 natively (avx512_core_bf16, AMX) */
    KG_CPU_BF16_DNNL = 1,
} kg_cpu_bf16_mode;

/* Which kernel path a bf16 op took; counted so tests can prove it ran. */
enum {
    KG_CPU_BF16_LINEAR,
    KG_CPU_BF16_CONV_CHUNKS, /* im2col or 1x1 column chunks, one per thread */
    KG_CPU_BF16_CONV_SHARED, /* one im2col shared by all threads */
    KG_CPU_BF16_WINOGRAD,
    KG_CPU_BF16_N_PATHS
};

typedef struct kg_cpu {
    int n_threads;
    kg_cpu_isa isa;
    kg_pool *pool;
    float *scratch;
    size_t scratch_floats_per_thread;
    float *wino; /* the Winograd weight transform of the conv in progress */
    size_t wino_floats;
    /* set by any thread whose oneDNN call failed (it cannot get memory);
     * the op turns it into the backend's sticky error (kg_cpu_gemm_status) */
    _Atomic int gemm_failed;
    uint16_t *lowp; /* bf16 operands, KG_CPU_LOWP_BYTES, split like scratch */
    kg_cpu_bf16_mode bf16_mode;
    _Atomic long long bf16_gemms;                    /* GEMM calls on bf16 weights */
    _Atomic long long bf16_ops[KG_CPU_BF16_N_PATHS]; /* ops, by path */
} kg_cpu;

static inline kg_cpu *kg_cpu_of(kg_backend *be)
{
    return (kg_cpu *)be->impl;
}

/* Scratch region of pool thread `tid`. */
static inline float *kg_cpu_scratch(const kg_cpu *cpu, int tid)
{
    return cpu->scratch + (size_t)tid * cpu->scratch_floats_per_thread;
}

/* Thread `tid`'s region of the lowp buffer: scratch_floats_per_thread
 * 16-bit elements (half as many floats). */
static inline uint16_t *kg_cpu_lowp(const kg_cpu *cpu, int tid)
{
    return cpu->lowp + (size_t)tid * cpu->scratch_floats_per_thread;
}

/* fp32 -> bf16 bits, nearest even (NaN stays NaN), and back: tensor.c's
 * kg_f32_to_bf16 / kg_bf16_to_f32, inlined for the kernels' loops */
static inline uint16_t kg_cpu_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float kg_cpu_bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline int kg_cpu_avx2(const kg_cpu *cpu)
{
    return cpu->isa >= KG_CPU_ISA_AVX2;
}

/* kg_pool_run, but all items on the calling thread when the op's work (about
 * its element or multiply-add count) is below KG_CPU_PAR_MIN_WORK: waking the
 * workers costs more than small ops (the tiny model's 8x8 latents) save. */
#define KG_CPU_PAR_MIN_WORK 32768.0
void kg_cpu_parallel(const kg_cpu *cpu, int64_t n_items, double work, kg_pool_fn fn, void *ctx);

/* Flat loops over n elements: items of `chunk` elements, inline below
 * `par_min` elements where waking the pool costs more than it saves.
 * fn(ctx, i0, i1, tid) handles elements [i0, i1). */
typedef void (*kg_range_fn)(void *ctx, int64_t i0, int64_t i1, int tid);
void kg_cpu_parallel_range(const kg_cpu *cpu, int64_t n, int64_t chunk, int64_t par_min,
                           kg_range_fn fn, void *ctx);

/* vmath.c - vectorised row loops (AVX2 picked at run time).
 * y = exp(x - shift), returning the sum of y (y may alias x). */
float kg_cpu_exp_shift_sum(const kg_cpu *cpu, float *y, const float *x, int64_t n, float shift);
/* v = x sc + sh; y = v sigmoid(a v): SiLU (a = 1), QuickGELU (a = 1.702) */
void kg_cpu_silu_affine(const kg_cpu *cpu, float *y, const float *x, int64_t n, float a, float sc,
                        float sh);
/* y = gelu(x) (exact erf form), times m when m is not NULL (GEGLU) */
void kg_cpu_gelu_mul(const kg_cpu *cpu, float *y, const float *x, const float *m, int64_t n);
/* max of x (n >= 1); -inf when every element is -inf */
float kg_cpu_max(const kg_cpu *cpu, const float *x, int64_t n);

/* gemm.c - row-major C[M, N] = alpha A[M, K] op(B) + beta C, op(B) = B[K, N]
 * (trans_b = 0) or B[N, K]^T (trans_b = 1). The _st form runs on the calling
 * thread (BLAS or the _c kernel); kg_cpu_sgemm splits M or N over the
 * backend's threads. */
void kg_cpu_sgemm_c(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc);
void kg_cpu_sgemm_st(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);
void kg_cpu_sgemm(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);
/* kg_cpu_sgemm's work split: returns the number of pieces, each *per rows
 * (*split_m) or columns of C (the last one shorter). */
int64_t kg_cpu_gemm_split(const kg_cpu *cpu, int64_t M, int64_t N, int64_t K, int *split_m,
                          int64_t *per);
/* oneDNN's name of a dnnl_cpu_isa_t (backend_cpu.c; oneDNN builds only) */
const char *kg_cpu_dnnl_isa_name(int isa);
/* At backend creation: has oneDNN generate its GEMM kernels (see gemm.c). */
kg_status kg_cpu_gemm_init(kg_cpu *cpu, kg_error *err);
/* After an op's GEMMs: KG_ERR_NOMEM on the backend, naming the op, if one failed. */
void kg_cpu_gemm_status(kg_backend *be, const char *op);
/* What the GEMM dispatches to, e.g. "oneDNN 2.6.3 sgemm, avx512_core" (static string). */
const char *kg_cpu_gemm_name(const kg_cpu *cpu);
void kg_cpu_linear(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b);

/* gemm_bf16.c - GEMMs on KG_BF16 weights (see kg_cpu_bf16_mode).
 * At backend creation (after the ISA cap): picks the mode, generates oneDNN's
 * bf16 kernels. */
kg_status kg_cpu_bf16_init(kg_cpu *cpu, kg_error *err);
/* e.g. "oneDNN 2.6.3 gemm_bf16bf16f32, JIT ISA avx512_core_bf16" */
int kg_cpu_bf16_describe(const kg_cpu *cpu, char *buf, size_t n);
/* Activations for a bf16 GEMM: rows x cols of src (row stride lds) into dst
 * (row stride ldd) as bf16 (DNNL mode, dst uint16_t) or as bf16-rounded floats
 * (WIDEN mode; dst may be src). */
void kg_cpu_bf16_act(const kg_cpu *cpu, void *dst, int64_t ldd, const float *src, int64_t lds,
                     int64_t rows, int64_t cols);
/* The same over the pool, for one operand shared by all threads. */
void kg_cpu_bf16_act_par(const kg_cpu *cpu, void *dst, int64_t ldd, const float *src, int64_t lds,
                         int64_t rows, int64_t cols);
/* C[M, N] = op(A) op(B) (overwritten), op as in kg_cpu_sgemm, on the calling
 * pool thread `tid`: the weights (A when w_is_a, else B) are bf16, the other
 * operand holds activations made by kg_cpu_bf16_act. WIDEN mode widens the
 * weights through thread tid's lowp region. */
void kg_cpu_gemm_wb_st(const kg_cpu *cpu, int tid, int w_is_a, int trans_b, int64_t M, int64_t N,
                       int64_t K, const void *A, int64_t lda, const void *B, int64_t ldb, float *C,
                       int64_t ldc);
/* The same, split over the backend's threads like kg_cpu_sgemm. */
void kg_cpu_gemm_wb(const kg_cpu *cpu, int w_is_a, int trans_b, int64_t M, int64_t N, int64_t K,
                    const void *A, int64_t lda, const void *B, int64_t ldb, float *C, int64_t ldc);
/* DNNL mode only: both operands bf16 (C overwritten), on the calling thread. */
void kg_cpu_gemm_bf16_st(const kg_cpu *cpu, int trans_b, int64_t M, int64_t N, int64_t K,
                         const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float *C,
                         int64_t ldc);
/* rounds n floats to bf16 precision in place (the WIDEN mode's activations) */
void kg_cpu_bf16_round(const kg_cpu *cpu, float *x, int64_t n);
/* y[M, N] = x[M, K] w[N, K]^T for kg_cpu_linear's bf16 weights (K > 0);
 * returns 0 after failing the backend when K exceeds the scratch */
int kg_cpu_linear_bf16(kg_backend *be, int64_t M, int64_t N, int64_t K, const float *x,
                       const uint16_t *w, float *y);

/* conv2d.c */
void kg_cpu_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b, int stride, int pad);

/* winograd.c: 3x3, stride 1, pad 1; returns 0 (nothing done) when the shape does
 * not suit it or the buffers are too small */
int kg_cpu_conv_winograd(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                         const kg_tensor *b);

/* norm.c */
void kg_cpu_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, int groups, float eps, int silu);
void kg_cpu_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, float eps);
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
void kg_cpu_upsample_nearest(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cpu_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim);
void kg_cpu_permute(kg_backend *be, kg_tensor *y, const kg_tensor *x, const int perm[KG_MAX_DIMS]);
void kg_cpu_copy(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cpu_embedding(kg_backend *be, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids);
void kg_cpu_upload_f32(kg_backend *be, kg_tensor *dst, const float *src);
void kg_cpu_download_f32(kg_backend *be, float *dst, const kg_tensor *src);

#endif
