/* random_weights.h - full-size Kosmos-G components with random weights of the real shapes.
 *
 * Builds an in-memory float32 safetensors image holding one component's state dict
 * (the keys its kg_*_load reads, prefix "") with deterministic random values, to be
 * opened with kg_st_open_memory. The generator follows tools/kosmosg-bench.c (U-Net
 * and VAE copied from it) and adds CLIP, the connector, the MLLM and the AlignerNet.
 *
 * Header-only (static functions): tests/gpu/run-device-checks.sh builds every
 * tests/test_cuda_*.c from its one source plus testutil.c, with no build system.
 *
 * Values: 1-D ".weight" (norm gains) 1 + U(-0.25, 0.25), other 1-D tensors (biases,
 * class_embedding) U(-0.1, 0.1), matrices U(-1, 1) / sqrt(fan_in) (PyTorch's default
 * scale), so activations stay in a normal range through the whole network while
 * every gain and bias still matters to the result. The values cycle through a
 * random table: filling gigabytes from a generator would take longer than the
 * forwards that use them. */
#ifndef KGT_RANDOM_WEIGHTS_H
#define KGT_RANDOM_WEIGHTS_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aligner.h"
#include "clip_vit.h"
#include "connector.h"
#include "json.h"
#include "mllm.h"
#include "unet.h"
#include "vae.h"

/* The real configurations (kg.config.* of a converted Kosmos-G model). */
static const char kgt_rw_clip_json[] =
    "{\"width\":1024,\"layers\":24,\"head_width\":64,\"patch_size\":14,\"image_size\":224,"
    "\"mlp_ratio\":4.0,\"act\":\"quick_gelu\",\"ln_eps\":1e-05}";
static const char kgt_rw_connector_json[] =
    "{\"in\":1024,\"out\":2048,\"heads\":32,\"latent_query_num\":64}";
static const char kgt_rw_mllm_json[] =
    "{\"dim\":2048,\"ffn\":8192,\"heads\":32,\"layers\":24,\"vocab\":64007,\"ln_eps\":1e-05,"
    "\"max_positions\":2048,\"pad\":1}";
static const char kgt_rw_aligner_json[] =
    "{\"in\":2048,\"dim\":768,\"ffn\":3072,\"heads\":12,\"enc_layers\":12,\"dec_layers\":12,"
    "\"queries\":77,\"positions\":32768,\"ln_eps\":1e-05}";
static const char kgt_rw_unet_json[] =
    "{\"in_channels\": 4, \"out_channels\": 4, \"block_out_channels\": [320, 640, 1280, 1280],"
    " \"layers_per_block\": 2, \"attention_head_dim\": 8, \"cross_attention_dim\": 768,"
    " \"norm_num_groups\": 32, \"norm_eps\": 1e-05, \"flip_sin_to_cos\": true, \"freq_shift\": 0,"
    " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
    " \"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\","
    " \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"],"
    " \"downsample_padding\": 1, \"mid_block_scale_factor\": 1, \"act_fn\": \"silu\"}";
static const char kgt_rw_vae_json[] =
    "{\"in_channels\": 3, \"out_channels\": 3, \"latent_channels\": 4,"
    " \"block_out_channels\": [128, 256, 512, 512], \"layers_per_block\": 2,"
    " \"norm_num_groups\": 32, \"act_fn\": \"silu\", \"up_block_types\": [\"UpDecoderBlock2D\","
    " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}";

typedef struct kgt_rw_entry {
    char name[128];
    int ndim;
    int64_t shape[KG_MAX_DIMS];
    size_t offset, nbytes;
} kgt_rw_entry;

/* The list of tensors of one state dict; kgt_rw_build turns it into a file image. */
typedef struct kgt_rw {
    kgt_rw_entry *e;
    size_t n, cap;
    size_t data_bytes;
    int64_t params;
} kgt_rw;

static inline void kgt_rw_oom(void)
{
    fprintf(stderr, "random_weights: out of memory\n");
    exit(1);
}

static inline void kgt_rw_add(kgt_rw *im, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline void kgt_rw_add(kgt_rw *im, int ndim, const int64_t *shape, const char *fmt, ...)
{
    va_list ap;
    kgt_rw_entry *e;
    int64_t numel = 1;
    if (im->n == im->cap) {
        im->cap = im->cap ? 2 * im->cap : 1024;
        im->e = realloc(im->e, im->cap * sizeof *im->e);
        if (!im->e)
            kgt_rw_oom();
    }
    e = &im->e[im->n++];
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        numel *= shape[i];
    }
    e->offset = im->data_bytes;
    e->nbytes = (size_t)numel * sizeof(float);
    im->data_bytes += e->nbytes;
    im->params += numel;
}

