/* unet.c - UNet2DConditionModel (diffusers 0.21.4 unet_2d_condition.py,
 * unet_2d_blocks.py, transformer_2d.py, attention.py) as SD1.5 uses it.
 *
 * Skip connections: conv_in's output, every down resnet/attention output and
 * every downsampler output are pushed; each up resnet pops one and
 * concatenates it after the hidden state on the channel axis. */
#include "unet.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Transformer2DModel's GroupNorm eps (transformer_2d.py: eps=1e-6), not norm_eps */
#define KG_UNET_TRANSFORMER_GN_EPS 1e-6f
/* BasicTransformerBlock's LayerNorms use PyTorch's default eps */
#define KG_UNET_LN_EPS 1e-5f

/* ------------------------------------------------------------------ config */

static const char *const sd15_down[] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                        "CrossAttnDownBlock2D", "DownBlock2D"};
static const char *const sd15_up[] = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                      "CrossAttnUpBlock2D"};

static int as_int(const kg_json *v, int64_t *out)
{
    double d = kg_json_number(v, NAN);
    if (kg_json_type_of(v) != KG_JSON_NUMBER || d != floor(d) || fabs(d) > 1e15)
        return 0;
    *out = (int64_t)d;
    return 1;
}

/* An int or a per-block list (diffusers accepts both), each value in [1, max]. */
static kg_status int_or_list(const kg_json *j, const char *key, int dflt, int n, int max, int *out,
                             kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    int64_t x = dflt;
    kg_json_type t = kg_json_type_of(v);

    if (t == KG_JSON_ARRAY && kg_json_count(v) != (size_t)n)
        return kg_error_set(err, KG_ERR_FORMAT, "unet config: '%s' has %zu entries for %d blocks",
                            key, kg_json_count(v), n);
    for (int i = 0; i < n; i++) {
        if (t == KG_JSON_ARRAY ? !as_int(kg_json_at(v, (size_t)i), &x)
                               : t != KG_JSON_NULL && !as_int(v, &x))
            return kg_error_set(err, KG_ERR_FORMAT, "unet config: '%s' is not an integer or a list",
                                key);
        if (x < 1 || x > max)
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "unet config: '%s' = %lld (supported: 1..%d)", key, (long long)x,
                                max);
        out[i] = (int)x;
    }
    return KG_OK;
}

static kg_status block_types(const kg_json *j, const char *key, const char *const *dflt,
                             const char *cross, const char *plain, int n, int *out, kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    if (v && kg_json_type_of(v) != KG_JSON_ARRAY)
        return kg_error_set(err, KG_ERR_FORMAT, "unet config: '%s' is not a list", key);
    if (v ? kg_json_count(v) != (size_t)n : n != 4)
        return kg_error_set(
            err, KG_ERR_FORMAT,
            "unet config: '%s' must name one block per block_out_channels entry (%d)", key, n);
    for (int i = 0; i < n; i++) {
        const char *s = v ? kg_json_string(kg_json_at(v, (size_t)i)) : dflt[i];
        if (s && !strcmp(s, cross))
            out[i] = 1;
        else if (s && !strcmp(s, plain))
            out[i] = 0;
        else
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "unet config: %s[%d] = '%s' (supported: %s, %s)", key, i,
                                s ? s : "?", cross, plain);
    }
    return KG_OK;
}

/* Options diffusers offers that SD1.5 leaves at their defaults and this file does not
 * implement: present with another value -> KG_ERR_UNSUPPORTED rather than a wrong result. */
