/* clip_vit.c - CLIP ViT image encoder (see clip_vit.h). */
#include "clip_vit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights.h"

/* F.normalize's default eps (unilm/models/vl/clip.py ClipVisualOnly.forward) */
#define CLIP_L2_EPS 1e-12f

kg_status kg_clip_config_from_json(kg_clip_config *cfg, const kg_json *j, kg_error *err)
{
    const char *what = "kg.config.clip";
    const kg_json *act = kg_json_get(j, "act");
    int64_t layers;
    kg_status s;

    memset(cfg, 0, sizeof *cfg);
    if ((s = kg_json_req_int(j, "width", &cfg->width, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "layers", &layers, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "head_width", &cfg->head_width, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "patch_size", &cfg->patch_size, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "image_size", &cfg->image_size, what, err)) != KG_OK ||
        (s = kg_json_req_double(j, "mlp_ratio", &cfg->mlp_ratio, what, err)) != KG_OK ||
        (s = kg_json_opt_eps(j, "ln_eps", 1e-5, &cfg->ln_eps, what, err)) != KG_OK)
        return s;
    /* bounded before int(width * mlp_ratio), which overflows (UB) for 1e300 */
    if (!(cfg->mlp_ratio > 0.0 && cfg->mlp_ratio <= 64.0) || cfg->width > (1 << 20))
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: mlp_ratio %g / width %lld: expected a ratio in (0, 64] and a "
                            "width up to %d",
                            what, cfg->mlp_ratio, (long long)cfg->width, 1 << 20);
    cfg->layers = (int)layers;
    cfg->quick_gelu = 1;
    if (act) {
        const char *a = kg_json_string(act);
        if (a && !strcmp(a, "gelu"))
            cfg->quick_gelu = 0;
        else if (!a || strcmp(a, "quick_gelu"))
            return kg_error_set(err, KG_ERR_FORMAT, "%s: act must be \"quick_gelu\" or \"gelu\"",
                                what);
    }
    if (cfg->width < 1 || layers < 1 || layers > 1000 || cfg->head_width < 1 ||
        cfg->width % cfg->head_width || cfg->patch_size < 1 || cfg->image_size < cfg->patch_size ||
        cfg->image_size % cfg->patch_size || !(cfg->mlp_ratio > 0) || !(cfg->ln_eps > 0))
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: inconsistent width %lld / head_width %lld / layers %lld / patch "
                            "%lld / image %lld / mlp_ratio %g / ln_eps %g",
                            what, (long long)cfg->width, (long long)cfg->head_width,
                            (long long)layers, (long long)cfg->patch_size,
                            (long long)cfg->image_size, cfg->mlp_ratio, (double)cfg->ln_eps);
    cfg->heads = (int)(cfg->width / cfg->head_width);
    /* open_clip: mlp_width = int(width * mlp_ratio) */
    cfg->mlp_width = (int64_t)((double)cfg->width * cfg->mlp_ratio);
    cfg->grid = cfg->image_size / cfg->patch_size;
    cfg->tokens = cfg->grid * cfg->grid + 1;
    return KG_OK;
}

static kg_status load_weights(void *model, kg_loader *L)
{
    kg_clip *m = model;
    const kg_clip_config *cfg = &m->cfg;
    const int64_t w = cfg->width, mw = cfg->mlp_width, p = cfg->patch_size;

    kg_load_weight(L, &m->conv1_w, 4, (int64_t[]){w, 3, p, p}, "conv1.weight");
    kg_load(L, &m->class_emb, 1, (int64_t[]){w}, "class_embedding");
    kg_load(L, &m->pos_emb, 2, (int64_t[]){cfg->tokens, w}, "positional_embedding");
    kg_load(L, &m->ln_pre_w, 1, (int64_t[]){w}, "ln_pre.weight");
    kg_load(L, &m->ln_pre_b, 1, (int64_t[]){w}, "ln_pre.bias");
    for (int i = 0; i < cfg->layers; i++) {
        kg_clip_block *b = &m->blocks[i];
        char path[64];
        snprintf(path, sizeof path, "transformer.resblocks.%d.ts_attn", i);
        kg_load(L, &b->ln_1_w, 1, (int64_t[]){w}, "transformer.resblocks.%d.ln_1.weight", i);
        kg_load(L, &b->ln_1_b, 1, (int64_t[]){w}, "transformer.resblocks.%d.ln_1.bias", i);
        kg_mha_load(&b->attn, L, path, w, cfg->heads, 0, cfg->ln_eps);
        kg_load(L, &b->ln_2_w, 1, (int64_t[]){w}, "transformer.resblocks.%d.ln_2.weight", i);
        kg_load(L, &b->ln_2_b, 1, (int64_t[]){w}, "transformer.resblocks.%d.ln_2.bias", i);
        kg_load_weight(L, &b->fc_w, 2, (int64_t[]){mw, w},
                       "transformer.resblocks.%d.mlp.c_fc.weight", i);
        kg_load(L, &b->fc_b, 1, (int64_t[]){mw}, "transformer.resblocks.%d.mlp.c_fc.bias", i);
        kg_load_weight(L, &b->proj_w, 2, (int64_t[]){w, mw},
                       "transformer.resblocks.%d.mlp.c_proj.weight", i);
        kg_load(L, &b->proj_b, 1, (int64_t[]){w}, "transformer.resblocks.%d.mlp.c_proj.bias", i);
    }
    kg_load(L, &m->ln_post_w, 1, (int64_t[]){w}, "ln_post.weight");
    kg_load(L, &m->ln_post_b, 1, (int64_t[]){w}, "ln_post.bias");
    return L->status;
}

