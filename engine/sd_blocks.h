/* sd_blocks.h - building blocks the SD1.5 U-Net and VAE decoder share.
 *
 * diffusers 0.21.4 ResnetBlock2D (time_embedding_norm "default", pre-norm,
 * output_scale_factor 1) with or without a time embedding, Upsample2D
 * (nearest x2 then 3x3 conv) and the 1x1-conv-as-linear view used by the
 * attention projections. */
#ifndef KG_SD_BLOCKS_H
#define KG_SD_BLOCKS_H

#include <stdint.h>

#include "ops.h"
#include "status.h"
#include "weights.h"

/* diffusers ResnetBlock2D:
 * out = shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + time_emb_proj(SiLU(temb))))) */
typedef struct kg_sd_resnet {
    int64_t in, out;   /* channels */
    int groups;        /* norm_num_groups (GN1 and GN2) */
    float eps;         /* 1e-5 in the U-Net, 1e-6 in the VAE */
    int has_temb;      /* the U-Net's resnets take a time embedding, the VAE's do not */
    int has_shortcut;  /* in != out: 1x1 conv on the residual path */
    kg_tensor norm1_w; /* [in]  <path>.norm1.weight */
    kg_tensor norm1_b; /* [in]  <path>.norm1.bias */
    kg_tensor conv1_w; /* [out, in, 3, 3] <path>.conv1.weight */
    kg_tensor conv1_b; /* [out] <path>.conv1.bias */
    kg_tensor temb_w;  /* [out, temb] <path>.time_emb_proj.weight (has_temb) */
    kg_tensor temb_b;  /* [out] <path>.time_emb_proj.bias (has_temb) */
    kg_tensor norm2_w; /* [out] <path>.norm2.weight */
    kg_tensor norm2_b; /* [out] <path>.norm2.bias */
    kg_tensor conv2_w; /* [out, out, 3, 3] <path>.conv2.weight */
    kg_tensor conv2_b; /* [out] <path>.conv2.bias */
    kg_tensor short_w; /* [out, in, 1, 1] <path>.conv_shortcut.weight (has_shortcut) */
    kg_tensor short_b; /* [out] <path>.conv_shortcut.bias (has_shortcut) */
} kg_sd_resnet;

/* Loads the resnet at module path `path`; temb_channels 0 = no time embedding. */
kg_status kg_sd_resnet_load(kg_sd_resnet *r, kg_loader *L, const char *path, int64_t in,
                            int64_t out, int64_t temb_channels, int groups, float eps);

/* out [B, r->out, H, W] = resnet(x [B, r->in, H, W]); temb_act = SiLU(temb) [B, temb]
 * (computed once per forward by the caller) or NULL without a time embedding.
 * Scratch comes from the arena and is released before returning; out != x. */
void kg_sd_resnet_forward(kg_ctx *c, const kg_sd_resnet *r, kg_tensor *out, const kg_tensor *x,
                          const kg_tensor *temb_act);

/* Upsample2D(use_conv): out [B, C, 2H, 2W] = conv3x3(nearest2x(x)); w [C, C, 3, 3], b [C]. */
void kg_sd_upsample_forward(kg_ctx *c, kg_tensor *out, const kg_tensor *x, const kg_tensor *w,
                            const kg_tensor *b);

/* y [B, L, N] = x [B, L, K] w^T + b for a weight stored as [N, K] or as a 1x1 conv
 * [N, K, 1, 1] (diffusers proj_in/proj_out, old VAE attention checkpoints). */
void kg_sd_linear_any(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *w,
                      const kg_tensor *b);

#endif