static kg_status check_defaults(const kg_json *j, kg_error *err)
{
    static const char *const must_be_null[] = {
        "num_attention_heads",   "class_embed_type",   "addition_embed_type",
        "encoder_hid_dim",       "time_cond_proj_dim", "time_embedding_dim",
        "time_embedding_act_fn", "timestep_post_act",  "projection_class_embeddings_input_dim",
        "num_class_embeds"};
    static const char *const must_be_false[] = {"use_linear_projection", "only_cross_attention",
                                                "dual_cross_attention",  "center_input_sample",
                                                "resnet_skip_time_act",  "class_embeddings_concat"};
    static const struct {
        const char *key, *value;
    } strings[] = {
        {"act_fn", "silu"},
        {"time_embedding_type", "positional"},
        {"resnet_time_scale_shift", "default"},
        {"mid_block_type", "UNetMidBlock2DCrossAttn"},
        {"attention_type", "default"},
    };
    static const struct {
        const char *key;
        double value;
    } numbers[] = {
        {"mid_block_scale_factor", 1.0}, {"resnet_out_scale_factor", 1.0}, {"conv_in_kernel", 3.0},
        {"conv_out_kernel", 3.0},        {"downsample_padding", 1.0},
    };
    for (size_t i = 0; i < sizeof must_be_null / sizeof *must_be_null; i++)
        if (kg_json_type_of(kg_json_get(j, must_be_null[i])) != KG_JSON_NULL)
            return kg_error_set(err, KG_ERR_UNSUPPORTED, "unet config: '%s' is not supported",
                                must_be_null[i]);
    for (size_t i = 0; i < sizeof must_be_false / sizeof *must_be_false; i++) {
        const kg_json *v = kg_json_get(j, must_be_false[i]);
        int bad = kg_json_bool(v, 0);
        for (size_t k = 0; kg_json_type_of(v) == KG_JSON_ARRAY && k < kg_json_count(v); k++)
            bad |= kg_json_bool(kg_json_at(v, k), 0);
        if (bad)
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "unet config: '%s' = true is not supported", must_be_false[i]);
    }
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
        const kg_json *v = kg_json_get(j, strings[i].key);
        const char *s = kg_json_string(v);
        if (kg_json_type_of(v) != KG_JSON_NULL && (!s || strcmp(s, strings[i].value)))
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "unet config: '%s' = '%s' (supported: '%s')", strings[i].key,
                                s ? s : "?", strings[i].value);
    }
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
        const kg_json *v = kg_json_get(j, numbers[i].key);
        if (v && kg_json_number(v, NAN) != numbers[i].value)
            return kg_error_set(err, KG_ERR_UNSUPPORTED, "unet config: '%s' must be %g",
                                numbers[i].key, numbers[i].value);
    }
    return KG_OK;
}

static kg_status config_from_json(kg_unet_config *cfg, const kg_json *j, int encoder_only,
                                  kg_error *err)
{
    static const int64_t sd15_channels[] = {320, 640, 1280, 1280};
    const kg_json *boc = kg_json_get(j, "block_out_channels");
    kg_status s;
    int64_t v;
    int n;

    memset(cfg, 0, sizeof *cfg);
    if (kg_json_type_of(j) != KG_JSON_OBJECT)
        return kg_error_set(err, KG_ERR_FORMAT, "unet config: not a JSON object");
    s = check_defaults(j, err);
    if (s != KG_OK)
        return s;

    if (boc) {
        size_t count;
        s = kg_json_req_int_array(j, "block_out_channels", cfg->block_out_channels,
                                  KG_UNET_MAX_BLOCKS, &count, "unet config", err);
        if (s != KG_OK)
            return s;
        cfg->n_blocks = (int)count;
    } else {
        cfg->n_blocks = 4;
        memcpy(cfg->block_out_channels, sd15_channels, sizeof sd15_channels);
    }
    n = cfg->n_blocks;
    if (n < 1)
        return kg_error_set(err, KG_ERR_FORMAT, "unet config: block_out_channels is empty");

    cfg->in_channels = as_int(kg_json_get(j, "in_channels"), &v) ? v : 4;
    cfg->out_channels = as_int(kg_json_get(j, "out_channels"), &v) ? v : 4;
    cfg->cross_attention_dim = 1280; /* diffusers' default, SD1.5 sets 768 */
    if (kg_json_get(j, "cross_attention_dim") &&
        !as_int(kg_json_get(j, "cross_attention_dim"), &cfg->cross_attention_dim))
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "unet config: 'cross_attention_dim' must be one integer");
    cfg->norm_num_groups = as_int(kg_json_get(j, "norm_num_groups"), &v) ? (int)v : 32;
    s = kg_json_opt_eps(j, "norm_eps", 1e-5, &cfg->norm_eps, "unet config", err);
    if (s != KG_OK)
        return s;
    cfg->flip_sin_to_cos = kg_json_bool(kg_json_get(j, "flip_sin_to_cos"), 1);
    cfg->freq_shift = (float)kg_json_number(kg_json_get(j, "freq_shift"), 0.0);
    cfg->downsample_padding = 1;

    s = int_or_list(j, "layers_per_block", 2, n, KG_UNET_MAX_LAYERS, cfg->layers_per_block, err);
    if (s == KG_OK)
        s = int_or_list(j, "attention_head_dim", 8, n, 1 << 16, cfg->heads, err);
    if (s == KG_OK)
        s = int_or_list(j, "transformer_layers_per_block", 1, n, KG_UNET_MAX_TLAYERS,
                        cfg->transformer_layers, err);
    if (s == KG_OK)
        s = block_types(j, "down_block_types", sd15_down, "CrossAttnDownBlock2D", "DownBlock2D", n,
                        cfg->down_cross, err);
    if (s == KG_OK && !encoder_only)
        s = block_types(j, "up_block_types", sd15_up, "CrossAttnUpBlock2D", "UpBlock2D", n,
                        cfg->up_cross, err);
    if (s != KG_OK)
        return s;

    if (cfg->in_channels < 1 || cfg->out_channels < 1 || cfg->cross_attention_dim < 1 ||
        cfg->norm_num_groups < 1 || !(cfg->norm_eps > 0.0f))
        return kg_error_set(err, KG_ERR_FORMAT,
                            "unet config: a channel count, group count or eps "
                            "is not positive");
    if (cfg->block_out_channels[0] > KG_UNET_MAX_TIME_DIM)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "unet config: block_out_channels[0] = %lld exceeds %d",
                            (long long)cfg->block_out_channels[0], KG_UNET_MAX_TIME_DIM);
    for (int i = 0; i < n; i++) {
        int64_t ch = cfg->block_out_channels[i];
        if (ch < 1 || ch % cfg->norm_num_groups)
            return kg_error_set(err, KG_ERR_FORMAT,
                                "unet config: block_out_channels[%d] = %lld is not a multiple of "
                                "norm_num_groups %d",
                                i, (long long)ch, cfg->norm_num_groups);
        /* the heads of the up block at this width are the same list entry (reversed twice) */
        if (ch % cfg->heads[i])
            return kg_error_set(
                err, KG_ERR_FORMAT,
                "unet config: block_out_channels[%d] = %lld not divisible by %d heads", i,
                (long long)ch, cfg->heads[i]);
    }
    return KG_OK;
}

