/* aligner.c - AlignerNet encoder half (see aligner.h). */
#include "aligner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights.h"

/* torchscale's embed_positions start at row 2 whatever the padding (embedding.py) */
#define KG_ALIGNER_FIRST_POSITION 2

kg_status kg_aligner_config_from_json(kg_aligner_config *cfg, const kg_json *j, kg_error *err)
{
    static const char *what = "aligner config";
    kg_status s;

    memset(cfg, 0, sizeof *cfg);
    if ((s = kg_json_req_int(j, "in", &cfg->in, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "dim", &cfg->dim, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "ffn", &cfg->ffn, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "heads", &cfg->heads, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "enc_layers", &cfg->enc_layers, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "dec_layers", &cfg->dec_layers, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "queries", &cfg->queries, what, err)) != KG_OK ||
        (s = kg_json_req_int(j, "positions", &cfg->positions, what, err)) != KG_OK ||
        /* apex FusedLayerNorm with torchscale's layernorm_eps default */
        (s = kg_json_opt_eps(j, "ln_eps", 1e-5, &cfg->ln_eps, what, err)) != KG_OK)
        return s;
    if (cfg->in < 1 || cfg->dim < 1 || cfg->ffn < 1 || cfg->heads < 1 || cfg->heads > INT32_MAX ||
        cfg->dim % cfg->heads || cfg->enc_layers < 0 || cfg->dec_layers < 0 || cfg->queries < 1 ||
        cfg->positions <= KG_ALIGNER_FIRST_POSITION || !(cfg->ln_eps > 0.0f))
        return kg_error_set(err, KG_ERR_FORMAT,
                            "aligner config: invalid values (in %lld, dim %lld, ffn %lld, heads "
                            "%lld, layers %lld+%lld, queries %lld, positions %lld, ln_eps %g)",
                            (long long)cfg->in, (long long)cfg->dim, (long long)cfg->ffn,
                            (long long)cfg->heads, (long long)cfg->enc_layers,
                            (long long)cfg->dec_layers, (long long)cfg->queries,
                            (long long)cfg->positions, (double)cfg->ln_eps);
    return KG_OK;
}

static void load_layer(kg_aligner_layer *ly, kg_loader *L, const kg_aligner_config *cfg,
                       const char *stack, int64_t i, int cross)
{
    const int64_t d[1] = {cfg->dim};
    char layer[96], path[128];

    snprintf(layer, sizeof layer, "%s.layers.%lld", stack, (long long)i);
    snprintf(path, sizeof path, "%s.self_attn", layer);
    kg_load(L, &ly->attn_ln_w, 1, d, "%s.self_attn_layer_norm.weight", layer);
    kg_load(L, &ly->attn_ln_b, 1, d, "%s.self_attn_layer_norm.bias", layer);
    kg_mha_load(&ly->attn, L, path, cfg->dim, (int)cfg->heads, 1, cfg->ln_eps);
    if (cross) {
        /* torchscale builds encoder_attn with subln=False: no inner_attn_ln */
        snprintf(path, sizeof path, "%s.encoder_attn", layer);
        kg_load(L, &ly->cross_ln_w, 1, d, "%s.encoder_attn_layer_norm.weight", layer);
        kg_load(L, &ly->cross_ln_b, 1, d, "%s.encoder_attn_layer_norm.bias", layer);
        kg_mha_load(&ly->cross, L, path, cfg->dim, (int)cfg->heads, 0, cfg->ln_eps);
    }
    kg_ffn_load(&ly->ffn, L, layer, cfg->dim, cfg->ffn, cfg->ln_eps);
}

static kg_status load_weights(void *model, kg_loader *L)
{
    kg_aligner *m = model;
    const kg_aligner_config *cfg = &m->cfg;
    const int64_t d[1] = {cfg->dim}, in[2] = {cfg->dim, cfg->in};
    const int64_t pos[2] = {cfg->positions, cfg->dim}, q[2] = {cfg->queries, cfg->dim};

    kg_load_weight(L, &m->in_w, 2, in, "encoder_proj.embed_tokens.weight");
    kg_load(L, &m->in_b, 1, d, "encoder_proj.embed_tokens.bias");
    kg_load(L, &m->pos, 2, pos, "encoder_proj.embed_positions.weight");
    for (int64_t i = 0; i < cfg->enc_layers; i++)
        load_layer(&m->enc[i], L, cfg, "encoder_proj", i, 0);
    kg_load(L, &m->enc_ln_w, 1, d, "encoder_proj.layer_norm.weight");
    kg_load(L, &m->enc_ln_b, 1, d, "encoder_proj.layer_norm.bias");
    kg_load(L, &m->query, 2, q, "encoder_query");
    for (int64_t i = 0; i < cfg->dec_layers; i++)
        load_layer(&m->dec[i], L, cfg, "encoder", i, 1);
    kg_load(L, &m->dec_ln_w, 1, d, "encoder.layer_norm.weight");
    kg_load(L, &m->dec_ln_b, 1, d, "encoder.layer_norm.bias");
    return L->status;
}

