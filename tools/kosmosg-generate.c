/* kosmosg-generate - command-line Kosmos-G generation without GStreamer.
 *
 *   kosmosg-generate -m model.safetensors -p "<i> wearing <i>" -i a.png -i b.png \
 *       [-N negative] [-s steps] [-g guidance] [--seed N] [-n images] [--scheduler NAME]
 *       [--size WxH] [--backend auto|cpu|cuda] [--precision auto|fp32|bf16|fp16] [--threads N]
 *       [--latents FILE] [--dump FILE]
 *       -o out-%d.png
 */
#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli_args.h"
#include "kosmosg.h"
#include "outfile.h"
#include "safetensors.h"
#include "st_writer.h"

typedef struct cli {
    kg_cli_args a;
    kg_outfile outs[KG_CLI_MAX_NUM_IMAGES]; /* one per image, opened before any work */
    kg_outfile dump_out;
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

/* Opens a file for reading only when it is a regular file: the check comes before a blocking
 * open (a FIFO would wait for a writer forever), then the descriptor blocks again. */
static FILE *open_regular(const char *path, const char *what)
{
    struct stat st;
    FILE *f;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), flags;
    if (fd < 0) {
        die("%s %s: cannot open: %s", what, path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        die("%s %s: not a regular file", what, path);
        close(fd);
        return NULL;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 || !(f = fdopen(fd, "rb"))) {
        die("%s %s: cannot open: %s", what, path, strerror(errno));
        close(fd);
        return NULL;
    }
    return f;
}

/* A PNG as the official code sees it after PIL's convert("RGB"): alpha is dropped (not
 * composited), gray is replicated. Images with alpha go to the engine as RGBA, whose rule
 * (engine/image.c, shared with the GStreamer elements) ignores the alpha byte. */
static int load_png(const char *opt, const char *path, kg_image *img, uint8_t **pixels)
{
    png_image pi;
    FILE *f = open_regular(path, opt);
    int alpha;
    if (!f)
        return 1;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_stdio(&pi, f)) {
        fclose(f);
        return die("%s %s: cannot read PNG: %s", opt, path, pi.message);
    }
    alpha = (pi.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    pi.format = alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
    *pixels = malloc(PNG_IMAGE_SIZE(pi));
    if (!*pixels) {
        png_image_free(&pi);
        fclose(f);
        return die("%s %s: out of memory", opt, path);
    }
    /* no background: with an alpha format libpng composites nothing */
    if (!png_image_finish_read(&pi, NULL, *pixels, 0, NULL)) {
        free(*pixels);
        *pixels = NULL;
        fclose(f);
        return die("%s %s: cannot decode PNG: %s", opt, path, pi.message);
    }
    fclose(f);
    img->format = alpha ? KG_PIX_RGBA : KG_PIX_RGB;
    img->width = pi.width;
    img->height = pi.height;
    img->stride = (size_t)PNG_IMAGE_ROW_STRIDE(pi);
    img->data = *pixels;
    return 0;
}

/* The PNG of one image into its (already created) temporary output file. */
static int write_png(kg_outfile *o, int w, int h, const uint8_t *rgb)
{
    png_image pi;
    png_alloc_size_t size = 0;
    void *buf;
    kg_error err = {0};
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)w;
    pi.height = (png_uint_32)h;
    pi.format = PNG_FORMAT_RGB;
    if (!png_image_write_get_memory_size(pi, size, 0, rgb, 0, NULL) || !(buf = malloc(size)))
        return die("%s: cannot encode PNG: %s", o->path, pi.message[0] ? pi.message : "no memory");
    if (!png_image_write_to_memory(&pi, buf, &size, 0, rgb, 0, NULL)) {
        free(buf);
        return die("%s: cannot encode PNG: %s", o->path, pi.message);
    }
    if (kg_outfile_write(o, buf, size, &err) != KG_OK) {
        free(buf);
        return die("%s", err.msg);
    }
    free(buf);
    return 0;
}

