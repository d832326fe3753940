/* test_vae.c - the VAE decoder against diffusers 0.21.4 AutoencoderKL.decode run in
 * float64 (goldens sd/vae_tiny: blocks (32, 64), 1 layer; sd/vae_tiny4: the SD1.5
 * topology at widths (32, 32, 64, 64)). The config comes from the weights' metadata;
 * the output and every tap (post_quant_conv, decoder.conv_in, mid block, its resnets
 * and attention, each up block with its resnets and upsampler, conv_norm_out/act/out)
 * are compared with max-abs 1e-4 / rel 1e-3. The same weights renamed to the legacy
 * attention keys (query/key/value/proj_attn, as [C, C] and as [C, C, 1, 1]) must give
 * the same output; a missing or mis-shaped weight gives KG_ERR_WEIGHTS naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"
#include "vae.h"

#define ATOL 1e-4
#define RTOL 1e-3
#define ATTN "decoder.mid_block.attentions.0."

static kg_status load(kg_vae *m, kg_backend *be, const kg_st_file *st, kg_error *err)
{
    const char *text = kg_st_metadata(st, "config");
    kg_vae_config cfg;
    kg_json *j = NULL;
    kg_status s;
    if (!text)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: no 'config' metadata", kg_st_path(st));
    s = kg_json_parse(&j, text, strlen(text), "config", err);
    if (s == KG_OK)
        s = kg_vae_config_from_json(&cfg, j, err);
    kg_json_free(j);
    return s == KG_OK ? kg_vae_load(m, &cfg, be, st, "", err) : s;
}

/* Decodes the golden's in.latent (measure pass, then the real one) and compares
 * out.sample, and the taps when taps_too. */
static void decode_and_compare(kg_backend *be, const kg_vae *m, const kg_st_file *g,
                               const char *what, int taps_too)
{
    const kg_st_tensor *tz = kg_st_find(g, "in.latent");
    int64_t f = (int64_t)1 << (m->cfg.n_blocks - 1);
    float *z = NULL, *got = NULL;
    double *ref = NULL;
    size_t n, nref;
    kg_ctx c;
    kgt_taps taps;
    kg_error err = {0};
    kg_status s;

    if (!kgt_check(tz && tz->ndim == 4, "%s: in.latent present", what))
        return;
    z = kgt_read_f32(g, "in.latent", &n);
    got =
        malloc((size_t)(tz->shape[0] * m->cfg.out_channels * tz->shape[2] * f * tz->shape[3] * f) *
               sizeof *got);
    kg_ctx_init(&c, be);
    kgt_taps_attach(&taps, &c);
    for (int pass = 0; pass < 2; pass++) {
        kg_tensor x, out;
        size_t allocs = be->n_allocs;
        if (pass == 0)
            kg_ctx_begin_measure(&c);
        x = kg_new(&c, 4, tz->shape);
        out = kg_new4(&c, tz->shape[0], m->cfg.out_channels, tz->shape[2] * f, tz->shape[3] * f);
        if (pass == 1)
            kg_upload_f32(&c, &x, z);
        s = kg_vae_decode(&c, m, &out, &x);
        if (pass == 0) {
            s = kg_ctx_end_measure(&c, &err);
            if (!kgt_check(s == KG_OK, "%s: measure pass %s (arena %.1f MiB)", what,
                           s == KG_OK ? "ok" : err.msg, (double)c.arena_cap / (1 << 20)))
                break;
            continue;
        }
        kgt_check(be->n_allocs == allocs, "%s: no backend allocation during the decode", what);
        if (!kgt_check(s == KG_OK, "%s: decode %s", what,
                       s == KG_OK ? "ok" : (kg_ctx_status(&c, &err), err.msg)))
            break;
        kg_download_f32(&c, got, &out);
        ref = kgt_read_f64(g, "out64.sample", &nref);
        if (kgt_check(ref && nref == (size_t)kg_tensor_numel(&out), "%s: out64.sample size", what))
            kgt_compare("out.sample", got, ref, nref, ATOL, RTOL);
        if (taps_too)
            kgt_taps_compare(&taps, g, "act64.", "act.", ATOL, RTOL, NULL);
    }
    kgt_taps_free(&taps);
    kg_ctx_release(&c);
    free(z);
    free(got);
    free(ref);
}

