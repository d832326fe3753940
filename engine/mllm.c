/* mllm.c - the Kosmos-G MLLM decoder (see mllm.h). */
#include "mllm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "positions.h"
#include "weights.h"

#define KG_MLLM_DEFAULT_MAX_POSITIONS 2048
/* The sinusoid table (max_positions x dim floats) is computed at load, not stored: bound it.
 * Kosmos-G uses 2048; 65536 tokens is far beyond any prompt the aligner takes. */
#define KG_MLLM_MAX_POSITIONS 65536

static kg_status opt_int(const kg_json *j, const char *key, int64_t fallback, int64_t *out,
                         kg_error *err)
{
    const kg_json *v = kg_json_get(j, key);
    if (!v) {
        *out = fallback;
        return KG_OK;
    }
    return kg_json_req_int(j, key, out, "mllm config", err);
}

kg_status kg_mllm_config_from_json(kg_mllm_config *cfg, const kg_json *j, kg_error *err)
{
    kg_status s;

    memset(cfg, 0, sizeof *cfg);
    if ((s = kg_json_req_int(j, "dim", &cfg->dim, "mllm config", err)) != KG_OK ||
        (s = kg_json_req_int(j, "ffn", &cfg->ffn, "mllm config", err)) != KG_OK ||
        (s = kg_json_req_int(j, "heads", &cfg->heads, "mllm config", err)) != KG_OK ||
        (s = kg_json_req_int(j, "layers", &cfg->layers, "mllm config", err)) != KG_OK ||
        (s = kg_json_req_int(j, "vocab", &cfg->vocab, "mllm config", err)) != KG_OK ||
        (s = opt_int(j, "max_positions", KG_MLLM_DEFAULT_MAX_POSITIONS, &cfg->max_positions,
                     err)) != KG_OK ||
        (s = opt_int(j, "pad", 1, &cfg->pad, err)) != KG_OK ||
        /* apex FusedLayerNorm with torchscale's layernorm_eps default */
        (s = kg_json_opt_eps(j, "ln_eps", 1e-5, &cfg->ln_eps, "mllm config", err)) != KG_OK)
        return s;
    if (cfg->max_positions > KG_MLLM_MAX_POSITIONS)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "mllm config: max_positions %lld: at most %d (the position table is "
                            "built at load)",
                            (long long)cfg->max_positions, KG_MLLM_MAX_POSITIONS);
    if (cfg->dim < 2 || cfg->ffn < 1 || cfg->heads < 1 || cfg->dim % cfg->heads ||
        cfg->layers < 0 || cfg->vocab <= cfg->pad || cfg->pad < 0 || cfg->max_positions < 1 ||
        !(cfg->ln_eps > 0.0f) || cfg->heads > INT32_MAX)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "mllm config: invalid values (dim %lld, ffn %lld, heads %lld, layers "
                            "%lld, vocab %lld, pad %lld, max_positions %lld, ln_eps %g)",
                            (long long)cfg->dim, (long long)cfg->ffn, (long long)cfg->heads,
                            (long long)cfg->layers, (long long)cfg->vocab, (long long)cfg->pad,
                            (long long)cfg->max_positions, (double)cfg->ln_eps);
    return KG_OK;
}

static kg_status load_weights(void *model, kg_loader *L)
{
    kg_mllm *m = model;
    const kg_mllm_config *cfg = &m->cfg;
    const int64_t d[1] = {cfg->dim};
    const int64_t emb[2] = {cfg->vocab, cfg->dim};

    kg_load(L, &m->embed, 2, emb, "embed_tokens.weight");
    for (int64_t i = 0; i < cfg->layers; i++) {
        kg_mllm_layer *ly = &m->layers[i];
        char path[64];
        snprintf(path, sizeof path, "layers.%lld.self_attn", (long long)i);
        kg_load(L, &ly->attn_ln_w, 1, d, "layers.%lld.self_attn_layer_norm.weight", (long long)i);
        kg_load(L, &ly->attn_ln_b, 1, d, "layers.%lld.self_attn_layer_norm.bias", (long long)i);
        kg_mha_load(&ly->attn, L, path, cfg->dim, (int)cfg->heads, 1, cfg->ln_eps);
        snprintf(path, sizeof path, "layers.%lld", (long long)i);
        kg_ffn_load(&ly->ffn, L, path, cfg->dim, cfg->ffn, cfg->ln_eps);
    }
    kg_load(L, &m->ln_w, 1, d, "layer_norm.weight");
    kg_load(L, &m->ln_b, 1, d, "layer_norm.bias");
    return L->status;
}

/* The sinusoid table lives on the backend next to the weights; fairseq grows its
 * table on demand, the rows do not depend on its size. */
