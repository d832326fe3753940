/* kosmosg-generate - command-line Kosmos-G generation without GStreamer.
 *
 *   kosmosg-generate -m model.safetensors -p "<i> wearing <i>" -i a.png -i b.png \
 *       [-N negative] [-s steps] [-g guidance] [--seed N] [-n images] [--scheduler NAME]
 *       [--size WxH] [--backend auto|cpu|cuda] [--threads N] [--latents FILE] [--dump FILE]
 *       -o out-%d.png
 */
#include <getopt.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kosmosg.h"
#include "safetensors.h"
#include "st_writer.h"

#define MAX_IMAGES 16

typedef struct cli {
    const char *model, *prompt, *negative, *out, *latents, *dump;
    const char *inputs[MAX_IMAGES];
    int n_inputs;
    kg_params params;
    kg_model_options mopt;
    int tty;
    double t_start;
    kg_st_writer *dumper;
    kg_status dump_status;
    kg_error dump_err;
} cli;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kosmosg-generate -m MODEL -p PROMPT [-i IMAGE.png]... -o OUT-%%d.png\n"
            "  -m, --model FILE        model file from kosmosg-convert\n"
            "  -p, --prompt TEXT       prompt; one <i> per -i image, in order\n"
            "  -i, --image FILE        reference image (PNG), repeatable\n"
            "  -N, --negative TEXT     negative prompt (default: none)\n"
            "  -s, --steps N           denoising steps (default 50)\n"
            "  -g, --guidance S        guidance scale (default 6.0; <= 1: no guidance)\n"
            "      --seed N            seed (default -1: random; the seed used is printed)\n"
            "  -n, --num-images N      images to generate (default 1)\n"
            "      --scheduler NAME    dpm++2m (default), ddim, pndm, euler, dpm++2m-karras\n"
            "      --size WxH          output size, multiples of 8 (default 512x512)\n"
            "      --backend NAME      auto (default), cpu, cuda\n"
            "      --threads N         CPU threads (default: all cores)\n"
            "      --latents FILE      start from tensor 'latents' F32 [n,4,H/8,W/8] in a safetensors FILE\n"
            "      --dump FILE         write every stage to a safetensors FILE\n"
            "  -o, --output PATTERN    output PNG path; %%d is replaced by the image index\n");
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "kosmosg-generate: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return 1;
}

static int load_png(const char *path, kg_image *img, uint8_t **pixels)
{
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&pi, path))
        return die("%s: cannot read PNG: %s", path, pi.message);
    pi.format = PNG_FORMAT_RGB;
    *pixels = malloc(PNG_IMAGE_SIZE(pi));
    if (!*pixels) {
        png_image_free(&pi);
        return die("%s: out of memory", path);
    }
    if (!png_image_finish_read(&pi, NULL, *pixels, 0, NULL)) {
        free(*pixels);
        *pixels = NULL;
        return die("%s: cannot decode PNG: %s", path, pi.message);
    }
    img->format = KG_PIX_RGB;
    img->width = pi.width;
    img->height = pi.height;
    img->stride = (size_t)PNG_IMAGE_ROW_STRIDE(pi);
    img->data = *pixels;
    return 0;
}

static int save_png(const char *pattern, int index, int w, int h, const uint8_t *rgb)
{
    char path[4096];
    png_image pi;
    if (strstr(pattern, "%d"))
        snprintf(path, sizeof path, pattern, index);
    else if (index == 0)
        snprintf(path, sizeof path, "%s", pattern);
    else
        return die("-o %s has no %%d but more than one image was generated", pattern);
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)w;
    pi.height = (png_uint_32)h;
    pi.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_file(&pi, path, 0, rgb, 0, NULL))
        return die("%s: cannot write PNG: %s", path, pi.message);
    fprintf(stderr, "wrote %s\n", path);
    return 0;
}