/* A latent or output that does not fit the model gives a sticky error, not a crash. */
static void run_bad_inputs(kg_backend *be, const kg_vae *m, const char *tag)
{
    int64_t f = (int64_t)1 << (m->cfg.n_blocks - 1);
    kg_ctx c;
    kg_error err = {0};
    kg_tensor z, out;
    kg_status s;

    kgt_ctx(&c, be, 8 << 20);
    z = kg_new4(&c, 1, m->cfg.latent_channels + 1, 2, 2);
    out = kg_new4(&c, 1, m->cfg.out_channels, 2 * f, 2 * f);
    s = kg_vae_decode(&c, m, &out, &z);
    kg_ctx_status(&c, &err);
    kgt_check(s == KG_ERR_SHAPE && strstr(err.msg, "vae:"), "%s: %lld latent channels: %s (%s)",
              tag, (long long)m->cfg.latent_channels + 1, kg_status_name(s), err.msg);
    kg_ctx_clear_error(&c);
    z = kg_new4(&c, 1, m->cfg.latent_channels, 2, 2);
    out = kg_new4(&c, 1, m->cfg.out_channels, 2 * f, 2 * f + 1);
    s = kg_vae_decode(&c, m, &out, &z);
    kg_ctx_status(&c, &err);
    kgt_check(s == KG_ERR_SHAPE, "%s: output one column too wide: %s (%s)", tag, kg_status_name(s),
              err.msg);
    kg_ctx_clear_error(&c);
    kg_ctx_release(&c);
}

static void run_tag(kg_backend *be, const char *tag)
{
    char path[128];
    kg_st_file *w, *g;
    kg_vae m;
    kg_error err = {0};
    kg_status s;

    printf("--- %s\n", tag);
    memset(&m, 0, sizeof m);
    snprintf(path, sizeof path, "sd/%s.weights.safetensors", tag);
    w = kgt_golden_open(path);
    snprintf(path, sizeof path, "sd/%s.io.safetensors", tag);
    g = kgt_golden_open(path);
    if (w && g) {
        s = load(&m, be, w, &err);
        if (kgt_check(s == KG_OK, "%s: load %s", tag, s == KG_OK ? "ok" : err.msg)) {
            decode_and_compare(be, &m, g, tag, 1);
            run_bad_inputs(be, &m, tag);
        }
    }
    kg_vae_free(&m, be);
    kg_st_close(w);
    kg_st_close(g);
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

/* A copy of a safetensors file image whose JSON header has the first occurrence
 * of each from[i] replaced by to[i] (any lengths; the data offsets are relative
 * to the end of the header, so the data block is copied unchanged). NULL when a
 * pattern is absent. */
static char *rewrite_header(const char *file, size_t len, const char *const *from,
                            const char *const *to, int n, size_t *out_len)
{
    uint64_t hlen = 0;
    size_t cap, hl;
    char *hdr, *out;

    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)(unsigned char)file[i] << (8 * i);
    if (hlen > len - 8)
        return NULL;
    cap = (size_t)hlen + 1;
    for (int i = 0; i < n; i++)
        cap += strlen(to[i]);
    hdr = malloc(cap + 8);
    if (!hdr)
        return NULL;
    memcpy(hdr, file + 8, (size_t)hlen);
    hl = (size_t)hlen;
    for (int i = 0; i < n; i++) {
        size_t fl = strlen(from[i]), tl = strlen(to[i]);
        char *hit = memmem(hdr, hl, from[i], fl);
        if (!hit) {
            free(hdr);
            return NULL;
        }
        memmove(hit + tl, hit + fl, hl - (size_t)(hit - hdr) - fl);
        memcpy(hit, to[i], tl);
        hl = hl - fl + tl;
    }
    while (hl % 8)
        hdr[hl++] = ' ';
    *out_len = 8 + hl + (len - 8 - (size_t)hlen);
    out = malloc(*out_len);
    if (out) {
        for (int i = 0; i < 8; i++)
            out[i] = (char)((uint64_t)hl >> (8 * i));
        memcpy(out + 8, hdr, hl);
        memcpy(out + 8 + hl, file + 8 + hlen, len - 8 - (size_t)hlen);
    }
    free(hdr);
    return out;
}

/* Loads the rewritten image; expect KG_OK (then decode and compare the output) or
 * KG_ERR_WEIGHTS with a message naming `key`. */
static void run_rewritten(kg_backend *be, const kg_st_file *g, const char *what,
                          const char *const *from, const char *const *to, int n, kg_status want,
                          const char *key)
{
    const char *path = kgt_golden_path("sd/vae_tiny.weights.safetensors");
    size_t len = 0, nlen = 0;
    char *file = read_file(path, &len);
    char *img = file ? rewrite_header(file, len, from, to, n, &nlen) : NULL;
    kg_st_file *st = NULL;
    kg_vae m;
    kg_error err = {0};
    kg_status s;

    memset(&m, 0, sizeof m);
    free(file);
    if (!kgt_check(img != NULL, "%s: rewritten copy of %s", what, path))
        return;
    s = kg_st_open_memory(&st, img, nlen, "rewritten.safetensors", &err);
    if (kgt_check(s == KG_OK, "%s: rewritten file opens (%s)", what, s == KG_OK ? "ok" : err.msg)) {
        size_t before = be->bytes_allocated;
        s = load(&m, be, st, &err);
        if (want == KG_OK) {
            if (kgt_check(s == KG_OK, "%s: load %s", what, s == KG_OK ? "ok" : err.msg))
                decode_and_compare(be, &m, g, what, 0);
        } else {
            kgt_check(s == want && strstr(err.msg, key) != NULL, "%s: %s naming '%s' (%s)", what,
                      kg_status_name(s), key, err.msg);
            kgt_check(be->bytes_allocated == before, "%s: nothing left allocated after the failure",
                      what);
        }
    }
    kg_vae_free(&m, be);
    kg_st_close(st);
    free(img);
}

