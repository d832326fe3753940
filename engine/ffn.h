/* ffn.h - the torchscale FeedForwardNetwork with MAGNETO sub-LN that the MLLM
 * and the AlignerNet layers share: x += fc2(LN_mid(gelu(fc1(LN(x))))). */
#ifndef KG_FFN_H
#define KG_FFN_H

#include <stdint.h>

#include "ops.h"
#include "weights.h"

typedef struct kg_ffn {
    int64_t dim;    /* D */
    int64_t hidden; /* F */
    float ln_eps;
    kg_tensor ln_w;     /* [D]     <layer>.final_layer_norm.weight (pre-FFN LN) */
    kg_tensor ln_b;     /* [D]     <layer>.final_layer_norm.bias */
    kg_tensor fc1_w;    /* [F, D]  <layer>.ffn.fc1.weight */
    kg_tensor fc1_b;    /* [F]     <layer>.ffn.fc1.bias */
    kg_tensor mid_ln_w; /* [F]     <layer>.ffn.ffn_layernorm.weight (sub-LN) */
    kg_tensor mid_ln_b; /* [F]     <layer>.ffn.ffn_layernorm.bias */
    kg_tensor fc2_w;    /* [D, F]  <layer>.ffn.fc2.weight */
    kg_tensor fc2_b;    /* [D]     <layer>.ffn.fc2.bias */
} kg_ffn;

/* Loads the pre-FFN LayerNorm and the FFN of `layer` (e.g. "layers.3"). */
void kg_ffn_load(kg_ffn *f, kg_loader *L, const char *layer, int64_t dim, int64_t hidden,
                 float ln_eps);

/* x [B, T, D] += FFN(LN(x)); scratch is released before return. */
void kg_ffn_forward(kg_ctx *c, const kg_ffn *f, kg_tensor *x);

#endif
