/* backend.h - the op table a backend fills in (kernels/cpu, kernels/cuda).
 *
 * Model code never calls these directly: engine/ops.c validates shapes and
 * dtypes once, for every backend, and then dispatches here. A backend may
 * therefore assume its arguments are consistent. All tensors are contiguous,
 * in PyTorch order; on the CUDA backend their data are device pointers.
 * Outputs come first. Unless an op says otherwise, y may alias x. */
#ifndef KG_BACKEND_H
#define KG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef struct kg_backend kg_backend;

typedef enum kg_act {
    KG_ACT_GELU,       /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    KG_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) (OpenAI CLIP) */
    KG_ACT_SILU,       /* x * sigmoid(x) */
} kg_act;

typedef enum kg_binary_op {
    KG_BIN_ADD,
    KG_BIN_MUL,
} kg_binary_op;

/* How b is matched against a in y = a (op) b. */
typedef enum kg_bcast {
    KG_BCAST_SAME,   /* b has a's shape */
    KG_BCAST_TILE,   /* b's elements are a's trailing dims, repeated over the leading ones:
                        x [B, T, D] + pos [T, D]; x [B, T, D] + bias [D] */
    KG_BCAST_SPREAD, /* b's elements are a's leading dims, each spread over the rest:
                        h [B, C, H, W] + temb [B, C]; x [B, T, D] * keep [B, T] */
} kg_bcast;

typedef struct kg_backend_ops {
    const char *name;

    /* memory: called at setup only, never inside a forward */
    void *(*alloc)(kg_backend *be, size_t nbytes);
    void (*free)(kg_backend *be, void *p);
    void (*upload)(kg_backend *be, void *dst, const void *src, size_t nbytes);
    void (*download)(kg_backend *be, void *dst, const void *src, size_t nbytes);
    /* host float32 <-> a tensor of the backend's float dtype (converting; no allocation) */
    void (*upload_f32)(kg_backend *be, kg_tensor *dst, const float *src);
    void (*download_f32)(kg_backend *be, float *dst, const kg_tensor *src);
    /* waits for queued work; returns (and keeps) the sticky error */
    kg_status (*sync)(kg_backend *be);
    void (*destroy)(kg_backend *be);

    /* y[..., N] = x[..., K] w[N, K]^T (+ b[N]) */
    void (*linear)(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b);
    /* y[B, Co, Ho, Wo] = conv(x[B, Ci, H, W], w[Co, Ci, kh, kw]) (+ b[Co]); y != x */
    void (*conv2d)(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                   const kg_tensor *b, int stride, int pad);
    /* x [B, C, ...]; statistics over (C / groups) * spatial; optional SiLU after */
    void (*group_norm)(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, int groups, float eps, int silu);
    /* over the last dim */
    void (*layer_norm)(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, float eps);
    /* q [B, Lq, H*Dh], k [B, Lk, H*Dh], v [B, Lk, H*Dv] -> o [B, Lq, H*Dv] (o != q, k, v).
     * softmax(scale * q k^T) v per head; key_pad [B, Lk] U8 (nonzero = key ignored) or NULL;
     * causal: query i sees keys j <= i (Lq == Lk). A row with every key masked gives 0. */
    void (*attention)(kg_backend *be, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                      const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                      int causal);
    void (*activation)(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act);
    /* x [..., 2N] -> y [..., N] = x[..., :N] * gelu(x[..., N:]) (diffusers GEGLU); y != x */
    void (*geglu)(kg_backend *be, kg_tensor *y, const kg_tensor *x);
    void (*binary)(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                   kg_binary_op op, kg_bcast bcast);
    /* y = alpha a + beta b (b may be NULL: y = alpha a) */
    void (*axpby)(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
                  const kg_tensor *b);
    /* x [B, C, H, W] -> y [B, C, 2H, 2W]; y != x */
    void (*upsample_nearest2x)(kg_backend *be, kg_tensor *y, const kg_tensor *x);
    /* x [B, C, H, W] -> y [B, C, Ho, Wo], any Ho, Wo >= 1: PyTorch's nearest interpolate to a
     * size, source row min(floor(o * (float)H / Ho), H - 1) in float arithmetic; y != x */
    void (*upsample_nearest)(kg_backend *be, kg_tensor *y, const kg_tensor *x);
    /* y = cat([a, b], dim); y != a, b */
    void (*concat)(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim);
    /* y = x.permute(perm) made contiguous; y != x; unused dims of perm are identity */
    void (*permute)(kg_backend *be, kg_tensor *y, const kg_tensor *x, const int perm[KG_MAX_DIMS]);
    /* same element count; converts between F32/F16/BF16 when dtypes differ */
    void (*copy)(kg_backend *be, kg_tensor *y, const kg_tensor *x);
    /* table [V, D], ids [N] (I32 or I64) -> y [N, D] */
    void (*embedding)(kg_backend *be, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids);
    /* over the last dim: x / max(||x||, eps) */
    void (*l2_normalize)(kg_backend *be, kg_tensor *y, const kg_tensor *x, float eps);
    void (*fill)(kg_backend *be, kg_tensor *y, float value);
    /* x [1, 3, H, W] in [-1, 1] -> 8-bit RGB (channels 3) or RGB + 255 (channels 4) rows of
     * pitch bytes at dst, memory of the backend's device: (x / 2 + 0.5) clamped to [0, 1],
     * times 255, rounded half to even, as the host path of kg_generate. NaN/Inf is reported
     * at the next sync as KG_ERR_NONFINITE. NULL on backends whose memory is the host's. */
    void (*image_to_device)(kg_backend *be, void *dst, size_t pitch, int channels,
                            const kg_tensor *x);
} kg_backend_ops;