kg_status kg_unet_config_from_json(kg_unet_config *cfg, const kg_json *j, kg_error *err)
{
    return config_from_json(cfg, j, 0, err);
}

kg_status kg_unet_encoder_config_from_json(kg_unet_config *cfg, const kg_json *j, kg_error *err)
{
    return config_from_json(cfg, j, 1, err);
}

/* A downsampler's output side: a 3x3 stride-2 conv, ceil(n / 2) with SD's padding 1, for any n
 * (a latent that is not a multiple of 2^(levels - 1) gets odd sides on the way down). */
static int64_t down_size(const kg_unet_config *cfg, int64_t n)
{
    return (n + 2 * cfg->downsample_padding - 3) / 2 + 1;
}

int kg_unet_skip_shapes(const kg_unet_config *cfg, int64_t H, int64_t W, int64_t *ch, int64_t *h,
                        int64_t *w)
{
    int ns = 0;
    ch[ns] = cfg->block_out_channels[0], h[ns] = H, w[ns++] = W;
    for (int i = 0; i < cfg->n_blocks; i++) {
        for (int l = 0; l < cfg->layers_per_block[i]; l++)
            ch[ns] = cfg->block_out_channels[i], h[ns] = H, w[ns++] = W;
        if (i < cfg->n_blocks - 1) {
            H = down_size(cfg, H);
            W = down_size(cfg, W);
            ch[ns] = cfg->block_out_channels[i], h[ns] = H, w[ns++] = W;
        }
    }
    return ns;
}

/* ------------------------------------------------------------------- load */

static void load_attn(kg_loader *L, kg_unet_attn *a, const char *path, int64_t ch, int64_t kv)
{
    kg_load_weight(L, &a->q_w, 2, (int64_t[]){ch, ch}, "%s.to_q.weight", path);
    kg_load_weight(L, &a->k_w, 2, (int64_t[]){ch, kv}, "%s.to_k.weight", path);
    kg_load_weight(L, &a->v_w, 2, (int64_t[]){ch, kv}, "%s.to_v.weight", path);
    kg_load_weight(L, &a->out_w, 2, (int64_t[]){ch, ch}, "%s.to_out.0.weight", path);
    kg_load(L, &a->out_b, 1, (int64_t[]){ch}, "%s.to_out.0.bias", path);
}

