/* test_lora.c - LoRA on the U-Net against diffusers 0.21.4 (tests/golden-gen/gen_lora.py: the
 * official demo's lora_state_dict + load_lora_into_unet, cross_attention_kwargs={"scale": s}).
 *
 * For the tiny U-Nets (sd/unet_tiny, sd/unet_tiny4) and both file layouts (diffusers, kohya with
 * alpha != rank, F16), the output at scales 0, 0.5, 1 against diffusers' float64 output (max-abs
 * 1e-4, rel 1e-3); scale changes without reopening the file or allocating again; several LoRAs add
 * up; a 4-step DPM-Solver++ sampling run with CFG 6 and a LoRA at 0.5 through the official loop;
 * bad files (wrong shapes, SD2/SDXL LoRAs, unknown layers, stray keys) give KG_ERR_WEIGHTS
 * naming the key and leave the session without any LoRA. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "kosmosg.h"
#include "lora.h"
#include "scheduler.h"
#include "testutil.h"
#include "unet.h"

#define ATOL 1e-4
#define RTOL 1e-3

#ifndef KG_LORA_DATA
#define KG_LORA_DATA "tests/data/lora"
#endif

static const char *data_path(const char *tag, const char *what)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s.%s.safetensors", KG_LORA_DATA, tag, what);
    return p;
}

static kg_status load_unet(kg_unet *m, kg_backend *be, const kg_st_file *st, kg_error *err)
{
    kg_unet_config cfg;
    kg_json *j = kgt_meta_json(st, "config");
    kg_status s = j ? kg_unet_config_from_json(&cfg, j, err) : KG_ERR_FORMAT;
    kg_json_free(j);
    return s == KG_OK ? kg_unet_load(m, &cfg, be, st, "", err) : s;
}

typedef struct fixture {
    const char *tag;
    kg_backend *be;
    kg_unet base;
    kg_ctx c;
    kg_lora_set ls;
    kg_st_file *w, *io, *ref;
    float *sample, *t, *ctx;
    int64_t shape[4], cshape[3];
} fixture;

/* out = U-Net(in.*) with the set's current view; returns a malloc'd copy */
static float *forward(fixture *f, const kg_unet *u)
{
    size_t n = (size_t)(f->shape[0] * f->shape[1] * f->shape[2] * f->shape[3]);
    float *got = malloc(n * sizeof *got);
    kg_error err = {0};
    kg_tensor x, cx, out;
    kg_status s;
    kg_reset(&f->c, 0);
    x = kg_new(&f->c, 4, f->shape);
    cx = kg_new(&f->c, 3, f->cshape);
    out = kg_new(&f->c, 4, f->shape);
    kg_upload_f32(&f->c, &x, f->sample);
    kg_upload_f32(&f->c, &cx, f->ctx);
    s = kg_unet_forward(&f->c, u, &out, &x, f->t, &cx);
    if (!kgt_check(s == KG_OK, "%s: forward %s", f->tag,
                   s == KG_OK ? "ok" : (kg_ctx_status(&f->c, &err), err.msg))) {
        kg_ctx_clear_error(&f->c);
        free(got);
        return NULL;
    }
    kg_download_f32(&f->c, got, &out);
    kg_reset(&f->c, 0);
    return got;
}

static void compare(fixture *f, const float *got, const char *ref_name, const char *what)
{
    size_t n;
    double *ref = kgt_read_f64(f->ref, ref_name, &n);
    char name[256];
    snprintf(name, sizeof name, "%s %s vs diffusers %s", f->tag, what, ref_name);
    if (kgt_check(ref && got, "%s: reference and output present", name))
        kgt_compare(name, got, ref, n, ATOL, RTOL);
    free(ref);
}

static int apply(fixture *f, const kg_lora_ref *refs, int n, kg_error *err)
{
    kg_status s = kg_lora_set_apply(&f->ls, &f->c, &f->base, refs, n, err);
    return s == KG_OK;
}