static inline void kgt_rw_free(kgt_rw *im)
{
    free(im->e);
    memset(im, 0, sizeof *im);
}

#define KGT_RW_V(...) ((const int64_t[]){__VA_ARGS__})

/* ------------------------------------------------ Kosmos-G transformer parts */

/* torchscale / fairseq MultiheadAttention (engine/mha.c) */
static inline void kgt_rw_mha(kgt_rw *im, const char *p, int64_t d, int inner_ln)
{
    static const char *const proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int k = 0; k < 4; k++) {
        kgt_rw_add(im, 2, KGT_RW_V(d, d), "%s.%s.weight", p, proj[k]);
        kgt_rw_add(im, 1, KGT_RW_V(d), "%s.%s.bias", p, proj[k]);
    }
    if (inner_ln) {
        kgt_rw_add(im, 1, KGT_RW_V(d), "%s.inner_attn_ln.weight", p);
        kgt_rw_add(im, 1, KGT_RW_V(d), "%s.inner_attn_ln.bias", p);
    }
}

/* torchscale sub-LN FFN with its pre-norm (MLLM and AlignerNet layers) */
static inline void kgt_rw_ffn(kgt_rw *im, const char *layer, int64_t d, int64_t f)
{
    kgt_rw_add(im, 1, KGT_RW_V(d), "%s.final_layer_norm.weight", layer);
    kgt_rw_add(im, 1, KGT_RW_V(d), "%s.final_layer_norm.bias", layer);
    kgt_rw_add(im, 2, KGT_RW_V(f, d), "%s.ffn.fc1.weight", layer);
    kgt_rw_add(im, 1, KGT_RW_V(f), "%s.ffn.fc1.bias", layer);
    kgt_rw_add(im, 1, KGT_RW_V(f), "%s.ffn.ffn_layernorm.weight", layer);
    kgt_rw_add(im, 1, KGT_RW_V(f), "%s.ffn.ffn_layernorm.bias", layer);
    kgt_rw_add(im, 2, KGT_RW_V(d, f), "%s.ffn.fc2.weight", layer);
    kgt_rw_add(im, 1, KGT_RW_V(d), "%s.ffn.fc2.bias", layer);
}

/* img_model.visual.* (open_clip VisionTransformer with ts_attn) */
static inline void kgt_rw_clip(kgt_rw *im, const kg_clip_config *cfg)
{
    int64_t w = cfg->width, p = cfg->patch_size, mw = cfg->mlp_width;
    char path[96];
    kgt_rw_add(im, 4, KGT_RW_V(w, 3, p, p), "conv1.weight");
    kgt_rw_add(im, 1, KGT_RW_V(w), "class_embedding");
    kgt_rw_add(im, 2, KGT_RW_V(cfg->tokens, w), "positional_embedding");
    kgt_rw_add(im, 1, KGT_RW_V(w), "ln_pre.weight");
    kgt_rw_add(im, 1, KGT_RW_V(w), "ln_pre.bias");
    for (int i = 0; i < cfg->layers; i++) {
        kgt_rw_add(im, 1, KGT_RW_V(w), "transformer.resblocks.%d.ln_1.weight", i);
        kgt_rw_add(im, 1, KGT_RW_V(w), "transformer.resblocks.%d.ln_1.bias", i);
        snprintf(path, sizeof path, "transformer.resblocks.%d.ts_attn", i);
        kgt_rw_mha(im, path, w, 0);
        kgt_rw_add(im, 1, KGT_RW_V(w), "transformer.resblocks.%d.ln_2.weight", i);
        kgt_rw_add(im, 1, KGT_RW_V(w), "transformer.resblocks.%d.ln_2.bias", i);
        kgt_rw_add(im, 2, KGT_RW_V(mw, w), "transformer.resblocks.%d.mlp.c_fc.weight", i);
        kgt_rw_add(im, 1, KGT_RW_V(mw), "transformer.resblocks.%d.mlp.c_fc.bias", i);
        kgt_rw_add(im, 2, KGT_RW_V(w, mw), "transformer.resblocks.%d.mlp.c_proj.weight", i);
        kgt_rw_add(im, 1, KGT_RW_V(w), "transformer.resblocks.%d.mlp.c_proj.bias", i);
    }
    kgt_rw_add(im, 1, KGT_RW_V(w), "ln_post.weight");
    kgt_rw_add(im, 1, KGT_RW_V(w), "ln_post.bias");
}