static void load_transformer(kg_loader *L, const kg_unet_config *cfg, kg_unet_transformer *t,
                             const char *path, int64_t ch, int heads, int n_layers)
{
    char p[160];
    t->channels = ch;
    t->heads = heads;
    t->n_layers = n_layers;
    kg_load(L, &t->norm_w, 1, (int64_t[]){ch}, "%s.norm.weight", path);
    kg_load(L, &t->norm_b, 1, (int64_t[]){ch}, "%s.norm.bias", path);
    kg_load_weight(L, &t->proj_in_w, 4, (int64_t[]){ch, ch, 1, 1}, "%s.proj_in.weight", path);
    kg_load(L, &t->proj_in_b, 1, (int64_t[]){ch}, "%s.proj_in.bias", path);
    for (int j = 0; j < n_layers; j++) {
        kg_unet_tblock *b = &t->blocks[j];
        snprintf(p, sizeof p, "%s.transformer_blocks.%d", path, j);
        kg_load(L, &b->norm1_w, 1, (int64_t[]){ch}, "%s.norm1.weight", p);
        kg_load(L, &b->norm1_b, 1, (int64_t[]){ch}, "%s.norm1.bias", p);
        kg_load(L, &b->norm2_w, 1, (int64_t[]){ch}, "%s.norm2.weight", p);
        kg_load(L, &b->norm2_b, 1, (int64_t[]){ch}, "%s.norm2.bias", p);
        kg_load(L, &b->norm3_w, 1, (int64_t[]){ch}, "%s.norm3.weight", p);
        kg_load(L, &b->norm3_b, 1, (int64_t[]){ch}, "%s.norm3.bias", p);
        snprintf(p, sizeof p, "%s.transformer_blocks.%d.attn1", path, j);
        load_attn(L, &b->attn1, p, ch, ch);
        snprintf(p, sizeof p, "%s.transformer_blocks.%d.attn2", path, j);
        load_attn(L, &b->attn2, p, ch, cfg->cross_attention_dim);
        snprintf(p, sizeof p, "%s.transformer_blocks.%d.ff.net", path, j);
        kg_load_weight(L, &b->ff_in_w, 2, (int64_t[]){8 * ch, ch}, "%s.0.proj.weight", p);
        kg_load(L, &b->ff_in_b, 1, (int64_t[]){8 * ch}, "%s.0.proj.bias", p);
        kg_load_weight(L, &b->ff_out_w, 2, (int64_t[]){ch, 4 * ch}, "%s.2.weight", p);
        kg_load(L, &b->ff_out_b, 1, (int64_t[]){ch}, "%s.2.bias", p);
    }
    kg_load_weight(L, &t->proj_out_w, 4, (int64_t[]){ch, ch, 1, 1}, "%s.proj_out.weight", path);
    kg_load(L, &t->proj_out_b, 1, (int64_t[]){ch}, "%s.proj_out.bias", path);
}

kg_status kg_unet_load_encoder(kg_unet *m, kg_loader *L)
{
    const kg_unet_config *cfg = &m->cfg;
    int n = cfg->n_blocks, groups = cfg->norm_num_groups;
    int64_t c0 = cfg->block_out_channels[0], temb = 4 * c0, ch = c0;
    float eps = cfg->norm_eps;
    char p[160];

    kg_load_weight(L, &m->conv_in_w, 4, (int64_t[]){c0, cfg->in_channels, 3, 3}, "conv_in.weight");
    kg_load(L, &m->conv_in_b, 1, (int64_t[]){c0}, "conv_in.bias");
    kg_load_weight(L, &m->time1_w, 2, (int64_t[]){temb, c0}, "time_embedding.linear_1.weight");
    kg_load(L, &m->time1_b, 1, (int64_t[]){temb}, "time_embedding.linear_1.bias");
    kg_load_weight(L, &m->time2_w, 2, (int64_t[]){temb, temb}, "time_embedding.linear_2.weight");
    kg_load(L, &m->time2_b, 1, (int64_t[]){temb}, "time_embedding.linear_2.bias");

    for (int i = 0; i < n; i++) {
        kg_unet_block *b = &m->down[i];
        int64_t out = cfg->block_out_channels[i];
        b->n_layers = cfg->layers_per_block[i];
        b->has_attn = cfg->down_cross[i];
        b->has_resample = i < n - 1;
        for (int l = 0; l < b->n_layers; l++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, l);
            kg_sd_resnet_load(&b->resnets[l], L, p, ch, out, temb, groups, eps);
            ch = out;
            if (b->has_attn) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                load_transformer(L, cfg, &b->attns[l], p, ch, cfg->heads[i],
                                 cfg->transformer_layers[i]);
            }
        }
        if (b->has_resample) {
            kg_load_weight(L, &b->resample_w, 4, (int64_t[]){ch, ch, 3, 3},
                           "down_blocks.%d.downsamplers.0.conv.weight", i);
            kg_load(L, &b->resample_b, 1, (int64_t[]){ch},
                    "down_blocks.%d.downsamplers.0.conv.bias", i);
        }
    }

    kg_sd_resnet_load(&m->mid_resnets[0], L, "mid_block.resnets.0", ch, ch, temb, groups, eps);
    load_transformer(L, cfg, &m->mid_attn, "mid_block.attentions.0", ch, cfg->heads[n - 1],
                     cfg->transformer_layers[n - 1]);
    kg_sd_resnet_load(&m->mid_resnets[1], L, "mid_block.resnets.1", ch, ch, temb, groups, eps);
    return L->status;
}

