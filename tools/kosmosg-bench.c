/* kosmosg-bench.c - times the full-size Kosmos-G components with random weights.
 *
 *   kosmosg-bench --component clip|connector|mllm|aligner|unet|vae|all [--batch N]
 *                 [--backend cpu|cuda] [--precision auto|fp32|bf16|fp16] [--threads N]
 *                 [--warmup N] [--reps N] [--unet-batch N] [--lora-rank R]
 *
 * One component: one forward of the real shapes (tests/component_run.h), batch N
 * (images for clip/connector, sequences for aligner, samples for unet/vae; the mllm
 * runs one T = 136 sequence): CLIP ViT-L/14 at 224, connector 257 -> 64 tokens, MLLM
 * d2048 x 24 layers, AlignerNet 12 + 12 layers d768, U-Net 64x64 latent with 77x768
 * context, VAE decode 64x64 -> 512x512. The weights have the real shapes and
 * deterministic random values (tests/random_weights.h), built as an in-memory float32
 * safetensors image, loaded through the normal loader into the backend's memory
 * (converted to its dtypes), then dropped, so resident memory is what the loaded
 * weights take.
 *
 * --precision: auto (fp16 on CUDA, fp32 on the CPU), fp32, bf16, fp16 (CUDA only), as
 * kg_model_options. bf16 on the CPU stores the linear/conv weights in bf16 and runs
 * them on the CPU's bf16 kernels (the DISPATCH line names them; each run prints how
 * many bf16 GEMMs it made).
 *
 * all: every component, kept loaded, at the batch one 512x512 image with two input images needs
 * (clip and connector 2 images, mllm and aligner 1 sequence, unet batch 2 for
 * classifier-free guidance, vae 1), then a table: seconds per component, per U-Net
 * step, and per 512x512 image at 25 and 50 steps, composed as encode once (clip +
 * connector + mllm + aligner; the unconditional branch is cached per session and not
 * counted) + steps x U-Net(batch 2) + VAE; and the memory.
 *
 * Prints seconds per run (best of --reps after --warmup), effective GFLOP/s against
 * the FLOP counts of docs performance.md (computed from the configs for the
 * transformers; 803 GFLOP per U-Net sample and 2.515 TFLOP per VAE decode), the
 * backend's live bytes (weights + activation arena), the resident memory after the run
 * (VmRSS) and its peak (getrusage; it includes each random-weight image while it is
 * being loaded) and, on CUDA, the device memory in use (cudaMemGetInfo: total - free,
 * which includes the CUDA context and library workspaces).
 *
 * --unet-batch 1 with all: the U-Net at batch 1, i.e. guidance <= 1 (no CFG), as LCM-LoRA runs;
 * the table then gives the image at 2, 4 and 8 steps (scheduler=lcm).
 * --lora-rank R with unet: a random LoRA of rank R on every LoRA-compatible layer (the coverage
 * of LCM-LoRA for SD1.5, 67 M parameters at rank 64) is written to a temporary file, opened and
 * merged into a session copy (kg_lora_set_apply) at scale 1 and again at 0.5 (a scale change),
 * then the U-Net runs on the merged weights; prints the merge seconds. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "component_run.h"
#include "finite.h"
#include "lora.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"
#include "st_writer.h"
#ifdef KG_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/backend_cuda.h"
#endif

#define UNET_GFLOP_PER_SAMPLE 803.0
#define VAE_GFLOP_PER_DECODE 2515.0

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

/* A whole decimal integer in [lo, hi], or exit with a message (no atoi truncation). */
static int int_arg(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    long x;
    errno = 0;
    x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        die("%s \"%s\": expected an integer in %ld..%ld", opt, v, lo, hi);
    return (int)x;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

/* Resident memory now (VmRSS of /proc/self/status), GiB; -1 when unreadable. */
static double rss_gib(void)
{
    char line[256];
    double kib = -1.0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return kib < 0.0 ? -1.0 : kib / (1024.0 * 1024.0);
}

static double peak_rss_gib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / (1024.0 * 1024.0); /* ru_maxrss is in KiB on Linux */
}

