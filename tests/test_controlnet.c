/* test_controlnet.c - the SD1.5 ControlNet and the U-Net with its residuals against
 * diffusers 0.21.4 ControlNetModel / UNet2DConditionModel run in float64
 * (tests/golden-gen/gen_controlnet.py: cnet_tiny for sd/unet_tiny, widths (32, 64);
 * cnet_k for the tiny Kosmos-G model's U-Net, SD1.5 topology). Compared with max-abs
 * 1e-4 / rel 1e-3: every scaled residual, the taps (conditioning embedding, conv_in,
 * each down block, mid block, each zero conv) and the U-Net's output with the
 * residuals. Also: two ControlNets summed into one set of residuals, no backend
 * allocation inside a forward, bad inputs and foreign ControlNets refused by name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controlnet.h"
#include "json.h"
#include "testutil.h"

#define ATOL 1e-4
#define RTOL 1e-3

static const kg_st_file *g_golden; /* for tap_map */

static const char *local_path(const char *name)
{
    static char path[4096];
    const char *dir = getenv("KG_CONTROLNET_GOLDEN");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/golden-gen/controlnet", name);
    return path;
}

static kg_st_file *open_local(const char *name)
{
    kg_st_file *f = NULL;
    kg_error err = {0};
    if (kg_st_open(&f, local_path(name), &err) != KG_OK) {
        kgt_check(0, "open %s: %s", local_path(name), err.msg);
        return NULL;
    }
    return f;
}

/* config.json of the ControlNet's diffusers folder */
static kg_status cnet_config(kg_controlnet_config *cfg, const char *tag, kg_error *err)
{
    char name[128], buf[1 << 16];
    FILE *f;
    size_t n;
    kg_json *j = NULL;
    kg_status s;
    snprintf(name, sizeof name, "%s/config.json", tag);
    f = fopen(local_path(name), "rb");
    if (!f)
        return kg_error_set(err, KG_ERR_IO, "cannot open %s", local_path(name));
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    s = kg_json_parse(&j, buf, n, name, err);
    if (s == KG_OK)
        s = kg_controlnet_config_from_json(cfg, j, err);
    kg_json_free(j);
    return s;
}

/* only the ControlNet taps the generator recorded (the encoder's inner taps are the
 * U-Net's, tested in test_unet) */
static const char *tap_map(const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "act64.%s", name);
    return kg_st_find(g_golden, buf) ? name : NULL;
}

static kg_status unet_config(kg_unet_config *cfg, const kg_st_file *st, const char *key,
                             kg_error *err)
{
    kg_json *j = kgt_meta_json(st, key);
    kg_status s = j ? kg_unet_config_from_json(cfg, j, err)
                    : kg_error_set(err, KG_ERR_FORMAT, "no %s metadata", key);
    kg_json_free(j);
    return s;
}

typedef struct fixture {
    kg_st_file *uw, *cw, *io;
    kg_unet unet;
    kg_controlnet cn;
} fixture;

static int setup(fixture *fx, kg_backend *be, const char *tag)
{
    char path[128];
    kg_unet_config ucfg;
    kg_controlnet_config ccfg;
    kg_error err = {0};
    kg_status s;
    const char *prefix = "";

    memset(fx, 0, sizeof *fx);
    if (!strcmp(tag, "cnet_tiny")) {
        fx->uw = kgt_golden_open("sd/unet_tiny.weights.safetensors");
        s = fx->uw ? unet_config(&ucfg, fx->uw, "config", &err) : KG_ERR_IO;
    } else {
        fx->uw = kgt_tiny_model();
        prefix = "diffusion_unet.unet.";
        s = fx->uw ? unet_config(&ucfg, fx->uw, "kg.config.unet", &err) : KG_ERR_IO;
    }
    if (!kgt_check(s == KG_OK, "%s: U-Net config (%s)", tag, s == KG_OK ? "ok" : err.msg))
        return 0;
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", tag);
    fx->cw = open_local(path);
    snprintf(path, sizeof path, "%s.io.safetensors", tag);
    fx->io = open_local(path);
    if (!fx->cw || !fx->io)
        return 0;
    s = kg_unet_load(&fx->unet, &ucfg, be, fx->uw, prefix, &err);
    if (!kgt_check(s == KG_OK, "%s: U-Net load (%s)", tag, s == KG_OK ? "ok" : err.msg))
        return 0;
    s = cnet_config(&ccfg, tag, &err);
    if (s == KG_OK)
        s = kg_controlnet_check_unet(&ccfg, &ucfg, &err);
    if (s == KG_OK)
        s = kg_controlnet_load(&fx->cn, &ccfg, be, fx->cw, "", &err);
    return kgt_check(s == KG_OK, "%s: ControlNet config, fit and load (%s)", tag,
                     s == KG_OK ? "ok" : err.msg);
}

static void teardown(fixture *fx, kg_backend *be)
{
    kg_controlnet_free(&fx->cn, be);
    kg_unet_free(&fx->unet, be);
    kg_st_close(fx->uw);
    kg_st_close(fx->cw);
    kg_st_close(fx->io);
}

