/* test_unet.c - the U-Net against diffusers 0.21.4 UNet2DConditionModel run in
 * float64 (goldens sd/unet_tiny: blocks (32, 64), 1 layer; sd/unet_tiny4: the
 * SD1.5 topology at widths (32, 32, 64, 64)). The config comes from the weights'
 * metadata; the output and every tap (time_proj, time_embedding.*, conv_in, each
 * block, resnet, Transformer2DModel, BasicTransformerBlock, attn1/attn2, resampler,
 * conv_norm_out/act/out) are compared with max-abs 1e-4 / rel 1e-3. Also: no
 * backend allocation inside a forward, and a missing or mis-shaped weight gives
 * KG_ERR_WEIGHTS naming the tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"
#include "unet.h"

#define ATOL 1e-4
#define RTOL 1e-3

static kg_status config_of(kg_unet_config *cfg, const kg_st_file *st, kg_error *err)
{
    const char *text = kg_st_metadata(st, "config");
    kg_json *j = NULL;
    kg_status s;
    if (!text)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: no 'config' metadata", kg_st_path(st));
    s = kg_json_parse(&j, text, strlen(text), "config", err);
    if (s == KG_OK)
        s = kg_unet_config_from_json(cfg, j, err);
    kg_json_free(j);
    return s;
}

static kg_status load(kg_unet *m, kg_backend *be, const kg_st_file *st, kg_error *err)
{
    kg_unet_config cfg;
    kg_status s = config_of(&cfg, st, err);
    return s == KG_OK ? kg_unet_load(m, &cfg, be, st, "", err) : s;
}

/* Inputs that do not fit the model give a sticky error instead of a crash. */
static void run_bad_inputs(kg_backend *be, const kg_unet *m, const char *tag)
{
    int64_t f = (int64_t)1 << (m->cfg.n_blocks - 1);
    float t[1] = {500.0f};
    kg_ctx c;
    kg_error err = {0};
    kg_tensor x, cx, out;
    kg_status s;

    kgt_ctx(&c, be, 8 << 20);
    x = kg_new4(&c, 1, m->cfg.in_channels, 2 * f + 1, 2 * f);
    cx = kg_new3(&c, 1, 3, m->cfg.cross_attention_dim);
    out = kg_new4(&c, 1, m->cfg.out_channels, 2 * f, 2 * f);
    s = kg_unet_forward(&c, m, &out, &x, t, &cx);
    kg_ctx_status(&c, &err);
    kgt_check(s == KG_ERR_SHAPE && strstr(err.msg, "unet:"),
              "%s: output height differs from the sample's: %s (%s)", tag, kg_status_name(s),
              err.msg);
    kg_ctx_clear_error(&c);
    kg_reset(&c, 0);
    x = kg_new4(&c, 1, m->cfg.in_channels, 2 * f, 2 * f);
    out = kg_new4(&c, 1, m->cfg.out_channels, 2 * f, 2 * f);
    s = kg_unet_forward(&c, m, &out, &x, NULL, &cx);
    kg_ctx_status(&c, &err);
    kgt_check(s == KG_ERR_INVALID_ARG, "%s: no timesteps: %s (%s)", tag, kg_status_name(s),
              err.msg);
    kg_ctx_clear_error(&c);
    cx = kg_new3(&c, 1, 3, m->cfg.cross_attention_dim + 1);
    s = kg_unet_forward(&c, m, &out, &x, t, &cx);
    kg_ctx_status(&c, &err);
    kgt_check(s == KG_ERR_SHAPE, "%s: context width %lld: %s (%s)", tag,
              (long long)m->cfg.cross_attention_dim + 1, kg_status_name(s), err.msg);
    kg_ctx_clear_error(&c);
    kg_ctx_release(&c);
}