kg_status kg_clip_load(kg_clip *m, const kg_clip_config *cfg, kg_backend *be, const kg_st_file *st,
                       const char *prefix, kg_error *err)
{
    kg_status s;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->blocks = calloc((size_t)cfg->layers, sizeof *m->blocks);
    if (!m->blocks)
        return kg_error_set(err, KG_ERR_NOMEM, "clip: no memory for %d blocks", cfg->layers);
    s = kg_load_component(be, st, prefix, load_weights, m, &m->blob, err);
    if (s != KG_OK) {
        free(m->blocks);
        memset(m, 0, sizeof *m);
    }
    return s;
}

void kg_clip_free(kg_clip *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

/* x = x + ts_attn(ln_1(x)); x = x + c_proj(act(c_fc(ln_2(x)))) */
static void block_forward(kg_ctx *c, const kg_clip *m, const kg_clip_block *b, kg_tensor *x)
{
    const kg_clip_config *cfg = &m->cfg;
    size_t mark = kg_mark(c);
    int64_t n = x->shape[0], t = x->shape[1];
    kg_tensor h = kg_new3(c, n, t, cfg->width);
    kg_tensor a = kg_new3(c, n, t, cfg->width);
    kg_tensor f = kg_new3(c, n, t, cfg->mlp_width);

    kg_layer_norm(c, &h, x, &b->ln_1_w, &b->ln_1_b, cfg->ln_eps);
    kg_mha_forward(c, &b->attn, &a, &h, &h, NULL, 0);
    kg_add(c, x, x, &a);
    kg_layer_norm(c, &h, x, &b->ln_2_w, &b->ln_2_b, cfg->ln_eps);
    kg_linear(c, &f, &h, &b->fc_w, &b->fc_b);
    if (cfg->quick_gelu)
        kg_quick_gelu(c, &f, &f);
    else
        kg_gelu(c, &f, &f);
    kg_linear(c, &a, &f, &b->proj_w, &b->proj_b);
    kg_add(c, x, x, &a);
    kg_reset(c, mark);
}

void kg_clip_forward(kg_ctx *c, const kg_clip *m, kg_tensor *out, const kg_tensor *pixels)
{
    const kg_clip_config *cfg = &m->cfg;
    size_t mark = kg_mark(c);
    int64_t n = pixels->shape[0], w = cfg->width, g = cfg->grid, np = g * g;
    kg_tensor patches = kg_new4(c, n, w, g, g);
    kg_tensor seq = kg_new3(c, n, np, w);
    kg_tensor cls = kg_new3(c, n, 1, w);
    kg_tensor x = kg_new3(c, n, cfg->tokens, w);
    kg_tensor flat;

    kg_conv2d(c, &patches, pixels, &m->conv1_w, NULL, (int)cfg->patch_size, 0);
    kg_tap(c, &patches, "visual.conv1");
    /* [N, W, G, G] -> [N, G*G, W]: row-major patch order, as open_clip's
     * reshape(N, W, -1).permute(0, 2, 1) */
    flat = kg_tensor_reshape(&patches, 3, (int64_t[]){n, w, np});
    kg_permute(c, &seq, &flat, 0, 2, 1, 3);
    kg_fill(c, &cls, 0.0f);
    kg_add_tile(c, &cls, &cls, &m->class_emb);
    kg_concat(c, &x, &cls, &seq, 1);
    kg_add_tile(c, &x, &x, &m->pos_emb);
    kg_layer_norm(c, &x, &x, &m->ln_pre_w, &m->ln_pre_b, cfg->ln_eps);
    kg_tap(c, &x, "visual.ln_pre");

    for (int i = 0; i < cfg->layers; i++) {
        block_forward(c, m, &m->blocks[i], &x);
        kg_tap(c, &x, "visual.transformer.resblocks.%d", i);
    }

    kg_layer_norm(c, &x, &x, &m->ln_post_w, &m->ln_post_b, cfg->ln_eps);
    kg_tap(c, &x, "visual.ln_post");
    kg_l2_normalize(c, out, &x, CLIP_L2_EPS);
    kg_reset(c, mark);
}
