/* test_odd_size.c - a size that is a multiple of 8 but not of 64: 72x56 pixels, latent 9x7.
 *
 * Reference: tests/golden-gen/data/odd_size.safetensors, written by gen_odd_size.py beside it
 * with diffusers 0.21.4 on the golden tiny models sd/unet_tiny4 (SD1.5's topology, three
 * stride-2 downsamplers: 9x7 -> 5x4 -> 3x2 -> 2x1, and diffusers' forward_upsample_size
 * interpolating back to each skip's size) and sd/vae_tiny4 (decode 9x7 -> 72x56), in float64.
 * The U-Net output, each of its down/upsampler outputs, and the VAE output are compared with
 * max-abs 1e-4 / rel 1e-3 (printed per tensor; NaN/Inf fail). Also: a model reports
 * kg_model_size_multiple() == KG_SIZE_STEP, and generates 72x56 end to end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kosmosg.h"
#include "testutil.h"
#include "unet.h"
#include "vae.h"

#define ATOL 1e-4
#define RTOL 1e-3

static kg_st_file *data_open(void)
{
    kg_st_file *f = NULL;
    kg_error err = {0};
    if (kg_st_open(&f, KG_ODD_SIZE_DATA, &err) != KG_OK) {
        kgt_check(0, "open %s: %s", KG_ODD_SIZE_DATA, err.msg);
        return NULL;
    }
    return f;
}

static kg_json *config(const kg_st_file *st, kg_error *err)
{
    const char *text = kg_st_metadata(st, "config");
    kg_json *j = NULL;
    if (!text) {
        kg_error_set(err, KG_ERR_FORMAT, "%s: no 'config' metadata", kg_st_path(st));
        return NULL;
    }
    return kg_json_parse(&j, text, strlen(text), "config", err) == KG_OK ? j : NULL;
}

/* only the resamplers are recorded in the reference */
static const char *resamplers(const char *tap, char *buf, size_t n)
{
    if (!strstr(tap, "samplers.0") || strchr(tap, '#'))
        return NULL;
    snprintf(buf, n, "%s", tap);
    return buf;
}

static void test_unet(kg_backend *be, const kg_st_file *d)
{
    kg_st_file *w = kgt_golden_open("sd/unet_tiny4.weights.safetensors");
    kg_unet m;
    kg_unet_config cfg;
    kg_json *j;
    kg_error err = {0};
    kg_ctx c;
    kgt_taps taps;
    const kg_st_tensor *ts, *tc;
    float *sample = NULL, *t = NULL, *ctx = NULL, *got = NULL;
    double *ref = NULL;
    size_t n, nref;
    kg_status s;

    memset(&m, 0, sizeof m);
    if (!w)
        return;
    j = config(w, &err);
    s = j ? kg_unet_config_from_json(&cfg, j, &err) : KG_ERR_FORMAT;
    kg_json_free(j);
    if (s == KG_OK)
        s = kg_unet_load(&m, &cfg, be, w, "", &err);
    if (!kgt_check(s == KG_OK, "unet_tiny4: load %s", s == KG_OK ? "ok" : err.msg))
        goto done;
    ts = kg_st_find(d, "unet.in.sample");
    tc = kg_st_find(d, "unet.in.encoder_hidden_states");
    if (!kgt_check(ts && ts->ndim == 4 && ts->shape[2] == 9 && ts->shape[3] == 7 && tc,
                   "unet: a [B, 4, 9, 7] sample in the reference"))
        goto done;
    sample = kgt_read_f32(d, "unet.in.sample", &n);
    t = kgt_read_f32(d, "unet.in.timestep", &n);
    ctx = kgt_read_f32(d, "unet.in.encoder_hidden_states", &n);
    got = malloc((size_t)kg_st_find(d, "unet.out64.sample")->nbytes);

    kg_ctx_init(&c, be);
    kgt_taps_attach(&taps, &c);
    for (int pass = 0; pass < 2; pass++) {
        kg_tensor x, cx, out;
        if (pass == 0)
            kg_ctx_begin_measure(&c);
        x = kg_new(&c, 4, ts->shape);
        cx = kg_new(&c, 3, tc->shape);
        out = kg_new4(&c, ts->shape[0], m.cfg.out_channels, ts->shape[2], ts->shape[3]);
        if (pass == 1) {
            kg_upload_f32(&c, &x, sample);
            kg_upload_f32(&c, &cx, ctx);
        }
        s = kg_unet_forward(&c, &m, &out, &x, t, &cx);
        if (pass == 0) {
            s = kg_ctx_end_measure(&c, &err);
            if (!kgt_check(s == KG_OK, "unet 9x7: measure pass %s", s == KG_OK ? "ok" : err.msg))
                break;
            continue;
        }
        if (!kgt_check(s == KG_OK, "unet 9x7: forward %s",
                       s == KG_OK ? "ok" : (kg_ctx_status(&c, &err), err.msg)))
            break;
        kg_download_f32(&c, got, &out);
        ref = kgt_read_f64(d, "unet.out64.sample", &nref);
        if (kgt_check(ref && nref == (size_t)kg_tensor_numel(&out), "unet.out64.sample size"))
            kgt_compare("unet 9x7 output", got, ref, nref, ATOL, RTOL);
        kgt_taps_compare(&taps, d, "unet.act64.", "unet.act.", ATOL, RTOL, resamplers);
    }
    kgt_taps_free(&taps);
    kg_ctx_release(&c);
done:
    kg_unet_free(&m, be);
    kg_st_close(w);
    free(sample);
    free(t);
    free(ctx);
    free(got);
    free(ref);
}

