/* unet.h - Stable Diffusion 1.5 U-Net (diffusers 0.21.4 UNet2DConditionModel).
 *
 * General over the diffusers config (widths, layers per block, heads,
 * cross-attention width, norm groups/eps, block types), so the tiny test
 * models and the real SD1.5 run through the same code. Kosmos-G uses the
 * model unmodified; the facts are in kosmosg-reference.md 1.10. */
#ifndef KG_UNET_H
#define KG_UNET_H

#include <stdint.h>

#include "backend.h"
#include "json.h"
#include "ops.h"
#include "safetensors.h"
#include "sd_blocks.h"
#include "status.h"
#include "weights.h"

#define KG_UNET_MAX_BLOCKS 6
#define KG_UNET_MAX_LAYERS 4      /* resnets per down block; up blocks have one more */
#define KG_UNET_MAX_TLAYERS 2     /* BasicTransformerBlocks per Transformer2DModel */
#define KG_UNET_MAX_TIME_DIM 4096 /* time_proj width = block_out_channels[0] */
/* skip connections: conv_in, every down resnet (+ attention) and every downsampler */
#define KG_UNET_MAX_SKIPS (1 + KG_UNET_MAX_BLOCKS * (KG_UNET_MAX_LAYERS + 1))

typedef struct kg_unet_config {
    int64_t in_channels;                            /* 4 */
    int64_t out_channels;                           /* 4 */
    int n_blocks;                                   /* 4 */
    int64_t block_out_channels[KG_UNET_MAX_BLOCKS]; /* 320, 640, 1280, 1280 */
    int layers_per_block[KG_UNET_MAX_BLOCKS];       /* 2 (up blocks: +1) */
    int down_cross[KG_UNET_MAX_BLOCKS]; /* CrossAttnDownBlock2D (1) or DownBlock2D (0) */
    int up_cross[KG_UNET_MAX_BLOCKS];   /* CrossAttnUpBlock2D (1) or UpBlock2D (0) */
    int heads[KG_UNET_MAX_BLOCKS];      /* attention_head_dim: 8 (= heads, diffusers quirk) */
    int transformer_layers[KG_UNET_MAX_BLOCKS]; /* transformer_layers_per_block: 1 */
    int64_t cross_attention_dim;                /* 768 */
    int norm_num_groups;                        /* 32 */
    float norm_eps;                             /* 1e-5 */
    int flip_sin_to_cos;                        /* 1: timestep embedding is [cos, sin] */
    float freq_shift;                           /* 0 */
    int downsample_padding;                     /* 1 */
} kg_unet_config;

/* Reads a diffusers unet/config.json object; absent keys take the diffusers
 * defaults. Options this implementation does not have give KG_ERR_UNSUPPORTED. */
kg_status kg_unet_config_from_json(kg_unet_config *cfg, const kg_json *j, kg_error *err);
/* The same for a model that has only the encoder half (a ControlNet's config):
 * up_block_types is not read. */
kg_status kg_unet_encoder_config_from_json(kg_unet_config *cfg, const kg_json *j, kg_error *err);

/* Channels and sizes of the skip connections for a latent of H x W, in push
 * order (conv_in first); returns their number. */
int kg_unet_skip_shapes(const kg_unet_config *cfg, int64_t H, int64_t W, int64_t *ch, int64_t *h,
                        int64_t *w);

/* diffusers Attention (to_q/to_k/to_v without bias, to_out.0 with bias) */
typedef struct kg_unet_attn {
    kg_tensor q_w;   /* [C, C]   .to_q.weight */
    kg_tensor k_w;   /* [C, Ckv] .to_k.weight (Ckv = C self, cross_attention_dim cross) */
    kg_tensor v_w;   /* [C, Ckv] .to_v.weight */
    kg_tensor out_w; /* [C, C]   .to_out.0.weight */
    kg_tensor out_b; /* [C]      .to_out.0.bias */
} kg_unet_attn;

/* BasicTransformerBlock: self-attn, cross-attn, GEGLU feed-forward, each pre-LN + residual */
typedef struct kg_unet_tblock {
    kg_tensor norm1_w, norm1_b; /* [C] .norm1.{weight,bias} */
    kg_unet_attn attn1;         /* .attn1 (self) */
    kg_tensor norm2_w, norm2_b; /* [C] .norm2.{weight,bias} */
    kg_unet_attn attn2;         /* .attn2 (cross, k/v from the context) */
    kg_tensor norm3_w, norm3_b; /* [C] .norm3.{weight,bias} */
    kg_tensor ff_in_w;          /* [8C, C] .ff.net.0.proj.weight (GEGLU: value half, gate half) */
    kg_tensor ff_in_b;          /* [8C]    .ff.net.0.proj.bias */
    kg_tensor ff_out_w;         /* [C, 4C] .ff.net.2.weight */
    kg_tensor ff_out_b;         /* [C]     .ff.net.2.bias */
} kg_unet_tblock;

/* Transformer2DModel with 1x1-conv projections (use_linear_projection false) */
typedef struct kg_unet_transformer {
    int64_t channels;
    int heads;
    int n_layers;
    kg_tensor norm_w, norm_b;                   /* [C] .norm.{weight,bias} (GroupNorm, eps 1e-6) */
    kg_tensor proj_in_w;                        /* [C, C, 1, 1] .proj_in.weight */
    kg_tensor proj_in_b;                        /* [C] .proj_in.bias */
    kg_tensor proj_out_w;                       /* [C, C, 1, 1] .proj_out.weight */
    kg_tensor proj_out_b;                       /* [C] .proj_out.bias */
    kg_unet_tblock blocks[KG_UNET_MAX_TLAYERS]; /* .transformer_blocks.<j> */
} kg_unet_transformer;