static void run_tag(kg_backend *be, const char *tag)
{
    char path[128];
    kg_st_file *w, *g;
    const kg_st_tensor *ts, *tc;
    kg_unet m;
    kg_ctx c;
    kgt_taps taps;
    kg_error err = {0};
    kg_status s;
    float *sample = NULL, *t = NULL, *ctx = NULL, *got = NULL;
    double *ref = NULL;
    size_t n, nref;

    printf("--- %s\n", tag);
    memset(&m, 0, sizeof m);
    snprintf(path, sizeof path, "sd/%s.weights.safetensors", tag);
    w = kgt_golden_open(path);
    snprintf(path, sizeof path, "sd/%s.io.safetensors", tag);
    g = kgt_golden_open(path);
    if (!w || !g)
        goto done;
    s = load(&m, be, w, &err);
    if (!kgt_check(s == KG_OK, "%s: load %s", tag, s == KG_OK ? "ok" : err.msg))
        goto done;

    ts = kg_st_find(g, "in.sample");
    tc = kg_st_find(g, "in.encoder_hidden_states");
    if (!kgt_check(ts && ts->ndim == 4 && tc && tc->ndim == 3, "%s: inputs present", tag))
        goto done;
    sample = kgt_read_f32(g, "in.sample", &n);
    t = kgt_read_f32(g, "in.timestep", &n);
    ctx = kgt_read_f32(g, "in.encoder_hidden_states", &n);
    got = malloc((size_t)(ts->shape[0] * m.cfg.out_channels * ts->shape[2] * ts->shape[3]) *
                 sizeof *got);

    kg_ctx_init(&c, be);
    kgt_taps_attach(&taps, &c);
    for (int pass = 0; pass < 2; pass++) {
        kg_tensor x, cx, out;
        size_t allocs = be->n_allocs;
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
            if (!kgt_check(s == KG_OK, "%s: measure pass %s (arena %.1f MiB)", tag,
                           s == KG_OK ? "ok" : err.msg, (double)c.arena_cap / (1 << 20)))
                break;
            continue;
        }
        kgt_check(be->n_allocs == allocs, "%s: no backend allocation during the forward", tag);
        if (!kgt_check(s == KG_OK, "%s: forward %s", tag,
                       s == KG_OK ? "ok" : (kg_ctx_status(&c, &err), err.msg)))
            break;
        kg_download_f32(&c, got, &out);
        ref = kgt_read_f64(g, "out64.sample", &nref);
        if (kgt_check(ref && nref == (size_t)kg_tensor_numel(&out), "%s: out64.sample size", tag))
            kgt_compare("out.sample", got, ref, nref, ATOL, RTOL);
        kgt_taps_compare(&taps, g, "act64.", "act.", ATOL, RTOL, NULL);
    }
    kgt_taps_free(&taps);
    kg_ctx_release(&c);
    run_bad_inputs(be, &m, tag);
done:
    kg_unet_free(&m, be);
    kg_st_close(w);
    kg_st_close(g);
    free(sample);
    free(t);
    free(ctx);
    free(got);
    free(ref);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 8 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)size);
        if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)size;
    }
    fclose(f);
    return buf;
}

/* Replaces the first `from` by `to` (same length) in the file image, i.e. in
 * its JSON header, which precedes the data. 0 when absent. */
static int replace(char *buf, size_t len, const char *from, const char *to)
{
    char *hit = buf ? memmem(buf, len, from, strlen(from)) : NULL;
    if (!hit || strlen(from) != strlen(to))
        return 0;
    memcpy(hit, to, strlen(to));
    return 1;
}

static void expect_weights_error(kg_backend *be, const char *what, char *buf, size_t len,
                                 const char *key)
{
    kg_st_file *st = NULL;
    kg_unet m;
    kg_error err = {0};
    kg_status s;

    memset(&m, 0, sizeof m);
    if (!kgt_check(buf != NULL, "%s: patched copy of the weights", what))
        return;
    s = kg_st_open_memory(&st, buf, len, "patched.safetensors", &err);
    if (kgt_check(s == KG_OK, "%s: patched file opens (%s)", what, s == KG_OK ? "ok" : err.msg)) {
        size_t before = be->bytes_allocated;
        s = load(&m, be, st, &err);
        kgt_check(s == KG_ERR_WEIGHTS && strstr(err.msg, key) != NULL, "%s: %s naming '%s' (%s)",
                  what, kg_status_name(s), key, err.msg);
        kgt_check(be->bytes_allocated == before, "%s: nothing left allocated after the failure",
                  what);
    }
    kg_unet_free(&m, be);
    kg_st_close(st);
    free(buf);
}