static void compare(const kg_st_file *io, const char *key, kg_ctx *c, const kg_tensor *t)
{
    size_t n = 0;
    double *ref = kgt_read_f64(io, key, &n);
    float *got = malloc((size_t)kg_tensor_numel(t) * sizeof *got);
    if (ref && got && kgt_check(n == (size_t)kg_tensor_numel(t), "%s: %zu elements", key, n)) {
        kg_download_f32(c, got, t);
        kgt_compare(key, got, ref, n, ATOL, RTOL);
    }
    free(ref);
    free(got);
}

/* nets copies of the ControlNet, each at scale/nets: the sum must equal one at scale */
static void run_tag(kg_backend *be, const char *tag, int nets)
{
    fixture fx;
    const kg_st_tensor *ts, *tc, *tk;
    float *sample = NULL, *t = NULL, *ctx = NULL, *ctl = NULL, *scale = NULL;
    kgt_taps taps;
    kg_ctx c;
    kg_error err = {0};
    size_t n;

    printf("--- %s (%d net%s)\n", tag, nets, nets > 1 ? "s" : "");
    if (!setup(&fx, be, tag))
        goto done;
    g_golden = fx.io;
    ts = kg_st_find(fx.io, "in.sample");
    tc = kg_st_find(fx.io, "in.encoder_hidden_states");
    tk = kg_st_find(fx.io, "in.controlnet_cond");
    if (!kgt_check(ts && tc && tk, "%s: inputs present", tag))
        goto done;
    sample = kgt_read_f32(fx.io, "in.sample", &n);
    t = kgt_read_f32(fx.io, "in.timestep", &n);
    ctx = kgt_read_f32(fx.io, "in.encoder_hidden_states", &n);
    ctl = kgt_read_f32(fx.io, "in.controlnet_cond", &n);
    scale = kgt_read_f32(fx.io, "in.conditioning_scale", &n);
    if (!sample || !t || !ctx || !ctl || !scale)
        goto done;

    kg_ctx_init(&c, be);
    if (nets == 1)
        kgt_taps_attach(&taps, &c);
    for (int pass = 0; pass < 2; pass++) {
        kg_tensor x, cx, k, out;
        kg_unet_residuals res;
        size_t allocs = be->n_allocs;
        kg_status s = KG_OK;
        if (pass == 0)
            kg_ctx_begin_measure(&c);
        x = kg_new(&c, 4, ts->shape);
        cx = kg_new(&c, 3, tc->shape);
        k = kg_new(&c, 4, tk->shape);
        out = kg_new(&c, 4, ts->shape);
        if (pass == 1) {
            kg_upload_f32(&c, &x, sample);
            kg_upload_f32(&c, &cx, ctx);
            kg_upload_f32(&c, &k, ctl);
        }
        kg_unet_residuals_new(&c, &fx.unet.cfg, &res, ts->shape[0], ts->shape[2], ts->shape[3]);
        for (int i = 0; i < nets && s == KG_OK; i++)
            s = kg_controlnet_forward(&c, &fx.cn, &res, &x, t, &cx, &k, scale[0] / (float)nets);
        if (pass == 1 && nets == 1)
            c.tap = NULL; /* the U-Net's own taps are test_unet's */
        if (s == KG_OK)
            s = kg_unet_forward_res(&c, &fx.unet, &out, &x, t, &cx, &res);
        if (pass == 0) {
            s = kg_ctx_end_measure(&c, &err);
            if (!kgt_check(s == KG_OK, "%s: measure pass %s (arena %.1f MiB)", tag,
                           s == KG_OK ? "ok" : err.msg, (double)c.arena_cap / (1 << 20)))
                break;
            continue;
        }
        kgt_check(be->n_allocs == allocs, "%s: no backend allocation during the forwards", tag);
        if (!kgt_check(s == KG_OK, "%s: forwards %s", tag,
                       s == KG_OK ? "ok" : (kg_ctx_status(&c, &err), err.msg)))
            break;
        if (!kgt_check(res.n_down == fx.cn.n_down, "%s: %d residuals", tag, res.n_down))
            break;
        for (int i = 0; i < res.n_down; i++) {
            char key[64];
            snprintf(key, sizeof key, "out64.down.%d", i);
            compare(fx.io, key, &c, &res.down[i]);
        }
        compare(fx.io, "out64.mid", &c, &res.mid);
        compare(fx.io, "out64.unet", &c, &out);
        if (nets == 1)
            kgt_taps_compare(&taps, fx.io, "act64.", NULL, ATOL, RTOL, tap_map);
    }
    if (nets == 1)
        kgt_taps_free(&taps);
    kg_ctx_release(&c);
done:
    teardown(&fx, be);
    free(sample);
    free(t);
    free(ctx);
    free(ctl);
    free(scale);
}

