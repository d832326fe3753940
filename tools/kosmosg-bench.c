/* kosmosg-bench.c - times one full-size SD1.5 component with random weights.
 *
 *   kosmosg-bench --component unet|vae [--batch N] [--backend cpu] [--threads N]
 *                 [--warmup N] [--reps N]
 *
 * unet: one UNet2DConditionModel forward, 64x64 latent, 77x768 context, batch N;
 * vae: one AutoencoderKL decode 64x64 -> 512x512, batch N. The weights have the
 * real SD1.5 shapes (from the diffusers configs below) and deterministic random
 * values; they are built as an in-memory float32 safetensors image and loaded
 * through the normal loader (used in place on the CPU). Prints seconds per run,
 * effective GFLOP/s against the FLOP counts of docs performance.md (803 GFLOP per
 * U-Net sample, 2.515 TFLOP per VAE decode) and the peak resident memory
 * (getrusage ru_maxrss), which includes the weights. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "json.h"
#include "ops.h"
#include "safetensors.h"
#include "unet.h"
#include "vae.h"

#define UNET_GFLOP_PER_SAMPLE 803.0
#define VAE_GFLOP_PER_DECODE 2515.0

static const char sd15_unet_json[] =
    "{\"in_channels\": 4, \"out_channels\": 4, \"block_out_channels\": [320, 640, 1280, 1280],"
    " \"layers_per_block\": 2, \"attention_head_dim\": 8, \"cross_attention_dim\": 768,"
    " \"norm_num_groups\": 32, \"norm_eps\": 1e-05, \"flip_sin_to_cos\": true, \"freq_shift\": 0,"
    " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
    " \"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\","
    " \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"],"
    " \"downsample_padding\": 1, \"mid_block_scale_factor\": 1, \"act_fn\": \"silu\"}";

static const char sd15_vae_json[] =
    "{\"in_channels\": 3, \"out_channels\": 3, \"latent_channels\": 4,"
    " \"block_out_channels\": [128, 256, 512, 512], \"layers_per_block\": 2,"
    " \"norm_num_groups\": 32, \"act_fn\": \"silu\", \"up_block_types\": [\"UpDecoderBlock2D\","
    " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}";

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kosmosg-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------- random-weight safetensors image */

typedef struct entry {
    char name[128];
    int ndim;
    int64_t shape[KG_MAX_DIMS];
    size_t offset, nbytes;
} entry;

typedef struct image {
    entry *e;
    size_t n, cap;
    size_t data_bytes;
    int64_t params;
} image;

static void add(image *im, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add(image *im, int ndim, const int64_t *shape, const char *fmt, ...)
{
    va_list ap;
    entry *e;
    int64_t numel = 1;
    if (im->n == im->cap) {
        im->cap = im->cap ? 2 * im->cap : 1024;
        im->e = realloc(im->e, im->cap * sizeof *im->e);
        if (!im->e)
            die("out of memory");
    }
    e = &im->e[im->n++];
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        numel *= shape[i];
    }
    e->offset = im->data_bytes;
    e->nbytes = (size_t)numel * sizeof(float);
    im->data_bytes += e->nbytes;
    im->params += numel;
}

static void add_resnet(image *im, const char *p, int64_t in, int64_t out, int64_t temb)
{
    add(im, 1, (int64_t[]){in}, "%s.norm1.weight", p);
    add(im, 1, (int64_t[]){in}, "%s.norm1.bias", p);
    add(im, 4, (int64_t[]){out, in, 3, 3}, "%s.conv1.weight", p);
    add(im, 1, (int64_t[]){out}, "%s.conv1.bias", p);
    if (temb) {
        add(im, 2, (int64_t[]){out, temb}, "%s.time_emb_proj.weight", p);
        add(im, 1, (int64_t[]){out}, "%s.time_emb_proj.bias", p);
    }
    add(im, 1, (int64_t[]){out}, "%s.norm2.weight", p);
    add(im, 1, (int64_t[]){out}, "%s.norm2.bias", p);
    add(im, 4, (int64_t[]){out, out, 3, 3}, "%s.conv2.weight", p);
    add(im, 1, (int64_t[]){out}, "%s.conv2.bias", p);
    if (in != out) {
        add(im, 4, (int64_t[]){out, in, 1, 1}, "%s.conv_shortcut.weight", p);
        add(im, 1, (int64_t[]){out}, "%s.conv_shortcut.bias", p);
    }
}