static kg_status make_positions_table(kg_mllm *m, kg_backend *be, kg_error *err)
{
    int64_t rows = m->cfg.max_positions + m->cfg.pad + 1;
    kg_tensor t = kg_tensor_2d(NULL, be->act_dtype, rows, m->cfg.dim);
    float *host = malloc((size_t)kg_tensor_numel(&t) * sizeof *host);
    kg_status s = KG_OK;

    if (!host)
        return kg_error_set(err, KG_ERR_NOMEM, "mllm: no memory for the %lldx%lld position table",
                            (long long)rows, (long long)m->cfg.dim);
    kg_sinusoid_table(host, rows, m->cfg.dim, m->cfg.pad);
    m->pos_blob = be->ops->alloc(be, kg_tensor_nbytes(&t));
    if (!m->pos_blob) {
        s = kg_error_set(err, KG_ERR_NOMEM, "mllm: cannot allocate the position table (%zu bytes)",
                         kg_tensor_nbytes(&t));
        goto fail;
    }
    t.data = m->pos_blob;
    be->ops->upload_f32(be, &t, host);
    if (be->ops->sync && (s = be->ops->sync(be)) != KG_OK) {
        s = kg_error_set(err, s, "mllm: uploading the position table: %.300s", be->err.msg);
        goto fail;
    }
    m->positions = t;
fail:
    free(host);
    return s;
}

kg_status kg_mllm_load(kg_mllm *m, const kg_mllm_config *cfg, kg_backend *be, const kg_st_file *st,
                       const char *prefix, kg_error *err)
{
    kg_status s;

    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->layers = calloc(cfg->layers ? (size_t)cfg->layers : 1, sizeof *m->layers);
    if (!m->layers)
        return kg_error_set(err, KG_ERR_NOMEM, "mllm: no memory for %lld layers",
                            (long long)cfg->layers);
    s = kg_load_component(be, st, prefix, load_weights, m, &m->blob, err);
    if (s == KG_OK)
        s = make_positions_table(m, be, err);
    if (s != KG_OK) {
        kg_error_prefix(err, "loading mllm");
        kg_mllm_free(m, be);
    }
    return s;
}

void kg_mllm_free(kg_mllm *m, kg_backend *be)
{
    if (!m)
        return;
    kg_weights_free(be, m->blob);
    if (be && m->pos_blob)
        be->ops->free(be, m->pos_blob);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* Overwrites the image slots of x [B*T, D] with consecutive rows of feats, one
 * copy per run of consecutive slots (gpt.py: tok[img_gpt_input_mask] = img_features). */
static void splice_images(kg_ctx *c, kg_tensor *x, const uint8_t *mask, const kg_tensor *feats,
                          int64_t n)
{
    int64_t used = 0, have = feats ? feats->shape[0] : 0;
    int64_t i = 0;

    if (!mask)
        i = n;
    while (i < n) {
        int64_t start;
        kg_tensor dst, src;
        if (!mask[i]) {
            i++;
            continue;
        }
        start = i;
        while (i < n && mask[i])
            i++;
        if (!feats || used + (i - start) > have)
            break;
        dst = kg_tensor_rows(x, start, i - start);
        src = kg_tensor_rows(feats, used, i - start);
        kg_copy(c, &dst, &src);
        used += i - start;
    }
    if (i < n || used != have)
        kg_backend_fail(c->be, KG_ERR_INVALID_ARG,
                        "mllm: the image mask and the %lld image feature rows do not match",
                        (long long)have);
}

void kg_mllm_forward(kg_ctx *c, const kg_mllm *m, kg_tensor *out, const int32_t *tokens,
                     const uint8_t *img_mask, const kg_tensor *img_features, int64_t B, int64_t T)
{
    const kg_mllm_config *cfg = &m->cfg;
    int64_t n = B * T;
    size_t mark = kg_mark(c);
    kg_tensor ids, pos, x = kg_tensor_reshape(out, 2, (int64_t[2]){n, cfg->dim});

    if (img_features && img_features->shape[1] != cfg->dim) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "mllm: image features are %lld wide, the model %lld",
                        (long long)img_features->shape[1], (long long)cfg->dim);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->vocab) {
            kg_backend_fail(c->be, KG_ERR_INVALID_ARG, "mllm: token %lld is %d, vocab %lld",
                            (long long)i, tokens[i], (long long)cfg->vocab);
            return;
        }
    ids = kg_new_dt(c, KG_I32, 1, &n);
    pos = kg_new3(c, B, T, cfg->dim);
    kg_upload(c, &ids, tokens);
    kg_embedding(c, &x, &m->embed, &ids);
    kg_tap(c, out, "embed_tokens");
    splice_images(c, &x, img_mask, img_features, n);
    /* embed_scale multiplies the spliced image rows too */
    kg_scale(c, out, out, (float)sqrt((double)cfg->dim));
    kg_positions_lookup(c, &pos, &m->positions, tokens, B, T, (int32_t)cfg->pad);
    kg_tap(c, &pos, "embed_positions");
    kg_add(c, out, out, &pos);
    kg_tap(c, out, "embedding");
    kg_reset(c, mark);

    for (int64_t i = 0; i < cfg->layers; i++) {
        const kg_mllm_layer *ly = &m->layers[i];
        kg_tensor h = kg_new3(c, B, T, cfg->dim);

        kg_layer_norm(c, &h, out, &ly->attn_ln_w, &ly->attn_ln_b, cfg->ln_eps);
        kg_mha_forward(c, &ly->attn, &h, &h, &h, NULL, 1);
        kg_add(c, out, out, &h);

        kg_ffn_forward(c, &ly->ffn, out);
        kg_tap(c, out, "layers.%lld", (long long)i);
        kg_reset(c, mark);
    }
    kg_layer_norm(c, out, out, &m->ln_w, &m->ln_b, cfg->ln_eps);
    kg_tap(c, out, "layer_norm");
}
