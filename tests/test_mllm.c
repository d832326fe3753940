/* test_mllm.c - the MLLM decoder against Kosmos-G's own LMDecoder run in float64
 * (golden kosmosg/mllm.safetensors): the cases two_images (T 136), text, null ([[0]])
 * and padded (B 2, right-padded, T 139). Every tap (embed_tokens, embed_positions,
 * embedding, layers.i, layer_norm) and the output are compared with max-abs 1e-4 /
 * rel 1e-3; the arena is sized by a measure pass. Weights: $KG_TINY_MODEL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "mllm.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

static int load_model(kg_mllm *m, kg_backend *be, const kg_st_file *st)
{
    const char *text = kg_st_metadata(st, "kg.config.mllm");
    kg_json *j = NULL;
    kg_mllm_config cfg;
    kg_error err = {0};
    kg_status s = KG_ERR_FORMAT;

    if (!text)
        snprintf(err.msg, sizeof err.msg, "no kg.config.mllm in the model metadata");
    else if ((s = kg_json_parse(&j, text, strlen(text), "kg.config.mllm", &err)) == KG_OK &&
             (s = kg_mllm_config_from_json(&cfg, j, &err)) == KG_OK)
        s = kg_mllm_load(m, &cfg, be, st, "gpt_model.decoder.", &err);
    kg_json_free(j);
    return kgt_check(s == KG_OK, "load mllm: %s", s == KG_OK ? "ok" : err.msg);
}

/* Runs the forward once in measure mode and once for real; returns the status. */
static kg_status forward(kg_ctx *c, const kg_mllm *m, float *got, const int32_t *tokens,
                         const uint8_t *mask, const float *feats, int64_t n_feats, int64_t B,
                         int64_t T, kg_error *err)
{
    int64_t D = m->cfg.dim;
    kg_tensor out, ft;
    kg_tap_fn tap = c->tap;
    kg_status s;

    kg_ctx_begin_measure(c);
    out = kg_new3(c, B, T, D);
    ft = kg_new2(c, n_feats ? n_feats : 1, D);
    kg_mllm_forward(c, m, &out, tokens, mask, n_feats ? &ft : NULL, B, T);
    if ((s = kg_ctx_end_measure(c, err)) != KG_OK)
        return s;
    c->tap = tap;
    out = kg_new3(c, B, T, D);
    ft = kg_new2(c, n_feats ? n_feats : 1, D);
    if (n_feats)
        kg_upload_f32(c, &ft, feats);
    kg_mllm_forward(c, m, &out, tokens, mask, n_feats ? &ft : NULL, B, T);
    if ((s = kg_ctx_status(c, err)) != KG_OK)
        return s;
    kg_download_f32(c, got, &out);
    return kg_ctx_status(c, err);
}

static void run_case(kg_backend *be, const kg_mllm *m, const kg_st_file *g, const char *name)
{
    char key[128], p64[64], p32[64];
    const kg_st_tensor *tt, *mt;
    double *tok64 = NULL, *ref = NULL;
    float *feats = NULL, *got = NULL;
    int32_t *tokens = NULL;
    size_t n = 0, nf = 0, nref = 0;
    int64_t B, T, D = m->cfg.dim;
    kg_ctx c;
    kgt_taps taps;
    kg_error err = {0};
    kg_status s;

    printf("--- case %s\n", name);
    snprintf(key, sizeof key, "in.%s.tokens", name);
    tt = kg_st_find(g, key);
    if (!kgt_check(tt && tt->ndim == 2, "%s present as [B, T]", key))
        return;
    B = tt->shape[0];
    T = tt->shape[1];
    tok64 = kgt_read_f64(g, key, &n);
    tokens = malloc((size_t)(B * T) * sizeof *tokens);
    for (size_t i = 0; i < n; i++)
        tokens[i] = (int32_t)tok64[i];
    snprintf(key, sizeof key, "in.%s.img_mask", name);
    mt = kg_st_find(g, key);
    snprintf(key, sizeof key, "in.%s.img_features", name);
    if (kg_st_find(g, key))
        feats = kgt_read_f32(g, key, &nf);
    got = malloc((size_t)(B * T * D) * sizeof *got);

    kg_ctx_init(&c, be);
    kg_ctx_clear_error(&c);
    kgt_taps_attach(&taps, &c);
    s = forward(&c, m, got, tokens, mt ? (const uint8_t *)mt->data : NULL, feats, (int64_t)nf / D,
                B, T, &err);
    if (kgt_check(s == KG_OK, "%s: forward %s", name, s == KG_OK ? "ok" : err.msg)) {
        snprintf(key, sizeof key, "out64.%s.hidden", name);
        ref = kgt_read_f64(g, key, &nref);
        if (kgt_check(ref && nref == (size_t)(B * T * D), "%s has %lld elements", key,
                      (long long)(B * T * D))) {
            snprintf(key, sizeof key, "%s.hidden", name);
            kgt_compare(key, got, ref, nref, ATOL, RTOL);
        }
        snprintf(p64, sizeof p64, "act64.%s.", name);
        snprintf(p32, sizeof p32, "act.%s.", name);
        kgt_taps_compare(&taps, g, p64, p32, ATOL, RTOL, NULL);
    }
    kgt_taps_free(&taps);
    kg_ctx_release(&c);
    free(tok64);
    free(tokens);
    free(feats);
    free(got);
    free(ref);
}

/* Bad inputs give a sticky error naming the problem instead of reading past buffers. */
static void run_errors(kg_backend *be, const kg_mllm *m)
{
    int32_t tokens[4] = {0, 64003, 64003, 5};
    uint8_t mask[4] = {0, 1, 1, 0};
    float got[4 * 64];
    kg_ctx c;
    kg_error err = {0};
    kg_status s;

    if (m->cfg.dim > 64)
        return;
    kg_ctx_init(&c, be);
    s = forward(&c, m, got, tokens, mask, NULL, 0, 1, 4, &err);
    kgt_check(s == KG_ERR_INVALID_ARG, "image slots without features: %s (%s)", kg_status_name(s),
              err.msg);
    kg_ctx_clear_error(&c);
    tokens[3] = (int32_t)m->cfg.vocab;
    s = forward(&c, m, got, tokens, NULL, NULL, 0, 1, 4, &err);
    kgt_check(s == KG_ERR_INVALID_ARG, "token id = vocab: %s (%s)", kg_status_name(s), err.msg);
    kg_ctx_clear_error(&c);
    kg_ctx_release(&c);
}

int main(void)
{
    static const char *cases[] = {"two_images", "text", "null", "padded"};
    kg_backend *be = kgt_cpu_backend();
    kg_st_file *st = kgt_tiny_model();
    kg_st_file *g = kgt_golden_open("kosmosg/mllm.safetensors");
    kg_mllm m;

    memset(&m, 0, sizeof m);
    if (st && g && load_model(&m, be, st)) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            run_case(be, &m, g, cases[i]);
        run_errors(be, &m);
    }
    kg_mllm_free(&m, be);
    kg_st_close(g);
    kg_st_close(st);
    kg_backend_free(be);
    return kgt_finish();
}