/* img_connector.* */
static inline void kgt_rw_connector(kgt_rw *im, const kg_connector_config *cfg)
{
    kgt_rw_add(im, 2, KGT_RW_V(cfg->latents, cfg->out), "latent_query");
    kgt_rw_add(im, 2, KGT_RW_V(cfg->out, cfg->in), "dense.weight");
    kgt_rw_add(im, 1, KGT_RW_V(cfg->out), "dense.bias");
    kgt_rw_mha(im, "x_attn", cfg->out, 0);
}

/* gpt_model.decoder.* */
static inline void kgt_rw_mllm(kgt_rw *im, const kg_mllm_config *cfg)
{
    int64_t d = cfg->dim;
    char path[96];
    kgt_rw_add(im, 2, KGT_RW_V(cfg->vocab, d), "embed_tokens.weight");
    for (int64_t i = 0; i < cfg->layers; i++) {
        kgt_rw_add(im, 1, KGT_RW_V(d), "layers.%lld.self_attn_layer_norm.weight", (long long)i);
        kgt_rw_add(im, 1, KGT_RW_V(d), "layers.%lld.self_attn_layer_norm.bias", (long long)i);
        snprintf(path, sizeof path, "layers.%lld.self_attn", (long long)i);
        kgt_rw_mha(im, path, d, 1);
        snprintf(path, sizeof path, "layers.%lld", (long long)i);
        kgt_rw_ffn(im, path, d, cfg->ffn);
    }
    kgt_rw_add(im, 1, KGT_RW_V(d), "layer_norm.weight");
    kgt_rw_add(im, 1, KGT_RW_V(d), "layer_norm.bias");
}

static inline void kgt_rw_aligner_layer(kgt_rw *im, const kg_aligner_config *cfg, const char *stack,
                                        int64_t i, int cross)
{
    int64_t d = cfg->dim;
    char layer[96], path[128];
    snprintf(layer, sizeof layer, "%s.layers.%lld", stack, (long long)i);
    kgt_rw_add(im, 1, KGT_RW_V(d), "%s.self_attn_layer_norm.weight", layer);
    kgt_rw_add(im, 1, KGT_RW_V(d), "%s.self_attn_layer_norm.bias", layer);
    snprintf(path, sizeof path, "%s.self_attn", layer);
    kgt_rw_mha(im, path, d, 1);
    if (cross) {
        kgt_rw_add(im, 1, KGT_RW_V(d), "%s.encoder_attn_layer_norm.weight", layer);
        kgt_rw_add(im, 1, KGT_RW_V(d), "%s.encoder_attn_layer_norm.bias", layer);
        snprintf(path, sizeof path, "%s.encoder_attn", layer);
        kgt_rw_mha(im, path, d, 0);
    }
    kgt_rw_ffn(im, layer, d, cfg->ffn);
}

/* aligner.* */
static inline void kgt_rw_aligner(kgt_rw *im, const kg_aligner_config *cfg)
{
    int64_t d = cfg->dim;
    kgt_rw_add(im, 2, KGT_RW_V(d, cfg->in), "encoder_proj.embed_tokens.weight");
    kgt_rw_add(im, 1, KGT_RW_V(d), "encoder_proj.embed_tokens.bias");
    kgt_rw_add(im, 2, KGT_RW_V(cfg->positions, d), "encoder_proj.embed_positions.weight");
    for (int64_t i = 0; i < cfg->enc_layers; i++)
        kgt_rw_aligner_layer(im, cfg, "encoder_proj", i, 0);
    kgt_rw_add(im, 1, KGT_RW_V(d), "encoder_proj.layer_norm.weight");
    kgt_rw_add(im, 1, KGT_RW_V(d), "encoder_proj.layer_norm.bias");
    kgt_rw_add(im, 2, KGT_RW_V(cfg->queries, d), "encoder_query");
    for (int64_t i = 0; i < cfg->dec_layers; i++)
        kgt_rw_aligner_layer(im, cfg, "encoder", i, 1);
    kgt_rw_add(im, 1, KGT_RW_V(d), "encoder.layer_norm.weight");
    kgt_rw_add(im, 1, KGT_RW_V(d), "encoder.layer_norm.bias");
}

