/* component_run.h - load, feed and run any one Kosmos-G component the same way
 * (tests/test_cuda_components.c, tools/kosmosg-bench.c).
 *
 * A kgt_comp names a component kind, its config, where its weights are (a model
 * file with the component's prefix, or a random-weight image of random_weights.h
 * with prefix "") and deterministic host inputs of the shapes the pipeline uses:
 *   clip       pixels [N, 3, 224, 224] -> [N, 257, W]
 *   connector  CLIP features [N, 257, Din] -> [N, 64, D]
 *   mllm       one sequence of T = 136 tokens (<s>, two images of <image> + 64 slots
 *              + </image>, 3 text tokens) and the 128 slots' features -> [1, T, D]
 *   aligner    hidden [N, 136, in], sequence 2 with its last 20 positions padding
 *              -> [N, 77, d]
 *   unet       sample [N, 4, h, w], timesteps 999 / 421 / .., context [N, 77, cross]
 *   vae        z [N, 4, h, w] -> [N, 3, 8h, 8w]
 * Header-only, as random_weights.h. */
#ifndef KGT_COMPONENT_RUN_H
#define KGT_COMPONENT_RUN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "random_weights.h"

typedef enum kgt_kind {
    KGT_CLIP,
    KGT_CONNECTOR,
    KGT_MLLM,
    KGT_ALIGNER,
    KGT_UNET,
    KGT_VAE
} kgt_kind;
#define KGT_N_KINDS 6

static const char *const kgt_kind_names[KGT_N_KINDS] = {"clip",    "connector", "mllm",
                                                        "aligner", "unet",      "vae"};
/* the component's prefix in a model file */
static const char *const kgt_kind_prefixes[KGT_N_KINDS] = {"img_model.visual.",    "img_connector.",
                                                           "gpt_model.decoder.",   "aligner.",
                                                           "diffusion_unet.unet.", "vae.vae."};
/* the real configurations */
static const char *const kgt_kind_full_json[KGT_N_KINDS] = {kgt_rw_clip_json, kgt_rw_connector_json,
                                                            kgt_rw_mllm_json, kgt_rw_aligner_json,
                                                            kgt_rw_unet_json, kgt_rw_vae_json};

#define KGT_MLLM_T 136

typedef struct kgt_comp {
    char label[64];
    kgt_kind k;
    const kg_st_file *st;
    const char *prefix;
    union {
        kg_clip_config clip;
        kg_connector_config conn;
        kg_mllm_config mllm;
        kg_aligner_config al;
        kg_unet_config unet;
        kg_vae_config vae;
    } cfg;
    int in_ndim; /* the float input: pixels, features, image slots, hidden, sample, z */
    int64_t in_shape[4];
    float *in;
    int64_t ctx_shape[3]; /* U-Net context */
    float *ctx;
    float ts[64];    /* U-Net timesteps, one per batch row */
    int64_t B, T;    /* MLLM / AlignerNet sequences */
    int32_t *tokens; /* MLLM ids [B*T] */
    uint8_t *mask;   /* MLLM image slots / AlignerNet key padding [B*T] */
    int out_ndim;
    int64_t out_shape[4];
} kgt_comp;

typedef union kgt_model {
    kg_clip clip;
    kg_connector conn;
    kg_mllm mllm;
    kg_aligner al;
    kg_unet unet;
    kg_vae vae;
} kgt_model;

static inline size_t kgt_numel(int ndim, const int64_t *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return n;
}

/* Parses a config JSON text into cp->cfg for cp->k. */
static inline kg_status kgt_comp_config(kgt_comp *cp, const char *text, kg_error *err)
{
    kg_json *j = NULL;
    kg_status st = kg_json_parse(&j, text, strlen(text), kgt_kind_names[cp->k], err);
    if (st == KG_OK) {
        switch (cp->k) {
        case KGT_CLIP: st = kg_clip_config_from_json(&cp->cfg.clip, j, err); break;
        case KGT_CONNECTOR: st = kg_connector_config_from_json(&cp->cfg.conn, j, err); break;
        case KGT_MLLM: st = kg_mllm_config_from_json(&cp->cfg.mllm, j, err); break;
        case KGT_ALIGNER: st = kg_aligner_config_from_json(&cp->cfg.al, j, err); break;
        case KGT_UNET: st = kg_unet_config_from_json(&cp->cfg.unet, j, err); break;
        case KGT_VAE: st = kg_vae_config_from_json(&cp->cfg.vae, j, err); break;
        }
    }
    kg_json_free(j);
    return st;
}

/* The component's state dict (random-weight image list, prefix ""). */
static inline void kgt_comp_tensors(const kgt_comp *cp, kgt_rw *im)
{
    switch (cp->k) {
    case KGT_CLIP: kgt_rw_clip(im, &cp->cfg.clip); break;
    case KGT_CONNECTOR: kgt_rw_connector(im, &cp->cfg.conn); break;
    case KGT_MLLM: kgt_rw_mllm(im, &cp->cfg.mllm); break;
    case KGT_ALIGNER: kgt_rw_aligner(im, &cp->cfg.al); break;
    case KGT_UNET: kgt_rw_unet(im, &cp->cfg.unet); break;
    case KGT_VAE: kgt_rw_vae(im, &cp->cfg.vae); break;
    }
}

