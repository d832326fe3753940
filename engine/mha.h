/* mha.h - the torchscale / fairseq MultiheadAttention every Kosmos-G transformer uses.
 *
 * Separate q/k/v/out projections with biases (`<path>.{q,k,v,out}_proj.{weight,bias}`),
 * q·k^T scaled by 1/sqrt(head_dim), softmax, and, for MAGNETO sub-LN
 * (torchscale `subln=True`, self-attention only), a LayerNorm `<path>.inner_attn_ln`
 * over the concatenated heads before out_proj. Used by the MLLM and the AlignerNet
 * (torchscale), the connector (fairseq) and CLIP's `ts_attn`. */
#ifndef KG_MHA_H
#define KG_MHA_H

#include <stdint.h>

#include "ops.h"
#include "status.h"
#include "tensor.h"
#include "weights.h"

typedef struct kg_mha {
    int64_t dim;     /* embed_dim D (q, k, v and output width) */
    int heads;       /* head_dim = D / heads */
    int inner_ln;    /* 1: sub-LN inner_attn_ln present */
    float ln_eps;    /* eps of inner_attn_ln */
    kg_tensor q_w;   /* [D, D]  <path>.q_proj.weight */
    kg_tensor q_b;   /* [D]     <path>.q_proj.bias */
    kg_tensor k_w;   /* [D, D]  <path>.k_proj.weight */
    kg_tensor k_b;   /* [D]     <path>.k_proj.bias */
    kg_tensor v_w;   /* [D, D]  <path>.v_proj.weight */
    kg_tensor v_b;   /* [D]     <path>.v_proj.bias */
    kg_tensor out_w; /* [D, D]  <path>.out_proj.weight */
    kg_tensor out_b; /* [D]     <path>.out_proj.bias */
    kg_tensor ln_w;  /* [D]     <path>.inner_attn_ln.weight (only with inner_ln) */
    kg_tensor ln_b;  /* [D]     <path>.inner_attn_ln.bias (only with inner_ln) */
} kg_mha;

/* Loads the projections under `path` (relative to the loader's prefix, e.g.
 * "layers.3.self_attn"); inner_ln selects whether inner_attn_ln is expected. */
kg_status kg_mha_load(kg_mha *a, kg_loader *L, const char *path, int64_t dim, int heads,
                      int inner_ln, float ln_eps);

/* out [B, Lq, D] = MHA(query xq [B, Lq, D], key/value xkv [B, Lk, D]).
 * key_pad: U8 [B, Lk] on the backend (nonzero = key ignored) or NULL; causal
 * needs Lq == Lk. out may alias xq or xkv; scratch is released before return. */
void kg_mha_forward(kg_ctx *c, const kg_mha *a, kg_tensor *out, const kg_tensor *xq,
                    const kg_tensor *xkv, const kg_tensor *key_pad, int causal);

#endif