static void add_attn(image *im, const char *p, int64_t ch, int64_t kv)
{
    add(im, 2, (int64_t[]){ch, ch}, "%s.to_q.weight", p);
    add(im, 2, (int64_t[]){ch, kv}, "%s.to_k.weight", p);
    add(im, 2, (int64_t[]){ch, kv}, "%s.to_v.weight", p);
    add(im, 2, (int64_t[]){ch, ch}, "%s.to_out.0.weight", p);
    add(im, 1, (int64_t[]){ch}, "%s.to_out.0.bias", p);
}

static void add_transformer(image *im, const char *p, int64_t ch, int64_t cross, int layers)
{
    char q[192];
    add(im, 1, (int64_t[]){ch}, "%s.norm.weight", p);
    add(im, 1, (int64_t[]){ch}, "%s.norm.bias", p);
    add(im, 4, (int64_t[]){ch, ch, 1, 1}, "%s.proj_in.weight", p);
    add(im, 1, (int64_t[]){ch}, "%s.proj_in.bias", p);
    for (int j = 0; j < layers; j++) {
        for (int k = 1; k <= 3; k++) {
            add(im, 1, (int64_t[]){ch}, "%s.transformer_blocks.%d.norm%d.weight", p, j, k);
            add(im, 1, (int64_t[]){ch}, "%s.transformer_blocks.%d.norm%d.bias", p, j, k);
        }
        snprintf(q, sizeof q, "%s.transformer_blocks.%d.attn1", p, j);
        add_attn(im, q, ch, ch);
        snprintf(q, sizeof q, "%s.transformer_blocks.%d.attn2", p, j);
        add_attn(im, q, ch, cross);
        add(im, 2, (int64_t[]){8 * ch, ch}, "%s.transformer_blocks.%d.ff.net.0.proj.weight", p, j);
        add(im, 1, (int64_t[]){8 * ch}, "%s.transformer_blocks.%d.ff.net.0.proj.bias", p, j);
        add(im, 2, (int64_t[]){ch, 4 * ch}, "%s.transformer_blocks.%d.ff.net.2.weight", p, j);
        add(im, 1, (int64_t[]){ch}, "%s.transformer_blocks.%d.ff.net.2.bias", p, j);
    }
    add(im, 4, (int64_t[]){ch, ch, 1, 1}, "%s.proj_out.weight", p);
    add(im, 1, (int64_t[]){ch}, "%s.proj_out.bias", p);
}

/* The diffusers UNet2DConditionModel state dict for cfg (the structure kg_unet_load reads). */
static void unet_tensors(image *im, const kg_unet_config *cfg)
{
    int n = cfg->n_blocks, ns = 0;
    int64_t c0 = cfg->block_out_channels[0], temb = 4 * c0, ch = c0, skips[64];
    int64_t cross = cfg->cross_attention_dim;
    char p[96];

    add(im, 4, (int64_t[]){c0, cfg->in_channels, 3, 3}, "conv_in.weight");
    add(im, 1, (int64_t[]){c0}, "conv_in.bias");
    add(im, 2, (int64_t[]){temb, c0}, "time_embedding.linear_1.weight");
    add(im, 1, (int64_t[]){temb}, "time_embedding.linear_1.bias");
    add(im, 2, (int64_t[]){temb, temb}, "time_embedding.linear_2.weight");
    add(im, 1, (int64_t[]){temb}, "time_embedding.linear_2.bias");
    skips[ns++] = c0;
    for (int i = 0; i < n; i++) {
        int64_t out = cfg->block_out_channels[i];
        for (int l = 0; l < cfg->layers_per_block[i]; l++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, l);
            add_resnet(im, p, ch, out, temb);
            ch = out;
            if (cfg->down_cross[i]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, l);
                add_transformer(im, p, ch, cross, cfg->transformer_layers[i]);
            }
            skips[ns++] = ch;
        }
        if (i < n - 1) {
            add(im, 4, (int64_t[]){ch, ch, 3, 3}, "down_blocks.%d.downsamplers.0.conv.weight", i);
            add(im, 1, (int64_t[]){ch}, "down_blocks.%d.downsamplers.0.conv.bias", i);
            skips[ns++] = ch;
        }
    }
    add_resnet(im, "mid_block.resnets.0", ch, ch, temb);
    add_transformer(im, "mid_block.attentions.0", ch, cross, cfg->transformer_layers[n - 1]);
    add_resnet(im, "mid_block.resnets.1", ch, ch, temb);
    for (int i = 0; i < n; i++) {
        int r = n - 1 - i;
        int64_t out = cfg->block_out_channels[r];
        for (int l = 0; l < cfg->layers_per_block[r] + 1; l++) {
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, l);
            add_resnet(im, p, ch + skips[--ns], out, temb);
            ch = out;
            if (cfg->up_cross[i]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, l);
                add_transformer(im, p, ch, cross, cfg->transformer_layers[r]);
            }
        }
        if (i < n - 1) {
            add(im, 4, (int64_t[]){ch, ch, 3, 3}, "up_blocks.%d.upsamplers.0.conv.weight", i);
            add(im, 1, (int64_t[]){ch}, "up_blocks.%d.upsamplers.0.conv.bias", i);
        }
    }
    add(im, 1, (int64_t[]){ch}, "conv_norm_out.weight");
    add(im, 1, (int64_t[]){ch}, "conv_norm_out.bias");
    add(im, 4, (int64_t[]){cfg->out_channels, ch, 3, 3}, "conv_out.weight");
    add(im, 1, (int64_t[]){cfg->out_channels}, "conv_out.bias");
}

