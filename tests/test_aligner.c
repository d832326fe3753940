/* test_aligner.c - AlignerNet (encoder half) against Kosmos-G's own Aligner_encoder
 * run in float64 (golden kosmosg/aligner.safetensors): cases two_images, padded
 * (B 2, key-padding mask = tokens == 1) and null (T 1). Every tap and the output
 * are compared with max-abs 1e-4 / rel 1e-3; the padded batch must also equal each
 * prompt run alone (out.padded.single<b>.out), both as a batch row and when the
 * prompt's unpadded hidden states are fed alone. Weights: $KG_TINY_MODEL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aligner.h"
#include "json.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

static int load_model(kg_aligner *m, kg_backend *be, const kg_st_file *st)
{
    const char *text = kg_st_metadata(st, "kg.config.aligner");
    kg_json *j = NULL;
    kg_aligner_config cfg;
    kg_error err = {0};
    kg_status s = KG_ERR_FORMAT;

    if (!text)
        snprintf(err.msg, sizeof err.msg, "no kg.config.aligner in the model metadata");
    else if ((s = kg_json_parse(&j, text, strlen(text), "kg.config.aligner", &err)) == KG_OK &&
             (s = kg_aligner_config_from_json(&cfg, j, &err)) == KG_OK)
        s = kg_aligner_load(m, &cfg, be, st, "aligner.", &err);
    kg_json_free(j);
    return kgt_check(s == KG_OK, "load aligner: %s", s == KG_OK ? "ok" : err.msg);
}

/* One forward sized by a measure pass; got receives [B, queries, dim]. */
static kg_status forward(kg_ctx *c, const kg_aligner *m, float *got, const float *hidden,
                         const uint8_t *pad, int64_t B, int64_t T, kg_error *err)
{
    kg_tensor out, in;
    kg_tap_fn tap = c->tap;
    kg_status s;

    kg_ctx_clear_error(c);
    kg_ctx_begin_measure(c);
    out = kg_new3(c, B, m->cfg.queries, m->cfg.dim);
    in = kg_new3(c, B, T, m->cfg.in);
    kg_aligner_forward(c, m, &out, &in, pad);
    if ((s = kg_ctx_end_measure(c, err)) != KG_OK)
        return s;
    c->tap = tap;
    out = kg_new3(c, B, m->cfg.queries, m->cfg.dim);
    in = kg_new3(c, B, T, m->cfg.in);
    kg_upload_f32(c, &in, hidden);
    kg_aligner_forward(c, m, &out, &in, pad);
    if ((s = kg_ctx_status(c, err)) != KG_OK)
        return s;
    kg_download_f32(c, got, &out);
    return kg_ctx_status(c, err);
}

static void compare_f32(const char *name, const float *got, const float *ref32, size_t n)
{
    double *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = ref32[i];
    kgt_compare(name, got, ref, n, ATOL, RTOL);
    free(ref);
}

/* Each padded prompt alone (its own MLLM pass in the golden) must match row b of
 * the padded batch and the aligner run on that prompt's unpadded rows. */
static void check_single(kg_backend *be, const kg_aligner *m, const kg_st_file *g,
                         const float *batch_out, const float *hidden, const uint8_t *pad, int64_t B,
                         int64_t T)
{
    size_t per = (size_t)(m->cfg.queries * m->cfg.dim);
    float *got = malloc(per * sizeof *got);

    for (int64_t b = 0; b < B; b++) {
        char key[96], name[96];
        size_t n = 0;
        float *ref;
        int64_t len = 0;
        kg_ctx c;
        kg_error err = {0};
        kg_status s;

        snprintf(key, sizeof key, "out.padded.single%lld.out", (long long)b);
        ref = kgt_read_f32(g, key, &n);
        if (!ref || !kgt_check(n == per, "%s has %zu elements", key, per)) {
            free(ref);
            continue;
        }
        snprintf(name, sizeof name, "padded row %lld vs single%lld", (long long)b, (long long)b);
        compare_f32(name, batch_out + b * per, ref, per);

        while (len < T && !pad[b * T + len])
            len++;
        kg_ctx_init(&c, be);
        s = forward(&c, m, got, hidden + b * T * m->cfg.in, pad + b * T, 1, len, &err);
        if (kgt_check(s == KG_OK, "single %lld (T %lld): forward %s", (long long)b, (long long)len,
                      s == KG_OK ? "ok" : err.msg)) {
            snprintf(name, sizeof name, "unpadded prompt %lld alone vs single%lld", (long long)b,
                     (long long)b);
            compare_f32(name, got, ref, per);
        }
        kg_ctx_release(&c);
        free(ref);
    }
    free(got);
}