static inline void *kgt_alloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p)
        kgt_rw_oom();
    return p;
}

static inline float *kgt_values(size_t n, float amp, uint64_t seed)
{
    float *v = kgt_alloc(n * sizeof *v);
    kgt_rw_values(v, n, amp, seed);
    return v;
}

static inline void kgt_set_shape(int *ndim, int64_t *dst, int n, const int64_t *src)
{
    *ndim = n;
    for (int i = 0; i < n; i++)
        dst[i] = src[i];
}

/* Host inputs for cp (see the top of this file); batch N is ignored by the MLLM,
 * lat is the U-Net / VAE latent side (N <= 64). */
static inline void kgt_comp_inputs(kgt_comp *cp, int64_t N, int64_t lat)
{
    switch (cp->k) {
    case KGT_CLIP: {
        int64_t s = cp->cfg.clip.image_size;
        kgt_set_shape(&cp->in_ndim, cp->in_shape, 4, (int64_t[]){N, 3, s, s});
        kgt_set_shape(&cp->out_ndim, cp->out_shape, 3,
                      (int64_t[]){N, cp->cfg.clip.tokens, cp->cfg.clip.width});
        /* preprocessed pixels span about +-2 */
        cp->in = kgt_values(kgt_numel(4, cp->in_shape), 2.0f, 11);
        break;
    }
    case KGT_CONNECTOR: {
        /* CLIP features are L2-normalised rows: elements ~ 1 / sqrt(width) */
        int64_t d = cp->cfg.conn.in;
        kgt_set_shape(&cp->in_ndim, cp->in_shape, 3, (int64_t[]){N, 257, d});
        kgt_set_shape(&cp->out_ndim, cp->out_shape, 3,
                      (int64_t[]){N, cp->cfg.conn.latents, cp->cfg.conn.out});
        cp->in = kgt_values(kgt_numel(3, cp->in_shape), (float)(1.7 / sqrt((double)d)), 12);
        break;
    }
    case KGT_MLLM: {
        int64_t T = KGT_MLLM_T, slots = 0, d = cp->cfg.mllm.dim;
        uint64_t s = 13;
        cp->B = 1;
        cp->T = T;
        cp->tokens = kgt_alloc((size_t)T * sizeof *cp->tokens);
        cp->mask = kgt_alloc((size_t)T);
        for (int64_t t = 0; t < T; t++) {
            int slot = (t >= 2 && t < 2 + 64) || (t >= 68 && t < 68 + 64);
            cp->tokens[t] =
                t == 0 ? 0 : (int32_t)(4 + kgt_rw_next(&s) % (uint64_t)(cp->cfg.mllm.vocab - 4));
            cp->mask[t] = (uint8_t)slot;
            slots += slot;
        }
        kgt_set_shape(&cp->in_ndim, cp->in_shape, 2, (int64_t[]){slots, d});
        kgt_set_shape(&cp->out_ndim, cp->out_shape, 3, (int64_t[]){1, T, d});
        cp->in = kgt_values(kgt_numel(2, cp->in_shape), 1.0f, 14);
        break;
    }
    case KGT_ALIGNER: {
        int64_t T = KGT_MLLM_T;
        cp->B = N;
        cp->T = T;
        cp->mask = kgt_alloc((size_t)(N * T));
        for (int64_t t = T - 20; N > 1 && t < T; t++)
            cp->mask[T + t] = 1;
        kgt_set_shape(&cp->in_ndim, cp->in_shape, 3, (int64_t[]){N, T, cp->cfg.al.in});
        kgt_set_shape(&cp->out_ndim, cp->out_shape, 3,
                      (int64_t[]){N, cp->cfg.al.queries, cp->cfg.al.dim});
        /* MLLM output: final LayerNorm, elements ~ 1 */
        cp->in = kgt_values(kgt_numel(3, cp->in_shape), 1.7f, 15);
        break;
    }
    case KGT_UNET:
        kgt_set_shape(&cp->in_ndim, cp->in_shape, 4,
                      (int64_t[]){N, cp->cfg.unet.in_channels, lat, lat});
        kgt_set_shape(&cp->out_ndim, cp->out_shape, 4,
                      (int64_t[]){N, cp->cfg.unet.out_channels, lat, lat});
        cp->ctx_shape[0] = N;
        cp->ctx_shape[1] = 77;
        cp->ctx_shape[2] = cp->cfg.unet.cross_attention_dim;
        cp->in = kgt_values(kgt_numel(4, cp->in_shape), 1.7f, 16);
        cp->ctx = kgt_values(kgt_numel(3, cp->ctx_shape), 1.7f, 17);
        for (int64_t b = 0; b < N && b < 64; b++)
            cp->ts[b] = 999.0f - 578.0f * (float)(b % 2) - 10.0f * (float)(b / 2);
        break;
    case KGT_VAE: {
        int64_t f = (int64_t)1 << (cp->cfg.vae.n_blocks - 1);
        kgt_set_shape(&cp->in_ndim, cp->in_shape, 4,
                      (int64_t[]){N, cp->cfg.vae.latent_channels, lat, lat});
        kgt_set_shape(&cp->out_ndim, cp->out_shape, 4,
                      (int64_t[]){N, cp->cfg.vae.out_channels, f * lat, f * lat});
        /* the decoder sees latents / 0.18215: std ~ 5 */
        cp->in = kgt_values(kgt_numel(4, cp->in_shape), 8.0f, 18);
        break;
    }
    }
}