/* CrossAttnDownBlock2D / DownBlock2D (down_blocks.<i>) and CrossAttnUpBlock2D /
 * UpBlock2D (up_blocks.<i>) */
typedef struct kg_unet_block {
    int n_layers;
    int has_attn;
    int has_resample; /* downsamplers.0 (stride-2 conv) / upsamplers.0 (nearest x2 + conv) */
    kg_sd_resnet resnets[KG_UNET_MAX_LAYERS + 1];      /* .resnets.<l> */
    kg_unet_transformer attns[KG_UNET_MAX_LAYERS + 1]; /* .attentions.<l> */
    kg_tensor resample_w; /* [C, C, 3, 3] .{downsamplers,upsamplers}.0.conv.weight */
    kg_tensor resample_b; /* [C] .{downsamplers,upsamplers}.0.conv.bias */
} kg_unet_block;

typedef struct kg_unet {
    kg_unet_config cfg;
    kg_tensor conv_in_w;                    /* [C0, in, 3, 3] conv_in.weight */
    kg_tensor conv_in_b;                    /* [C0] conv_in.bias */
    kg_tensor time1_w;                      /* [4 C0, C0] time_embedding.linear_1.weight */
    kg_tensor time1_b;                      /* [4 C0] time_embedding.linear_1.bias */
    kg_tensor time2_w;                      /* [4 C0, 4 C0] time_embedding.linear_2.weight */
    kg_tensor time2_b;                      /* [4 C0] time_embedding.linear_2.bias */
    kg_unet_block down[KG_UNET_MAX_BLOCKS]; /* down_blocks.<i> */
    kg_sd_resnet mid_resnets[2];            /* mid_block.resnets.{0,1} */
    kg_unet_transformer mid_attn;           /* mid_block.attentions.0 */
    kg_unet_block up[KG_UNET_MAX_BLOCKS];   /* up_blocks.<i> */
    kg_tensor norm_out_w;                   /* [C0] conv_norm_out.weight */
    kg_tensor norm_out_b;                   /* [C0] conv_norm_out.bias */
    kg_tensor conv_out_w;                   /* [out, C0, 3, 3] conv_out.weight */
    kg_tensor conv_out_b;                   /* [out] conv_out.bias */
    void *blob;
} kg_unet;

/* Loads every tensor under prefix (e.g. "diffusion_unet.unet." or "") with
 * its exact shape; the first missing or mis-shaped one gives KG_ERR_WEIGHTS
 * naming it. */
kg_status kg_unet_load(kg_unet *m, const kg_unet_config *cfg, kg_backend *be, const kg_st_file *st,
                       const char *prefix, kg_error *err);
void kg_unet_free(kg_unet *m, kg_backend *be);
/* Inside a load function: conv_in, time_embedding, down_blocks and mid_block of
 * m->cfg (the part a ControlNet copies), under the loader's prefix. */
kg_status kg_unet_load_encoder(kg_unet *m, kg_loader *L);

/* What the encoder half leaves for the decoder half (all in the arena). */
typedef struct kg_unet_state {
    kg_tensor emb_act; /* [B, 4 C0] SiLU(time embedding) */
    int n_skips;
    kg_tensor skips[KG_UNET_MAX_SKIPS]; /* in push order */
    kg_tensor mid;                      /* mid_block output */
} kg_unet_state;

/* Time embedding, conv_in (+ add when not NULL: a ControlNet's conditioning
 * embedding), down blocks and mid block. Inputs are not checked (the callers do);
 * the state is allocated from the arena and stays until the caller resets it. */
void kg_unet_encode(kg_ctx *c, const kg_unet *m, kg_unet_state *st, const kg_tensor *sample,
                    const float *timesteps, const kg_tensor *context, const kg_tensor *add);

/* ControlNet residuals added to the skip connections and to the mid block's output
 * (diffusers down_block_additional_residuals / mid_block_additional_residual). */
typedef struct kg_unet_residuals {
    int n_down;
    kg_tensor down[KG_UNET_MAX_SKIPS]; /* shapes of kg_unet_skip_shapes */
    kg_tensor mid;
} kg_unet_residuals;

/* Zero-filled residuals for a batch of B latents of H x W, from the arena. */
void kg_unet_residuals_new(kg_ctx *c, const kg_unet_config *cfg, kg_unet_residuals *r, int64_t B,
                           int64_t H, int64_t W);

/* out [B, out_channels, H, W] = epsilon prediction for sample [B, in_channels, H, W] at
 * timesteps (host floats, [B]) conditioned on context [B, L, cross_attention_dim].
 * H and W must be divisible by 2^(number of downsamplers). Scratch comes from the
 * arena and is released before returning. Returns the context's sticky status. */
kg_status kg_unet_forward(kg_ctx *c, const kg_unet *m, kg_tensor *out, const kg_tensor *sample,
                          const float *timesteps, const kg_tensor *context);
/* The same with ControlNet residuals (NULL: none); mismatched residuals give KG_ERR_SHAPE. */
kg_status kg_unet_forward_res(kg_ctx *c, const kg_unet *m, kg_tensor *out, const kg_tensor *sample,
                              const float *timesteps, const kg_tensor *context,
                              const kg_unet_residuals *res);

#endif