static kg_status load_fn(void *model, kg_loader *L)
{
    kg_unet *m = model;
    const kg_unet_config *cfg = &m->cfg;
    int n = cfg->n_blocks, groups = cfg->norm_num_groups;
    int64_t c0 = cfg->block_out_channels[0], temb = 4 * c0, ch = cfg->block_out_channels[n - 1];
    int64_t skips[KG_UNET_MAX_SKIPS], sh[KG_UNET_MAX_SKIPS], sw[KG_UNET_MAX_SKIPS];
    int ns = kg_unet_skip_shapes(cfg, 1, 1, skips, sh, sw);
    float eps = cfg->norm_eps;
    char p[160];

    kg_unet_load_encoder(m, L);
    for (int i = 0; i < n; i++) {
        kg_unet_block *b = &m->up[i];
        int r = n - 1 - i; /* up block i mirrors down block r */
        int64_t out = cfg->block_out_channels[r];
        b->n_layers = cfg->layers_per_block[r] + 1;
        b->has_attn = cfg->up_cross[i];
        b->has_resample = i < n - 1;
        for (int l = 0; l < b->n_layers; l++) {
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, l);
            kg_sd_resnet_load(&b->resnets[l], L, p, ch + skips[--ns], out, temb, groups, eps);
            ch = out;
            if (b->has_attn) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
                load_transformer(L, cfg, &b->attns[l], p, ch, cfg->heads[r],
                                 cfg->transformer_layers[r]);
            }
        }
        if (b->has_resample) {
            kg_load_weight(L, &b->resample_w, 4, (int64_t[]){ch, ch, 3, 3},
                           "up_blocks.%d.upsamplers.0.conv.weight", i);
            kg_load(L, &b->resample_b, 1, (int64_t[]){ch}, "up_blocks.%d.upsamplers.0.conv.bias",
                    i);
        }
    }

    kg_load(L, &m->norm_out_w, 1, (int64_t[]){ch}, "conv_norm_out.weight");
    kg_load(L, &m->norm_out_b, 1, (int64_t[]){ch}, "conv_norm_out.bias");
    kg_load_weight(L, &m->conv_out_w, 4, (int64_t[]){cfg->out_channels, ch, 3, 3},
                   "conv_out.weight");
    kg_load(L, &m->conv_out_b, 1, (int64_t[]){cfg->out_channels}, "conv_out.bias");
    return L->status;
}

kg_status kg_unet_load(kg_unet *m, const kg_unet_config *cfg, kg_backend *be, const kg_st_file *st,
                       const char *prefix, kg_error *err)
{
    kg_status s;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    s = kg_load_component(be, st, prefix, load_fn, m, &m->blob, err);
    if (s != KG_OK) {
        kg_error_prefix(err, "loading unet");
        memset(m, 0, sizeof *m);
    }
    return s;
}

void kg_unet_free(kg_unet *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- forward */

/* diffusers get_timestep_embedding, in float32 as the original computes it
 * (arange float32, timesteps .float()); exp/sin/cos are evaluated in double
 * and rounded once, which is what torch's vectorised float kernels return to
 * within an ulp. */
static void time_proj(float *dst, int64_t dim, float t, int flip, float shift)
{
    int64_t half = dim / 2;
    const float neg_log_period = (float)-log(10000.0);
    for (int64_t k = 0; k < half; k++) {
        float ex = (float)k * neg_log_period / ((float)half - shift);
        float freq = (float)exp((double)ex);
        float arg = t * freq;
        float s = (float)sin((double)arg), co = (float)cos((double)arg);
        dst[k] = flip ? co : s;
        dst[half + k] = flip ? s : co;
    }
    if (dim % 2)
        dst[dim - 1] = 0.0f;
}

/* diffusers Attention: softmax(q k^T / sqrt(head_dim)) v over interleaved heads */
static void attention(kg_ctx *c, const kg_unet_attn *a, kg_tensor *out, const kg_tensor *x,
                      const kg_tensor *kv, int heads)
{
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2], Lk = kv->shape[1];
    size_t mark = kg_mark(c);
    kg_tensor q = kg_new3(c, B, L, C);
    kg_tensor k = kg_new3(c, B, Lk, C);
    kg_tensor v = kg_new3(c, B, Lk, C);
    kg_tensor o = kg_new3(c, B, L, C);
    kg_linear(c, &q, x, &a->q_w, NULL);
    kg_linear(c, &k, kv, &a->k_w, NULL);
    kg_linear(c, &v, kv, &a->v_w, NULL);
    kg_attention(c, &o, &q, &k, &v, NULL, heads, (float)(1.0 / sqrt((double)(C / heads))), 0);
    kg_linear(c, out, &o, &a->out_w, &a->out_b);
    kg_reset(c, mark);
}

/* BasicTransformerBlock on x [B, L, C], updated in place */
static void tblock_forward(kg_ctx *c, const kg_unet_tblock *b, kg_tensor *x,
                           const kg_tensor *context, int heads, const char *path)
{
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    size_t mark = kg_mark(c);
    kg_tensor n = kg_new3(c, B, L, C);
    kg_tensor a = kg_new3(c, B, L, C);
    kg_tensor f = kg_new3(c, B, L, 8 * C);
    kg_tensor g = kg_new3(c, B, L, 4 * C);

    kg_layer_norm(c, &n, x, &b->norm1_w, &b->norm1_b, KG_UNET_LN_EPS);
    attention(c, &b->attn1, &a, &n, &n, heads);
    kg_tap(c, &a, "%s.attn1", path);
    kg_add(c, x, x, &a);

    kg_layer_norm(c, &n, x, &b->norm2_w, &b->norm2_b, KG_UNET_LN_EPS);
    attention(c, &b->attn2, &a, &n, context, heads);
    kg_tap(c, &a, "%s.attn2", path);
    kg_add(c, x, x, &a);

    kg_layer_norm(c, &n, x, &b->norm3_w, &b->norm3_b, KG_UNET_LN_EPS);
    kg_linear(c, &f, &n, &b->ff_in_w, &b->ff_in_b); /* [B, L, 8C] */
    kg_geglu(c, &g, &f);                            /* [B, L, 4C] */
    kg_linear(c, &a, &g, &b->ff_out_w, &b->ff_out_b);
    kg_add(c, x, x, &a);
    kg_tap(c, x, "%s", path);
    kg_reset(c, mark);
}

