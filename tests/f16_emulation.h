/* f16_emulation.h - a CPU backend that stores like an fp16 device.
 *
 * The CPU op table with every float result rounded to fp16 (round to nearest even,
 * overflow to Inf) and the weights and biases of linear/conv2d rounded before use;
 * arithmetic inside an op stays fp32, as in the CUDA backend (fp32 accumulation,
 * fp16 storage). Used in the CUDA backend's seat it shows, on a machine without a
 * GPU, how far plain fp16 storage moves each component from the fp32 CPU result:
 * the scale the CUDA parity tolerances must allow, and a run of the parity tests
 * in which the device side really differs from the reference (so their checks can
 * fail). Not a model of every CUDA rounding (e.g. fp16 attention probabilities).
 *
 * Header-only for the same reason as random_weights.h. One emulated table per
 * program: the wrapped CPU table is kept in a file-scope pointer. */
#ifndef KGT_F16_EMULATION_H
#define KGT_F16_EMULATION_H

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "tensor.h"

static const kg_backend_ops *kgt_f16e_cpu;
static kg_backend_ops kgt_f16e_ops;

static inline void kgt_f16e_round(float *x, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        x[i] = kg_f16_to_f32(kg_f32_to_f16(x[i]));
}

static inline void kgt_f16e_out(kg_tensor *y)
{
    if (y->dtype == KG_F32)
        kgt_f16e_round(y->data, kg_tensor_numel(y));
}

/* a rounded copy of a weight (malloc'd; NULL tensors stay NULL) */
static inline kg_tensor kgt_f16e_copy(kg_backend *be, const kg_tensor *w, float **mem)
{
    kg_tensor t = *w;
    size_t n = (size_t)kg_tensor_numel(w);
    *mem = malloc(n ? n * sizeof(float) : 1);
    if (!*mem) {
        kg_backend_fail(be, KG_ERR_NOMEM, "f16 emulation: no memory for a weight copy");
        return t;
    }
    memcpy(*mem, w->data, n * sizeof(float));
    kgt_f16e_round(*mem, (int64_t)n);
    t.data = *mem;
    return t;
}

static inline void kgt_f16e_linear(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                   const kg_tensor *w, const kg_tensor *b)
{
    float *wm = NULL, *bm = NULL;
    kg_tensor wr = kgt_f16e_copy(be, w, &wm), br = b ? kgt_f16e_copy(be, b, &bm) : (kg_tensor){0};
    if (wm && (!b || bm)) {
        kgt_f16e_cpu->linear(be, y, x, &wr, b ? &br : NULL);
        kgt_f16e_out(y);
    }
    free(wm);
    free(bm);
}

static inline void kgt_f16e_conv2d(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                   const kg_tensor *w, const kg_tensor *b, int stride, int pad)
{
    float *wm = NULL, *bm = NULL;
    kg_tensor wr = kgt_f16e_copy(be, w, &wm), br = b ? kgt_f16e_copy(be, b, &bm) : (kg_tensor){0};
    if (wm && (!b || bm)) {
        kgt_f16e_cpu->conv2d(be, y, x, &wr, b ? &br : NULL, stride, pad);
        kgt_f16e_out(y);
    }
    free(wm);
    free(bm);
}

static inline void kgt_f16e_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    kgt_f16e_cpu->upload_f32(be, dst, src);
    kgt_f16e_out(dst);
}