static void run_variants(kg_backend *be)
{
    static const char *const new_names[] = {
        "\"" ATTN "to_q.weight\"",     "\"" ATTN "to_q.bias\"",    "\"" ATTN "to_k.weight\"",
        "\"" ATTN "to_k.bias\"",       "\"" ATTN "to_v.weight\"",  "\"" ATTN "to_v.bias\"",
        "\"" ATTN "to_out.0.weight\"", "\"" ATTN "to_out.0.bias\""};
    static const char *const legacy[] = {
        "\"" ATTN "query.weight\"",     "\"" ATTN "query.bias\"",    "\"" ATTN "key.weight\"",
        "\"" ATTN "key.bias\"",         "\"" ATTN "value.weight\"",  "\"" ATTN "value.bias\"",
        "\"" ATTN "proj_attn.weight\"", "\"" ATTN "proj_attn.bias\""};
    /* the legacy names again, each weight then turned into a 1x1 conv */
    static const char *const legacy2d[] = {
        "\"" ATTN "query.weight\":{\"dtype\":\"F32\",\"shape\":[64,64]",
        "\"" ATTN "key.weight\":{\"dtype\":\"F32\",\"shape\":[64,64]",
        "\"" ATTN "value.weight\":{\"dtype\":\"F32\",\"shape\":[64,64]",
        "\"" ATTN "proj_attn.weight\":{\"dtype\":\"F32\",\"shape\":[64,64]"};
    static const char *const legacy4d[] = {
        "\"" ATTN "query.weight\":{\"dtype\":\"F32\",\"shape\":[64,64,1,1]",
        "\"" ATTN "key.weight\":{\"dtype\":\"F32\",\"shape\":[64,64,1,1]",
        "\"" ATTN "value.weight\":{\"dtype\":\"F32\",\"shape\":[64,64,1,1]",
        "\"" ATTN "proj_attn.weight\":{\"dtype\":\"F32\",\"shape\":[64,64,1,1]"};
    const char *from[12], *to[12];
    kg_st_file *g = kgt_golden_open("sd/vae_tiny.io.safetensors");

    printf("--- vae_tiny with rewritten weight files\n");
    if (!g)
        return;
    run_rewritten(be, g, "legacy attention names", new_names, legacy, 8, KG_OK, NULL);
    for (int i = 0; i < 8; i++) {
        from[i] = new_names[i];
        to[i] = legacy[i];
    }
    for (int i = 0; i < 4; i++) {
        from[8 + i] = legacy2d[i];
        to[8 + i] = legacy4d[i];
    }
    run_rewritten(be, g, "legacy attention names, [C, C, 1, 1]", from, to, 12, KG_OK, NULL);

    from[0] = "\"decoder.up_blocks.1.resnets.0.conv_shortcut.weight\"";
    to[0] = "\"decoder.up_blocks.1.resnets.0.shortcut.weight\"";
    run_rewritten(be, g, "missing tensor", from, to, 1, KG_ERR_WEIGHTS,
                  "decoder.up_blocks.1.resnets.0.conv_shortcut.weight");

    /* this resnet maps 64 -> 32 channels: swapping its norm1/norm2 names mis-shapes both */
    from[0] = "\"decoder.up_blocks.1.resnets.0.norm1.bias\"";
    to[0] = "\"decoder.up_blocks.1.resnets.0.normX.bias\"";
    from[1] = "\"decoder.up_blocks.1.resnets.0.norm2.bias\"";
    to[1] = "\"decoder.up_blocks.1.resnets.0.norm1.bias\"";
    from[2] = "\"decoder.up_blocks.1.resnets.0.normX.bias\"";
    to[2] = "\"decoder.up_blocks.1.resnets.0.norm2.bias\"";
    run_rewritten(be, g, "wrong shape", from, to, 3, KG_ERR_WEIGHTS,
                  "decoder.up_blocks.1.resnets.0.norm1.bias");
    kg_st_close(g);
}

int main(void)
{
    kg_backend *be = kgt_cpu_backend();
    run_tag(be, "vae_tiny");
    run_tag(be, "vae_tiny4");
    run_variants(be);
    kg_backend_free(be);
    return kgt_finish();
}
