/* kosmosg-generate - command-line Kosmos-G generation without GStreamer.
 *
 *   kosmosg-generate -m model.safetensors -p "<i> wearing <i>" -i a.png -i b.png \
 *       [-N negative] [-s steps] [-g guidance] [--seed N] [-n images] [--scheduler NAME]
 *       [--size WxH] [--backend auto|cpu|cuda] [--threads N] [--latents FILE] [--dump FILE]
 *       -o out-%d.png
 */
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"
#include "kosmosg.h"
#include "safetensors.h"
#include "st_writer.h"

typedef struct cli {
    kg_cli_args a;
    int tty;
    double t_start;
    kg_st_writer *dumper;
    kg_status dump_status;
    kg_error dump_err;
} cli;

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
    char path[KG_CLI_PATH_MAX];
    png_image pi;
    if (kg_cli_output_path(pattern, index, path, sizeof path))
        return die("-o %s: cannot form the path of image %d", pattern, index);
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
    const kg_params *p = &c->a.params;
    int64_t shape[4] = {p->num_images, 4, p->height / 8, p->width / 8};
    size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    if (kg_st_open(st, c->a.latents, &err) != KG_OK)
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
    cli c;
    kg_cli_args *a = &c.a;
    kg_image images[KG_CLI_MAX_IMAGES];
    uint8_t *pixels[KG_CLI_MAX_IMAGES] = {0};
    kg_model *model = NULL;
    kg_session *session = NULL;
    kg_output out = {0};
    kg_error err = {0};
    kg_st_file *lat_st = NULL;
    float *lat = NULL;
    char msg[1024];
    int rc = 1;

    memset(&c, 0, sizeof c);
    kg_cli_args_init(a);
    switch (kg_cli_parse(a, argc, argv, msg, sizeof msg)) {
    case KG_CLI_HELP: kg_cli_usage(stdout); return 0;
    case KG_CLI_ERROR:
        fprintf(stderr, "kosmosg-generate: %s\n", msg);
        return 2;
    case KG_CLI_RUN: break;
    }
    a->params.prompt = a->prompt;
    a->params.negative_prompt = a->negative;
    for (int i = 0; i < a->n_inputs; i++)
        if (load_png(a->inputs[i], &images[i], &pixels[i]))
            goto fail;
    a->params.images = images;
    a->params.n_images = a->n_inputs;
    if (a->latents) {
        if (load_latents(&c, &lat_st, &lat))
            goto fail;
        a->params.init_latents = lat;
    }
    if (a->dump && !(c.dumper = kg_st_writer_new())) {
        die("out of memory");
        goto fail;
    }

    c.tty = isatty(2);
    c.t_start = now();
    if (kg_model_open(&model, a->model, &a->mopt, &err) != KG_OK ||
        kg_session_new(&session, model, &err) != KG_OK) {
        die("%s", err.msg);
        goto fail;
    }
    fprintf(stderr, "loaded %s on %s (%.1fs)\n", a->model,
            kg_backend_kind_name(kg_model_backend(model)), now() - c.t_start);
    c.t_start = now();
    if (kg_generate(session, &a->params, on_progress, a->dump ? on_dump : NULL, &c, &out, &err) !=
        KG_OK) {
        die("%s", err.msg);
        goto fail;
    }
    fprintf(stderr, "seed %lld; encode %.2fs, denoise %.2fs, decode %.2fs\n", (long long)out.seed,
            out.seconds_encode, out.seconds_denoise, out.seconds_decode);
    for (int i = 0; i < out.n; i++)
        if (save_png(a->out, i, out.width, out.height,
                     out.rgb + (size_t)i * out.width * out.height * 3))
            goto fail;
    if (a->dump) {
        char seed[32];
        snprintf(seed, sizeof seed, "%lld", (long long)out.seed);
        if (c.dump_status != KG_OK ||
            kg_st_writer_add_metadata(c.dumper, "seed", seed, &c.dump_err) != KG_OK ||
            kg_st_writer_save(c.dumper, a->dump, &c.dump_err) != KG_OK) {
            die("--dump %s: %s", a->dump, c.dump_err.msg);
            goto fail;
        }
        fprintf(stderr, "wrote %s\n", a->dump);
    }
    rc = 0;
fail:
    kg_output_free(&out);
    kg_session_free(session);
    kg_model_close(model);
    kg_st_writer_free(c.dumper);
    free(lat);
    kg_st_close(lat_st);
    for (int i = 0; i < a->n_inputs; i++)
        free(pixels[i]);
    return rc;
}