static void run_case(kg_backend *be, const kg_aligner *m, const kg_st_file *g, const char *name)
{
    char key[128], p64[64], p32[64];
    const kg_st_tensor *ht, *pt;
    float *hidden = NULL, *got = NULL;
    double *ref = NULL;
    size_t n = 0, nref = 0, nout;
    int64_t B, T;
    kg_ctx c;
    kgt_taps taps;
    kg_error err = {0};
    kg_status s;

    printf("--- case %s\n", name);
    snprintf(key, sizeof key, "in.%s.condition", name);
    ht = kg_st_find(g, key);
    if (!kgt_check(ht && ht->ndim == 3 && ht->shape[2] == m->cfg.in, "%s present as [B, T, %lld]",
                   key, (long long)m->cfg.in))
        return;
    B = ht->shape[0];
    T = ht->shape[1];
    snprintf(key, sizeof key, "in.%s.padding_mask", name);
    pt = kg_st_find(g, key);
    if (!kgt_check(pt && pt->dtype == KG_U8 && pt->nbytes == (size_t)(B * T), "%s present", key))
        return;
    snprintf(key, sizeof key, "in.%s.condition", name);
    hidden = kgt_read_f32(g, key, &n);
    nout = (size_t)(B * m->cfg.queries * m->cfg.dim);
    got = malloc(nout * sizeof *got);

    kg_ctx_init(&c, be);
    kgt_taps_attach(&taps, &c);
    s = forward(&c, m, got, hidden, pt->data, B, T, &err);
    if (kgt_check(s == KG_OK, "%s: forward %s", name, s == KG_OK ? "ok" : err.msg)) {
        snprintf(key, sizeof key, "out64.%s.out", name);
        ref = kgt_read_f64(g, key, &nref);
        if (kgt_check(ref && nref == nout, "%s has %zu elements", key, nout)) {
            snprintf(key, sizeof key, "%s.out", name);
            kgt_compare(key, got, ref, nref, ATOL, RTOL);
        }
        snprintf(p64, sizeof p64, "act64.%s.", name);
        snprintf(p32, sizeof p32, "act.%s.", name);
        kgt_taps_compare(&taps, g, p64, p32, ATOL, RTOL, NULL);
    }
    kgt_taps_free(&taps);
    kg_ctx_release(&c);
    if (s == KG_OK && !strcmp(name, "padded"))
        check_single(be, m, g, got, hidden, pt->data, B, T);
    free(hidden);
    free(got);
    free(ref);
}

int main(void)
{
    static const char *cases[] = {"two_images", "padded", "null"};
    kg_backend *be = kgt_cpu_backend();
    kg_st_file *st = kgt_tiny_model();
    kg_st_file *g = kgt_golden_open("kosmosg/aligner.safetensors");
    kg_aligner m;

    memset(&m, 0, sizeof m);
    if (st && g && load_model(&m, be, st))
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            run_case(be, &m, g, cases[i]);
    kg_aligner_free(&m, be);
    kg_st_close(g);
    kg_st_close(st);
    kg_backend_free(be);
    return kgt_finish();
}
