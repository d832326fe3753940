/* cuda_kernels.h - private state of the CUDA backend and its op entry points.
 *
 * Plain C so backend_cuda.c and the library glue (gemm.c) can include it;
 * the .cu files implement the entry points with extern "C" linkage. Each
 * op file follows ggml-cuda's three layers: __global__ kernel -> static
 * launcher taking a cudaStream_t -> the kg_cuda_* entry point below. */
#ifndef KG_CUDA_KERNELS_H
#define KG_CUDA_KERNELS_H

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#ifdef __cplusplus
extern "C" {
#endif

/* the engine headers are plain C without linkage guards */
#include "backend.h"

/* cuBLASLt workspace (llm.c uses 32 MiB on Hopper) and cuDNN convolution
 * workspace: both allocated once at creation. */
#define KG_CUDA_LT_WS_BYTES ((size_t)32 << 20)
#define KG_CUDA_DNN_WS_BYTES ((size_t)256 << 20)
/* Pinned host + device staging for the converting f32 transfers. */
#define KG_CUDA_STAGE_BYTES ((size_t)8 << 20)
/* Group norm partial sums (floats, each of two arrays) for groups spread
 * over several blocks; larger requests take the one-block-per-group path. */
#define KG_CUDA_GN_PARTIALS 65536
/* Plans cached per shape; a full table still works (the plan is recomputed). */
#define KG_CUDA_GEMM_PLANS 256
#define KG_CUDA_CONV_PLANS 128

/* Errors a kernel finds on the device; read and cleared by sync(). */
typedef struct kg_cuda_flags {
    int embed_bad;      /* an embedding id was out of range */
    int image_bad;      /* image_to_device met NaN/Inf */
    long long embed_id; /* the first such id, its position, the table rows */
    long long embed_pos;
    long long embed_rows;
    long long image_pos; /* element of the first NaN/Inf in the [3, H, W] image */
} kg_cuda_flags;

typedef struct kg_cuda_gemm_plan {
    int64_t m, n, k;
    int bias;
    unsigned align;
    cublasLtMatmulAlgo_t algo;
} kg_cuda_gemm_plan;

typedef struct kg_cuda_conv_plan {
    int64_t key[9]; /* B, Ci, H, W, Co, kh, kw, stride, pad */
    int direct;     /* cuDNN offered no algorithm: the plain kernel of conv2d.cu */
    cudnnConvolutionFwdAlgo_t algo;
    cudnnMathType_t math;
    size_t ws_bytes;
} kg_cuda_conv_plan;

/* One live ops->alloc block, so free() can keep bytes_allocated exact. */
typedef struct kg_cuda_block {
    void *p;
    size_t n;
    struct kg_cuda_block *next;
} kg_cuda_block;

typedef struct kg_cuda {
    int device;
    kg_cuda_block *blocks;
    int smem_optin; /* bytes of shared memory a block may opt in to */
    cudaStream_t stream;
    cublasLtHandle_t lt;
    cudnnHandle_t dnn;
    void *lt_ws;
    void *dnn_ws;
    void *stage_host;   /* pinned, KG_CUDA_STAGE_BYTES */
    void *stage_dev;    /* device, KG_CUDA_STAGE_BYTES */
    float *gn_partials; /* device, 2 * KG_CUDA_GN_PARTIALS: sums, then squared deviations */
    kg_cuda_flags *flags_dev;
    kg_cuda_flags *flags_host; /* pinned */
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    kg_cuda_gemm_plan gemm[KG_CUDA_GEMM_PLANS];
    int n_gemm;
    kg_cuda_conv_plan conv[KG_CUDA_CONV_PLANS];
    int n_conv;
} kg_cuda;

static inline kg_cuda *kg_cuda_of(kg_backend *be)
{
    return (kg_cuda *)be->impl;
}

/* Record a failed runtime call / launch as the sticky KG_ERR_DEVICE with the
 * runtime's message. Return 1 when all is well. */
int kg_cuda_check(kg_backend *be, cudaError_t e, const char *what);
int kg_cuda_check_launch(kg_backend *be, const char *what);

/* n elements of float dtype sd at src -> float dtype dd at dst, both on the
 * device, queued on the backend's stream (dd == sd copies). */
void kg_cuda_convert(kg_backend *be, void *dst, kg_dtype dd, const void *src, kg_dtype sd,
                     int64_t n);

/* op table entries (semantics: engine/backend.h) */
void kg_cuda_linear(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                    const kg_tensor *b);
/* the plain GEMM linear falls back to when cuBLASLt offers no algorithm */
void kg_cuda_gemm_simple(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                         const kg_tensor *b);
void kg_cuda_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                    const kg_tensor *b, int stride, int pad);
/* the direct kernel conv2d falls back to when cuDNN offers no algorithm */
void kg_cuda_conv2d_direct(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                           const kg_tensor *b, int stride, int pad);
void kg_cuda_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                        const kg_tensor *beta, int groups, float eps, int silu);
void kg_cuda_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                        const kg_tensor *beta, float eps);
void kg_cuda_l2_normalize(kg_backend *be, kg_tensor *y, const kg_tensor *x, float eps);
void kg_cuda_attention(kg_backend *be, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                       const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                       int causal);
/* the CUDA-core kernel attention uses for fp32 and where the tensor-core one does not fit */
void kg_cuda_attention_plain(kg_backend *be, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                             const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                             int causal);
void kg_cuda_activation(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act);
void kg_cuda_geglu(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cuda_binary(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b,
                    kg_binary_op op, kg_bcast bcast);
void kg_cuda_axpby(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
                   const kg_tensor *b);
void kg_cuda_fill(kg_backend *be, kg_tensor *y, float value);
void kg_cuda_image_to_device(kg_backend *be, void *dst, size_t pitch, int channels,
                             const kg_tensor *x);
void kg_cuda_upsample_nearest2x(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cuda_upsample_nearest(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cuda_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim);
void kg_cuda_permute(kg_backend *be, kg_tensor *y, const kg_tensor *x, const int perm[KG_MAX_DIMS]);
void kg_cuda_copy(kg_backend *be, kg_tensor *y, const kg_tensor *x);
void kg_cuda_embedding(kg_backend *be, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids);

#ifdef __cplusplus
}
#endif

#endif