/* A control image of the wrong size, residuals of another U-Net: sticky errors, no crash. */
static void run_bad_inputs(kg_backend *be)
{
    fixture fx;
    float t[1] = {500.0f};
    kg_ctx c;
    kg_error err = {0};
    kg_status s;

    printf("--- bad inputs\n");
    if (!setup(&fx, be, "cnet_tiny"))
        goto done;
    kgt_ctx(&c, be, 16 << 20);
    {
        kg_unet_residuals res;
        kg_tensor x = kg_new4(&c, 1, 4, 8, 8), cx = kg_new3(&c, 1, 3, 32);
        kg_tensor k = kg_new4(&c, 1, 3, 32, 64); /* 4x instead of 8x in height */
        kg_unet_residuals_new(&c, &fx.unet.cfg, &res, 1, 8, 8);
        s = kg_controlnet_forward(&c, &fx.cn, &res, &x, t, &cx, &k, 1.0f);
        kg_ctx_status(&c, &err);
        kgt_check(s == KG_ERR_SHAPE && strstr(err.msg, "controlnet:") && strstr(err.msg, "control"),
                  "control image of the wrong size: %s (%s)", kg_status_name(s), err.msg);
        kg_ctx_clear_error(&c);
        k = kg_new4(&c, 1, 1, 64, 64); /* grey, the ControlNet takes 3 channels */
        s = kg_controlnet_forward(&c, &fx.cn, &res, &x, t, &cx, &k, 1.0f);
        kg_ctx_status(&c, &err);
        kgt_check(s == KG_ERR_SHAPE, "one-channel control image: %s (%s)", kg_status_name(s),
                  err.msg);
        kg_ctx_clear_error(&c);
        res.n_down--;
        {
            kg_tensor out = kg_new4(&c, 1, 4, 8, 8);
            s = kg_unet_forward_res(&c, &fx.unet, &out, &x, t, &cx, &res);
            kg_ctx_status(&c, &err);
            kgt_check(s == KG_ERR_SHAPE && strstr(err.msg, "residuals"),
                      "U-Net with one residual too few: %s (%s)", kg_status_name(s), err.msg);
            kg_ctx_clear_error(&c);
        }
    }
    kg_ctx_release(&c);
done:
    teardown(&fx, be);
}

static void run_config_errors(void)
{
    static const struct {
        const char *json, *want;
        kg_status code;
    } cases[] = {
        {"{\"addition_embed_type\": \"text_time\", \"cross_attention_dim\": 2048}", "SDXL",
         KG_ERR_UNSUPPORTED},
        {"{\"cross_attention_dim\": 1024, \"use_linear_projection\": true}", "SD2",
         KG_ERR_UNSUPPORTED},
        {"{\"cross_attention_dim\": 768, \"global_pool_conditions\": true}",
         "global_pool_conditions", KG_ERR_UNSUPPORTED},
        {"{\"cross_attention_dim\": 768, \"controlnet_conditioning_channel_order\": \"bgr\"}",
         "bgr", KG_ERR_UNSUPPORTED},
        {"{\"cross_attention_dim\": 768, \"conditioning_embedding_out_channels\": []}", "empty",
         KG_ERR_FORMAT},
    };
    kg_controlnet_config cfg, other;
    kg_unet_config u;
    kg_error err = {0};
    kg_json *j = NULL;
    kg_status s;
    const char *sd15 = "{\"cross_attention_dim\": 768}";

    s = kg_json_parse(&j, sd15, strlen(sd15), "sd15", &err);
    if (s == KG_OK)
        s = kg_controlnet_config_from_json(&cfg, j, &err);
    kg_json_free(j);
    kgt_check(s == KG_OK && cfg.unet.n_blocks == 4 && cfg.unet.block_out_channels[0] == 320 &&
                  cfg.n_embed == 4 && cfg.embed_channels[3] == 256 && cfg.cond_channels == 3,
              "SD1.5 defaults (%s)", s == KG_OK ? "ok" : err.msg);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        j = NULL;
        s = kg_json_parse(&j, cases[i].json, strlen(cases[i].json), "case", &err);
        if (s == KG_OK)
            s = kg_controlnet_config_from_json(&other, j, &err);
        kg_json_free(j);
        kgt_check(s == cases[i].code && strstr(err.msg, cases[i].want),
                  "config %s -> %s naming '%s' (%s)", cases[i].json, kg_status_name(s),
                  cases[i].want, err.msg);
    }
    /* an SD1.5 ControlNet against a U-Net of other widths */
    u = cfg.unet;
    u.block_out_channels[2] = 640;
    s = kg_controlnet_check_unet(&cfg, &u, &err);
    kgt_check(s == KG_ERR_FORMAT && strstr(err.msg, "block_out_channels"),
              "ControlNet for other widths: %s (%s)", kg_status_name(s), err.msg);
}

int main(void)
{
    kg_backend *be = kgt_cpu_backend();
    run_tag(be, "cnet_tiny", 1);
    run_tag(be, "cnet_k", 1);
    run_tag(be, "cnet_tiny", 2);
    run_bad_inputs(be);
    run_config_errors();
    kg_backend_free(be);
    return kgt_finish();
}