kg_status kg_aligner_load(kg_aligner *m, const kg_aligner_config *cfg, kg_backend *be,
                          const kg_st_file *st, const char *prefix, kg_error *err)
{
    kg_status s;

    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->enc = calloc((size_t)cfg->enc_layers + 1, sizeof *m->enc);
    m->dec = calloc((size_t)cfg->dec_layers + 1, sizeof *m->dec);
    if (!m->enc || !m->dec) {
        kg_aligner_free(m, be);
        return kg_error_set(err, KG_ERR_NOMEM, "aligner: no memory for the layer tables");
    }
    s = kg_load_component(be, st, prefix, load_weights, m, &m->blob, err);
    if (s != KG_OK) {
        kg_error_prefix(err, "loading aligner");
        kg_aligner_free(m, be);
    }
    return s;
}

void kg_aligner_free(kg_aligner *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    free(m->enc);
    free(m->dec);
    memset(m, 0, sizeof *m);
}

/* x += MHA(LN(x), kv) with kv = LN(x) itself for self-attention (kv NULL) */
static void attn_block(kg_ctx *c, const kg_mha *a, const kg_tensor *ln_w, const kg_tensor *ln_b,
                       float eps, kg_tensor *x, const kg_tensor *kv, const kg_tensor *key_pad)
{
    size_t mark = kg_mark(c);
    kg_tensor h = kg_new3(c, x->shape[0], x->shape[1], x->shape[2]);

    kg_layer_norm(c, &h, x, ln_w, ln_b, eps);
    kg_mha_forward(c, a, &h, &h, kv ? kv : &h, key_pad, 0);
    kg_add(c, x, x, &h);
    kg_reset(c, mark);
}

void kg_aligner_forward(kg_ctx *c, const kg_aligner *m, kg_tensor *out, const kg_tensor *hidden,
                        const uint8_t *pad_mask)
{
    const kg_aligner_config *cfg = &m->cfg;
    int64_t B = hidden->shape[0], T = hidden->shape[1];
    size_t mark = kg_mark(c);
    kg_tensor kp, *key_pad = NULL, pos, e, rows;

    if (hidden->ndim != 3 || T + KG_ALIGNER_FIRST_POSITION > cfg->positions) {
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "aligner: input of %d dims and %lld tokens; expected [B, T, %lld] with "
                        "T <= %lld",
                        hidden->ndim, (long long)T, (long long)cfg->in,
                        (long long)(cfg->positions - KG_ALIGNER_FIRST_POSITION));
        return;
    }
    if (pad_mask) {
        kp = kg_new_dt(c, KG_U8, 2, (int64_t[2]){B, T});
        kg_upload(c, &kp, pad_mask);
        key_pad = &kp;
    }

    /* encoder_proj */
    e = kg_new3(c, B, T, cfg->dim);
    kg_linear(c, &e, hidden, &m->in_w, &m->in_b);
    kg_tap(c, &e, "encoder_proj.embed_tokens");
    pos = kg_tensor_rows(&m->pos, KG_ALIGNER_FIRST_POSITION, T);
    kg_tap(c, &pos, "encoder_proj.embed_positions");
    kg_add_tile(c, &e, &e, &pos);
    /* encoder.py: x * (1 - encoder_padding_mask), one fill per run of pads */
    rows = kg_tensor_reshape(&e, 2, (int64_t[2]){B * T, cfg->dim});
    for (int64_t i = 0; pad_mask && i < B * T;) {
        int64_t start = i;
        kg_tensor run;
        if (!pad_mask[i]) {
            i++;
            continue;
        }
        while (i < B * T && pad_mask[i])
            i++;
        run = kg_tensor_rows(&rows, start, i - start);
        kg_fill(c, &run, 0.0f);
    }
    kg_tap(c, &e, "encoder_proj.embedding");
    for (int64_t i = 0; i < cfg->enc_layers; i++) {
        const kg_aligner_layer *ly = &m->enc[i];
        attn_block(c, &ly->attn, &ly->attn_ln_w, &ly->attn_ln_b, cfg->ln_eps, &e, NULL, key_pad);
        kg_ffn_forward(c, &ly->ffn, &e);
        kg_tap(c, &e, "encoder_proj.layers.%lld", (long long)i);
    }
    kg_layer_norm(c, &e, &e, &m->enc_ln_w, &m->enc_ln_b, cfg->ln_eps);
    kg_tap(c, &e, "encoder_proj.layer_norm");

    /* encoder: the learned queries, as they are, for every batch item */
    for (int64_t b = 0; b < B; b++) {
        kg_tensor dst = kg_tensor_rows(out, b, 1);
        kg_copy(c, &dst, &m->query);
    }
    for (int64_t i = 0; i < cfg->dec_layers; i++) {
        const kg_aligner_layer *ly = &m->dec[i];
        attn_block(c, &ly->attn, &ly->attn_ln_w, &ly->attn_ln_b, cfg->ln_eps, out, NULL, NULL);
        attn_block(c, &ly->cross, &ly->cross_ln_w, &ly->cross_ln_b, cfg->ln_eps, out, &e, key_pad);
        kg_ffn_forward(c, &ly->ffn, out);
        kg_tap(c, out, "encoder.layers.%lld", (long long)i);
    }
    kg_layer_norm(c, out, out, &m->dec_ln_w, &m->dec_ln_b, cfg->ln_eps);
    kg_tap(c, out, "encoder.layer_norm");
    kg_reset(c, mark);
}