static void test_vae(kg_backend *be, const kg_st_file *d)
{
    kg_st_file *w = kgt_golden_open("sd/vae_tiny4.weights.safetensors");
    kg_vae m;
    kg_vae_config cfg;
    kg_json *j;
    kg_error err = {0};
    kg_ctx c;
    const kg_st_tensor *tz;
    float *z = NULL, *got = NULL;
    double *ref = NULL;
    size_t n, nref;
    kg_status s;

    memset(&m, 0, sizeof m);
    if (!w)
        return;
    j = config(w, &err);
    s = j ? kg_vae_config_from_json(&cfg, j, &err) : KG_ERR_FORMAT;
    kg_json_free(j);
    if (s == KG_OK)
        s = kg_vae_load(&m, &cfg, be, w, "", &err);
    if (!kgt_check(s == KG_OK, "vae_tiny4: load %s", s == KG_OK ? "ok" : err.msg))
        goto done;
    tz = kg_st_find(d, "vae.in.latent");
    if (!kgt_check(tz && tz->ndim == 4, "vae: a latent in the reference"))
        goto done;
    z = kgt_read_f32(d, "vae.in.latent", &n);
    got = malloc((size_t)kg_st_find(d, "vae.out64.sample")->nbytes);
    kg_ctx_init(&c, be);
    for (int pass = 0; pass < 2; pass++) {
        kg_tensor x, out;
        if (pass == 0)
            kg_ctx_begin_measure(&c);
        x = kg_new(&c, 4, tz->shape);
        out = kg_new4(&c, tz->shape[0], 3, 8 * tz->shape[2], 8 * tz->shape[3]);
        if (pass == 1)
            kg_upload_f32(&c, &x, z);
        s = kg_vae_decode(&c, &m, &out, &x);
        if (pass == 0) {
            s = kg_ctx_end_measure(&c, &err);
            if (!kgt_check(s == KG_OK, "vae 9x7: measure pass %s", s == KG_OK ? "ok" : err.msg))
                break;
            continue;
        }
        if (!kgt_check(s == KG_OK, "vae 9x7 -> 72x56: decode %s",
                       s == KG_OK ? "ok" : (kg_ctx_status(&c, &err), err.msg)))
            break;
        kg_download_f32(&c, got, &out);
        ref = kgt_read_f64(d, "vae.out64.sample", &nref);
        if (kgt_check(ref && nref == (size_t)kg_tensor_numel(&out), "vae.out64.sample size"))
            kgt_compare("vae 72x56 output", got, ref, nref, ATOL, RTOL);
    }
    kg_ctx_release(&c);
done:
    kg_vae_free(&m, be);
    kg_st_close(w);
    free(z);
    free(got);
    free(ref);
}

/* The tiny Kosmos-G model (SD1.5 topology U-Net) makes a 72x56 image end to end. */
static void test_model(void)
{
    const char *path = getenv("KG_TINY_MODEL");
    kg_model_options o;
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_params p;
    kg_output out = {0};
    kg_error err = {0};
    kg_status st;

    if (!path || !*path) {
        printf("KG_TINY_MODEL not set: end-to-end case not run\n");
        return;
    }
    kg_model_options_init(&o);
    o.backend = KG_BACKEND_CPU;
    st = kg_model_open(&m, path, &o, &err);
    if (!kgt_check(st == KG_OK, "open the tiny model: %s", st == KG_OK ? "ok" : err.msg))
        return;
    kgt_check(kg_model_size_multiple(m) == KG_SIZE_STEP, "kg_model_size_multiple = %d (want %d)",
              kg_model_size_multiple(m), KG_SIZE_STEP);
    st = kg_session_new(&s, m, &err);
    kg_params_init(&p);
    p.prompt = "a house";
    p.steps = 2;
    p.seed = 3;
    p.width = 72;
    p.height = 56;
    if (st == KG_OK)
        st = kg_generate(s, &p, NULL, NULL, NULL, &out, &err);
    kgt_check(st == KG_OK && out.n == 1 && out.width == 72 && out.height == 56,
              "generate 72x56: %s (%dx%d)", st == KG_OK ? "ok" : err.msg, out.width, out.height);
    kg_output_free(&out);
    p.width = 76;
    st = kg_generate(s, &p, NULL, NULL, NULL, &out, &err);
    kgt_check(st == KG_ERR_INVALID_ARG && strstr(err.msg, "multiples of 8"),
              "76x56 refused: %s \"%s\"", kg_status_name(st), err.msg);
    kg_output_free(&out);
    kg_session_free(s);
    kg_model_close(m);
}

int main(void)
{
    kg_backend *be = kgt_cpu_backend();
    kg_st_file *d = data_open();
    if (d) {
        printf("reference: %s (diffusers %s, unet f32-vs-f64 %s, vae %s)\n", KG_ODD_SIZE_DATA,
               kg_st_metadata(d, "diffusers"), kg_st_metadata(d, "unet_f32_vs_f64_max_abs"),
               kg_st_metadata(d, "vae_f32_vs_f64_max_abs"));
        test_unet(be, d);
        test_vae(be, d);
        kg_st_close(d);
    }
    kg_backend_free(be);
    test_model();
    return kgt_finish();
}