/* Device memory in use in GiB (CUDA), -1 elsewhere. */
static double device_used_gib(const kg_backend *be)
{
#ifdef KG_HAVE_CUDA
    size_t free_b = 0, total_b = 0;
    if (!be->host_memory && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
        return (double)(total_b - free_b) / (1 << 30);
#else
    (void)be;
#endif
    return -1.0;
}

/* A dense transformer layer stack: per token 2 (4 d^2 + 2 d f) per layer for the
 * projections and the FFN, plus 4 T_q T_k d per layer for scores and weighted sum. */
static double layers_gflop(int64_t layers, int64_t tokens, int64_t keys, int64_t d, int64_t f)
{
    double per_token = 2.0 * (4.0 * (double)d * (double)d + 2.0 * (double)d * (double)f);
    double attn = 4.0 * (double)tokens * (double)keys * (double)d;
    return (double)layers * ((double)tokens * per_token + attn) * 1e-9;
}

/* FLOPs of one forward of cp (performance.md's counts for the U-Net and VAE). */
static double gflop(const kgt_comp *cp)
{
    double n = (double)cp->out_shape[0];
    switch (cp->k) {
    case KGT_CLIP: {
        const kg_clip_config *c = &cp->cfg.clip;
        double patch = 2.0 * (double)c->width * 3.0 * (double)(c->patch_size * c->patch_size) *
                       (double)(c->grid * c->grid) * 1e-9;
        return n * (patch + layers_gflop(c->layers, c->tokens, c->tokens, c->width, c->mlp_width));
    }
    case KGT_CONNECTOR: {
        const kg_connector_config *c = &cp->cfg.conn;
        double d = (double)c->out, l = (double)c->latents, t = 257.0, kv = t + l;
        /* dense over the CLIP tokens, q/out on the latents, k/v on tokens + latents */
        return n * 1e-9 *
               (2.0 * (double)c->in * d * t + 4.0 * d * d * l + 4.0 * d * d * kv +
                4.0 * l * kv * d);
    }
    case KGT_MLLM: {
        const kg_mllm_config *c = &cp->cfg.mllm;
        /* causal: half the score matrix */
        return layers_gflop(c->layers, cp->T, cp->T / 2, c->dim, c->ffn);
    }
    case KGT_ALIGNER: {
        const kg_aligner_config *c = &cp->cfg.al;
        double d = (double)c->dim, q = (double)c->queries, t = (double)cp->T;
        double in = 2.0 * (double)c->in * d * t * 1e-9;
        double enc = layers_gflop(c->enc_layers, cp->T, cp->T, c->dim, c->ffn);
        double dec = layers_gflop(c->dec_layers, c->queries, c->queries, c->dim, c->ffn);
        /* cross-attention: q/out on the queries, k/v on the T encoder states, scores */
        double cross =
            (double)c->dec_layers * 1e-9 * (4.0 * d * d * q + 4.0 * d * d * t + 4.0 * q * t * d);
        return n * (in + enc + dec + cross);
    }
    case KGT_UNET: return n * UNET_GFLOP_PER_SAMPLE;
    case KGT_VAE: return n * VAE_GFLOP_PER_DECODE;
    }
    return 0.0;
}

typedef struct result {
    const char *name;
    char shape[64];
    double best_s, gflop;
    double weights_mib, arena_mib, device_gib;
    int64_t bf16_gemms; /* per forward, CPU */
    int64_t params;
} result;

static void describe(const kgt_comp *cp, char *buf, size_t n)
{
    switch (cp->k) {
    case KGT_CLIP: snprintf(buf, n, "%lld image(s) 224x224", (long long)cp->in_shape[0]); break;
    case KGT_CONNECTOR:
        snprintf(buf, n, "%lld image(s) 257 -> 64", (long long)cp->in_shape[0]);
        break;
    case KGT_MLLM: snprintf(buf, n, "T = %lld", (long long)cp->T); break;
    case KGT_ALIGNER:
        snprintf(buf, n, "%lld x T = %lld -> 77", (long long)cp->B, (long long)cp->T);
        break;
    case KGT_UNET:
        snprintf(buf, n, "batch %lld, 64x64, ctx 77x768", (long long)cp->in_shape[0]);
        break;
    case KGT_VAE: snprintf(buf, n, "%lld x 64x64 -> 512x512", (long long)cp->in_shape[0]); break;
    }
}

/* One component with its weights (the CPU's point into the image), inputs and arena. */
typedef struct loaded {
    kgt_comp cp;
    kgt_rw im;
    kgt_model m;
    kg_st_file *st;
    char *file;
    kg_ctx c;
} loaded;

static void release(kg_backend *be, loaded *l)
{
    kg_ctx_release(&l->c);
    kgt_comp_unload(&l->m, &l->cp, be);
    kgt_comp_free_inputs(&l->cp);
    kg_st_close(l->st);
    free(l->file);
    kgt_rw_free(&l->im);
}

/* Builds, loads and times one component into *l (kept loaded); fills r. */
static void bench(kg_backend *be, kgt_kind k, int64_t batch, int warmup, int reps, result *r,
                  loaded *l)
{
    kgt_comp cp;
    kgt_rw im = {0};
    kgt_model m;
    kg_st_file *st = NULL;
    kg_error err = {0};
    kg_ctx c;
    kg_tensor x, y, e;
    size_t len, before = be->bytes_allocated;
    char *file;
    double t0, best = 1e30, gf;
    int64_t gemms0;

    memset(&cp, 0, sizeof cp);
    memset(r, 0, sizeof *r);
    cp.k = k;
    cp.prefix = "";
    if (kgt_comp_config(&cp, kgt_kind_full_json[k], &err) != KG_OK)
        die("%s", err.msg);
    kgt_comp_tensors(&cp, &im);
    t0 = now();
    file = kgt_rw_build(&im, 0x5eed0000u + (uint64_t)k, &len);
    if (kg_st_open_memory(&st, file, len, "random-weights", &err) != KG_OK)
        die("%s", err.msg);
    cp.st = st;
    if (kgt_comp_load(&m, &cp, be, &err) != KG_OK)
        die("%s: %s", kgt_kind_names[k], err.msg);
    r->weights_mib = (double)(be->bytes_allocated - before) / (1 << 20);
    /* the loader copied every tensor: the image is not needed any more */
    kg_st_close(st);
    st = NULL;
    cp.st = NULL;
    free(file);
    file = NULL;
    kgt_comp_inputs(&cp, batch, 64);
    describe(&cp, r->shape, sizeof r->shape);
    printf("%s: real shapes, %zu tensors, %lld parameters (%.2f GiB float32), random weights "
           "built and loaded in %.1f s; %s; backend %s\n",
           kgt_kind_names[k], im.n, (long long)im.params, (double)im.data_bytes / (1 << 30),
           now() - t0, r->shape, be->ops->name);

    kg_ctx_init(&c, be);
    if (kgt_comp_prepare(&c, &m, &cp, &x, &y, &e, &err) != KG_OK)
        die("%s: %s", kgt_kind_names[k], err.msg);
    r->arena_mib = (double)c.arena_cap / (1 << 20);
    gf = gflop(&cp);
    gemms0 = be->host_memory ? kg_backend_cpu_bf16_gemms(be) : 0;
    for (int i = 0; i < warmup + reps; i++) {
        kg_status s;
        double dt, cpu0 = cpu_seconds(), load[1] = {0};
        t0 = now();
        kgt_comp_forward(&c, &m, &cp, &y, &x, cp.ctx ? &e : NULL);
        s = be->ops->sync ? be->ops->sync(be) : KG_OK;
        if (s == KG_OK)
            s = kg_ctx_status(&c, &err);
        dt = now() - t0;
        cpu0 = cpu_seconds() - cpu0;
        if (getloadavg(load, 1) < 1)
            load[0] = -1;
        if (s != KG_OK) {
            kg_ctx_status(&c, &err);
            die("%s: %s", kgt_kind_names[k], err.msg);
        }
        if (i < warmup) {
            printf("  warm-up %d: %.4f s (cpu %.1f s, load %.1f)\n", i + 1, dt, cpu0, load[0]);
            continue;
        }
        printf("  run %d: %.4f s, %.1f GFLOP/s effective (%.1f GFLOP); cpu %.1f s, load average "
               "%.1f\n",
               i + 1 - warmup, dt, gf / dt, gf, cpu0, load[0]);
        if (dt < best)
            best = dt;
    }
    {
        float probe[4];
        kg_tensor flat = kg_tensor_reshape(&y, 1, (int64_t[]){kg_tensor_numel(&y)});
        kg_tensor head = kg_tensor_rows(&flat, 0, 4);
        kg_download_f32(&c, probe, &head);
        printf("  output finite: %s\n", isfinite(probe[0]) && isfinite(probe[3]) ? "yes" : "NO");
    }
    if (k == KGT_UNET) {
        /* what kg_generate adds to every denoising step: the latents of one image (batch 1 of
         * the CFG pair) copied to the host and scanned for NaN/Inf */
        kg_tensor lat = kg_tensor_rows(&x, 0, 1);
        size_t n = (size_t)kg_tensor_numel(&lat), bad = 0;
        float *host = malloc(n * sizeof *host);
        double cbest = 1e30;
        if (!host)
            die("no memory");
        for (int i = 0; i < 200; i++) {
            t0 = now();
            kg_download_f32(&c, host, &lat);
            bad = kg_first_nonfinite(host, n);
            t0 = now() - t0;
            if (t0 < cbest)
                cbest = t0;
        }
        free(host);
        printf(
            "  non-finite check per denoising step (latents [1, 4, %lld, %lld]: download + scan, "
            "best of 200): %.1f us = %.2e%% of this U-Net step%s\n",
            (long long)lat.shape[2], (long long)lat.shape[3], cbest * 1e6, 100.0 * cbest / best,
            bad == n ? "" : " (the input holds NaN/Inf)");
        printf("RESULT nonfinite_check_s=%.7f unet_step_s=%.4f ratio=%.6f\n", cbest, best,
               cbest / best);
    }
    r->bf16_gemms =
        be->host_memory ? (kg_backend_cpu_bf16_gemms(be) - gemms0) / (warmup + reps) : 0;
    if (be->weight_dtype == KG_BF16)
        printf("  bf16 GEMMs per forward: %lld\n", (long long)r->bf16_gemms);
    r->name = kgt_kind_names[k];
    r->best_s = best;
    r->gflop = gf;
    r->params = im.params;
    r->device_gib = device_used_gib(be);
    printf("RESULT component=%s batch=%lld best_s=%.4f gflops=%.1f weights_mib=%.0f arena_mib=%.0f "
           "weights=%s bf16_gemms=%lld rss_gib=%.2f peak_rss_gib=%.2f device_used_gib=%.2f\n",
           r->name, (long long)(k == KGT_MLLM ? 1 : batch), best, gf / best, r->weights_mib,
           r->arena_mib, kg_dtype_name(be->weight_dtype), (long long)r->bf16_gemms, rss_gib(),
           peak_rss_gib(), r->device_gib);

    l->cp = cp;
    l->im = im;
    l->m = m;
    l->st = st;
    l->file = file;
    l->c = c;
}

/* --lora-rank: merge a random full-coverage LoRA into a session copy of the loaded U-Net. */
static void bench_lora(kg_backend *be, loaded *l, int rank, int reps)
{
    kg_lora_table tab;
    kg_lora_set ls;
    kg_error err = {0};
    kg_st_writer *w = NULL;
    char path[] = "/tmp/kosmosg-bench-lora-XXXXXX";
    int fd = mkstemp(path);
    int64_t params = 0;
    double t0, first, change, best = 1e30;

    if (fd < 0)
        die("cannot create a temporary LoRA file");
    close(fd);
    if (kg_lora_table_build(&tab, &l->m.unet, &err) != KG_OK || !(w = kg_st_writer_new()))
        die("LoRA table: %s", err.msg);
    t0 = now();
    for (int i = 0; i < tab.n; i++) {
        const kg_lora_target *t = &tab.t[i];
        int64_t K = t->in * t->kh * t->kw;
        size_t nd = (size_t)(rank * K), nu = (size_t)(t->out * rank);
        float *d = malloc(nd * sizeof *d), *u = malloc(nu * sizeof *u);
        char key[200];
        kg_tensor td, tu;
        if (!d || !u)
            die("out of memory for the LoRA");
        kg_rng_normal(7, KG_RNG_IMAGE_OFFSET(2 * i), d, nd);
        kg_rng_normal(7, KG_RNG_IMAGE_OFFSET(2 * i + 1), u, nu);
        for (size_t k = 0; k < nu; k++)
            u[k] *= 1e-3f;
        td = kg_tensor_make(d, KG_F32, t->conv ? 4 : 2, (int64_t[]){rank, t->in, t->kh, t->kw});
        tu = kg_tensor_make(u, KG_F32, t->conv ? 4 : 2, (int64_t[]){t->out, rank, 1, 1});
        snprintf(key, sizeof key, "unet.%s.lora.down.weight", t->name);
        if (kg_st_writer_add(w, key, &td, &err) != KG_OK)
            die("%s", err.msg);
        snprintf(key, sizeof key, "unet.%s.lora.up.weight", t->name);
        if (kg_st_writer_add(w, key, &tu, &err) != KG_OK)
            die("%s", err.msg);
        params += (int64_t)(nd + nu);
        free(d);
        free(u);
    }
    if (kg_st_writer_save(w, path, &err) != KG_OK)
        die("%s", err.msg);
    kg_st_writer_free(w);
    printf("lora: rank %d on %d layers, %.1f M parameters, written in %.1f s\n", rank, tab.n,
           (double)params * 1e-6, now() - t0);
    memset(&ls, 0, sizeof ls);
    {
        kg_lora_ref r = {path, 1.0f};
        t0 = now();
        if (kg_lora_set_apply(&ls, &l->c, &l->m.unet, &r, 1, &err) != KG_OK)
            die("%s", err.msg);
        first = now() - t0;
        r.scale = 0.5f;
        t0 = now();
        if (kg_lora_set_apply(&ls, &l->c, &l->m.unet, &r, 1, &err) != KG_OK)
            die("%s", err.msg);
        change = now() - t0;
    }
    unlink(path);
    {
        kg_tensor x, y, e;
        if (kgt_comp_prepare(&l->c, &l->m, &l->cp, &x, &y, &e, &err) != KG_OK)
            die("%s", err.msg);
        for (int i = 0; i < reps; i++) {
            double dt;
            t0 = now();
            kg_unet_forward(&l->c, kg_lora_set_unet(&ls, &l->m.unet), &y, &x, l->cp.ts, &e);
            if (kg_ctx_status(&l->c, &err) != KG_OK)
                die("%s", err.msg);
            dt = now() - t0;
            best = dt < best ? dt : best;
        }
    }
    printf("RESULT lora rank=%d layers=%d params_m=%.1f open_merge_s=%.3f remerge_scale_s=%.3f "
           "unet_merged_s=%.4f merged_copy_mib=%.0f\n",
           rank, tab.n, (double)params * 1e-6, first, change, best,
           (double)ls.blob_size / (1 << 20));
    kg_lora_set_free(&ls, be);
    kg_lora_table_free(&tab);
}

/* The per-image table of --component all. */
static void summary(const result *r, const char *backend, const char *precision,
                    double all_loaded_gib)
{
    double w = 0.0, arena = 0.0, encode, step = r[KGT_UNET].best_s;
    printf("\n## Kosmos-G, random weights of the real shapes, backend %s, precision %s\n\n",
           backend, precision);
    printf("| component | shape | parameters | seconds | GFLOP/s | weights MiB | arena MiB |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    for (int k = 0; k < KGT_N_KINDS; k++) {
        printf("| %s | %s | %.1f M | %.4f | %.0f | %.0f | %.0f |\n", r[k].name, r[k].shape,
               (double)r[k].params * 1e-6, r[k].best_s, r[k].gflop / r[k].best_s, r[k].weights_mib,
               r[k].arena_mib);
        w += r[k].weights_mib;
        arena = r[k].arena_mib > arena ? r[k].arena_mib : arena;
    }
    encode =
        r[KGT_CLIP].best_s + r[KGT_CONNECTOR].best_s + r[KGT_MLLM].best_s + r[KGT_ALIGNER].best_s;
    printf("\n| per 512x512 image (2 input images, %s) | seconds |\n| --- | --- |\n",
           r[KGT_UNET].shape[6] == '1' && r[KGT_UNET].shape[7] == ',' ? "no CFG" : "CFG");
    printf("| encode once (clip + connector + mllm + aligner) | %.4f |\n", encode);
    printf("| per U-Net step (%.*s) | %.4f |\n", (int)strcspn(r[KGT_UNET].shape, ","),
           r[KGT_UNET].shape, step);
    printf("| VAE decode | %.4f |\n", r[KGT_VAE].best_s);
    printf("| image at 25 steps | %.3f |\n", encode + 25.0 * step + r[KGT_VAE].best_s);
    printf("| image at 50 steps | %.3f |\n", encode + 50.0 * step + r[KGT_VAE].best_s);
    if (r[KGT_UNET].shape[6] == '1' && r[KGT_UNET].shape[7] == ',') {
        /* "batch 1, ...": guidance <= 1, as LCM-LoRA runs (scheduler=lcm) */
        for (int n = 2; n <= 8; n *= 2)
            printf("| image at %d steps, guidance <= 1 (LCM) | %.3f |\n", n,
                   encode + n * step + r[KGT_VAE].best_s);
        printf("RESULT lcm4 backend=%s image_s=%.3f\n", backend,
               encode + 4.0 * step + r[KGT_VAE].best_s);
    }
    printf("\n| memory | GiB |\n| --- | --- |\n");
    printf("| all weights resident (linear/conv weights in %s) | %.2f |\n", precision, w / 1024.0);
    printf("| largest activation arena | %.2f |\n", arena / 1024.0);
    printf("| pipeline estimate (weights + largest arena) | %.2f |\n", (w + arena) / 1024.0);
    if (all_loaded_gib >= 0.0)
        printf("| device in use, all six loaded with their arenas (cudaMemGetInfo) | %.2f |\n",
               all_loaded_gib);
    printf("| resident host memory, all six loaded with their arenas (VmRSS) | %.2f |\n",
           rss_gib());
    printf("| peak resident host memory (getrusage; includes the random-weight image of the "
           "component being loaded) | %.2f |\n",
           peak_rss_gib());
    printf("RESULT all backend=%s precision=%s encode_s=%.4f unet_step_s=%.4f vae_s=%.4f "
           "image25_s=%.3f image50_s=%.3f weights_gib=%.2f arena_gib=%.2f rss_gib=%.2f "
           "peak_rss_gib=%.2f device_all_loaded_gib=%.2f\n",
           backend, precision, encode, step, r[KGT_VAE].best_s,
           encode + 25.0 * step + r[KGT_VAE].best_s, encode + 50.0 * step + r[KGT_VAE].best_s,
           w / 1024.0, arena / 1024.0, rss_gib(), peak_rss_gib(), all_loaded_gib);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kosmosg-bench --component clip|connector|mllm|aligner|unet|vae|all "
            "[--batch N] [--backend cpu|cuda] [--precision auto|fp32|bf16|fp16] [--threads N] "
            "[--warmup N] [--reps N] [--unet-batch N] [--lora-rank R]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    /* the batches one 512x512 image with two input images needs */
    static const int64_t image_batch[KGT_N_KINDS] = {2, 2, 1, 1, 2, 1};
    const char *component = NULL, *backend = "cpu";
    kg_precision precision = KG_PRECISION_AUTO;
    int batch = 1, threads = 0, warmup = 0, reps = 1, kind = -1, unet_batch = 2, lora_rank = 0;
    kg_backend *be = NULL;
    kg_error err = {0};
    result res[KGT_N_KINDS];
    loaded comps[KGT_N_KINDS];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (!strcmp(a, "--component"))
            component = v;
        else if (!strcmp(a, "--batch"))
            batch = int_arg(a, v, 1, 64);
        else if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--precision")) {
            if (kg_precision_from_name(v, &precision, &err) != KG_OK)
                die("--precision: %s", err.msg);
        } else if (!strcmp(a, "--threads"))
            threads = int_arg(a, v, 0, 1024);
        else if (!strcmp(a, "--warmup"))
            warmup = int_arg(a, v, 0, 1000);
        else if (!strcmp(a, "--reps"))
            reps = int_arg(a, v, 1, 1000);
        else if (!strcmp(a, "--unet-batch"))
            unet_batch = int_arg(a, v, 1, 64);
        else if (!strcmp(a, "--lora-rank"))
            lora_rank = int_arg(a, v, 0, 4096);
        else
            usage();
        i++;
    }
    for (int k = 0; component && k < KGT_N_KINDS; k++)
        if (!strcmp(component, kgt_kind_names[k]))
            kind = k;
    if (!component || (kind < 0 && strcmp(component, "all")) || batch < 1 || batch > 64 ||
        reps < 1 || warmup < 0 || unet_batch < 1 || unet_batch > 64 || lora_rank < 0 ||
        (lora_rank > 0 && kind != KGT_UNET))
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress lines show up when piped */

    if (precision == KG_PRECISION_AUTO)
        precision = !strcmp(backend, "cuda") ? KG_PRECISION_FP16 : KG_PRECISION_FP32;
    if (!strcmp(backend, "cpu")) {
        /* through the provider, as a model's session: it sets the weight dtype and refuses fp16 */
        const kg_backend_provider *prov;
        kg_backend_config cfg = {0,
                                 precision == KG_PRECISION_BF16   ? KG_BF16
                                 : precision == KG_PRECISION_FP32 ? KG_F32
                                                                  : KG_F16,
                                 threads};
        char line[512];
        if (kg_backend_provider_get(KG_BACKEND_CPU, &prov, &err) != KG_OK ||
            prov->compute_new(&be, &cfg, &err) != KG_OK)
            die("%s", err.msg);
        kg_backend_cpu_describe(be, line, sizeof line);
        printf("DISPATCH cpu backend, precision %s (linear/conv weights %s, activations %s): %s\n",
               kg_precision_name(precision), kg_dtype_name(be->weight_dtype),
               kg_dtype_name(be->act_dtype), line);
    } else if (!strcmp(backend, "cuda")) {
#ifdef KG_HAVE_CUDA
        kg_dtype dt = precision == KG_PRECISION_FP32   ? KG_F32
                      : precision == KG_PRECISION_BF16 ? KG_BF16
                                                       : KG_F16;
        if (kg_backend_cuda_new(&be, 0, dt, &err) != KG_OK)
            die("%s", err.msg);
#else
        die("backend cuda is not available in this build (configured without the CUDA toolkit)");
#endif
    } else {
        die("unknown backend '%s' (cpu or cuda)", backend);
    }

    if (kind >= 0) {
        bench(be, (kgt_kind)kind, batch, warmup, reps, &res[0], &comps[0]);
        if (lora_rank > 0)
            bench_lora(be, &comps[0], lora_rank, reps);
        release(be, &comps[0]);
    } else {
        /* every component stays loaded, as in a model: the device memory at the end is
         * all weights plus six arenas (a session shares one, so an upper bound) */
        for (int k = 0; k < KGT_N_KINDS; k++)
            bench(be, (kgt_kind)k, k == KGT_UNET ? unet_batch : image_batch[k], warmup, reps,
                  &res[k], &comps[k]);
        summary(res, be->ops->name, kg_precision_name(precision), device_used_gib(be));
        for (int k = 0; k < KGT_N_KINDS; k++)
            release(be, &comps[k]);
    }
    kg_backend_free(be);
    return 0;
}