/* Transformer2DModel: out = x + proj_out(blocks(proj_in(GN(x)))) with tokens [B, HW, C] */
static void transformer_forward(kg_ctx *c, const kg_unet_config *cfg, const kg_unet_transformer *t,
                                kg_tensor *out, const kg_tensor *x, const kg_tensor *context,
                                const char *path)
{
    int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    size_t mark = kg_mark(c);
    kg_tensor g = kg_new4(c, B, C, x->shape[2], x->shape[3]);
    kg_tensor g3 = kg_tensor_reshape(&g, 3, (int64_t[]){B, C, HW});
    kg_tensor tok = kg_new3(c, B, HW, C);
    kg_tensor h = kg_new3(c, B, HW, C);
    kg_tensor out3 = kg_tensor_reshape(out, 3, (int64_t[]){B, C, HW});
    char p[192];

    kg_group_norm(c, &g, x, &t->norm_w, &t->norm_b, cfg->norm_num_groups,
                  KG_UNET_TRANSFORMER_GN_EPS);
    /* a 1x1 conv is a linear map over channels: apply it to the tokens */
    kg_permute(c, &tok, &g3, 0, 2, 1, 3);
    kg_sd_linear_any(c, &h, &tok, &t->proj_in_w, &t->proj_in_b);
    for (int j = 0; j < t->n_layers; j++) {
        snprintf(p, sizeof p, "%s.transformer_blocks.%d", path, j);
        tblock_forward(c, &t->blocks[j], &h, context, t->heads, p);
    }
    kg_sd_linear_any(c, &tok, &h, &t->proj_out_w, &t->proj_out_b);
    kg_permute(c, &out3, &tok, 0, 2, 1, 3);
    kg_add(c, out, out, x);
    kg_tap(c, out, "%s", path);
    kg_reset(c, mark);
}

/* One up block into out (allocated by the caller). Resnet and attention outputs
 * alternate between two maps and each concatenation is released right after its
 * resnet, so the block's scratch does not grow with its layers. */
static void up_block_forward(kg_ctx *c, const kg_unet *m, int i, kg_tensor *out, const kg_tensor *x,
                             kg_tensor *skips, int *ns, const kg_tensor *temb_act,
                             const kg_tensor *context)
{
    const kg_unet_block *b = &m->up[i];
    int64_t B = x->shape[0], C = b->resnets[0].out, H = x->shape[2], W = x->shape[3];
    size_t mark = kg_mark(c);
    kg_tensor buf[2];
    const kg_tensor *h = x;
    int next = 0;
    char p[96];

    buf[0] = kg_new4(c, B, C, H, W);
    buf[1] = kg_new4(c, B, C, H, W);
    for (int l = 0; l < b->n_layers; l++) {
        const kg_tensor *skip = &skips[--*ns];
        kg_tensor *dst = &buf[next];
        size_t m2 = kg_mark(c);
        kg_tensor cat = kg_new4(c, B, h->shape[1] + skip->shape[1], H, W);
        kg_concat(c, &cat, h, skip, 1);
        kg_sd_resnet_forward(c, &b->resnets[l], dst, &cat, temb_act);
        kg_reset(c, m2);
        kg_tap(c, dst, "up_blocks.%d.resnets.%d", i, l);
        h = dst;
        next ^= 1;
        if (b->has_attn) {
            dst = &buf[next];
            snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
            transformer_forward(c, &m->cfg, &b->attns[l], dst, h, context, p);
            h = dst;
            next ^= 1;
        }
    }
    if (b->has_resample) {
        kg_sd_upsample_forward(c, out, h, &b->resample_w, &b->resample_b);
        kg_tap(c, out, "up_blocks.%d.upsamplers.0", i);
    } else {
        kg_copy(c, out, h);
    }
    kg_tap(c, out, "up_blocks.%d", i);
    kg_reset(c, mark);
}