/* The AutoencoderKL decoder state dict for cfg (diffusers attention names). */
static void vae_tensors(image *im, const kg_vae_config *cfg)
{
    int n = cfg->n_blocks;
    int64_t lat = cfg->latent_channels, ch = cfg->block_out_channels[n - 1];
    char p[96];

    add(im, 4, (int64_t[]){lat, lat, 1, 1}, "post_quant_conv.weight");
    add(im, 1, (int64_t[]){lat}, "post_quant_conv.bias");
    add(im, 4, (int64_t[]){ch, lat, 3, 3}, "decoder.conv_in.weight");
    add(im, 1, (int64_t[]){ch}, "decoder.conv_in.bias");
    add_resnet(im, "decoder.mid_block.resnets.0", ch, ch, 0);
    add(im, 1, (int64_t[]){ch}, "decoder.mid_block.attentions.0.group_norm.weight");
    add(im, 1, (int64_t[]){ch}, "decoder.mid_block.attentions.0.group_norm.bias");
    for (int k = 0; k < 4; k++) {
        static const char *const proj[] = {"to_q", "to_k", "to_v", "to_out.0"};
        add(im, 2, (int64_t[]){ch, ch}, "decoder.mid_block.attentions.0.%s.weight", proj[k]);
        add(im, 1, (int64_t[]){ch}, "decoder.mid_block.attentions.0.%s.bias", proj[k]);
    }
    add_resnet(im, "decoder.mid_block.resnets.1", ch, ch, 0);
    for (int i = 0; i < n; i++) {
        int64_t out = cfg->block_out_channels[n - 1 - i];
        for (int l = 0; l < cfg->layers_per_block + 1; l++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, l);
            add_resnet(im, p, ch, out, 0);
            ch = out;
        }
        if (i < n - 1) {
            add(im, 4, (int64_t[]){ch, ch, 3, 3}, "decoder.up_blocks.%d.upsamplers.0.conv.weight", i);
            add(im, 1, (int64_t[]){ch}, "decoder.up_blocks.%d.upsamplers.0.conv.bias", i);
        }
    }
    add(im, 1, (int64_t[]){ch}, "decoder.conv_norm_out.weight");
    add(im, 1, (int64_t[]){ch}, "decoder.conv_norm_out.bias");
    add(im, 4, (int64_t[]){cfg->out_channels, ch, 3, 3}, "decoder.conv_out.weight");
    add(im, 1, (int64_t[]){cfg->out_channels}, "decoder.conv_out.bias");
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

#define TABLE_SIZE 65521 /* prime, so tensors start at unrelated points of the cycle */

/* Norm weights 1, other vectors 0, matrices uniform in +-1/sqrt(fan_in) (PyTorch's
 * default scale), so activations stay in a normal range through the whole network.
 * The values cycle through a random table: filling 3.4 GB from a generator would
 * take longer than the forward being timed. */
