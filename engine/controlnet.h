/* controlnet.h - SD1.5 ControlNet (diffusers 0.21.4 ControlNetModel).
 *
 * A trained copy of the U-Net's encoder half (conv_in, time embedding, down
 * blocks, mid block: the U-Net's own code in unet.c runs it), a small conv
 * stack that maps the control image to the latent grid and is added after
 * conv_in, and one 1x1 "zero conv" per skip connection plus one for the mid
 * block. Its outputs, scaled, are added to the U-Net's skips and mid block
 * (kg_unet_forward_res). Facts in docs/critical-details.md (ControlNet). */
#ifndef KG_CONTROLNET_H
#define KG_CONTROLNET_H

#include <stdint.h>

#include "json.h"
#include "unet.h"

#define KG_CONTROLNET_MAX_EMBED 6 /* conditioning_embedding_out_channels entries */

typedef struct kg_controlnet_config {
    kg_unet_config unet;   /* the encoder copy (up_* fields unused) */
    int64_t cond_channels; /* conditioning_channels: 3 */
    int n_embed;           /* 4 */
    int64_t embed_channels
        [KG_CONTROLNET_MAX_EMBED]; /* conditioning_embedding_out_channels: 16, 32, 96, 256 */
} kg_controlnet_config;

/* Reads a diffusers controlnet config.json. A ControlNet for SDXL or SD2 is refused
 * by name (KG_ERR_UNSUPPORTED); other options this file lacks give KG_ERR_UNSUPPORTED. */
kg_status kg_controlnet_config_from_json(kg_controlnet_config *cfg, const kg_json *j,
                                         kg_error *err);

/* KG_OK when the ControlNet was made for this U-Net (same channels, blocks, layers,
 * heads, context width); else KG_ERR_FORMAT saying which field differs. */
kg_status kg_controlnet_check_unet(const kg_controlnet_config *cn, const kg_unet_config *u,
                                   kg_error *err);

typedef struct kg_controlnet {
    kg_controlnet_config cfg;
    kg_unet enc;          /* conv_in, time_embedding, down_blocks, mid_block (unet.c's layout) */
    kg_tensor embed_in_w; /* [E0, cond, 3, 3] controlnet_cond_embedding.conv_in.weight */
    kg_tensor embed_in_b; /* [E0] controlnet_cond_embedding.conv_in.bias */
    /* controlnet_cond_embedding.blocks.<2i>: [Ei, Ei, 3, 3] stride 1;
     * .blocks.<2i+1>: [Ei+1, Ei, 3, 3] stride 2 (weight, bias [out]) */
    kg_tensor embed_w[2 * (KG_CONTROLNET_MAX_EMBED - 1)];
    kg_tensor embed_b[2 * (KG_CONTROLNET_MAX_EMBED - 1)];
    kg_tensor embed_out_w; /* [C0, Elast, 3, 3] controlnet_cond_embedding.conv_out.weight */
    kg_tensor embed_out_b; /* [C0] controlnet_cond_embedding.conv_out.bias */
    int n_down;
    kg_tensor zero_w[KG_UNET_MAX_SKIPS]; /* [Ck, Ck, 1, 1] controlnet_down_blocks.<k>.weight */
    kg_tensor zero_b[KG_UNET_MAX_SKIPS]; /* [Ck] controlnet_down_blocks.<k>.bias */
    kg_tensor mid_w;                     /* [C, C, 1, 1] controlnet_mid_block.weight */
    kg_tensor mid_b;                     /* [C] controlnet_mid_block.bias */
    void *blob;
} kg_controlnet;

/* Loads every tensor under prefix with its exact shape (KG_ERR_WEIGHTS naming the
 * first missing or mis-shaped one). */
kg_status kg_controlnet_load(kg_controlnet *m, const kg_controlnet_config *cfg, kg_backend *be,
                             const kg_st_file *st, const char *prefix, kg_error *err);
void kg_controlnet_free(kg_controlnet *m, kg_backend *be);

/* Image pixels per latent pixel of the control image: 2^(n_embed - 1), 8 for SD1.5. */
int kg_controlnet_factor(const kg_controlnet *m);

/* res += scale * ControlNet(sample [B, in, H, W], timesteps [B], context [B, L, cross],
 * control [B, cond, fH, fW] in [0, 1]). res comes from kg_unet_residuals_new for the
 * same B, H, W; summing several ControlNets into one res is diffusers' MultiControlNet.
 * Scratch from the arena, released before returning. Returns the context's status. */
kg_status kg_controlnet_forward(kg_ctx *c, const kg_controlnet *m, kg_unet_residuals *res,
                                const kg_tensor *sample, const float *timesteps,
                                const kg_tensor *context, const kg_tensor *control, float scale);

#endif
