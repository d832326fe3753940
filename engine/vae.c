/* vae.c - AutoencoderKL.decode (diffusers 0.21.4 autoencoder_kl.py, vae.py
 * Decoder, unet_2d_blocks.py UNetMidBlock2D / UpDecoderBlock2D, attention_processor.py).
 *
 * Every norm in the decoder uses eps 1e-6 (Decoder passes resnet_eps=1e-6 and
 * the mid attention's group norm takes the same eps). */
#include "vae.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define KG_VAE_EPS 1e-6f

/* ------------------------------------------------------------------ config */

kg_status kg_vae_config_from_json(kg_vae_config *cfg, const kg_json *j, kg_error *err)
{
    const kg_json *v;
    const char *s;
    size_t count;
    kg_status st;

    memset(cfg, 0, sizeof *cfg);
    if (kg_json_type_of(j) != KG_JSON_OBJECT)
        return kg_error_set(err, KG_ERR_FORMAT, "vae config: not a JSON object");
    if (kg_json_get(j, "block_out_channels")) {
        st = kg_json_req_int_array(j, "block_out_channels", cfg->block_out_channels,
                                   KG_VAE_MAX_BLOCKS, &count, "vae config", err);
        if (st != KG_OK)
            return st;
        cfg->n_blocks = (int)count;
    } else {
        cfg->n_blocks = 1; /* diffusers' default (64,); SD1.5 sets (128, 256, 512, 512) */
        cfg->block_out_channels[0] = 64;
    }
    {
        static const struct {
            const char *key;
            double dflt;
        } ints[] = {{"latent_channels", 4},
                    {"out_channels", 3},
                    {"layers_per_block", 1},
                    {"norm_num_groups", 32}};
        double v[4];
        for (int i = 0; i < 4; i++) {
            v[i] = kg_json_number(kg_json_get(j, ints[i].key), ints[i].dflt);
            if (v[i] != floor(v[i]) || v[i] < 1 || v[i] > 1e6)
                return kg_error_set(err, KG_ERR_FORMAT,
                                    "vae config: '%s' is not a positive integer", ints[i].key);
        }
        cfg->latent_channels = (int64_t)v[0];
        cfg->out_channels = (int64_t)v[1];
        cfg->layers_per_block = (int)v[2];
        cfg->norm_num_groups = (int)v[3];
    }

    s = kg_json_string(kg_json_get(j, "act_fn"));
    if (kg_json_get(j, "act_fn") && (!s || strcmp(s, "silu")))
        return kg_error_set(err, KG_ERR_UNSUPPORTED, "vae config: act_fn '%s' (supported: silu)",
                            s ? s : "?");
    if (!kg_json_bool(kg_json_get(j, "mid_block_add_attention"), 1) ||
        !kg_json_bool(kg_json_get(j, "use_post_quant_conv"), 1))
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "vae config: a decoder without mid attention or post_quant_conv");
    v = kg_json_get(j, "up_block_types");
    if (v && kg_json_count(v) != (size_t)cfg->n_blocks)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "vae config: up_block_types has %zu entries for %d blocks",
                            kg_json_count(v), cfg->n_blocks);
    for (size_t i = 0; v && i < kg_json_count(v); i++) {
        s = kg_json_string(kg_json_at(v, i));
        if (!s || strcmp(s, "UpDecoderBlock2D"))
            return kg_error_set(
                err, KG_ERR_UNSUPPORTED,
                "vae config: up_block_types[%zu] = '%s' (supported: UpDecoderBlock2D)", i,
                s ? s : "?");
    }

    if (cfg->n_blocks < 1 || cfg->latent_channels < 1 || cfg->out_channels < 1 ||
        cfg->norm_num_groups < 1)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "vae config: block, channel or group count is not positive");
    if (cfg->layers_per_block < 1 || cfg->layers_per_block > KG_VAE_MAX_LAYERS)
        return kg_error_set(err, KG_ERR_UNSUPPORTED, "vae config: layers_per_block %d (1..%d)",
                            cfg->layers_per_block, KG_VAE_MAX_LAYERS);
    for (int i = 0; i < cfg->n_blocks; i++)
        if (cfg->block_out_channels[i] < 1 || cfg->block_out_channels[i] % cfg->norm_num_groups)
            return kg_error_set(err, KG_ERR_FORMAT,
                                "vae config: block_out_channels[%d] = %lld is not a multiple of "
                                "norm_num_groups %d",
                                i, (long long)cfg->block_out_channels[i], cfg->norm_num_groups);
    return KG_OK;
}