static void on_progress(void *user, kg_stage stage, int step, int total)
{
    cli *c = user;
    double el = now() - c->t_start;
    if (stage == KG_STAGE_DENOISE && total > 0) {
        double eta = step > 0 ? el / step * (total - step) : 0.0;
        if (c->tty) {
            char bar[41];
            int fill = (int)(40.0 * step / total);
            for (int i = 0; i < 40; i++)
                bar[i] = i < fill ? '#' : '.';
            bar[40] = '\0';
            fprintf(stderr, "\r[%s] %d/%d  %.1fs elapsed, ETA %.1fs ", bar, step, total, el, eta);
            if (step == total)
                fprintf(stderr, "\n");
        } else {
            fprintf(stderr, "step %d/%d (%.1fs elapsed, ETA %.1fs)\n", step, total, el, eta);
        }
    } else if (stage == KG_STAGE_ENCODE) {
        fprintf(stderr, "encoded prompt (%.1fs)\n", el);
    } else if (stage == KG_STAGE_DECODE) {
        fprintf(stderr, "decoded images (%.1fs)\n", el);
    }
}

static void on_dump(void *user, const char *name, const kg_tensor *t)
{
    cli *c = user;
    if (c->dump_status == KG_OK)
        c->dump_status = kg_st_writer_add(c->dumper, name, t, &c->dump_err);
}