/* The temporary outputs, removed when the run is interrupted (SIGINT, SIGTERM, SIGHUP). */
static char *volatile pending[KG_CLI_MAX_NUM_IMAGES + 1];

static void on_signal(int sig)
{
    for (int i = 0; i < KG_CLI_MAX_NUM_IMAGES + 1; i++)
        if (pending[i])
            unlink(pending[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* From here on the temporary files are renamed or removed by the code itself. */
static void forget_pending(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < KG_CLI_MAX_NUM_IMAGES + 1; i++)
        pending[i] = NULL;
}

/* Every output is created (as a temporary file beside it) before any work, so a missing or
 * read-only directory or a non-file target stops the run at once. */
static int open_outputs(cli *c)
{
    kg_error err = {0};
    char path[KG_CLI_PATH_MAX];
    for (int i = 0; i < c->a.params.num_images; i++) {
        if (kg_cli_output_path(c->a.out, i, path, sizeof path))
            return die("-o %s: cannot form the path of image %d", c->a.out, i);
        for (int k = 0; k < i; k++)
            if (!strcmp(c->outs[k].path, path))
                return die("-o %s: images %d and %d would both be written to %s", c->a.out, k, i,
                           path);
        if (kg_outfile_open(&c->outs[i], path, &err) != KG_OK)
            return die("-o %s", err.msg);
        pending[i] = c->outs[i].tmp;
    }
    if (c->a.dump) {
        for (int k = 0; k < c->a.params.num_images; k++)
            if (!strcmp(c->outs[k].path, c->a.dump))
                return die("--dump %s is also the output of image %d", c->a.dump, k);
        if (kg_outfile_open(&c->dump_out, c->a.dump, &err) != KG_OK)
            return die("--dump %s", err.msg);
        pending[KG_CLI_MAX_NUM_IMAGES] = c->dump_out.tmp;
    }
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
    kg_lora_ref loras[KG_CLI_MAX_LORAS];
    uint8_t *pixels[KG_CLI_MAX_IMAGES] = {0};
    kg_control controls[KG_CLI_MAX_CONTROLS];
    uint8_t *control_pixels[KG_CLI_MAX_CONTROLS] = {0};
    kg_control_net *nets[KG_CLI_MAX_CONTROLS] = {0};
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
    case KG_CLI_ERROR: fprintf(stderr, "kosmosg-generate: %s\n", msg); return 2;
    case KG_CLI_RUN: break;
    }
    /* a full disk or a file size limit is an error message, not a signal */
    signal(SIGXFSZ, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    for (int i = 0; i < KG_CLI_MAX_NUM_IMAGES; i++)
        c.outs[i].fd = -1;
    c.dump_out.fd = -1;
    if (open_outputs(&c))
        goto fail;
    a->params.prompt = a->prompt;
    a->params.negative_prompt = a->negative;
    for (int i = 0; i < a->n_inputs; i++)
        if (load_png("-i", a->inputs[i], &images[i], &pixels[i]))
            goto fail;
    a->params.images = images;
    a->params.n_images = a->n_inputs;
    for (int i = 0; i < a->n_controls; i++) {
        kg_control_init(&controls[i]);
        if (load_png("--control", a->controls[i], &controls[i].image, &control_pixels[i]))
            goto fail;
        if (a->n_control_scales)
            controls[i].scale = a->control_scales[a->n_control_scales > 1 ? i : 0];
        controls[i].canny = a->control_canny;
        if (a->control_canny) {
            controls[i].canny_low = a->canny_low;
            controls[i].canny_high = a->canny_high;
        }
        controls[i].guidance_start = a->control_start;
        controls[i].guidance_end = a->control_end;
    }
    a->params.controls = controls;
    a->params.n_controls = a->n_controls;
    for (int i = 0; i < a->n_loras; i++) {
        loras[i].path = a->lora_paths[i];
        loras[i].scale = a->lora_scales[i];
    }
    a->params.loras = loras;
    a->params.n_loras = a->n_loras;
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
    /* each --controlnet opened once, shared by the maps it serves */
    for (int i = 0; i < a->n_controlnets; i++) {
        for (int j = 0; j < i && !nets[i]; j++)
            if (!strcmp(a->controlnets[j], a->controlnets[i]))
                nets[i] = nets[j];
        if (!nets[i] && kg_control_net_open(&nets[i], model, a->controlnets[i], &err) != KG_OK) {
            die("--controlnet %s", err.msg);
            goto fail;
        }
    }
    for (int i = 0; i < a->n_controls; i++)
        controls[i].net = nets[a->n_controlnets > 1 ? i : 0];
    fprintf(stderr, "loaded %s on %s in %s (%.1fs, %.2f GiB of weights)\n", a->model,
            kg_backend_kind_name(kg_model_backend(model)),
            kg_precision_name(kg_model_precision(model)), now() - c.t_start,
            (double)kg_model_weight_bytes(model) / (1 << 30));
    for (int i = 0; i < a->n_loras; i++) {
        kg_lora_info li;
        if (kg_lora_inspect(model, loras[i].path, &li, &err) != KG_OK) {
            die("%s", err.msg);
            goto fail;
        }
        fprintf(stderr, "LoRA %s: %s layout, %d U-Net layers at scale %g", loras[i].path, li.layout,
                li.layers, (double)loras[i].scale);
        if (li.ignored)
            fprintf(stderr,
                    "; %d text-encoder tensors ignored (Kosmos-G has no CLIP text "
                    "encoder)",
                    li.ignored);
        fputc('\n', stderr);
    }
    c.t_start = now();
    if (kg_generate(session, &a->params, on_progress, a->dump ? on_dump : NULL, &c, &out, &err) !=
        KG_OK) {
        die("%s", err.msg);
        goto fail;
    }
    fprintf(stderr, "seed %lld; encode %.2fs, denoise %.2fs, decode %.2fs\n", (long long)out.seed,
            out.seconds_encode, out.seconds_denoise, out.seconds_decode);
    forget_pending();
    /* every file is written in full before any is renamed into place */
    for (int i = 0; i < out.n; i++)
        if (write_png(&c.outs[i], out.width, out.height,
                      out.rgb + (size_t)i * out.width * out.height * 3))
            goto fail;
    if (a->dump) {
        char seed[32];
        snprintf(seed, sizeof seed, "%lld", (long long)out.seed);
        if (c.dump_status != KG_OK ||
            kg_st_writer_add_metadata(c.dumper, "seed", seed, &c.dump_err) != KG_OK ||
            kg_st_writer_write(c.dumper, &c.dump_out, &c.dump_err) != KG_OK) {
            die("--dump: %s", c.dump_err.msg);
            goto fail;
        }
    }
    for (int i = 0; i < out.n; i++) {
        if (kg_outfile_commit(&c.outs[i], &err) != KG_OK) {
            die("%s", err.msg);
            goto fail;
        }
        fprintf(stderr, "wrote %s\n", c.outs[i].path);
    }
    if (a->dump) {
        if (kg_outfile_commit(&c.dump_out, &err) != KG_OK) {
            die("--dump %s", err.msg);
            goto fail;
        }
        fprintf(stderr, "wrote %s\n", a->dump);
    }
    rc = 0;
fail:
    forget_pending();
    for (int i = 0; i < KG_CLI_MAX_NUM_IMAGES; i++)
        kg_outfile_abort(&c.outs[i]);
    kg_outfile_abort(&c.dump_out);
    kg_output_free(&out);
    kg_session_free(session);
    for (int i = 0; i < a->n_controlnets; i++) {
        int shared = 0;
        for (int j = 0; j < i; j++)
            shared |= nets[j] == nets[i];
        if (!shared)
            kg_control_net_close(nets[i]);
    }
    for (int i = 0; i < a->n_controls; i++)
        free(control_pixels[i]);
    kg_model_close(model);
    kg_st_writer_free(c.dumper);
    free(lat);
    kg_st_close(lat_st);
    for (int i = 0; i < a->n_inputs; i++)
        free(pixels[i]);
    return rc;
}