/* ------------------------------------------------------------------- load */

#define ATTN "decoder.mid_block.attentions.0."

/* One attention projection under its diffusers name or its legacy name, as a
 * [C, C] linear or an old [C, C, 1, 1] 1x1 conv. A file with neither gets the
 * error for the diffusers name. */
static void load_proj(kg_loader *L, kg_tensor *w, kg_tensor *b, int64_t ch, const char *name,
                      const char *legacy)
{
    char key[160];
    const kg_st_tensor *t;
    const char *use =
        !kg_load_has(L, ATTN "%s.weight", name) && kg_load_has(L, ATTN "%s.weight", legacy) ? legacy
                                                                                            : name;

    snprintf(key, sizeof key, "%s" ATTN "%s.weight", L->prefix ? L->prefix : "", use);
    t = L->st ? kg_st_find(L->st, key) : NULL;
    kg_load_weight(L, w, t && t->ndim == 4 ? 4 : 2, (int64_t[]){ch, ch, 1, 1}, ATTN "%s.weight",
                   use);
    kg_load(L, b, 1, (int64_t[]){ch}, ATTN "%s.bias", use);
}

static kg_status load_fn(void *model, kg_loader *L)
{
    kg_vae *m = model;
    const kg_vae_config *cfg = &m->cfg;
    int n = cfg->n_blocks, groups = cfg->norm_num_groups;
    int64_t lat = cfg->latent_channels, ch = cfg->block_out_channels[n - 1];
    char p[96];

    kg_load_weight(L, &m->post_quant_w, 4, (int64_t[]){lat, lat, 1, 1}, "post_quant_conv.weight");
    kg_load(L, &m->post_quant_b, 1, (int64_t[]){lat}, "post_quant_conv.bias");
    kg_load_weight(L, &m->conv_in_w, 4, (int64_t[]){ch, lat, 3, 3}, "decoder.conv_in.weight");
    kg_load(L, &m->conv_in_b, 1, (int64_t[]){ch}, "decoder.conv_in.bias");

    kg_sd_resnet_load(&m->mid_resnets[0], L, "decoder.mid_block.resnets.0", ch, ch, 0, groups,
                      KG_VAE_EPS);
    kg_load(L, &m->attn_norm_w, 1, (int64_t[]){ch}, ATTN "group_norm.weight");
    kg_load(L, &m->attn_norm_b, 1, (int64_t[]){ch}, ATTN "group_norm.bias");
    load_proj(L, &m->q_w, &m->q_b, ch, "to_q", "query");
    load_proj(L, &m->k_w, &m->k_b, ch, "to_k", "key");
    load_proj(L, &m->v_w, &m->v_b, ch, "to_v", "value");
    load_proj(L, &m->o_w, &m->o_b, ch, "to_out.0", "proj_attn");
    kg_sd_resnet_load(&m->mid_resnets[1], L, "decoder.mid_block.resnets.1", ch, ch, 0, groups,
                      KG_VAE_EPS);

    for (int i = 0; i < n; i++) {
        kg_vae_block *b = &m->up[i];
        int64_t out = cfg->block_out_channels[n - 1 - i];
        b->n_layers = cfg->layers_per_block + 1;
        b->has_upsample = i < n - 1;
        for (int l = 0; l < b->n_layers; l++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, l);
            kg_sd_resnet_load(&b->resnets[l], L, p, ch, out, 0, groups, KG_VAE_EPS);
            ch = out;
        }
        if (b->has_upsample) {
            kg_load_weight(L, &b->up_w, 4, (int64_t[]){ch, ch, 3, 3},
                           "decoder.up_blocks.%d.upsamplers.0.conv.weight", i);
            kg_load(L, &b->up_b, 1, (int64_t[]){ch}, "decoder.up_blocks.%d.upsamplers.0.conv.bias",
                    i);
        }
    }

    kg_load(L, &m->norm_out_w, 1, (int64_t[]){ch}, "decoder.conv_norm_out.weight");
    kg_load(L, &m->norm_out_b, 1, (int64_t[]){ch}, "decoder.conv_norm_out.bias");
    kg_load_weight(L, &m->conv_out_w, 4, (int64_t[]){cfg->out_channels, ch, 3, 3},
                   "decoder.conv_out.weight");
    kg_load(L, &m->conv_out_b, 1, (int64_t[]){cfg->out_channels}, "decoder.conv_out.bias");
    return L->status;
}