static int load_latents(cli *c, kg_st_file **st, float **data)
{
    kg_error err = {0};
    const kg_params *p = &c->params;
    int64_t shape[4] = {p->num_images, 4, p->height / 8, p->width / 8};
    size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    if (kg_st_open(st, c->latents, &err) != KG_OK)
        return die("%s", err.msg);
    *data = malloc(n * sizeof(float));
    if (!*data)
        return die("out of memory");
    if (kg_st_get_f32(*st, "latents", 4, shape, *data, &err) != KG_OK)
        return die("--latents: %s (expected [%lld, 4, %lld, %lld] for -n %d --size %dx%d)", err.msg,
                   (long long)shape[0], (long long)shape[2], (long long)shape[3], p->num_images,
                   p->width, p->height);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},   {"prompt", required_argument, NULL, 'p'},
        {"image", required_argument, NULL, 'i'},   {"negative", required_argument, NULL, 'N'},
        {"steps", required_argument, NULL, 's'},   {"guidance", required_argument, NULL, 'g'},
        {"seed", required_argument, NULL, 1},      {"num-images", required_argument, NULL, 'n'},
        {"scheduler", required_argument, NULL, 2}, {"size", required_argument, NULL, 3},
        {"backend", required_argument, NULL, 4},   {"threads", required_argument, NULL, 5},
        {"latents", required_argument, NULL, 6},   {"dump", required_argument, NULL, 7},
        {"output", required_argument, NULL, 'o'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    cli c;
    kg_image images[MAX_IMAGES];
    uint8_t *pixels[MAX_IMAGES] = {0};
    kg_model *model = NULL;
    kg_session *session = NULL;
    kg_output out = {0};
    kg_error err = {0};
    kg_st_file *lat_st = NULL;
    float *lat = NULL;
    int rc = 1, opt;
    char *end;

    memset(&c, 0, sizeof c);
    kg_params_init(&c.params);
    kg_model_options_init(&c.mopt);
    while ((opt = getopt_long(argc, argv, "m:p:i:N:s:g:n:o:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': c.model = optarg; break;
        case 'p': c.prompt = optarg; break;
        case 'i':
            if (c.n_inputs == MAX_IMAGES)
                return die("at most %d reference images", MAX_IMAGES);
            c.inputs[c.n_inputs++] = optarg;
            break;
        case 'N': c.negative = optarg; break;
        case 's':
            c.params.steps = (int)strtol(optarg, &end, 10);
            if (*end || c.params.steps < 1 || c.params.steps > 1000)
                return die("--steps %s: expected 1..1000", optarg);
            break;
        case 'g':
            c.params.guidance_scale = strtof(optarg, &end);
            if (*end || !(c.params.guidance_scale >= 0.0f && c.params.guidance_scale <= 100.0f))
                return die("--guidance %s: expected a number in 0..100", optarg);
            break;
        case 1:
            c.params.seed = strtoll(optarg, &end, 10);
            if (*end || c.params.seed < -1)
                return die("--seed %s: expected -1 or a non-negative integer", optarg);
            break;
        case 'n':
            c.params.num_images = (int)strtol(optarg, &end, 10);
            if (*end || c.params.num_images < 1 || c.params.num_images > 64)
                return die("--num-images %s: expected 1..64", optarg);
            break;
        case 2:
            if (kg_scheduler_type_from_name(optarg, &c.params.scheduler, NULL) != KG_OK)
                return die("--scheduler %s: expected dpm++2m, ddim, pndm, euler or dpm++2m-karras",
                           optarg);
            break;
        case 3:
            if (sscanf(optarg, "%dx%d", &c.params.width, &c.params.height) != 2 ||
                c.params.width < 8 || c.params.height < 8 || c.params.width % 8 ||
                c.params.height % 8 || c.params.width > 4096 || c.params.height > 4096)
                return die("--size %s: expected WxH, multiples of 8 between 8 and 4096", optarg);
            break;
        case 4:
            if (!strcmp(optarg, "auto"))
                c.mopt.backend = KG_BACKEND_AUTO;
            else if (!strcmp(optarg, "cpu"))
                c.mopt.backend = KG_BACKEND_CPU;
            else if (!strcmp(optarg, "cuda"))
                c.mopt.backend = KG_BACKEND_CUDA;
            else
                return die("--backend %s: expected auto, cpu or cuda", optarg);
            break;
        case 5: c.mopt.n_threads = atoi(optarg); break;
        case 6: c.latents = optarg; break;
        case 7: c.dump = optarg; break;
        case 'o': c.out = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !c.model || !c.prompt || !c.out) {
        usage(stderr);
        return 2;
    }
    c.params.prompt = c.prompt;
    c.params.negative_prompt = c.negative;
    for (int i = 0; i < c.n_inputs; i++)
        if (load_png(c.inputs[i], &images[i], &pixels[i]))
            goto fail;
    c.params.images = images;
    c.params.n_images = c.n_inputs;
    if (c.latents) {
        if (load_latents(&c, &lat_st, &lat))
            goto fail;
        c.params.init_latents = lat;
    }
    if (c.dump && !(c.dumper = kg_st_writer_new())) {
        die("out of memory");
        goto fail;
    }

    c.tty = isatty(2);
    c.t_start = now();
    if (kg_model_open(&model, c.model, &c.mopt, &err) != KG_OK ||
        kg_session_new(&session, model, &err) != KG_OK) {
        die("%s", err.msg);
        goto fail;
    }
    fprintf(stderr, "loaded %s on %s (%.1fs)\n", c.model,
            kg_backend_kind_name(kg_model_backend(model)), now() - c.t_start);
    c.t_start = now();
    if (kg_generate(session, &c.params, on_progress, c.dump ? on_dump : NULL, &c, &out, &err) !=
        KG_OK) {
        die("%s", err.msg);
        goto fail;
    }
    fprintf(stderr, "seed %lld; encode %.2fs, denoise %.2fs, decode %.2fs\n", (long long)out.seed,
            out.seconds_encode, out.seconds_denoise, out.seconds_decode);
    for (int i = 0; i < out.n; i++)
        if (save_png(c.out, i, out.width, out.height,
                     out.rgb + (size_t)i * out.width * out.height * 3))
            goto fail;
    if (c.dump) {
        char seed[32];
        snprintf(seed, sizeof seed, "%lld", (long long)out.seed);
        if (c.dump_status != KG_OK ||
            kg_st_writer_add_metadata(c.dumper, "seed", seed, &c.dump_err) != KG_OK ||
            kg_st_writer_save(c.dumper, c.dump, &c.dump_err) != KG_OK) {
            die("--dump %s: %s", c.dump, c.dump_err.msg);
            goto fail;
        }
        fprintf(stderr, "wrote %s\n", c.dump);
    }
    rc = 0;
fail:
    kg_output_free(&out);
    kg_session_free(session);
    kg_model_close(model);
    kg_st_writer_free(c.dumper);
    free(lat);
    kg_st_close(lat_st);
    for (int i = 0; i < c.n_inputs; i++)
        free(pixels[i]);
    return rc;
}
