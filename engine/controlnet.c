/* controlnet.c - ControlNetModel (diffusers 0.21.4 models/controlnet.py) on the
 * U-Net's encoder code.
 *
 * forward: emb = cond_embedding(control); the U-Net encoder with conv_in(x) + emb
 * as its first skip; every skip k through zero conv k and the mid block output
 * through the mid zero conv, each times conditioning_scale. */
#include "controlnet.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

kg_status kg_controlnet_config_from_json(kg_controlnet_config *cfg, const kg_json *j, kg_error *err)
{
    static const int64_t dflt_embed[] = {16, 32, 96, 256};
    const kg_json *v;
    const char *s;
    double cross;
    kg_status st;

    memset(cfg, 0, sizeof *cfg);
    if (kg_json_type_of(j) != KG_JSON_OBJECT)
        return kg_error_set(err, KG_ERR_FORMAT, "controlnet config: not a JSON object");
    /* the bases Kosmos-G cannot take, by their tell-tale fields */
    s = kg_json_string(kg_json_get(j, "addition_embed_type"));
    cross = kg_json_number(kg_json_get(j, "cross_attention_dim"), 1280.0);
    if ((s && !strcmp(s, "text_time")) || cross == 2048.0)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "controlnet config: this is an SDXL ControlNet (addition_embed_type "
                            "'text_time', cross_attention_dim 2048); Kosmos-G needs an SD1.5 one");
    if (cross == 1024.0)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "controlnet config: this is an SD2 ControlNet (cross_attention_dim "
                            "1024); Kosmos-G needs an SD1.5 one (768)");
    s = kg_json_string(kg_json_get(j, "controlnet_conditioning_channel_order"));
    if (s && strcmp(s, "rgb"))
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "controlnet config: controlnet_conditioning_channel_order '%s' "
                            "(supported: 'rgb')",
                            s);
    if (kg_json_bool(kg_json_get(j, "global_pool_conditions"), 0))
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "controlnet config: global_pool_conditions is not supported");
    v = kg_json_get(j, "conditioning_channels");
    cfg->cond_channels = 3;
    if (v && (st = kg_json_req_int(j, "conditioning_channels", &cfg->cond_channels,
                                   "controlnet config", err)) != KG_OK)
        return st;
    if (cfg->cond_channels < 1 || cfg->cond_channels > 4)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "controlnet config: conditioning_channels %lld (supported: 1..4)",
                            (long long)cfg->cond_channels);
    if (kg_json_get(j, "conditioning_embedding_out_channels")) {
        size_t n = 0;
        st = kg_json_req_int_array(j, "conditioning_embedding_out_channels", cfg->embed_channels,
                                   KG_CONTROLNET_MAX_EMBED, &n, "controlnet config", err);
        if (st != KG_OK)
            return st;
        cfg->n_embed = (int)n;
    } else {
        cfg->n_embed = 4;
        memcpy(cfg->embed_channels, dflt_embed, sizeof dflt_embed);
    }
    if (cfg->n_embed < 1)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "controlnet config: conditioning_embedding_out_channels is empty");
    for (int i = 0; i < cfg->n_embed; i++)
        if (cfg->embed_channels[i] < 1 || cfg->embed_channels[i] > 65536)
            return kg_error_set(err, KG_ERR_FORMAT,
                                "controlnet config: conditioning_embedding_out_channels[%d] = %lld",
                                i, (long long)cfg->embed_channels[i]);
    st = kg_unet_encoder_config_from_json(&cfg->unet, j, err);
    if (st != KG_OK)
        kg_error_prefix(err, "controlnet");
    return st;
}

kg_status kg_controlnet_check_unet(const kg_controlnet_config *cn, const kg_unet_config *u,
                                   kg_error *err)
{
    const kg_unet_config *c = &cn->unet;
#define FIELD(name, a, b)                                                                        \
    if ((a) != (b))                                                                              \
        return kg_error_set(err, KG_ERR_FORMAT,                                                  \
                            "the ControlNet does not fit the model's U-Net: %s %lld, the U-Net " \
                            "has %lld",                                                          \
                            name, (long long)(a), (long long)(b));
    FIELD("in_channels", c->in_channels, u->in_channels);
    FIELD("cross_attention_dim", c->cross_attention_dim, u->cross_attention_dim);
    FIELD("number of blocks", c->n_blocks, u->n_blocks);
    FIELD("norm_num_groups", c->norm_num_groups, u->norm_num_groups);
    for (int i = 0; i < c->n_blocks && i < u->n_blocks; i++) {
        FIELD("a block_out_channels entry", c->block_out_channels[i], u->block_out_channels[i]);
        FIELD("a layers_per_block entry", c->layers_per_block[i], u->layers_per_block[i]);
        FIELD("a down block's cross-attention", c->down_cross[i], u->down_cross[i]);
    }
#undef FIELD
    return KG_OK;
}