static void test_scales(fixture *f)
{
    static const char *const layouts[] = {"diffusers", "kohya"};
    static const float scales[] = {0.0f, 0.5f, 1.0f, 0.5f};
    for (int l = 0; l < 2; l++) {
        char path[1024], ref[64], what[128];
        snprintf(path, sizeof path, "%s", data_path(f->tag, layouts[l]));
        size_t allocs = 0;
        for (int k = 0; k < 4; k++) {
            kg_lora_ref r = {path, scales[k]};
            kg_error err = {0};
            float *got;
            if (!kgt_check(apply(f, &r, 1, &err), "%s: apply %s at %.1f: %s", f->tag, layouts[l],
                           (double)scales[k], err.msg[0] ? err.msg : "ok"))
                continue;
            if (k == 0) {
                kgt_check(kg_lora_set_unet(&f->ls, &f->base) == &f->base,
                          "%s: %s at scale 0 runs the base U-Net", f->tag, layouts[l]);
            }
            if (k == 3)
                kgt_check(f->be->n_allocs == allocs && f->ls.n_cache == l + 1,
                          "%s: %s back to 0.5: no new allocation (%zu -> %zu), file not reopened "
                          "(%d cached)",
                          f->tag, layouts[l], allocs, f->be->n_allocs, f->ls.n_cache);
            if (k == 2)
                allocs = f->be->n_allocs;
            got = forward(f, kg_lora_set_unet(&f->ls, &f->base));
            snprintf(ref, sizeof ref, "out64.%s.s%.1f", layouts[l], (double)scales[k]);
            snprintf(what, sizeof what, "%s LoRA scale %.1f", layouts[l], (double)scales[k]);
            compare(f, got, ref, what);
            free(got);
        }
    }
}

/* Several LoRAs add up: kohya at 0.25 twice = kohya at 0.5; the diffusers one at 0 beside it
 * changes nothing. */
static void test_several(fixture *f)
{
    char k[1024], d[1024];
    kg_error err = {0};
    float *got;
    snprintf(k, sizeof k, "%s", data_path(f->tag, "kohya"));
    snprintf(d, sizeof d, "%s", data_path(f->tag, "diffusers"));
    {
        kg_lora_ref r[3] = {{k, 0.25f}, {d, 0.0f}, {k, 0.25f}};
        if (kgt_check(apply(f, r, 3, &err), "%s: kohya 0.25 + diffusers 0 + kohya 0.25: %s", f->tag,
                      err.msg[0] ? err.msg : "ok")) {
            got = forward(f, kg_lora_set_unet(&f->ls, &f->base));
            compare(f, got, "out64.kohya.s0.5", "kohya 0.25 + diffusers 0 + kohya 0.25");
            free(got);
        }
    }
    /* no LoRA at all: the golden U-Net output of ../shared/golden */
    kgt_check(apply(f, NULL, 0, &err) && kg_lora_set_unet(&f->ls, &f->base) == &f->base,
              "%s: empty list -> base U-Net", f->tag);
}

/* unilm/models/diffusion.py `sample`: x ~ N(0,1); per step latent_in = cat([x, x]),
 * eps_u, eps_c = unet(latent_in, t, ehs).chunk(2), eps = eps_u + g (eps_c - eps_u), x = step(eps) */