static inline void kgt_comp_free_inputs(kgt_comp *cp)
{
    free(cp->in);
    free(cp->ctx);
    free(cp->tokens);
    free(cp->mask);
    cp->in = cp->ctx = NULL;
    cp->tokens = NULL;
    cp->mask = NULL;
}

static inline kg_status kgt_comp_load(kgt_model *m, const kgt_comp *cp, kg_backend *be,
                                      kg_error *err)
{
    memset(m, 0, sizeof *m);
    switch (cp->k) {
    case KGT_CLIP: return kg_clip_load(&m->clip, &cp->cfg.clip, be, cp->st, cp->prefix, err);
    case KGT_CONNECTOR:
        return kg_connector_load(&m->conn, &cp->cfg.conn, be, cp->st, cp->prefix, err);
    case KGT_MLLM: return kg_mllm_load(&m->mllm, &cp->cfg.mllm, be, cp->st, cp->prefix, err);
    case KGT_ALIGNER: return kg_aligner_load(&m->al, &cp->cfg.al, be, cp->st, cp->prefix, err);
    case KGT_UNET: return kg_unet_load(&m->unet, &cp->cfg.unet, be, cp->st, cp->prefix, err);
    case KGT_VAE: return kg_vae_load(&m->vae, &cp->cfg.vae, be, cp->st, cp->prefix, err);
    }
    return KG_ERR_INVALID_ARG;
}

static inline void kgt_comp_unload(kgt_model *m, const kgt_comp *cp, kg_backend *be)
{
    switch (cp->k) {
    case KGT_CLIP: kg_clip_free(&m->clip, be); break;
    case KGT_CONNECTOR: kg_connector_free(&m->conn, be); break;
    case KGT_MLLM: kg_mllm_free(&m->mllm, be); break;
    case KGT_ALIGNER: kg_aligner_free(&m->al, be); break;
    case KGT_UNET: kg_unet_free(&m->unet, be); break;
    case KGT_VAE: kg_vae_free(&m->vae, be); break;
    }
}

/* One forward: y from x (and the U-Net context e). Errors stay in the context. */
static inline void kgt_comp_forward(kg_ctx *c, const kgt_model *m, const kgt_comp *cp, kg_tensor *y,
                                    const kg_tensor *x, const kg_tensor *e)
{
    switch (cp->k) {
    case KGT_CLIP: kg_clip_forward(c, &m->clip, y, x); break;
    case KGT_CONNECTOR: kg_connector_forward(c, &m->conn, y, x); break;
    case KGT_MLLM: kg_mllm_forward(c, &m->mllm, y, cp->tokens, cp->mask, x, cp->B, cp->T); break;
    case KGT_ALIGNER: kg_aligner_forward(c, &m->al, y, x, cp->mask); break;
    case KGT_UNET: kg_unet_forward(c, &m->unet, y, x, cp->ts, e); break;
    case KGT_VAE: kg_vae_decode(c, &m->vae, y, x); break;
    }
}

/* Sizes c's arena with a measure pass of one forward, then allocates the input x,
 * the output y and the U-Net context e from it and uploads the inputs. */
static inline kg_status kgt_comp_prepare(kg_ctx *c, const kgt_model *m, const kgt_comp *cp,
                                         kg_tensor *x, kg_tensor *y, kg_tensor *e, kg_error *err)
{
    kg_status st;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            kg_ctx_begin_measure(c);
        *x = kg_new(c, cp->in_ndim, cp->in_shape);
        *y = kg_new(c, cp->out_ndim, cp->out_shape);
        *e = cp->ctx ? kg_new(c, 3, cp->ctx_shape) : (kg_tensor){0};
        if (pass == 1)
            break;
        kgt_comp_forward(c, m, cp, y, x, cp->ctx ? e : NULL);
        st = kg_ctx_end_measure(c, err);
        if (st != KG_OK)
            return st;
    }
    kg_upload_f32(c, x, cp->in);
    if (cp->ctx)
        kg_upload_f32(c, e, cp->ctx);
    return kg_ctx_status(c, err);
}

#endif