static kg_status load_fn(void *model, kg_loader *L)
{
    kg_controlnet *m = model;
    const kg_controlnet_config *cfg = &m->cfg;
    const kg_unet_config *u = &cfg->unet;
    int64_t ch[KG_UNET_MAX_SKIPS], h[KG_UNET_MAX_SKIPS], w[KG_UNET_MAX_SKIPS];
    int64_t c0 = u->block_out_channels[0], cm = u->block_out_channels[u->n_blocks - 1];
    int64_t e0 = cfg->embed_channels[0], el = cfg->embed_channels[cfg->n_embed - 1];

    kg_unet_load_encoder(&m->enc, L);
    kg_load_weight(L, &m->embed_in_w, 4, (int64_t[]){e0, cfg->cond_channels, 3, 3},
                   "controlnet_cond_embedding.conv_in.weight");
    kg_load(L, &m->embed_in_b, 1, (int64_t[]){e0}, "controlnet_cond_embedding.conv_in.bias");
    for (int i = 0; i + 1 < cfg->n_embed; i++) {
        int64_t a = cfg->embed_channels[i], b = cfg->embed_channels[i + 1];
        kg_load_weight(L, &m->embed_w[2 * i], 4, (int64_t[]){a, a, 3, 3},
                       "controlnet_cond_embedding.blocks.%d.weight", 2 * i);
        kg_load(L, &m->embed_b[2 * i], 1, (int64_t[]){a},
                "controlnet_cond_embedding.blocks.%d.bias", 2 * i);
        kg_load_weight(L, &m->embed_w[2 * i + 1], 4, (int64_t[]){b, a, 3, 3},
                       "controlnet_cond_embedding.blocks.%d.weight", 2 * i + 1);
        kg_load(L, &m->embed_b[2 * i + 1], 1, (int64_t[]){b},
                "controlnet_cond_embedding.blocks.%d.bias", 2 * i + 1);
    }
    kg_load_weight(L, &m->embed_out_w, 4, (int64_t[]){c0, el, 3, 3},
                   "controlnet_cond_embedding.conv_out.weight");
    kg_load(L, &m->embed_out_b, 1, (int64_t[]){c0}, "controlnet_cond_embedding.conv_out.bias");
    m->n_down = kg_unet_skip_shapes(u, 1, 1, ch, h, w);
    for (int k = 0; k < m->n_down; k++) {
        kg_load_weight(L, &m->zero_w[k], 4, (int64_t[]){ch[k], ch[k], 1, 1},
                       "controlnet_down_blocks.%d.weight", k);
        kg_load(L, &m->zero_b[k], 1, (int64_t[]){ch[k]}, "controlnet_down_blocks.%d.bias", k);
    }
    kg_load_weight(L, &m->mid_w, 4, (int64_t[]){cm, cm, 1, 1}, "controlnet_mid_block.weight");
    kg_load(L, &m->mid_b, 1, (int64_t[]){cm}, "controlnet_mid_block.bias");
    return L->status;
}

kg_status kg_controlnet_load(kg_controlnet *m, const kg_controlnet_config *cfg, kg_backend *be,
                             const kg_st_file *st, const char *prefix, kg_error *err)
{
    kg_status s;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->enc.cfg = cfg->unet;
    s = kg_load_component(be, st, prefix, load_fn, m, &m->blob, err);
    if (s != KG_OK) {
        kg_error_prefix(err, "loading controlnet");
        memset(m, 0, sizeof *m);
    }
    return s;
}

void kg_controlnet_free(kg_controlnet *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    memset(m, 0, sizeof *m);
}

int kg_controlnet_factor(const kg_controlnet *m)
{
    return 1 << (m->cfg.n_embed - 1);
}

/* ControlNetConditioningEmbedding: conv_in, SiLU, (conv, SiLU, stride-2 conv, SiLU)
 * per further width, conv_out (no activation) into emb [B, C0, H, W]. */