kg_status kg_vae_load(kg_vae *m, const kg_vae_config *cfg, kg_backend *be, const kg_st_file *st,
                      const char *prefix, kg_error *err)
{
    kg_status s;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    s = kg_load_component(be, st, prefix, load_fn, m, &m->blob, err);
    if (s != KG_OK) {
        kg_error_prefix(err, "loading vae");
        memset(m, 0, sizeof *m);
    }
    return s;
}

void kg_vae_free(kg_vae *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- forward */

/* Attention with a group norm and one head of width C over the H*W pixels:
 * out = x + to_out(attn(to_q(t), to_k(t), to_v(t))), t = GN(x) as tokens. */
static void mid_attention(kg_ctx *c, const kg_vae *m, kg_tensor *out, const kg_tensor *x)
{
    int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    size_t mark = kg_mark(c);
    kg_tensor g = kg_new4(c, B, C, x->shape[2], x->shape[3]);
    kg_tensor g3 = kg_tensor_reshape(&g, 3, (int64_t[]){B, C, HW});
    kg_tensor tok = kg_new3(c, B, HW, C);
    kg_tensor q = kg_new3(c, B, HW, C);
    kg_tensor k = kg_new3(c, B, HW, C);
    kg_tensor v = kg_new3(c, B, HW, C);
    kg_tensor o = kg_new3(c, B, HW, C);
    kg_tensor out3 = kg_tensor_reshape(out, 3, (int64_t[]){B, C, HW});

    kg_group_norm(c, &g, x, &m->attn_norm_w, &m->attn_norm_b, m->cfg.norm_num_groups, KG_VAE_EPS);
    kg_permute(c, &tok, &g3, 0, 2, 1, 3); /* [B, HW, C] */
    kg_sd_linear_any(c, &q, &tok, &m->q_w, &m->q_b);
    kg_sd_linear_any(c, &k, &tok, &m->k_w, &m->k_b);
    kg_sd_linear_any(c, &v, &tok, &m->v_w, &m->v_b);
    kg_attention(c, &o, &q, &k, &v, NULL, 1, (float)(1.0 / sqrt((double)C)), 0);
    kg_sd_linear_any(c, &tok, &o, &m->o_w, &m->o_b);
    kg_permute(c, &out3, &tok, 0, 2, 1, 3);
    kg_add(c, out, out, x);
    kg_reset(c, mark);
}

/* UpDecoderBlock2D i into out (allocated by the caller). The resnets alternate
 * between one scratch map and out's own memory (out is the block's result, or,
 * before the upsampler, four times the size of a resnet map), arranged so that the
 * last resnet lands in out (no upsampler) or in the scratch map (upsampler): at
 * 512x512 every map saved is 134 MiB per image. */
static void up_block_forward(kg_ctx *c, const kg_vae *m, int i, kg_tensor *out, const kg_tensor *x)
{
    const kg_vae_block *b = &m->up[i];
    int64_t B = x->shape[0], C = b->resnets[0].out, H = x->shape[2], W = x->shape[3];
    size_t mark = kg_mark(c);
    kg_tensor scratch = kg_new4(c, B, C, H, W);
    kg_tensor in_out = kg_tensor_make(out->data, out->dtype, 4, (int64_t[]){B, C, H, W});
    const kg_tensor *h = x;

    for (int l = 0; l < b->n_layers; l++) {
        int to_out = (b->n_layers - 1 - l) % 2 == (b->has_upsample ? 1 : 0);
        kg_tensor *dst = to_out ? &in_out : &scratch;
        kg_sd_resnet_forward(c, &b->resnets[l], dst, h, NULL);
        kg_tap(c, dst, "decoder.up_blocks.%d.resnets.%d", i, l);
        h = dst;
    }
    if (b->has_upsample) {
        kg_sd_upsample_forward(c, out, h, &b->up_w, &b->up_b);
        kg_tap(c, out, "decoder.up_blocks.%d.upsamplers.0", i);
    }
    kg_tap(c, out, "decoder.up_blocks.%d", i);
    kg_reset(c, mark);
}

kg_status kg_vae_decode(kg_ctx *c, const kg_vae *m, kg_tensor *out, const kg_tensor *z)
{
    const kg_vae_config *cfg = &m->cfg;
    int n = cfg->n_blocks;
    int64_t B = z->shape[0], H = z->shape[2], W = z->shape[3], f = (int64_t)1 << (n - 1);
    int64_t ch = cfg->block_out_channels[n - 1], c0 = cfg->block_out_channels[0];
    size_t mark;

    if (z->ndim != 4 || z->shape[1] != cfg->latent_channels || out->ndim != 4 ||
        out->shape[0] != B || out->shape[1] != cfg->out_channels || out->shape[2] != H * f ||
        out->shape[3] != W * f) {
        char s1[64], s2[64];
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "vae: z %s -> out %s does not fit the config (%lld latent, %lld out "
                        "channels, x%lld upscale)",
                        kg_shape_str(z, s1, sizeof s1), kg_shape_str(out, s2, sizeof s2),
                        (long long)cfg->latent_channels, (long long)cfg->out_channels,
                        (long long)f);
        return kg_ctx_status(c, NULL);
    }
    mark = kg_mark(c);

    kg_tensor pq = kg_new4(c, B, cfg->latent_channels, H, W);
    kg_conv2d(c, &pq, z, &m->post_quant_w, &m->post_quant_b, 1, 0);
    kg_tap(c, &pq, "post_quant_conv");
    kg_tensor h = kg_new4(c, B, ch, H, W);
    kg_conv2d(c, &h, &pq, &m->conv_in_w, &m->conv_in_b, 1, 1);
    kg_tap(c, &h, "decoder.conv_in");

    {
        kg_tensor r0 = kg_new4(c, B, ch, H, W);
        kg_tensor a = kg_new4(c, B, ch, H, W);
        kg_tensor r1 = kg_new4(c, B, ch, H, W);
        kg_sd_resnet_forward(c, &m->mid_resnets[0], &r0, &h, NULL);
        kg_tap(c, &r0, "decoder.mid_block.resnets.0");
        mid_attention(c, m, &a, &r0);
        kg_tap(c, &a, "decoder.mid_block.attentions.0");
        kg_sd_resnet_forward(c, &m->mid_resnets[1], &r1, &a, NULL);
        kg_tap(c, &r1, "decoder.mid_block.resnets.1");
        kg_tap(c, &r1, "decoder.mid_block");
        h = r1;
    }

    for (int i = 0; i < n; i++) {
        int64_t s = m->up[i].has_upsample ? 2 : 1;
        kg_tensor y = kg_new4(c, B, m->up[i].resnets[0].out, H * s, W * s);
        up_block_forward(c, m, i, &y, &h);
        H *= s;
        W *= s;
        h = y;
    }

    {
        kg_tensor g = kg_new4(c, B, c0, H, W);
        kg_tensor a = kg_new4(c, B, c0, H, W);
        kg_group_norm(c, &g, &h, &m->norm_out_w, &m->norm_out_b, cfg->norm_num_groups, KG_VAE_EPS);
        kg_tap(c, &g, "decoder.conv_norm_out");
        kg_silu(c, &a, &g);
        kg_tap(c, &a, "decoder.conv_act");
        kg_conv2d(c, out, &a, &m->conv_out_w, &m->conv_out_b, 1, 1);
        kg_tap(c, out, "decoder.conv_out");
    }
    kg_reset(c, mark);
    return kg_ctx_status(c, NULL);
}
