/* test_clip.c - kg_clip_forward on the tiny model ($KG_TINY_MODEL) against
 * kosmosg/clip.safetensors (Kosmos-G's ClipVisualOnly run in float64). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_vit.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

/* The model file's config must describe the golden's model. */
static void check_config(const kg_clip_config *cfg, const kg_st_file *g)
{
    kg_json *j = kgt_meta_json(g, "config");
    kg_clip_config gc;
    kg_error err = {0};
    if (!j)
        return;
    if (kgt_check(kg_clip_config_from_json(&gc, j, &err) == KG_OK, "golden config: %s",
                  err.msg[0] ? err.msg : "ok"))
        kgt_check(gc.width == cfg->width && gc.layers == cfg->layers &&
                      gc.head_width == cfg->head_width && gc.patch_size == cfg->patch_size &&
                      gc.image_size == cfg->image_size && gc.mlp_width == cfg->mlp_width,
                  "model config = golden config (width %lld, %d layers, %d heads, mlp %lld, "
                  "%lld tokens)",
                  (long long)cfg->width, cfg->layers, cfg->heads, (long long)cfg->mlp_width,
                  (long long)cfg->tokens);
    kg_json_free(j);
}

static void check_bad_config(void)
{
    static const char *bad[] = {
        "{\"width\":64,\"layers\":2,\"head_width\":24,\"patch_size\":14,\"image_size\":224,"
        "\"mlp_ratio\":4}",
        "{\"width\":64,\"layers\":2,\"head_width\":16,\"patch_size\":15,\"image_size\":224,"
        "\"mlp_ratio\":4}",
        "{\"width\":64,\"layers\":2,\"head_width\":16,\"patch_size\":14,\"image_size\":224}",
        "{\"width\":64,\"layers\":2,\"head_width\":16,\"patch_size\":14,\"image_size\":224,"
        "\"mlp_ratio\":4,\"act\":\"relu\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kg_json *j = NULL;
        kg_clip_config cfg;
        kg_error err = {0};
        kg_status s = kg_json_parse(&j, bad[i], strlen(bad[i]), "test", &err);
        if (s == KG_OK)
            s = kg_clip_config_from_json(&cfg, j, &err);
        kgt_check(s != KG_OK && err.msg[0], "bad config %zu rejected: %s", i, err.msg);
        kg_json_free(j);
    }
}

int main(void)
{
    const char *path = getenv("KG_TINY_MODEL");
    kg_st_file *g = kgt_golden_open("kosmosg/clip.safetensors");
    kg_st_file *st = NULL;
    kg_backend *be = kgt_cpu_backend();
    kg_error err = {0};
    kg_json *j = NULL;
    kg_clip_config cfg;
    kg_clip m;
    kg_ctx c;
    kgt_taps taps;
    float *px = NULL, *got = NULL;
    double *ref = NULL;
    size_t n = 0;
    int loaded = 0;

    check_bad_config();
    if (!kgt_check(path != NULL, "KG_TINY_MODEL is set") || !g)
        goto done;
    if (!kgt_check(kg_st_open(&st, path, &err) == KG_OK, "open %s: %s", path, err.msg))
        goto done;
    j = kgt_meta_json(st, "kg.config.clip");
    if (!j || !kgt_check(kg_clip_config_from_json(&cfg, j, &err) == KG_OK, "clip config: %s",
                         err.msg[0] ? err.msg : "ok"))
        goto done;
    check_config(&cfg, g);
    loaded = kgt_check(kg_clip_load(&m, &cfg, be, st, "img_model.visual.", &err) == KG_OK,
                       "kg_clip_load: %s", err.msg[0] ? err.msg : "ok");
    if (!loaded)
        goto done;

    px = kgt_read_f32(g, "in.pixel_values", &n);
    if (!px)
        goto done;
    {
        int64_t nb = (int64_t)(n / (size_t)(3 * cfg.image_size * cfg.image_size));
        kg_tensor pixels, out;
        size_t allocs;

        /* size the arena with the measure pass, as a session does */
        kg_ctx_init(&c, be);
        kg_ctx_begin_measure(&c);
        pixels = kg_new4(&c, nb, 3, cfg.image_size, cfg.image_size);
        out = kg_new3(&c, nb, cfg.tokens, cfg.width);
        kg_clip_forward(&c, &m, &out, &pixels);
        if (!kgt_check(kg_ctx_end_measure(&c, &err) == KG_OK, "measure pass: %s",
                       err.msg[0] ? err.msg : "ok"))
            goto done_ctx;
        printf("arena for N=%lld: %zu bytes\n", (long long)nb, c.arena_cap);

        pixels = kg_new4(&c, nb, 3, cfg.image_size, cfg.image_size);
        out = kg_new3(&c, nb, cfg.tokens, cfg.width);
        kg_upload_f32(&c, &pixels, px);
        kgt_taps_attach(&taps, &c);
        allocs = be->n_allocs;
        kg_clip_forward(&c, &m, &out, &pixels);
        kgt_check(kg_ctx_status(&c, &err) == KG_OK, "forward: %s", err.msg[0] ? err.msg : "ok");
        kgt_check(be->n_allocs == allocs, "no backend allocation inside the forward (%zu)",
                  be->n_allocs - allocs);

        got = malloc((size_t)kg_tensor_numel(&out) * sizeof *got);
        kg_download_f32(&c, got, &out);
        ref = kgt_read_f64(g, "out64.features", &n);
        if (ref &&
            kgt_check(n == (size_t)kg_tensor_numel(&out), "out64.features has %zu values", n))
            kgt_compare("features", got, ref, n, ATOL, RTOL);
        kgt_taps_compare(&taps, g, "act64.", "act.", ATOL, RTOL, NULL);
        kgt_taps_free(&taps);

        /* the last image alone gives its rows of the batched result */
        if (ref && nb > 1) {
            size_t plane = (size_t)(3 * cfg.image_size * cfg.image_size);
            size_t rows = (size_t)(cfg.tokens * cfg.width);
            kg_tensor p1, o1;
            kg_reset(&c, 0);
            p1 = kg_new4(&c, 1, 3, cfg.image_size, cfg.image_size);
            o1 = kg_new3(&c, 1, cfg.tokens, cfg.width);
            kg_upload_f32(&c, &p1, px + (size_t)(nb - 1) * plane);
            kg_clip_forward(&c, &m, &o1, &p1);
            kgt_check(kg_ctx_status(&c, &err) == KG_OK, "forward N=1: %s",
                      err.msg[0] ? err.msg : "ok");
            kg_download_f32(&c, got, &o1);
            kgt_compare("features, last image alone", got, ref + (size_t)(nb - 1) * rows, rows,
                        ATOL, RTOL);
        }
    done_ctx:
        kg_ctx_release(&c);
    }

done:
    if (loaded)
        kg_clip_free(&m, be);
    free(px);
    free(got);
    free(ref);
    kg_json_free(j);
    kg_st_close(st);
    kg_st_close(g);
    kg_backend_free(be);
    return kgt_finish();
}