static inline void kgt_f16e_group_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                       const kg_tensor *g, const kg_tensor *b, int groups,
                                       float eps, int silu)
{
    kgt_f16e_cpu->group_norm(be, y, x, g, b, groups, eps, silu);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_layer_norm(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                       const kg_tensor *g, const kg_tensor *b, float eps)
{
    kgt_f16e_cpu->layer_norm(be, y, x, g, b, eps);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_attention(kg_backend *be, kg_tensor *o, const kg_tensor *q,
                                      const kg_tensor *k, const kg_tensor *v,
                                      const kg_tensor *key_pad, int n_heads, float scale,
                                      int causal)
{
    kgt_f16e_cpu->attention(be, o, q, k, v, key_pad, n_heads, scale, causal);
    kgt_f16e_out(o);
}

static inline void kgt_f16e_activation(kg_backend *be, kg_tensor *y, const kg_tensor *x, kg_act act)
{
    kgt_f16e_cpu->activation(be, y, x, act);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_geglu(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kgt_f16e_cpu->geglu(be, y, x);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_binary(kg_backend *be, kg_tensor *y, const kg_tensor *a,
                                   const kg_tensor *b, kg_binary_op op, kg_bcast bcast)
{
    kgt_f16e_cpu->binary(be, y, a, b, op, bcast);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_axpby(kg_backend *be, kg_tensor *y, float alpha, const kg_tensor *a,
                                  float beta, const kg_tensor *b)
{
    kgt_f16e_cpu->axpby(be, y, alpha, a, beta, b);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_concat(kg_backend *be, kg_tensor *y, const kg_tensor *a,
                                   const kg_tensor *b, int dim)
{
    kgt_f16e_cpu->concat(be, y, a, b, dim);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_copy_op(kg_backend *be, kg_tensor *y, const kg_tensor *x)
{
    kgt_f16e_cpu->copy(be, y, x);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_embedding(kg_backend *be, kg_tensor *y, const kg_tensor *table,
                                      const kg_tensor *ids)
{
    kgt_f16e_cpu->embedding(be, y, table, ids);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_l2_normalize(kg_backend *be, kg_tensor *y, const kg_tensor *x,
                                         float eps)
{
    kgt_f16e_cpu->l2_normalize(be, y, x, eps);
    kgt_f16e_out(y);
}

static inline void kgt_f16e_fill(kg_backend *be, kg_tensor *y, float value)
{
    kgt_f16e_cpu->fill(be, y, value);
    kgt_f16e_out(y);
}

/* Replaces the op table of the CPU backend be with the fp16-storage emulation.
 * upsample and permute only move activations, already fp16 values, so they keep
 * the CPU's ops; concat and copy may read a weight (the connector's latent
 * queries), so their results are rounded. */
static inline void kgt_f16e_wrap(kg_backend *be)
{
    kgt_f16e_cpu = be->ops;
    kgt_f16e_ops = *kgt_f16e_cpu;
    kgt_f16e_ops.name = "cpu-f16-emulated";
    kgt_f16e_ops.upload_f32 = kgt_f16e_upload_f32;
    kgt_f16e_ops.linear = kgt_f16e_linear;
    kgt_f16e_ops.conv2d = kgt_f16e_conv2d;
    kgt_f16e_ops.group_norm = kgt_f16e_group_norm;
    kgt_f16e_ops.layer_norm = kgt_f16e_layer_norm;
    kgt_f16e_ops.attention = kgt_f16e_attention;
    kgt_f16e_ops.activation = kgt_f16e_activation;
    kgt_f16e_ops.geglu = kgt_f16e_geglu;
    kgt_f16e_ops.binary = kgt_f16e_binary;
    kgt_f16e_ops.axpby = kgt_f16e_axpby;
    kgt_f16e_ops.concat = kgt_f16e_concat;
    kgt_f16e_ops.copy = kgt_f16e_copy_op;
    kgt_f16e_ops.embedding = kgt_f16e_embedding;
    kgt_f16e_ops.l2_normalize = kgt_f16e_l2_normalize;
    kgt_f16e_ops.fill = kgt_f16e_fill;
    be->ops = &kgt_f16e_ops;
}

/* A CPU backend (n_threads as kg_backend_cpu_new) with the emulating op table. */
static inline kg_status kgt_f16e_backend_new(kg_backend **out, int n_threads, kg_error *err)
{
    kg_status st = kg_backend_cpu_new(out, n_threads, err);
    if (st == KG_OK)
        kgt_f16e_wrap(*out);
    return st;
}

#endif
