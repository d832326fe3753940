/* clip_vit.h - the CLIP ViT image encoder as Kosmos-G runs it
 * (unilm/models/vl/clip.py VisualTransformer4Seq2Seq + ClipVisualOnly on
 * open_clip 1.3.0 with torchscale attention `ts_attn`).
 *
 * pixels [N, 3, S, S] -> conv1 (no bias) -> class token + positions ->
 * ln_pre -> pre-LN resblocks (ts_attn, QuickGELU MLP) -> ln_post on ALL
 * tokens -> per-token L2 normalisation -> [N, 1 + (S/P)^2, width].
 * There is no output projection. Weights: prefix "img_model.visual.". */
#ifndef KG_CLIP_VIT_H
#define KG_CLIP_VIT_H

#include <stdint.h>

#include "backend.h"
#include "json.h"
#include "mha.h"
#include "ops.h"
#include "safetensors.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_clip_config {
    int64_t width;      /* 1024 (ViT-L/14); tiny 64 */
    int layers;         /* 24; tiny 2 */
    int64_t head_width; /* 64 -> heads = width / head_width */
    int64_t patch_size; /* 14 */
    int64_t image_size; /* 224 */
    double mlp_ratio;   /* 4.0 -> mlp width = width * mlp_ratio */
    int quick_gelu;     /* 1: x * sigmoid(1.702 x) (forced by Kosmos-G); 0: exact GELU */
    float ln_eps;       /* 1e-5 */
    /* derived */
    int heads;
    int64_t mlp_width;
    int64_t grid;   /* image_size / patch_size */
    int64_t tokens; /* grid^2 + 1 */
} kg_clip_config;

/* Reads kg.config.clip: {"width","layers","head_width","patch_size",
 * "image_size","mlp_ratio", optional "act" ("quick_gelu" | "gelu",
 * default quick_gelu) and "ln_eps" (default 1e-5)}. */
kg_status kg_clip_config_from_json(kg_clip_config *cfg, const kg_json *j, kg_error *err);

typedef struct kg_clip_block {
    kg_tensor ln_1_w; /* [W]      transformer.resblocks.i.ln_1.weight */
    kg_tensor ln_1_b; /* [W]      transformer.resblocks.i.ln_1.bias */
    kg_mha attn;      /*          transformer.resblocks.i.ts_attn.{q,k,v,out}_proj */
    kg_tensor ln_2_w; /* [W]      transformer.resblocks.i.ln_2.weight */
    kg_tensor ln_2_b; /* [W]      transformer.resblocks.i.ln_2.bias */
    kg_tensor fc_w;   /* [M, W]   transformer.resblocks.i.mlp.c_fc.weight */
    kg_tensor fc_b;   /* [M]      transformer.resblocks.i.mlp.c_fc.bias */
    kg_tensor proj_w; /* [W, M]   transformer.resblocks.i.mlp.c_proj.weight */
    kg_tensor proj_b; /* [W]      transformer.resblocks.i.mlp.c_proj.bias */
} kg_clip_block;

typedef struct kg_clip {
    kg_clip_config cfg;
    kg_tensor conv1_w;     /* [W, 3, P, P] conv1.weight (no bias) */
    kg_tensor class_emb;   /* [W]          class_embedding */
    kg_tensor pos_emb;     /* [T, W]       positional_embedding */
    kg_tensor ln_pre_w;    /* [W]          ln_pre.weight */
    kg_tensor ln_pre_b;    /* [W]          ln_pre.bias */
    kg_clip_block *blocks; /* [layers] */
    kg_tensor ln_post_w;   /* [W]          ln_post.weight */
    kg_tensor ln_post_b;   /* [W]          ln_post.bias */
    void *blob;
} kg_clip;

/* prefix: "img_model.visual." in the model file. */
kg_status kg_clip_load(kg_clip *m, const kg_clip_config *cfg, kg_backend *be, const kg_st_file *st,
                       const char *prefix, kg_error *err);
void kg_clip_free(kg_clip *m, kg_backend *be);

/* out [N, T, W] = L2-normalised ln_post output of every token for pixels
 * [N, 3, S, S] (kg_image_preprocess values). Taps: visual.conv1 [N, W, G, G],
 * visual.ln_pre, visual.transformer.resblocks.<i>, visual.ln_post. */
void kg_clip_forward(kg_ctx *c, const kg_clip *m, kg_tensor *out, const kg_tensor *pixels);

#endif