static void test_sampling(fixture *f)
{
    char k[1024];
    kg_lora_ref r;
    kg_error err = {0};
    kg_scheduler_config cfg;
    kg_scheduler sched;
    size_t n;
    float *x0 = kgt_read_f32(f->ref, "sample.x_init", &n), *ehs = NULL;
    double *tref = kgt_read_f64(f->ref, "sample.timesteps", &n);
    const float g = 6.0f;
    int64_t H = f->shape[2], W = f->shape[3];

    snprintf(k, sizeof k, "%s", data_path(f->tag, "kohya"));
    r.path = k;
    r.scale = 0.5f;
    ehs = kgt_read_f32(f->ref, "sample.ehs", &n);
    kg_scheduler_config_default(&cfg);
    if (!kgt_check(x0 && ehs && tref && apply(f, &r, 1, &err), "%s: sampling setup %s", f->tag,
                   err.msg[0] ? err.msg : "ok") ||
        !kgt_check(kg_scheduler_init(&sched, &cfg, KG_SCHED_DPMPP_2M, 4, &err) == KG_OK,
                   "%s: scheduler %s", f->tag, err.msg))
        goto done;
    kg_reset(&f->c, 0);
    {
        kg_tensor x = kg_new4(&f->c, 1, 4, H, W);
        kg_tensor cx = kg_new(&f->c, 3, f->cshape);
        float *lat = malloc((size_t)(4 * H * W) * sizeof *lat);
        kgt_check(kg_scheduler_bind(&sched, &f->c, 4, x.shape, &err) == KG_OK, "%s: bind", f->tag);
        kg_upload_f32(&f->c, &x, x0);
        kg_upload_f32(&f->c, &cx, ehs);
        for (int i = 0; i < kg_scheduler_num_calls(&sched); i++) {
            size_t mark = kg_mark(&f->c);
            kg_tensor in = kg_new4(&f->c, 2, 4, H, W), eps = kg_new4(&f->c, 2, 4, H, W);
            kg_tensor guided = kg_new4(&f->c, 1, 4, H, W);
            kg_tensor eu = kg_tensor_rows(&eps, 0, 1), ec = kg_tensor_rows(&eps, 1, 1);
            double t = kg_scheduler_timestep(&sched, i);
            float ts[2] = {(float)t, (float)t};
            char name[64], what[96];
            double *ref;
            kgt_check(t == tref[i], "%s: sampling timestep %d = %g (diffusers %g)", f->tag, i, t,
                      tref[i]);
            kg_concat(&f->c, &in, &x, &x, 0);
            kg_scheduler_scale_model_input(&f->c, &sched, &in, &in, i);
            kg_unet_forward(&f->c, kg_lora_set_unet(&f->ls, &f->base), &eps, &in, ts, &cx);
            kg_axpby(&f->c, &guided, 1.0f - g, &eu, g, &ec);
            kg_scheduler_step(&f->c, &sched, &x, &guided, i);
            kg_download_f32(&f->c, lat, &x);
            kg_reset(&f->c, mark);
            snprintf(name, sizeof name, "sample.latents.%d", i);
            snprintf(what, sizeof what, "DPM++ 4 steps, CFG 6, kohya LoRA 0.5, step %d", i);
            ref = kgt_read_f64(f->ref, name, &n);
            if (kgt_check(ref && kg_ctx_status(&f->c, &err) == KG_OK, "%s: %s ran", f->tag, what))
                kgt_compare(what, lat, ref, n, ATOL, RTOL);
            free(ref);
        }
        free(lat);
    }
    kg_scheduler_free(&sched);
done:
    kg_reset(&f->c, 0);
    free(x0);
    free(ehs);
    free(tref);
}

/* ---------------------------------------------------------------- errors */

/* A float32 safetensors file of zero tensors: names[i] with shape shapes[i][0..nd[i]). */
static void write_st(const char *path, int n, const char *const *names, const int *nd,
                     const int64_t (*shapes)[4])
{
    char hdr[16384];
    size_t len = 0, off = 0;
    FILE *fp;
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "{");
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        len += (size_t)snprintf(hdr + len, sizeof hdr - len,
                                "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "", names[i]);
        for (int d = 0; d < nd[i]; d++) {
            numel *= (size_t)shapes[i][d];
            len += (size_t)snprintf(hdr + len, sizeof hdr - len, "%s%lld", d ? "," : "",
                                    (long long)shapes[i][d]);
        }
        len += (size_t)snprintf(hdr + len, sizeof hdr - len, "],\"data_offsets\":[%zu,%zu]}", off,
                                off + 4 * numel);
        off += 4 * numel;
    }
    len += (size_t)snprintf(hdr + len, sizeof hdr - len, "}");
    fp = fopen(path, "wb");
    if (!fp)
        return;
    {
        uint64_t hl = len;
        char *zeros = calloc(off ? off : 1, 1);
        fwrite(&hl, 8, 1, fp);
        fwrite(hdr, 1, len, fp);
        fwrite(zeros, 1, off, fp);
        free(zeros);
    }
    fclose(fp);
}

