/* test_connector.c - kg_connector_forward on the tiny model ($KG_TINY_MODEL)
 * against kosmosg/connector.safetensors (Kosmos-G's XConnector in float64),
 * and the whole image branch (preprocess -> CLIP -> connector) against the
 * end-to-end goldens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_vit.h"
#include "connector.h"
#include "image.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

static void check_config(const kg_connector_config *cfg, const kg_st_file *g)
{
    kg_json *j = kgt_meta_json(g, "config");
    kg_connector_config gc;
    kg_error err = {0};
    if (!j)
        return;
    if (kgt_check(kg_connector_config_from_json(&gc, j, &err) == KG_OK, "golden config: %s",
                  err.msg[0] ? err.msg : "ok"))
        kgt_check(gc.in == cfg->in && gc.out == cfg->out && gc.heads == cfg->heads &&
                      gc.latents == cfg->latents,
                  "model config = golden config (in %lld, out %lld, %d heads, %lld latents)",
                  (long long)cfg->in, (long long)cfg->out, cfg->heads, (long long)cfg->latents);
    kg_json_free(j);
}

static void check_bad_config(void)
{
    static const char *bad[] = {
        "{\"in\":64,\"out\":40,\"heads\":3,\"latent_query_num\":64}",
        "{\"in\":64,\"out\":40,\"heads\":4,\"latent_query_num\":0}",
        "{\"in\":64,\"out\":40,\"heads\":4}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kg_json *j = NULL;
        kg_connector_config cfg;
        kg_error err = {0};
        kg_status s = kg_json_parse(&j, bad[i], strlen(bad[i]), "test", &err);
        if (s == KG_OK)
            s = kg_connector_config_from_json(&cfg, j, &err);
        kgt_check(s != KG_OK && err.msg[0], "bad config %zu rejected: %s", i, err.msg);
        kg_json_free(j);
    }
}

/* The official chain on the end-to-end goldens: RGB image -> kg_image_preprocess
 * (= pixel_values, exactly) -> CLIP (out64.clip_features) -> connector
 * (out64.connector). */
static void check_e2e_chain(const kg_st_file *st, kg_backend *be, const kg_connector *conn,
                            const char *file)
{
    char rel[128], name[64];
    kg_st_file *g;
    kg_json *j = kgt_meta_json(st, "kg.config.clip");
    kg_clip_config cfg;
    kg_clip clip;
    kg_error err = {0};
    kg_ctx c;
    float *px = NULL, *feat = NULL, *lat = NULL;
    double *ref = NULL;
    size_t n = 0, plane = (size_t)KG_IMAGE_SIZE * KG_IMAGE_SIZE * 3;
    int64_t nb = 0;

    snprintf(rel, sizeof rel, "kosmosg/%s.safetensors", file);
    g = kgt_golden_open(rel);
    if (!g || !j || kg_clip_config_from_json(&cfg, j, &err) != KG_OK ||
        !kgt_check(kg_clip_load(&clip, &cfg, be, st, "img_model.visual.", &err) == KG_OK,
                   "%s: kg_clip_load %s", file, err.msg[0] ? err.msg : "ok"))
        goto done;
    for (;; nb++) {
        snprintf(name, sizeof name, "in.image%lld.rgb", (long long)nb);
        if (!kg_st_find(g, name))
            break;
    }
    px = malloc((size_t)(nb ? nb : 1) * plane * sizeof *px);
    for (int64_t i = 0; i < nb; i++) {
        const kg_st_tensor *t;
        kg_image im;
        snprintf(name, sizeof name, "in.image%lld.rgb", (long long)i);
        t = kg_st_find(g, name);
        im = (kg_image){KG_PIX_RGB, t->shape[1], t->shape[0], (size_t)t->shape[1] * 3, t->data};
        kgt_check(kg_image_preprocess(&im, px + (size_t)i * plane, &err) == KG_OK,
                  "%s: preprocess %s", file, name);
    }
    ref = kgt_read_f64(g, "pixel_values", &n);
    if (!ref || !kgt_check(n == (size_t)nb * plane, "%s: %lld images, pixel_values %zu values",
                           file, (long long)nb, n))
        goto done_clip;
    snprintf(name, sizeof name, "%s pixel_values", file);
    kgt_compare(name, px, ref, n, 0.0, 0.0);
    free(ref);

    kgt_ctx(&c, be, (size_t)64 << 20);
    {
        kg_tensor pixels = kg_new4(&c, nb, 3, KG_IMAGE_SIZE, KG_IMAGE_SIZE);
        kg_tensor f = kg_new3(&c, nb, cfg.tokens, cfg.width);
        kg_tensor l = kg_new3(&c, nb, conn->cfg.latents, conn->cfg.out);
        kg_upload_f32(&c, &pixels, px);
        kg_clip_forward(&c, &clip, &f, &pixels);
        kg_connector_forward(&c, conn, &l, &f);
        kgt_check(kg_ctx_status(&c, &err) == KG_OK, "%s: chain forward %s", file,
                  err.msg[0] ? err.msg : "ok");
        feat = malloc((size_t)kg_tensor_numel(&f) * sizeof *feat);
        lat = malloc((size_t)kg_tensor_numel(&l) * sizeof *lat);
        kg_download_f32(&c, feat, &f);
        kg_download_f32(&c, lat, &l);
        ref = kgt_read_f64(g, "out64.clip_features", &n);
        snprintf(name, sizeof name, "%s clip_features", file);
        if (ref && kgt_check(n == (size_t)kg_tensor_numel(&f), "%s: %zu values", name, n))
            kgt_compare(name, feat, ref, n, ATOL, RTOL);
        free(ref);
        ref = kgt_read_f64(g, "out64.connector", &n);
        snprintf(name, sizeof name, "%s connector", file);
        if (ref && kgt_check(n == (size_t)kg_tensor_numel(&l), "%s: %zu values", name, n))
            kgt_compare(name, lat, ref, n, ATOL, RTOL);
    }
    kg_ctx_release(&c);
done_clip:
    kg_clip_free(&clip, be);
done:
    free(px);
    free(feat);
    free(lat);
    free(ref);
    kg_json_free(j);
    kg_st_close(g);
}