static void cond_embedding(kg_ctx *c, const kg_controlnet *m, kg_tensor *emb,
                           const kg_tensor *control)
{
    const kg_controlnet_config *cfg = &m->cfg;
    int64_t B = control->shape[0], H = control->shape[2], W = control->shape[3];
    size_t mark = kg_mark(c);
    kg_tensor x = kg_new4(c, B, cfg->embed_channels[0], H, W);

    kg_conv2d(c, &x, control, &m->embed_in_w, &m->embed_in_b, 1, 1);
    kg_silu(c, &x, &x);
    for (int i = 0; i + 1 < cfg->n_embed; i++) {
        kg_tensor a = kg_new4(c, B, cfg->embed_channels[i], H, W);
        kg_tensor b = kg_new4(c, B, cfg->embed_channels[i + 1], H / 2, W / 2);
        kg_conv2d(c, &a, &x, &m->embed_w[2 * i], &m->embed_b[2 * i], 1, 1);
        kg_silu(c, &a, &a);
        kg_conv2d(c, &b, &a, &m->embed_w[2 * i + 1], &m->embed_b[2 * i + 1], 2, 1);
        kg_silu(c, &b, &b);
        x = b;
        H /= 2;
        W /= 2;
    }
    kg_conv2d(c, emb, &x, &m->embed_out_w, &m->embed_out_b, 1, 1);
    kg_tap(c, emb, "controlnet_cond_embedding");
    kg_reset(c, mark);
}

kg_status kg_controlnet_forward(kg_ctx *c, const kg_controlnet *m, kg_unet_residuals *res,
                                const kg_tensor *sample, const float *timesteps,
                                const kg_tensor *context, const kg_tensor *control, float scale)
{
    const kg_unet_config *u = &m->cfg.unet;
    int64_t f = kg_controlnet_factor(m);
    int64_t B = sample->shape[0], H = sample->shape[2], W = sample->shape[3];
    kg_unet_state st;
    size_t mark;

    if (!timesteps || !res) {
        kg_backend_fail(c->be, KG_ERR_INVALID_ARG, "controlnet: no timesteps or residuals given");
        return kg_ctx_status(c, NULL);
    }
    if (sample->ndim != 4 || sample->shape[1] != u->in_channels || H < 1 || W < 1 ||
        context->ndim != 3 || context->shape[0] != B ||
        context->shape[2] != u->cross_attention_dim || control->ndim != 4 ||
        control->shape[0] != B || control->shape[1] != m->cfg.cond_channels ||
        control->shape[2] != f * H || control->shape[3] != f * W || res->n_down != m->n_down ||
        res->down[0].ndim != 4 || res->down[0].shape[0] != B || res->down[0].shape[2] != H ||
        res->down[0].shape[3] != W) {
        char s1[64], s2[64], s3[64];
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "controlnet: sample %s, context %s, control %s do not fit the config "
                        "(%lld in channels, context width %lld, control %lld channels at %lldx "
                        "the latent size, %d residuals)",
                        kg_shape_str(sample, s1, sizeof s1), kg_shape_str(context, s2, sizeof s2),
                        kg_shape_str(control, s3, sizeof s3), (long long)u->in_channels,
                        (long long)u->cross_attention_dim, (long long)m->cfg.cond_channels,
                        (long long)f, m->n_down);
        return kg_ctx_status(c, NULL);
    }
    mark = kg_mark(c);
    {
        kg_tensor emb = kg_new4(c, B, u->block_out_channels[0], H, W);
        cond_embedding(c, m, &emb, control);
        kg_unet_encode(c, &m->enc, &st, sample, timesteps, context, &emb);
    }
    for (int k = 0; k < st.n_skips; k++) {
        kg_tensor z = kg_new(c, 4, st.skips[k].shape);
        kg_conv2d(c, &z, &st.skips[k], &m->zero_w[k], &m->zero_b[k], 1, 0);
        kg_tap(c, &z, "controlnet_down_blocks.%d", k);
        kg_axpby(c, &res->down[k], 1.0f, &res->down[k], scale, &z);
    }
    {
        kg_tensor z = kg_new(c, 4, st.mid.shape);
        kg_conv2d(c, &z, &st.mid, &m->mid_w, &m->mid_b, 1, 0);
        kg_tap(c, &z, "controlnet_mid_block");
        kg_axpby(c, &res->mid, 1.0f, &res->mid, scale, &z);
    }
    kg_reset(c, mark);
    return kg_ctx_status(c, NULL);
}
