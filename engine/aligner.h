/* aligner.h - AlignerNet, the half Kosmos-G runs at inference (`aligner`,
 * unilm/models/aligner.py Aligner_encoder).
 *
 * encoder_proj (torchscale Encoder): Linear in -> dim as embed_tokens, learned
 * positions from row 2 (independent of padding), padded rows zeroed, enc_layers
 * pre-LN sub-LN layers whose self-attention ignores pad keys, final LN.
 * encoder (torchscale Decoder, encoder-decoder, no causal mask): `queries`
 * learned queries without positions or scaling, dec_layers of self-attention
 * (sub-LN), cross-attention to encoder_proj's output (pad keys ignored, no inner
 * LN) and sub-LN FFN, final LN -> [B, queries, dim]. No output projection.
 * Facts: docs kosmosg-reference.md 1.8. */
#ifndef KG_ALIGNER_H
#define KG_ALIGNER_H

#include <stdint.h>

#include "backend.h"
#include "json.h"
#include "ffn.h"
#include "mha.h"
#include "ops.h"
#include "safetensors.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_aligner_config {
    int64_t in;         /* 2048: MLLM width (tiny: 40) */
    int64_t dim;        /* 768 */
    int64_t ffn;        /* 3072 */
    int64_t heads;      /* 12 */
    int64_t enc_layers; /* 12 */
    int64_t dec_layers; /* 12 */
    int64_t queries;    /* 77 */
    int64_t positions;  /* 32768: rows of the learned position table */
    float ln_eps;       /* 1e-5 */
} kg_aligner_config;

/* Reads kg.config.aligner: in, dim, ffn, heads, enc_layers, dec_layers,
 * queries, positions required; ln_eps optional (1e-5). */
kg_status kg_aligner_config_from_json(kg_aligner_config *cfg, const kg_json *j, kg_error *err);

/* Pre-LN FFN with sub-LN: x + fc2(LN_mid(gelu(fc1(LN(x))))). */
typedef struct kg_aligner_layer {
    kg_tensor attn_ln_w;  /* [d]  <layer>.self_attn_layer_norm.weight */
    kg_tensor attn_ln_b;  /* [d]  <layer>.self_attn_layer_norm.bias */
    kg_mha attn;          /*      <layer>.self_attn.{q,k,v,out}_proj, .inner_attn_ln */
    kg_tensor cross_ln_w; /* [d]  <layer>.encoder_attn_layer_norm.weight (decoder only) */
    kg_tensor cross_ln_b; /* [d]  <layer>.encoder_attn_layer_norm.bias (decoder only) */
    kg_mha cross;         /*      <layer>.encoder_attn.{q,k,v,out}_proj (decoder only) */
    kg_ffn ffn;           /*      <layer>.final_layer_norm, <layer>.ffn.* */
} kg_aligner_layer;

typedef struct kg_aligner {
    kg_aligner_config cfg;
    kg_tensor in_w;        /* [d, in]   encoder_proj.embed_tokens.weight */
    kg_tensor in_b;        /* [d]       encoder_proj.embed_tokens.bias */
    kg_tensor pos;         /* [P, d]    encoder_proj.embed_positions.weight */
    kg_aligner_layer *enc; /* [enc_layers] encoder_proj.layers.i */
    kg_tensor enc_ln_w;    /* [d]       encoder_proj.layer_norm.weight */
    kg_tensor enc_ln_b;    /* [d]       encoder_proj.layer_norm.bias */
    kg_tensor query;       /* [Q, d]    encoder_query */
    kg_aligner_layer *dec; /* [dec_layers] encoder.layers.i */
    kg_tensor dec_ln_w;    /* [d]       encoder.layer_norm.weight */
    kg_tensor dec_ln_b;    /* [d]       encoder.layer_norm.bias */
    void *blob;
} kg_aligner;

/* prefix: "aligner." in a model file. */
kg_status kg_aligner_load(kg_aligner *m, const kg_aligner_config *cfg, kg_backend *be,
                          const kg_st_file *st, const char *prefix, kg_error *err);
void kg_aligner_free(kg_aligner *m, kg_backend *be);

/* out [B, queries, dim] from the MLLM hidden states hidden [B, T, in].
 * pad_mask: host [B*T], nonzero = pad token (tokens == 1), or NULL for none.
 * Taps (golden names): encoder_proj.{embed_tokens, embed_positions, embedding,
 * layers.i, layer_norm}, encoder.{layers.i, layer_norm}. */
void kg_aligner_forward(kg_ctx *c, const kg_aligner *m, kg_tensor *out, const kg_tensor *hidden,
                        const uint8_t *pad_mask);

#endif