int main(void)
{
    const char *path = getenv("KG_TINY_MODEL");
    kg_st_file *g = kgt_golden_open("kosmosg/connector.safetensors");
    kg_st_file *st = NULL;
    kg_backend *be = kgt_cpu_backend();
    kg_error err = {0};
    kg_json *j = NULL;
    kg_connector_config cfg;
    kg_connector m;
    kg_ctx c;
    kgt_taps taps;
    float *feat = NULL, *got = NULL;
    double *ref = NULL, *src_len = NULL;
    size_t n = 0;
    int loaded = 0;

    check_bad_config();
    if (!kgt_check(path != NULL, "KG_TINY_MODEL is set") || !g)
        goto done;
    if (!kgt_check(kg_st_open(&st, path, &err) == KG_OK, "open %s: %s", path, err.msg))
        goto done;
    j = kgt_meta_json(st, "kg.config.connector");
    if (!j || !kgt_check(kg_connector_config_from_json(&cfg, j, &err) == KG_OK,
                         "connector config: %s", err.msg[0] ? err.msg : "ok"))
        goto done;
    check_config(&cfg, g);
    loaded = kgt_check(kg_connector_load(&m, &cfg, be, st, "img_connector.", &err) == KG_OK,
                       "kg_connector_load: %s", err.msg[0] ? err.msg : "ok");
    if (!loaded)
        goto done;

    feat = kgt_read_f32(g, "in.features", &n);
    src_len = kgt_read_f64(g, "in.src_len", NULL);
    if (!feat || !src_len)
        goto done;
    {
        int64_t t = (int64_t)src_len[0];
        int64_t nb = (int64_t)(n / (size_t)(t * cfg.in));
        size_t rows = (size_t)(cfg.latents * cfg.out);
        kg_tensor x, out;
        size_t allocs;

        kg_ctx_init(&c, be);
        kg_ctx_begin_measure(&c);
        x = kg_new3(&c, nb, t, cfg.in);
        out = kg_new3(&c, nb, cfg.latents, cfg.out);
        kg_connector_forward(&c, &m, &out, &x);
        if (!kgt_check(kg_ctx_end_measure(&c, &err) == KG_OK, "measure pass: %s",
                       err.msg[0] ? err.msg : "ok"))
            goto done_ctx;
        printf("arena for N=%lld, T=%lld: %zu bytes\n", (long long)nb, (long long)t, c.arena_cap);

        x = kg_new3(&c, nb, t, cfg.in);
        out = kg_new3(&c, nb, cfg.latents, cfg.out);
        kg_upload_f32(&c, &x, feat);
        kgt_taps_attach(&taps, &c);
        allocs = be->n_allocs;
        kg_connector_forward(&c, &m, &out, &x);
        kgt_check(kg_ctx_status(&c, &err) == KG_OK, "forward: %s", err.msg[0] ? err.msg : "ok");
        kgt_check(be->n_allocs == allocs, "no backend allocation inside the forward (%zu)",
                  be->n_allocs - allocs);
        got = malloc((size_t)kg_tensor_numel(&out) * sizeof *got);
        kg_download_f32(&c, got, &out);
        ref = kgt_read_f64(g, "out64.latents", &n);
        if (ref && kgt_check(n == (size_t)kg_tensor_numel(&out), "out64.latents has %zu values", n))
            kgt_compare("latents", got, ref, n, ATOL, RTOL);
        kgt_taps_compare(&taps, g, "act64.", "act.", ATOL, RTOL, NULL);
        kgt_taps_free(&taps);

        /* the last image alone gives its rows of the batched result */
        if (ref && nb > 1) {
            kg_tensor x1, o1;
            kg_reset(&c, 0);
            x1 = kg_new3(&c, 1, t, cfg.in);
            o1 = kg_new3(&c, 1, cfg.latents, cfg.out);
            kg_upload_f32(&c, &x1, feat + (size_t)(nb - 1) * (size_t)(t * cfg.in));
            kg_connector_forward(&c, &m, &o1, &x1);
            kgt_check(kg_ctx_status(&c, &err) == KG_OK, "forward N=1: %s",
                      err.msg[0] ? err.msg : "ok");
            kg_download_f32(&c, got, &o1);
            kgt_compare("latents, last image alone", got, ref + (size_t)(nb - 1) * rows, rows, ATOL,
                        RTOL);
        }
    done_ctx:
        kg_ctx_release(&c);
    }
    check_e2e_chain(st, be, &m, "e2e_two_images_dpms");
    check_e2e_chain(st, be, &m, "e2e_two_images_ddim");
    check_e2e_chain(st, be, &m, "e2e_variation_g1_dpms");
    check_e2e_chain(st, be, &m, "e2e_app512_dpms");

done:
    if (loaded)
        kg_connector_free(&m, be);
    free(feat);
    free(src_len);
    free(got);
    free(ref);
    kg_json_free(j);
    kg_st_close(st);
    kg_st_close(g);
    kg_backend_free(be);
    return kgt_finish();
}
