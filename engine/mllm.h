/* mllm.h - the Kosmos-G multimodal LLM (`gpt_model.decoder`, unilm/models/gpt.py LMDecoder).
 *
 * Token embedding with the image slots overwritten by the connector output, scaled
 * by sqrt(dim), plus fairseq sinusoidal positions (from 2, pad id 1); `layers` pre-LN
 * torchscale decoder layers with MAGNETO sub-LN (inner LN after attention, LN inside
 * the FFN), exact GELU, causal self-attention without padding mask and without
 * xPos; final LayerNorm. The output is the hidden state at every position
 * ([B, T, dim]); the tied-output logits the reference computes and discards are
 * not computed. Facts: docs kosmosg-reference.md 1.6-1.7. */
#ifndef KG_MLLM_H
#define KG_MLLM_H

#include <stdint.h>

#include "backend.h"
#include "ffn.h"
#include "json.h"
#include "mha.h"
#include "ops.h"
#include "safetensors.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_mllm_config {
    int64_t dim;           /* 2048 (tiny: 40) */
    int64_t ffn;           /* 8192 */
    int64_t heads;         /* 32 */
    int64_t layers;        /* 24 */
    int64_t vocab;         /* 64007 */
    int64_t max_positions; /* 2048: rows of the sinusoid table beyond pad + 1 */
    int64_t pad;           /* 1: fairseq <pad>, also the positions' padding_idx */
    float ln_eps;          /* 1e-5 */
} kg_mllm_config;

/* Reads kg.config.mllm: dim, ffn, heads, layers, vocab required; max_positions
 * (2048), pad (1) and ln_eps (1e-5) optional. */
kg_status kg_mllm_config_from_json(kg_mllm_config *cfg, const kg_json *j, kg_error *err);

typedef struct kg_mllm_layer {
    kg_tensor attn_ln_w; /* [D]     layers.i.self_attn_layer_norm.weight */
    kg_tensor attn_ln_b; /* [D]     layers.i.self_attn_layer_norm.bias */
    kg_mha attn;         /*         layers.i.self_attn.{q,k,v,out}_proj, .inner_attn_ln */
    kg_ffn ffn; /*         layers.i.final_layer_norm, layers.i.ffn.{fc1,ffn_layernorm,fc2} */
} kg_mllm_layer;

typedef struct kg_mllm {
    kg_mllm_config cfg;
    kg_tensor embed;       /* [V, D]  embed_tokens.weight */
    kg_mllm_layer *layers; /* [layers] */
    kg_tensor ln_w;        /* [D]     layer_norm.weight */
    kg_tensor ln_b;        /* [D]     layer_norm.bias */
    kg_tensor positions;   /* [max_positions + pad + 1, D] sinusoid table, computed at load */
    void *blob;            /* weights */
    void *pos_blob;        /* backend memory of `positions` */
} kg_mllm;

/* prefix: "gpt_model.decoder." in a model file. */
kg_status kg_mllm_load(kg_mllm *m, const kg_mllm_config *cfg, kg_backend *be, const kg_st_file *st,
                       const char *prefix, kg_error *err);
void kg_mllm_free(kg_mllm *m, kg_backend *be);

/* out [B, T, D] = final-LN hidden states at all positions.
 * tokens: host fairseq ids [B*T], batches right-padded with `pad` (the official
 * forward has no padding mask, so pads only ever attend after the real tokens).
 * img_mask: host [B*T] (nonzero = image slot) or NULL; img_features [n_slots, D]
 * holds the connector rows in mask order (row-major over B, T), NULL when no
 * slot is set. Taps (golden names): embed_tokens (lookup before the splice),
 * embed_positions, embedding, layers.i, layer_norm. */
void kg_mllm_forward(kg_ctx *c, const kg_mllm *m, kg_tensor *out, const int32_t *tokens,
                     const uint8_t *img_mask, const kg_tensor *img_features, int64_t B, int64_t T);

#endif