static void run_errors(kg_backend *be)
{
    const char *path = kgt_golden_path("sd/unet_tiny.weights.safetensors");
    char *buf;
    size_t len = 0;
    int ok;

    buf = read_file(path, &len);
    ok = replace(buf, len, "\"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight\"",
                 "\"mid_block.attentions.0.transformer_blocks.0.attn2.to_x.weight\"");
    expect_weights_error(be, "missing tensor", ok ? buf : NULL, len,
                         "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    if (!ok)
        free(buf);

    /* norm1 of this resnet sees the concatenated 128 channels, norm2 its 64 outputs:
     * swapping the two names gives norm1.bias the wrong shape */
    buf = read_file(path, &len);
    ok = replace(buf, len, "\"up_blocks.0.resnets.0.norm1.bias\"",
                 "\"up_blocks.0.resnets.0.normX.bias\"") &&
         replace(buf, len, "\"up_blocks.0.resnets.0.norm2.bias\"",
                 "\"up_blocks.0.resnets.0.norm1.bias\"") &&
         replace(buf, len, "\"up_blocks.0.resnets.0.normX.bias\"",
                 "\"up_blocks.0.resnets.0.norm2.bias\"");
    expect_weights_error(be, "wrong shape", ok ? buf : NULL, len,
                         "up_blocks.0.resnets.0.norm1.bias");
    if (!ok)
        free(buf);
}

static void run_config_errors(void)
{
    static const struct {
        const char *json;
        kg_status want;
    } cases[] = {
        {"{\"use_linear_projection\": true}", KG_ERR_UNSUPPORTED},
        {"{\"down_block_types\": [\"CrossAttnDownBlock2D\"], \"block_out_channels\": [32, 64]}",
         KG_ERR_FORMAT},
        {"{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownBlock2D\", "
         "\"SimpleDownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\"]}",
         KG_ERR_UNSUPPORTED},
        {"{\"block_out_channels\": [48], \"down_block_types\": [\"DownBlock2D\"], "
         "\"up_block_types\": [\"UpBlock2D\"]}",
         KG_ERR_FORMAT},
    };
    kg_unet_config cfg;
    kg_error err = {0};
    kg_json *j = NULL;
    kg_status s;

    s = kg_json_parse(&j, "{}", 2, "empty", &err);
    if (s == KG_OK)
        s = kg_unet_config_from_json(&cfg, j, &err);
    kg_json_free(j);
    kgt_check(s == KG_OK && cfg.n_blocks == 4 && cfg.block_out_channels[3] == 1280 &&
                  cfg.cross_attention_dim == 1280 && cfg.heads[0] == 8 &&
                  cfg.layers_per_block[0] == 2 && cfg.down_cross[2] && !cfg.down_cross[3] &&
                  !cfg.up_cross[0] && cfg.up_cross[1] && cfg.norm_eps == 1e-5f,
              "empty config gives the diffusers defaults (%s)", s == KG_OK ? "ok" : err.msg);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        j = NULL;
        s = kg_json_parse(&j, cases[i].json, strlen(cases[i].json), "case", &err);
        if (s == KG_OK)
            s = kg_unet_config_from_json(&cfg, j, &err);
        kg_json_free(j);
        kgt_check(s == cases[i].want, "config %s -> %s (%s)", cases[i].json, kg_status_name(s),
                  err.msg);
    }
}

int main(void)
{
    kg_backend *be = kgt_cpu_backend();
    run_tag(be, "unet_tiny");
    run_tag(be, "unet_tiny4");
    run_errors(be);
    run_config_errors();
    kg_backend_free(be);
    return kgt_finish();
}