/* ------------------------------------------------------- SD1.5 U-Net and VAE */

static inline void kgt_rw_resnet(kgt_rw *im, const char *p, int64_t in, int64_t out, int64_t temb)
{
    kgt_rw_add(im, 1, KGT_RW_V(in), "%s.norm1.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(in), "%s.norm1.bias", p);
    kgt_rw_add(im, 4, KGT_RW_V(out, in, 3, 3), "%s.conv1.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(out), "%s.conv1.bias", p);
    if (temb) {
        kgt_rw_add(im, 2, KGT_RW_V(out, temb), "%s.time_emb_proj.weight", p);
        kgt_rw_add(im, 1, KGT_RW_V(out), "%s.time_emb_proj.bias", p);
    }
    kgt_rw_add(im, 1, KGT_RW_V(out), "%s.norm2.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(out), "%s.norm2.bias", p);
    kgt_rw_add(im, 4, KGT_RW_V(out, out, 3, 3), "%s.conv2.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(out), "%s.conv2.bias", p);
    if (in != out) {
        kgt_rw_add(im, 4, KGT_RW_V(out, in, 1, 1), "%s.conv_shortcut.weight", p);
        kgt_rw_add(im, 1, KGT_RW_V(out), "%s.conv_shortcut.bias", p);
    }
}

static inline void kgt_rw_unet_attn(kgt_rw *im, const char *p, int64_t ch, int64_t kv)
{
    kgt_rw_add(im, 2, KGT_RW_V(ch, ch), "%s.to_q.weight", p);
    kgt_rw_add(im, 2, KGT_RW_V(ch, kv), "%s.to_k.weight", p);
    kgt_rw_add(im, 2, KGT_RW_V(ch, kv), "%s.to_v.weight", p);
    kgt_rw_add(im, 2, KGT_RW_V(ch, ch), "%s.to_out.0.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.to_out.0.bias", p);
}

static inline void kgt_rw_transformer(kgt_rw *im, const char *p, int64_t ch, int64_t cross,
                                      int layers)
{
    char q[192];
    kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.norm.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.norm.bias", p);
    kgt_rw_add(im, 4, KGT_RW_V(ch, ch, 1, 1), "%s.proj_in.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.proj_in.bias", p);
    for (int j = 0; j < layers; j++) {
        for (int k = 1; k <= 3; k++) {
            kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.transformer_blocks.%d.norm%d.weight", p, j, k);
            kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.transformer_blocks.%d.norm%d.bias", p, j, k);
        }
        snprintf(q, sizeof q, "%s.transformer_blocks.%d.attn1", p, j);
        kgt_rw_unet_attn(im, q, ch, ch);
        snprintf(q, sizeof q, "%s.transformer_blocks.%d.attn2", p, j);
        kgt_rw_unet_attn(im, q, ch, cross);
        kgt_rw_add(im, 2, KGT_RW_V(8 * ch, ch), "%s.transformer_blocks.%d.ff.net.0.proj.weight", p,
                   j);
        kgt_rw_add(im, 1, KGT_RW_V(8 * ch), "%s.transformer_blocks.%d.ff.net.0.proj.bias", p, j);
        kgt_rw_add(im, 2, KGT_RW_V(ch, 4 * ch), "%s.transformer_blocks.%d.ff.net.2.weight", p, j);
        kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.transformer_blocks.%d.ff.net.2.bias", p, j);
    }
    kgt_rw_add(im, 4, KGT_RW_V(ch, ch, 1, 1), "%s.proj_out.weight", p);
    kgt_rw_add(im, 1, KGT_RW_V(ch), "%s.proj_out.bias", p);
}

/* diffusion_unet.unet.* (diffusers UNet2DConditionModel, the structure kg_unet_load reads) */
static inline void kgt_rw_unet(kgt_rw *im, const kg_unet_config *cfg)
{
    int n = cfg->n_blocks, ns = 0;
    int64_t c0 = cfg->block_out_channels[0], temb = 4 * c0, ch = c0, skips[64];
    int64_t cross = cfg->cross_attention_dim;
    char p[96];

    kgt_rw_add(im, 4, KGT_RW_V(c0, cfg->in_channels, 3, 3), "conv_in.weight");
    kgt_rw_add(im, 1, KGT_RW_V(c0), "conv_in.bias");
    kgt_rw_add(im, 2, KGT_RW_V(temb, c0), "time_embedding.linear_1.weight");
    kgt_rw_add(im, 1, KGT_RW_V(temb), "time_embedding.linear_1.bias");
    kgt_rw_add(im, 2, KGT_RW_V(temb, temb), "time_embedding.linear_2.weight");
    kgt_rw_add(im, 1, KGT_RW_V(temb), "time_embedding.linear_2.bias");
    skips[ns++] = c0;
    for (int i = 0; i < n; i++) {
        int64_t out = cfg->block_out_channels[i];
        for (int l = 0; l < cfg->layers_per_block[i]; l++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, l);
            kgt_rw_resnet(im, p, ch, out, temb);
            ch = out;
            if (cfg->down_cross[i]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                kgt_rw_transformer(im, p, ch, cross, cfg->transformer_layers[i]);
            }
            skips[ns++] = ch;
        }
        if (i < n - 1) {
            kgt_rw_add(im, 4, KGT_RW_V(ch, ch, 3, 3), "down_blocks.%d.downsamplers.0.conv.weight",
                       i);
            kgt_rw_add(im, 1, KGT_RW_V(ch), "down_blocks.%d.downsamplers.0.conv.bias", i);
            skips[ns++] = ch;
        }
    }
    kgt_rw_resnet(im, "mid_block.resnets.0", ch, ch, temb);
    kgt_rw_transformer(im, "mid_block.attentions.0", ch, cross, cfg->transformer_layers[n - 1]);
    kgt_rw_resnet(im, "mid_block.resnets.1", ch, ch, temb);
    for (int i = 0; i < n; i++) {
        int r = n - 1 - i;
        int64_t out = cfg->block_out_channels[r];
        for (int l = 0; l < cfg->layers_per_block[r] + 1; l++) {
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, l);
            kgt_rw_resnet(im, p, ch + skips[--ns], out, temb);
            ch = out;
            if (cfg->up_cross[i]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
                kgt_rw_transformer(im, p, ch, cross, cfg->transformer_layers[r]);
            }
        }
        if (i < n - 1) {
            kgt_rw_add(im, 4, KGT_RW_V(ch, ch, 3, 3), "up_blocks.%d.upsamplers.0.conv.weight", i);
            kgt_rw_add(im, 1, KGT_RW_V(ch), "up_blocks.%d.upsamplers.0.conv.bias", i);
        }
    }
    kgt_rw_add(im, 1, KGT_RW_V(ch), "conv_norm_out.weight");
    kgt_rw_add(im, 1, KGT_RW_V(ch), "conv_norm_out.bias");
    kgt_rw_add(im, 4, KGT_RW_V(cfg->out_channels, ch, 3, 3), "conv_out.weight");
    kgt_rw_add(im, 1, KGT_RW_V(cfg->out_channels), "conv_out.bias");
}

/* vae.vae.* decoder (diffusers AutoencoderKL, current attention names) */
static inline void kgt_rw_vae(kgt_rw *im, const kg_vae_config *cfg)
{
    int n = cfg->n_blocks;
    int64_t lat = cfg->latent_channels, ch = cfg->block_out_channels[n - 1];
    char p[96];

    kgt_rw_add(im, 4, KGT_RW_V(lat, lat, 1, 1), "post_quant_conv.weight");
    kgt_rw_add(im, 1, KGT_RW_V(lat), "post_quant_conv.bias");
    kgt_rw_add(im, 4, KGT_RW_V(ch, lat, 3, 3), "decoder.conv_in.weight");
    kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.conv_in.bias");
    kgt_rw_resnet(im, "decoder.mid_block.resnets.0", ch, ch, 0);
    kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.mid_block.attentions.0.group_norm.weight");
    kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.mid_block.attentions.0.group_norm.bias");
    for (int k = 0; k < 4; k++) {
        static const char *const proj[] = {"to_q", "to_k", "to_v", "to_out.0"};
        kgt_rw_add(im, 2, KGT_RW_V(ch, ch), "decoder.mid_block.attentions.0.%s.weight", proj[k]);
        kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.mid_block.attentions.0.%s.bias", proj[k]);
    }
    kgt_rw_resnet(im, "decoder.mid_block.resnets.1", ch, ch, 0);
    for (int i = 0; i < n; i++) {
        int64_t out = cfg->block_out_channels[n - 1 - i];
        for (int l = 0; l < cfg->layers_per_block + 1; l++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, l);
            kgt_rw_resnet(im, p, ch, out, 0);
            ch = out;
        }
        if (i < n - 1) {
            kgt_rw_add(im, 4, KGT_RW_V(ch, ch, 3, 3),
                       "decoder.up_blocks.%d.upsamplers.0.conv.weight", i);
            kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.up_blocks.%d.upsamplers.0.conv.bias", i);
        }
    }
    kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.conv_norm_out.weight");
    kgt_rw_add(im, 1, KGT_RW_V(ch), "decoder.conv_norm_out.bias");
    kgt_rw_add(im, 4, KGT_RW_V(cfg->out_channels, ch, 3, 3), "decoder.conv_out.weight");
    kgt_rw_add(im, 1, KGT_RW_V(cfg->out_channels), "decoder.conv_out.bias");
}

/* ------------------------------------------------------------ the file image */

/* xorshift64: the same sequence on every machine */
static inline uint64_t kgt_rw_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* uniform in [-1, 1) */
static inline float kgt_rw_uniform(uint64_t *s)
{
    return (float)(kgt_rw_next(s) >> 40) / 8388608.0f - 1.0f;
}

#define KGT_RW_TABLE 65521 /* prime, so tensors start at unrelated points of the cycle */

static inline void kgt_rw_fill(const kgt_rw_entry *e, float *dst, const float *table, size_t start)
{
    int64_t n = (int64_t)(e->nbytes / sizeof(float)), fan_in = e->ndim > 1 ? n / e->shape[0] : 1;
    float scale = (float)(1.0 / sqrt((double)fan_in)), offset = 0.0f;
    size_t len = strlen(e->name);
    if (e->ndim == 1) {
        int gain = len > 7 && !strcmp(e->name + len - 7, ".weight");
        scale = gain ? 0.25f : 0.1f;
        offset = gain ? 1.0f : 0.0f;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = offset + scale * table[(start + (size_t)i) % KGT_RW_TABLE];
}

/* A safetensors file image of im (header JSON padded to 8 bytes, then the data);
 * malloc'd, *len bytes. seed picks the values. */
static inline char *kgt_rw_build(const kgt_rw *im, uint64_t seed, size_t *len)
{
    size_t cap = 64 + im->n * 256, hl = 0;
    char *hdr = malloc(cap), *buf;
    float *table = malloc(KGT_RW_TABLE * sizeof *table);
    uint64_t s = seed ? seed : 0x9E3779B97F4A7C15ull;
    if (!hdr || !table)
        kgt_rw_oom();
    hl += (size_t)snprintf(hdr + hl, cap - hl, "{");
    for (size_t i = 0; i < im->n; i++) {
        const kgt_rw_entry *e = &im->e[i];
        hl += (size_t)snprintf(hdr + hl, cap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
                               i ? "," : "", e->name);
        for (int d = 0; d < e->ndim; d++)
            hl += (size_t)snprintf(hdr + hl, cap - hl, "%s%lld", d ? "," : "",
                                   (long long)e->shape[d]);
        hl += (size_t)snprintf(hdr + hl, cap - hl, "],\"data_offsets\":[%zu,%zu]}", e->offset,
                               e->offset + e->nbytes);
    }
    hl += (size_t)snprintf(hdr + hl, cap - hl, "}");
    while (hl % 8)
        hdr[hl++] = ' ';
    *len = 8 + hl + im->data_bytes;
    buf = malloc(*len);
    if (!buf) {
        fprintf(stderr, "random_weights: cannot allocate %.2f GiB for the weights\n",
                (double)*len / (1 << 30));
        exit(1);
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    free(hdr);
    for (size_t i = 0; i < KGT_RW_TABLE; i++)
        table[i] = kgt_rw_uniform(&s);
    for (size_t i = 0; i < im->n; i++)
        kgt_rw_fill(&im->e[i], (float *)(buf + 8 + hl + im->e[i].offset), table, i * 7919);
    free(table);
    return buf;
}

/* n floats uniform in [-amp, amp), from seed */
static inline void kgt_rw_values(float *dst, size_t n, float amp, uint64_t seed)
{
    uint64_t s = seed ? seed : 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = amp * kgt_rw_uniform(&s);
}

#endif