void kg_unet_encode(kg_ctx *c, const kg_unet *m, kg_unet_state *st, const kg_tensor *sample,
                    const float *timesteps, const kg_tensor *context, const kg_tensor *add)
{
    const kg_unet_config *cfg = &m->cfg;
    int n = cfg->n_blocks;
    int64_t B = sample->shape[0], H = sample->shape[2], W = sample->shape[3];
    int64_t c0 = cfg->block_out_channels[0];
    float row[KG_UNET_MAX_TIME_DIM];
    char p[96];

    st->n_skips = 0;
    /* time embedding: sinusoid on the host, MLP on the backend */
    kg_tensor tp = kg_new2(c, B, c0);
    for (int64_t bi = 0; bi < B; bi++) {
        kg_tensor r = kg_tensor_rows(&tp, bi, 1);
        time_proj(row, c0, timesteps[bi], cfg->flip_sin_to_cos, cfg->freq_shift);
        kg_upload_f32(c, &r, row);
    }
    kg_tap(c, &tp, "time_proj");
    kg_tensor t1 = kg_new2(c, B, 4 * c0);
    kg_tensor emb = kg_new2(c, B, 4 * c0);
    st->emb_act = kg_new2(c, B, 4 * c0); /* SiLU(temb), what every resnet projects */
    kg_linear(c, &t1, &tp, &m->time1_w, &m->time1_b);
    kg_tap(c, &t1, "time_embedding.linear_1");
    kg_silu(c, &t1, &t1);
    kg_tap(c, &t1, "time_embedding.act");
    kg_linear(c, &emb, &t1, &m->time2_w, &m->time2_b);
    kg_tap(c, &emb, "time_embedding.linear_2");
    kg_tap(c, &emb, "time_embedding");
    kg_silu(c, &st->emb_act, &emb);

    kg_tensor h = kg_new4(c, B, c0, H, W);
    kg_conv2d(c, &h, sample, &m->conv_in_w, &m->conv_in_b, 1, 1);
    kg_tap(c, &h, "conv_in");
    if (add)
        kg_add(c, &h, &h, add); /* ControlNet: conv_in(x) + conditioning embedding is skip 0 */
    st->skips[st->n_skips++] = h;

    /* down path: every output stays allocated as a skip until the up path */
    for (int i = 0; i < n; i++) {
        const kg_unet_block *b = &m->down[i];
        for (int l = 0; l < b->n_layers; l++) {
            kg_tensor y = kg_new4(c, B, b->resnets[l].out, H, W);
            kg_sd_resnet_forward(c, &b->resnets[l], &y, &h, &st->emb_act);
            kg_tap(c, &y, "down_blocks.%d.resnets.%d", i, l);
            h = y;
            if (b->has_attn) {
                y = kg_new4(c, B, h.shape[1], H, W);
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                transformer_forward(c, cfg, &b->attns[l], &y, &h, context, p);
                h = y;
            }
            st->skips[st->n_skips++] = h;
        }
        if (b->has_resample) {
            H = down_size(cfg, H);
            W = down_size(cfg, W);
            kg_tensor y = kg_new4(c, B, h.shape[1], H, W);
            kg_conv2d(c, &y, &h, &b->resample_w, &b->resample_b, 2, cfg->downsample_padding);
            kg_tap(c, &y, "down_blocks.%d.downsamplers.0", i);
            h = y;
            st->skips[st->n_skips++] = h;
        }
        kg_tap(c, &h, "down_blocks.%d", i);
    }

    {
        kg_tensor r0 = kg_new4(c, B, h.shape[1], H, W);
        kg_tensor a = kg_new4(c, B, h.shape[1], H, W);
        st->mid = kg_new4(c, B, h.shape[1], H, W);
        kg_sd_resnet_forward(c, &m->mid_resnets[0], &r0, &h, &st->emb_act);
        kg_tap(c, &r0, "mid_block.resnets.0");
        transformer_forward(c, cfg, &m->mid_attn, &a, &r0, context, "mid_block.attentions.0");
        kg_sd_resnet_forward(c, &m->mid_resnets[1], &st->mid, &a, &st->emb_act);
        kg_tap(c, &st->mid, "mid_block.resnets.1");
        kg_tap(c, &st->mid, "mid_block");
    }
}

void kg_unet_residuals_new(kg_ctx *c, const kg_unet_config *cfg, kg_unet_residuals *r, int64_t B,
                           int64_t H, int64_t W)
{
    int64_t ch[KG_UNET_MAX_SKIPS], h[KG_UNET_MAX_SKIPS], w[KG_UNET_MAX_SKIPS];
    int n = cfg->n_blocks;
    r->n_down = kg_unet_skip_shapes(cfg, H, W, ch, h, w);
    for (int k = 0; k < r->n_down; k++) {
        r->down[k] = kg_new4(c, B, ch[k], h[k], w[k]);
        kg_fill(c, &r->down[k], 0.0f);
    }
    /* the mid block runs at the last skip's size */
    r->mid = kg_new4(c, B, cfg->block_out_channels[n - 1], h[r->n_down - 1], w[r->n_down - 1]);
    kg_fill(c, &r->mid, 0.0f);
}

