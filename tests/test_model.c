/* test_model.c - kg_model_open on broken model files and kg_generate on bad
 * requests: each case must give its own status and a message naming the
 * culprit, and leave nothing half-done. Broken files are written at test
 * time from the converted tiny model ($KG_TINY_MODEL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kosmosg.h"
#include "safetensors.h"
#include "st_writer.h"
#include "testutil.h"

typedef struct edit {
    const char *drop_tensor;    /* leave this tensor out */
    const char *reshape_tensor; /* replace it by a [1, 1] tensor */
    const char *drop_meta;      /* leave this metadata key out */
    const char *version;        /* kg.format_version override */
} edit;

static char dir[] = "/tmp/kg-model-XXXXXX";

/* Writes a copy of the tiny model with one edit; returns its path. */
static const char *write_variant(const kg_st_file *src, const char *name, const edit *e)
{
    static char path[512];
    kg_st_writer *w = kg_st_writer_new();
    kg_error err = {0};
    float one = 1.0f;
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    for (size_t i = 0; i < kg_st_metadata_count(src); i++) {
        const char *k = kg_st_metadata_key(src, i), *v = kg_st_metadata_value(src, i);
        if (e->drop_meta && !strcmp(k, e->drop_meta))
            continue;
        if (e->version && !strcmp(k, "kg.format_version"))
            v = e->version;
        kg_st_writer_add_metadata(w, k, v, &err);
    }
    for (size_t i = 0; i < kg_st_count(src); i++) {
        const kg_st_tensor *t = kg_st_at(src, i);
        kg_tensor h = kg_tensor_make((void *)t->data, t->dtype, t->ndim, t->shape);
        if (e->drop_tensor && !strcmp(t->name, e->drop_tensor))
            continue;
        if (e->reshape_tensor && !strcmp(t->name, e->reshape_tensor))
            h = kg_tensor_2d(&one, KG_F32, 1, 1);
        kg_st_writer_add(w, t->name, &h, &err);
    }
    if (kg_st_writer_save(w, path, &err) != KG_OK)
        kgt_check(0, "write %s: %s", path, err.msg);
    kg_st_writer_free(w);
    return path;
}

static void expect_open(const char *what, const char *path, const kg_model_options *o,
                        kg_status want, const char *needle)
{
    kg_model *m = (kg_model *)1;
    kg_error err = {0};
    kg_status st = kg_model_open(&m, path, o, &err);
    kgt_check(st == want && m == NULL && strstr(err.msg, needle) != NULL,
              "%s: %s (want %s), message names \"%s\": %s", what, kg_status_name(st),
              kg_status_name(want), needle, err.msg);
}

static void truncated(const char *src, const char *name, double frac, kg_model_options *o)
{
    char path[512], cmd[1200];
    FILE *f = fopen(src, "rb");
    long size;
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "head -c %ld '%s' > '%s'", (long)(size * frac), src, path);
    if (system(cmd) != 0)
        kgt_check(0, "%s", cmd);
    expect_open(name, path, o, KG_ERR_FORMAT, path);
}

static void bad_requests(const char *path)
{
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_model_options o;
    kg_params p;
    kg_output out = {0};
    kg_error err = {0};
    uint8_t px[3 * 16 * 16] = {0};
    kg_image img = {KG_PIX_RGB, 16, 16, 48, px};
    kg_image bad = {KG_PIX_RGB, 16, 16, 10, px};
    kg_status st;

    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    if (!kgt_check(kg_model_open(&m, path, &o, &err) == KG_OK &&
                       kg_session_new(&s, m, &err) == KG_OK,
                   "open tiny model: %s", err.msg))
        return;
#define EXPECT(want, needle, what)                                                        \
    do {                                                                                  \
        kg_error_clear(&err);                                                             \
        st = kg_generate(s, &p, NULL, NULL, NULL, &out, &err);                            \
        kgt_check(st == want && out.rgb == NULL && strstr(err.msg, needle) != NULL,       \
                  "%s: %s (want %s): %s", what, kg_status_name(st), kg_status_name(want), \
                  err.msg);                                                               \
        kg_output_free(&out);                                                             \
    } while (0)

    kg_params_init(&p);
    p.prompt = "<i> wearing <i>";
    p.images = &img;
    p.n_images = 1;
    p.steps = 2;
    p.width = p.height = 64;
    EXPECT(KG_ERR_PROMPT, "2", "two <i> but one image");
    p.prompt = "a cat";
    EXPECT(KG_ERR_PROMPT, "<i>", "no <i> but one image");
    p.prompt = "<i> in the snow";
    p.width = 250;
    EXPECT(KG_ERR_INVALID_ARG, "250x64", "output width 250");
    p.width = 64;
    p.steps = 0;
    EXPECT(KG_ERR_INVALID_ARG, "steps 0", "zero steps");
    p.steps = 2;
    p.images = &bad;
    EXPECT(KG_ERR_IMAGE, "reference image 0", "stride smaller than a row");
    p.images = &img;
    p.num_images = 0;
    EXPECT(KG_ERR_INVALID_ARG, "num_images 0", "zero images requested");
    p.num_images = 1;
    p.prompt = NULL;
    EXPECT(KG_ERR_INVALID_ARG, "prompt", "no prompt");
    {
        static char longp[8000];
        for (int i = 0; i < 2000; i++)
            memcpy(longp + 3 * i, " ab", 3);
        memcpy(longp + 6000, " <i>", 5);
        p.prompt = longp;
        EXPECT(KG_ERR_PROMPT, "prompt too long", "a 2000-word prompt");
    }
    p.prompt = "<i> in the snow";
    kg_error_clear(&err);
    kgt_check(kg_generate(s, &p, NULL, NULL, NULL, &out, &err) == KG_OK && out.n == 1 && out.rgb,
              "the session still generates after the bad requests: %s", err.msg);
    kg_output_free(&out);
#undef EXPECT
    kg_session_free(s);
    kg_model_close(m);
}