static void expect_error(fixture *f, const char *what, const char *path, const char *needle)
{
    char good[1024];
    kg_lora_ref r[2];
    kg_error err = {0};
    int ok;
    snprintf(good, sizeof good, "%s", data_path(f->tag, "kohya"));
    r[0].path = good;
    r[0].scale = 1.0f;
    r[1].path = path;
    r[1].scale = 0.7f;
    /* a good LoRA first: a failure must not leave it half-applied either */
    apply(f, r, 1, &err);
    ok = apply(f, r, 2, &err);
    kgt_check(!ok && err.code == KG_ERR_WEIGHTS && strstr(err.msg, needle) &&
                  kg_lora_set_unet(&f->ls, &f->base) == &f->base,
              "%s: %s -> %s, base U-Net after the failure: %s", f->tag, what,
              kg_status_name(err.code), err.msg);
}

static void test_errors(fixture *f)
{
    char dir[] = "/tmp/kg_lora_XXXXXX", p[256];
    const char *mid = "mid_block.attentions.0.transformer_blocks.0";
    char k1[256], k2[256], k3[256];
    int64_t C = f->base.mid_attn.channels, X = f->base.cfg.cross_attention_dim;
    if (!mkdtemp(dir))
        return;
    { /* SD 2.x: context width 1024 */
        const char *names[] = {k1, k2};
        int nd[] = {2, 2};
        const int64_t shp[][4] = {{4, 1024}, {C, 4}};
        snprintf(k1, sizeof k1, "unet.%s.attn2.to_k.lora.down.weight", mid);
        snprintf(k2, sizeof k2, "unet.%s.attn2.to_k.lora.up.weight", mid);
        snprintf(p, sizeof p, "%s/sd2.safetensors", dir);
        write_st(p, 2, names, nd, shp);
        expect_error(f, "SD2 LoRA", p, "SD 2.x");
    }
    { /* wrong rank between down and up */
        const char *names[] = {k1, k2};
        int nd[] = {2, 2};
        const int64_t shp[][4] = {{4, X}, {C, 3}};
        snprintf(p, sizeof p, "%s/rank.safetensors", dir);
        write_st(p, 2, names, nd, shp);
        expect_error(f, "up rank 3 vs down rank 4", p, "to_k.lora.up.weight");
    }
    { /* SDXL kohya text encoders */
        const char *names[] = {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                               "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"};
        int nd[] = {2, 2};
        const int64_t shp[][4] = {{4, 8}, {8, 4}};
        snprintf(p, sizeof p, "%s/sdxl.safetensors", dir);
        write_st(p, 2, names, nd, shp);
        expect_error(f, "SDXL LoRA", p, "SDXL");
    }
    { /* a layer the U-Net does not have (SDXL's 10 transformer blocks) */
        const char *names[] = {k1, k2};
        int nd[] = {2, 2};
        const int64_t shp[][4] = {{4, C}, {C, 4}};
        snprintf(
            k1, sizeof k1,
            "lora_unet_mid_block_attentions_0_transformer_blocks_7_attn1_to_q.lora_down.weight");
        snprintf(k2, sizeof k2,
                 "lora_unet_mid_block_attentions_0_transformer_blocks_7_attn1_to_q.lora_up.weight");
        snprintf(p, sizeof p, "%s/unknown.safetensors", dir);
        write_st(p, 2, names, nd, shp);
        expect_error(f, "unknown layer", p, "transformer_blocks.7.attn1.to_q");
    }
    { /* kohya conv_shortcut: diffusers 0.21.4 maps it to "conv.shortcut", no such layer */
        const char *names[] = {k1, k2, k3};
        int nd[] = {4, 4, 0};
        const int64_t shp[][4] = {{2, 32, 1, 1}, {64, 2, 1, 1}, {0}};
        snprintf(k1, sizeof k1, "lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_down.weight");
        snprintf(k2, sizeof k2, "lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_up.weight");
        snprintf(k3, sizeof k3, "lora_unet_down_blocks_1_resnets_0_conv_shortcut.alpha");
        snprintf(p, sizeof p, "%s/shortcut.safetensors", dir);
        write_st(p, 3, names, nd, shp);
        expect_error(f, "kohya conv_shortcut", p, "down_blocks.1.resnets.0.conv.shortcut");
    }
    { /* a stray non-LoRA tensor */
        const char *names[] = {"unet.conv_in.weight"};
        int nd[] = {1};
        const int64_t shp[][4] = {{4}};
        snprintf(p, sizeof p, "%s/stray.safetensors", dir);
        write_st(p, 1, names, nd, shp);
        expect_error(f, "stray tensor", p, "unet.conv_in.weight");
    }
    { /* conv_in is not LoRA-compatible in diffusers 0.21.4 */
        const char *names[] = {"unet.conv_in.lora.down.weight", "unet.conv_in.lora.up.weight"};
        int nd[] = {4, 4};
        const int64_t shp[][4] = {{2, 4, 3, 3}, {32, 2, 1, 1}};
        snprintf(p, sizeof p, "%s/convin.safetensors", dir);
        write_st(p, 2, names, nd, shp);
        expect_error(f, "conv_in LoRA", p, "'conv_in'");
    }
    {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
}

static void test_parse(void)
{
    kg_lora_ref *r = NULL;
    int n = -1;
    kg_error err = {0};
    kg_status s = kg_lora_list_parse(
        " a.safetensors:0.8; /x/b:c.safetensors ;c.safetensors:-0.25;;", &r, &n, &err);
    kgt_check(s == KG_OK && n == 3 && !strcmp(r[0].path, "a.safetensors") && r[0].scale == 0.8f &&
                  !strcmp(r[1].path, "/x/b:c.safetensors") && r[1].scale == 1.0f &&
                  !strcmp(r[2].path, "c.safetensors") && r[2].scale == -0.25f,
              "list parse: 3 entries, scale 1 when omitted, ':' in a path kept (%d)", n);
    free(r);
    s = kg_lora_list_parse("", &r, &n, &err);
    kgt_check(s == KG_OK && n == 0 && !r, "empty list -> none");
    s = kg_lora_list_parse(":0.5", &r, &n, &err);
    kgt_check(s == KG_ERR_INVALID_ARG, "':0.5' -> %s (%s)", kg_status_name(s), err.msg);
}

static void run_tag(const char *tag)
{
    fixture f;
    kg_error err = {0};
    char path[128];
    const kg_st_tensor *ts, *tc;
    size_t n;

    printf("--- %s\n", tag);
    memset(&f, 0, sizeof f);
    f.tag = tag;
    f.be = kgt_cpu_backend();
    snprintf(path, sizeof path, "sd/%s.weights.safetensors", tag);
    f.w = kgt_golden_open(path);
    snprintf(path, sizeof path, "sd/%s.io.safetensors", tag);
    f.io = kgt_golden_open(path);
    if (kg_st_open(&f.ref, data_path(tag, "lora_io"), &err) != KG_OK)
        kgt_check(0, "%s: %s", tag, err.msg);
    if (!f.be || !f.w || !f.io || !f.ref ||
        !kgt_check(load_unet(&f.base, f.be, f.w, &err) == KG_OK, "%s: load %s", tag, err.msg))
        goto done;
    ts = kg_st_find(f.io, "in.sample");
    tc = kg_st_find(f.io, "in.encoder_hidden_states");
    memcpy(f.shape, ts->shape, sizeof f.shape);
    memcpy(f.cshape, tc->shape, sizeof f.cshape);
    f.sample = kgt_read_f32(f.io, "in.sample", &n);
    f.t = kgt_read_f32(f.io, "in.timestep", &n);
    f.ctx = kgt_read_f32(f.io, "in.encoder_hidden_states", &n);
    kgt_ctx(&f.c, f.be, 32 << 20);
    {
        kg_lora_table tab;
        if (kgt_check(kg_lora_table_build(&tab, &f.base, &err) == KG_OK, "%s: layer table", tag))
            printf("  %d LoRA-compatible layers\n", tab.n);
        kg_lora_table_free(&tab);
    }
    test_scales(&f);
    test_several(&f);
    test_sampling(&f);
    test_errors(&f);
    kg_lora_set_free(&f.ls, f.be);
    kg_ctx_release(&f.c);
    kg_unet_free(&f.base, f.be);
done:
    free(f.sample);
    free(f.t);
    free(f.ctx);
    kg_st_close(f.w);
    kg_st_close(f.io);
    kg_st_close(f.ref);
    kg_backend_free(f.be);
}

int main(void)
{
    test_parse();
    run_tag("unet_tiny");
    run_tag("unet_tiny4");
    return kgt_finish();
}