struct kg_backend {
    const kg_backend_ops *ops;
    void *impl;             /* backend-private state */
    kg_dtype act_dtype;     /* dtype of activations, biases, norm parameters and tables */
    kg_dtype weight_dtype;  /* dtype of linear and conv weights: act_dtype everywhere but the
                                CPU in bf16 (act_dtype KG_F32, weight_dtype KG_BF16) */
    int host_memory;        /* 1: data pointers are host memory (weights may alias a mmap) */
    size_t n_allocs;        /* ops->alloc calls so far; tests assert it stays flat */
    size_t bytes_allocated; /* live bytes from ops->alloc */
    kg_error err;           /* sticky: the first failure wins until cleared */
};

/* The CPU reference backend: fp32, n_threads <= 0 picks the core count (at most
 * KG_CPU_MAX_THREADS). The environment variable KOSMOSG_CPU_ISA=base|avx2|avx512
 * caps the instruction set its kernels (and oneDNN's, process-wide) use. Its
 * linear and conv2d take KG_F32 or KG_BF16 weights (x, y, b KG_F32); bf16 mode
 * (the provider's cfg->dtype KG_BF16) only sets weight_dtype, so that the
 * loader stores those weights in bf16. */
#define KG_CPU_MAX_THREADS 1024
kg_status kg_backend_cpu_new(kg_backend **out, int n_threads, kg_error *err);

/* One line naming what a CPU backend dispatches to: threads, our kernels' ISA,
 * the GEMM library and its JIT ISA. Returns snprintf's count. */
int kg_backend_cpu_describe(kg_backend *be, char *buf, size_t n);

/* GEMM calls a CPU backend has made on bf16 (KG_BF16) weights, oneDNN's or its
 * fallback's, since creation; fp32 GEMMs never count. Tests use it to show the
 * bf16 kernels ran. */
int64_t kg_backend_cpu_bf16_gemms(kg_backend *be);

/* A host weight store: host memory with the memory ops only (no threads, no
 * scratch); what a CPU model keeps its weights in. act_dtype KG_F32;
 * weight_dtype KG_F32 or KG_BF16 (linear and conv weights rounded to nearest
 * even on upload_f32). */
kg_status kg_weight_store_host_new(kg_backend **out, kg_dtype weight_dtype, kg_error *err);

/* What the engine asks of a backend kind. A model keeps its weights in a
 * weight store: a kg_backend whose table fills only the memory ops (alloc,
 * free, upload, download, upload_f32, download_f32, sync, destroy) and owns
 * no stream, library handle or workspace. Each session computes on its own
 * full backend of the same kind, device and dtype, which reads the store's
 * memory (host pointers, or device pointers on the same device). */
typedef struct kg_backend_config {
    int device_id;
    kg_dtype dtype; /* activations and weights; the CPU: KG_F32, or KG_BF16 = bf16 linear and
                       conv weights with fp32 activations (weight_dtype) */
    int n_threads;  /* CPU; <= 0: all cores */
} kg_backend_config;

/* Bumped whenever kg_backend, kg_backend_ops or this struct change: libkosmosg
 * refuses a CUDA module built against another layout. */
#define KG_BACKEND_PROVIDER_ABI 2

typedef struct kg_backend_provider {
    unsigned abi;    /* KG_BACKEND_PROVIDER_ABI */
    size_t ops_size; /* sizeof(kg_backend_ops) */
    const char *name;
    kg_status (*weights_new)(kg_backend **out, const kg_backend_config *cfg, kg_error *err);
    kg_status (*compute_new)(kg_backend **out, const kg_backend_config *cfg, kg_error *err);
} kg_backend_provider;

/* The provider of kind (KG_BACKEND_CPU or KG_BACKEND_CUDA); KG_ERR_NO_DEVICE
 * with the reason when this build or host has no such backend. */
kg_status kg_backend_provider_get(kg_backend_kind kind, const kg_backend_provider **out,
                                  kg_error *err);

/* Releases the backend and everything it allocated. NULL is fine. */
void kg_backend_free(kg_backend *be);

/* Records a sticky error on the backend unless one is already there. */
void kg_backend_fail(kg_backend *be, kg_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