int main(void)
{
    const char *tiny = getenv("KG_TINY_MODEL");
    kg_st_file *src = NULL;
    kg_error err = {0};
    kg_model_options o;
    kg_model *m = NULL;
    char cmd[600];

    if (!kgt_check(tiny != NULL, "KG_TINY_MODEL is set"))
        return kgt_finish();
    if (!kgt_check(kg_st_open(&src, tiny, &err) == KG_OK, "open %s: %s", tiny, err.msg))
        return kgt_finish();
    if (!mkdtemp(dir))
        return kgt_check(0, "mkdtemp"), kgt_finish();
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;

    expect_open("missing file", "/nonexistent/kosmosg.safetensors", &o, KG_ERR_IO,
                "/nonexistent/kosmosg.safetensors");
    expect_open(
        "missing tensor",
        write_variant(src, "missing", &(edit){.drop_tensor = "diffusion_unet.unet.conv_in.weight"}),
        &o, KG_ERR_WEIGHTS, "diffusion_unet.unet.conv_in.weight");
    expect_open(
        "wrong shape",
        write_variant(src, "shape", &(edit){.reshape_tensor = "img_connector.dense.weight"}), &o,
        KG_ERR_WEIGHTS, "img_connector.dense.weight");
    expect_open("wrong format version", write_variant(src, "version", &(edit){.version = "99"}), &o,
                KG_ERR_VERSION, "format version 99");
    expect_open("no format version",
                write_variant(src, "noversion", &(edit){.drop_meta = "kg.format_version"}), &o,
                KG_ERR_FORMAT, "kg.format_version");
    expect_open("no unet config",
                write_variant(src, "noconfig", &(edit){.drop_meta = "kg.config.unet"}), &o,
                KG_ERR_FORMAT, "kg.config.unet");
    expect_open("no tokenizer",
                write_variant(src, "notok", &(edit){.drop_tensor = "tokenizer.sentencepiece"}), &o,
                KG_ERR_WEIGHTS, "tokenizer.sentencepiece");
    truncated(tiny, "truncated_half", 0.5, &o);
    truncated(tiny, "truncated_header", 0.0001, &o);

    /* CUDA requested on a machine without a usable device: a clear error, no fallback */
    o.backend = KG_BACKEND_CUDA;
    {
        kg_status st = kg_model_open(&m, tiny, &o, &err);
        if (st == KG_OK) {
            printf("note: a CUDA device is present; the no-device checks do not apply\n");
            kg_model_close(m);
            m = NULL;
        } else {
            kgt_check(st == KG_ERR_NO_DEVICE && strstr(err.msg, "cuda") != NULL,
                      "backend cuda without a device: %s: %s", kg_status_name(st), err.msg);
            /* auto falls back to the CPU and says why */
            o.backend = KG_BACKEND_AUTO;
            kg_error_clear(&err);
            st = kg_model_open(&m, tiny, &o, &err);
            kgt_check(st == KG_OK && kg_model_backend(m) == KG_BACKEND_CPU &&
                          kg_model_fallback_reason(m) != NULL,
                      "backend auto without a device runs on the CPU (reason: %s)",
                      m && kg_model_fallback_reason(m) ? kg_model_fallback_reason(m) : "none");
            kg_model_close(m);
        }
    }
    bad_requests(tiny);

    kg_st_close(src);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("note: could not remove %s\n", dir);
    return kgt_finish();
}
