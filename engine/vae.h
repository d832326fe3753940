/* vae.h - Stable Diffusion 1.5 VAE decoder (diffusers 0.21.4 AutoencoderKL.decode:
 * post_quant_conv + Decoder).
 *
 * General over the diffusers config (widths, layers per block, norm groups), so
 * the tiny test models and the real SD1.5 VAE run through the same code. The
 * mid-block attention accepts both key namings (to_q/to_k/to_v/to_out.0 and the
 * legacy query/key/value/proj_attn, stored as [C, C] or [C, C, 1, 1]). */
#ifndef KG_VAE_H
#define KG_VAE_H

#include <stdint.h>

#include "backend.h"
#include "json.h"
#include "ops.h"
#include "safetensors.h"
#include "sd_blocks.h"
#include "status.h"
#include "weights.h"

#define KG_VAE_MAX_BLOCKS 6
#define KG_VAE_MAX_LAYERS 4 /* layers_per_block; each up block has one more resnet */

typedef struct kg_vae_config {
    int64_t latent_channels;                       /* 4 */
    int64_t out_channels;                          /* 3 */
    int n_blocks;                                  /* 4 */
    int64_t block_out_channels[KG_VAE_MAX_BLOCKS]; /* 128, 256, 512, 512 */
    int layers_per_block;                          /* 2 (up blocks: 3 resnets) */
    int norm_num_groups;                           /* 32 */
} kg_vae_config;

/* Reads a diffusers vae/config.json object; absent keys take the diffusers defaults. */
kg_status kg_vae_config_from_json(kg_vae_config *cfg, const kg_json *j, kg_error *err);

/* UpDecoderBlock2D (decoder.up_blocks.<i>) */
typedef struct kg_vae_block {
    int n_layers;
    int has_upsample;
    kg_sd_resnet resnets[KG_VAE_MAX_LAYERS + 1]; /* .resnets.<l> */
    kg_tensor up_w;                              /* [C, C, 3, 3] .upsamplers.0.conv.weight */
    kg_tensor up_b;                              /* [C] .upsamplers.0.conv.bias */
} kg_vae_block;

typedef struct kg_vae {
    kg_vae_config cfg;
    kg_tensor post_quant_w;      /* [lat, lat, 1, 1] post_quant_conv.weight */
    kg_tensor post_quant_b;      /* [lat] post_quant_conv.bias */
    kg_tensor conv_in_w;         /* [Ctop, lat, 3, 3] decoder.conv_in.weight */
    kg_tensor conv_in_b;         /* [Ctop] decoder.conv_in.bias */
    kg_sd_resnet mid_resnets[2]; /* decoder.mid_block.resnets.{0,1} */
    /* decoder.mid_block.attentions.0: one head of width Ctop */
    kg_tensor attn_norm_w;              /* [Ctop] .group_norm.weight */
    kg_tensor attn_norm_b;              /* [Ctop] .group_norm.bias */
    kg_tensor q_w, q_b;                 /* [Ctop, Ctop] (or [.., 1, 1]), [Ctop] .to_q | .query */
    kg_tensor k_w, k_b;                 /* .to_k | .key */
    kg_tensor v_w, v_b;                 /* .to_v | .value */
    kg_tensor o_w, o_b;                 /* .to_out.0 | .proj_attn */
    kg_vae_block up[KG_VAE_MAX_BLOCKS]; /* decoder.up_blocks.<i> */
    kg_tensor norm_out_w;               /* [C0] decoder.conv_norm_out.weight */
    kg_tensor norm_out_b;               /* [C0] decoder.conv_norm_out.bias */
    kg_tensor conv_out_w;               /* [out, C0, 3, 3] decoder.conv_out.weight */
    kg_tensor conv_out_b;               /* [out] decoder.conv_out.bias */
    void *blob;
} kg_vae;

/* Loads post_quant_conv.* and decoder.* under prefix (e.g. "vae.vae." or ""); the
 * first missing or mis-shaped tensor gives KG_ERR_WEIGHTS naming it. */
kg_status kg_vae_load(kg_vae *m, const kg_vae_config *cfg, kg_backend *be, const kg_st_file *st,
                      const char *prefix, kg_error *err);
void kg_vae_free(kg_vae *m, kg_backend *be);

/* out [B, out_channels, H * 2^(n_blocks-1), W * 2^(n_blocks-1)] = decode(z [B, lat, H, W]);
 * z is already divided by the scaling factor (0.18215) by the caller. Scratch comes from
 * the arena and is released before returning. Returns the context's sticky status. */
kg_status kg_vae_decode(kg_ctx *c, const kg_vae *m, kg_tensor *out, const kg_tensor *z);

#endif