static int residuals_fit(const kg_unet_residuals *r, const kg_unet_state *st)
{
    if (r->n_down != st->n_skips || !kg_tensor_same_shape(&r->mid, &st->mid))
        return 0;
    for (int k = 0; k < r->n_down; k++)
        if (!kg_tensor_same_shape(&r->down[k], &st->skips[k]))
            return 0;
    return 1;
}

kg_status kg_unet_forward(kg_ctx *c, const kg_unet *m, kg_tensor *out, const kg_tensor *sample,
                          const float *timesteps, const kg_tensor *context)
{
    return kg_unet_forward_res(c, m, out, sample, timesteps, context, NULL);
}

kg_status kg_unet_forward_res(kg_ctx *c, const kg_unet *m, kg_tensor *out, const kg_tensor *sample,
                              const float *timesteps, const kg_tensor *context,
                              const kg_unet_residuals *res)
{
    const kg_unet_config *cfg = &m->cfg;
    int n = cfg->n_blocks;
    int64_t B = sample->shape[0], H = sample->shape[2], W = sample->shape[3];
    int64_t c0 = cfg->block_out_channels[0];
    kg_unet_state st;
    kg_tensor h;
    size_t mark;

    if (!timesteps) {
        kg_backend_fail(c->be, KG_ERR_INVALID_ARG, "unet: no timesteps given");
        return kg_ctx_status(c, NULL);
    }
    if (sample->ndim != 4 || sample->shape[1] != cfg->in_channels || H < 1 || W < 1 ||
        context->ndim != 3 || context->shape[0] != B ||
        context->shape[2] != cfg->cross_attention_dim || out->ndim != 4 || out->shape[0] != B ||
        out->shape[1] != cfg->out_channels || out->shape[2] != H || out->shape[3] != W) {
        char s1[64], s2[64], s3[64];
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "unet: sample %s, context %s, out %s do not fit the config (%lld in, %lld "
                        "out channels, context width %lld)",
                        kg_shape_str(sample, s1, sizeof s1), kg_shape_str(context, s2, sizeof s2),
                        kg_shape_str(out, s3, sizeof s3), (long long)cfg->in_channels,
                        (long long)cfg->out_channels, (long long)cfg->cross_attention_dim);
        return kg_ctx_status(c, NULL);
    }
    mark = kg_mark(c);
    kg_unet_encode(c, m, &st, sample, timesteps, context, NULL);
    if (res) {
        if (!residuals_fit(res, &st)) {
            kg_backend_fail(c->be, KG_ERR_SHAPE,
                            "unet: %d additional residuals do not match the %d skip connections "
                            "or the mid block",
                            res->n_down, st.n_skips);
            kg_reset(c, mark);
            return kg_ctx_status(c, NULL);
        }
        /* diffusers adds them after the whole down path and the mid block: the mid block
         * sees the plain last skip */
        for (int k = 0; k < st.n_skips; k++)
            kg_add(c, &st.skips[k], &st.skips[k], &res->down[k]);
        kg_add(c, &st.mid, &st.mid, &res->mid);
    }
    h = st.mid;

    /* An upsampler outputs the size of the skip the next up block concatenates first
     * (diffusers' forward_upsample_size: nearest interpolation to that size); that is twice its
     * input when the latent is a multiple of 2^(levels - 1), e.g. any multiple of 64 pixels for
     * SD1.5. */
    for (int i = 0; i < n; i++) {
        const kg_unet_block *b = &m->up[i];
        if (b->has_resample) {
            if (st.n_skips - b->n_layers < 1) {
                kg_backend_fail(c->be, KG_ERR_SHAPE,
                                "unet: up block %d has no skip left to size its upsampler", i);
                break;
            }
            H = st.skips[st.n_skips - b->n_layers - 1].shape[2];
            W = st.skips[st.n_skips - b->n_layers - 1].shape[3];
        }
        kg_tensor y = kg_new4(c, B, b->resnets[0].out, H, W);
        up_block_forward(c, m, i, &y, &h, st.skips, &st.n_skips, &st.emb_act, context);
        h = y;
    }

    {
        kg_tensor g = kg_new4(c, B, c0, H, W);
        kg_tensor a = kg_new4(c, B, c0, H, W);
        kg_group_norm(c, &g, &h, &m->norm_out_w, &m->norm_out_b, cfg->norm_num_groups,
                      cfg->norm_eps);
        kg_tap(c, &g, "conv_norm_out");
        kg_silu(c, &a, &g);
        kg_tap(c, &a, "conv_act");
        kg_conv2d(c, out, &a, &m->conv_out_w, &m->conv_out_b, 1, 1);
        kg_tap(c, out, "conv_out");
    }
    kg_reset(c, mark);
    return kg_ctx_status(c, NULL);
}