static void fill_entry(const entry *e, float *dst, const float *table, size_t start)
{
    int64_t n = (int64_t)(e->nbytes / sizeof(float)), fan_in = e->ndim > 1 ? n / e->shape[0] : 1;
    float bound = (float)(1.0 / sqrt((double)fan_in));
    if (e->ndim == 1) {
        const char *w = strstr(e->name, "norm");
        float v = w && strstr(w, ".weight") ? 1.0f : 0.0f;
        for (int64_t i = 0; i < n; i++)
            dst[i] = v;
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = bound * table[(start + (size_t)i) % TABLE_SIZE];
}

/* A safetensors file image: header JSON padded to 8 bytes, then the data. */
static char *build_image(const image *im, size_t *len)
{
    size_t cap = 64 + im->n * 256, hl = 0;
    char *hdr = malloc(cap), *buf;
    float *table = malloc(TABLE_SIZE * sizeof *table);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    if (!hdr || !table)
        die("out of memory");
    hl += (size_t)snprintf(hdr + hl, cap - hl, "{");
    for (size_t i = 0; i < im->n; i++) {
        const entry *e = &im->e[i];
        hl += (size_t)snprintf(hdr + hl, cap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[",
                               i ? "," : "", e->name);
        for (int d = 0; d < e->ndim; d++)
            hl += (size_t)snprintf(hdr + hl, cap - hl, "%s%lld", d ? "," : "",
                                   (long long)e->shape[d]);
        hl += (size_t)snprintf(hdr + hl, cap - hl, "],\"data_offsets\":[%zu,%zu]}", e->offset,
                               e->offset + e->nbytes);
    }
    hl += (size_t)snprintf(hdr + hl, cap - hl, "}");
    while (hl % 8)
        hdr[hl++] = ' ';
    *len = 8 + hl + im->data_bytes;
    buf = malloc(*len);
    if (!buf)
        die("cannot allocate %.2f GiB for the weights", (double)*len / (1 << 30));
    for (int i = 0; i < 8; i++)
        buf[i] = (char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    free(hdr);
    for (size_t i = 0; i < TABLE_SIZE; i++)
        table[i] = (float)(rng_next(&s) >> 40) / 8388608.0f - 1.0f;
    for (size_t i = 0; i < im->n; i++)
        fill_entry(&im->e[i], (float *)(buf + 8 + hl + im->e[i].offset), table, i * 7919);
    free(table);
    return buf;
}

static void random_input(kg_ctx *c, kg_tensor *t, uint64_t seed)
{
    int64_t n = kg_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    if (!h)
        die("out of memory");
    for (int64_t i = 0; i < n; i++)
        h[i] = (float)(rng_next(&seed) >> 40) / 8388608.0f - 1.0f;
    kg_upload_f32(c, t, h);
    free(h);
}

/* user + system CPU seconds of this process: on a shared machine wall time alone
 * cannot tell a slow kernel from a busy neighbour */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double peak_rss_gib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / (1024.0 * 1024.0); /* ru_maxrss is in KiB on Linux */
}

static void usage(void)
{
    fprintf(stderr, "usage: kosmosg-bench --component unet|vae [--batch N] [--backend cpu] "
                    "[--threads N] [--warmup N] [--reps N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *component = NULL, *backend = "cpu";
    int batch = 1, threads = 0, warmup = 0, reps = 1, is_unet;
    image im = {0};
    kg_unet_config ucfg;
    kg_vae_config vcfg;
    kg_unet *unet = NULL;
    kg_vae *vae = NULL;
    kg_backend *be = NULL;
    kg_st_file *st = NULL;
    kg_json *j = NULL;
    kg_error err = {0};
    kg_ctx c;
    kg_tensor x = {0}, ctx = {0}, out = {0};
    float ts[64];
    char *file;
    size_t len;
    double t0, best = 1e30, gflop;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--component"))
            component = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else
            usage();
        i++;
    }
    if (!component || (strcmp(component, "unet") && strcmp(component, "vae")) || batch < 1 ||
        batch > 64 || reps < 1 || warmup < 0)
        usage();
    if (strcmp(backend, "cpu"))
        die("backend '%s' is not available in this build (cpu only)", backend);
    is_unet = !strcmp(component, "unet");
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines show up when piped */

    if (kg_backend_cpu_new(&be, threads, &err) != KG_OK)
        die("%s", err.msg);
    if (is_unet) {
        if (kg_json_parse(&j, sd15_unet_json, strlen(sd15_unet_json), "unet", &err) != KG_OK ||
            kg_unet_config_from_json(&ucfg, j, &err) != KG_OK)
            die("%s", err.msg);
        unet_tensors(&im, &ucfg);
    } else {
        if (kg_json_parse(&j, sd15_vae_json, strlen(sd15_vae_json), "vae", &err) != KG_OK ||
            kg_vae_config_from_json(&vcfg, j, &err) != KG_OK)
            die("%s", err.msg);
        vae_tensors(&im, &vcfg);
    }
    kg_json_free(j);

    t0 = now();
    file = build_image(&im, &len);
    if (kg_st_open_memory(&st, file, len, "random-weights", &err) != KG_OK)
        die("%s", err.msg);
    if (is_unet) {
        unet = calloc(1, sizeof *unet);
        if (!unet || kg_unet_load(unet, &ucfg, be, st, "", &err) != KG_OK)
            die("%s", err.msg);
    } else {
        vae = calloc(1, sizeof *vae);
        if (!vae || kg_vae_load(vae, &vcfg, be, st, "", &err) != KG_OK)
            die("%s", err.msg);
    }
    printf("%s: SD1.5 shapes, %zu tensors, %lld parameters (%.2f GiB float32), random weights "
           "built and loaded in %.1f s; backend %s\n",
           component, im.n, (long long)im.params, (double)im.data_bytes / (1 << 30), now() - t0,
           be->ops->name);

    kg_ctx_init(&c, be);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            kg_ctx_begin_measure(&c);
        if (is_unet) {
            x = kg_new4(&c, batch, 4, 64, 64);
            ctx = kg_new3(&c, batch, 77, 768);
            out = kg_new4(&c, batch, 4, 64, 64);
        } else {
            x = kg_new4(&c, batch, 4, 64, 64);
            out = kg_new4(&c, batch, 3, 512, 512);
        }
        if (pass == 0) {
            for (int b = 0; b < batch; b++)
                ts[b] = 999.0f - 250.0f * (float)b;
            if (is_unet)
                kg_unet_forward(&c, unet, &out, &x, ts, &ctx);
            else
                kg_vae_decode(&c, vae, &out, &x);
            if (kg_ctx_end_measure(&c, &err) != KG_OK)
                die("%s", err.msg);
        }
    }
    random_input(&c, &x, 1);
    if (is_unet)
        random_input(&c, &ctx, 2);
    printf("batch %d, activation arena %.1f MiB\n", batch, (double)c.arena_cap / (1 << 20));

    gflop = batch * (is_unet ? UNET_GFLOP_PER_SAMPLE : VAE_GFLOP_PER_DECODE);
    for (int r = 0; r < warmup + reps; r++) {
        kg_status s;
        double dt, cpu0 = cpu_seconds(), load[1] = {0};
        t0 = now();
        s = is_unet ? kg_unet_forward(&c, unet, &out, &x, ts, &ctx) : kg_vae_decode(&c, vae, &out, &x);
        if (s == KG_OK && be->ops->sync)
            s = be->ops->sync(be);
        dt = now() - t0;
        cpu0 = cpu_seconds() - cpu0;
        if (getloadavg(load, 1) < 1)
            load[0] = -1;
        if (s != KG_OK) {
            kg_ctx_status(&c, &err);
            die("%s", err.msg);
        }
        if (r < warmup) {
            printf("warm-up %d: %.2f s (cpu %.1f s, load %.1f)\n", r + 1, dt, cpu0, load[0]);
            continue;
        }
        printf("run %d: %.2f s, %.1f GFLOP/s effective (%.0f GFLOP); cpu %.1f s, load average "
               "%.1f\n", r + 1 - warmup, dt, gflop / dt, gflop, cpu0, load[0]);
        if (dt < best)
            best = dt;
    }
    {
        float probe[4];
        kg_tensor first = kg_tensor_reshape(&out, 1, (int64_t[]){kg_tensor_numel(&out)});
        kg_tensor head = kg_tensor_rows(&first, 0, 4);
        kg_download_f32(&c, probe, &head);
        printf("output %s finite: %s\n", is_unet ? "eps" : "image",
               isfinite(probe[0]) && isfinite(probe[3]) ? "yes" : "NO");
    }
    printf("RESULT component=%s batch=%d best_s=%.3f gflops=%.1f peak_rss_gib=%.2f\n", component,
           batch, best, gflop / best, peak_rss_gib());

    kg_ctx_release(&c);
    if (unet)
        kg_unet_free(unet, be);
    if (vae)
        kg_vae_free(vae, be);
    free(unet);
    free(vae);
    kg_st_close(st);
    free(file);
    free(im.e);
    kg_backend_free(be);
    return 0;
}
