/* cli_args.c - kosmosg-generate's option parser (see cli_args.h). */
#include "cli_args.h"

#include "status.h" /* kg_vformat_elided */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum opt_id {
    O_MODEL,
    O_PROMPT,
    O_IMAGE,
    O_NEGATIVE,
    O_STEPS,
    O_GUIDANCE,
    O_SEED,
    O_NUM_IMAGES,
    O_SCHEDULER,
    O_LORA,
    O_CONTROL,
    O_CONTROLNET,
    O_CONTROL_SCALE,
    O_CONTROL_START,
    O_CONTROL_END,
    O_CONTROL_CANNY,
    O_SIZE,
    O_BACKEND,
    O_PRECISION,
    O_THREADS,
    O_LATENTS,
    O_DUMP,
    O_OUTPUT,
    O_HELP,
};

typedef struct opt_def {
    const char *name; /* --name */
    char short_name;  /* -c, or 0 */
    int has_arg;
    enum opt_id id;
    const char *help; /* "ARG  text" as printed by usage */
} opt_def;

#define STR_(x) #x
#define STR(x) STR_(x)

static const opt_def options[] = {
    {"model", 'm', 1, O_MODEL, "FILE        model file from kosmosg-convert"},
    {"prompt", 'p', 1, O_PROMPT, "TEXT       prompt; one <i> per -i image, in order"},
    {"image", 'i', 1, O_IMAGE, "FILE        reference image (PNG; alpha is dropped), repeatable"},
    {"negative", 'N', 1, O_NEGATIVE, "TEXT     negative prompt (default: none)"},
    {"steps", 's', 1, O_STEPS,
     "N           denoising steps, " STR(KG_STEPS_MIN) ".." STR(KG_STEPS_MAX) " (default " STR(
         KG_DEFAULT_STEPS) ")"},
    {"guidance", 'g', 1, O_GUIDANCE,
     "S        guidance scale, " STR(KG_GUIDANCE_MIN) ".." STR(KG_GUIDANCE_MAX) " (default " STR(
         KG_DEFAULT_GUIDANCE) "; <= 1: no guidance)"},
    {"seed", 0, 1, O_SEED,
     "N            seed, 0..2^63-1 (default -1: random; the seed used is printed)"},
    {"num-images", 'n', 1, O_NUM_IMAGES,
     "N      images to generate, 1.." STR(KG_MAX_OUTPUTS) " (default 1)"},
    {"scheduler", 0, 1, O_SCHEDULER,
     "NAME    dpm++2m (default), ddim, pndm, euler, dpm++2m-karras, lcm"},
    {"lora", 0, 1, O_LORA,
     "FILE[:S]     LoRA on the U-Net (diffusers or kohya .safetensors) at scale S\n"
     "                      (default 1; 0 = off), repeatable, up to 8; several add up"},
    {"control", 0, 1, O_CONTROL,
     "IMAGE     control map (PNG: canny edges, depth, pose...), resized to the output\n"
     "                      size; repeatable, up to 8, each needs a --controlnet"},
    {"controlnet", 0, 1, O_CONTROLNET,
     "FILE   ControlNet from kosmosg-convert --controlnet: one per --control,\n"
     "                      in order, or one for all"},
    {"control-scale", 0, 1, O_CONTROL_SCALE,
     "S conditioning scale, -100..100 (default 1.0): one per\n"
     "                      --control or one for all"},
    {"control-start", 0, 1, O_CONTROL_START,
     "F fraction of the steps before the ControlNets act, 0..1 (default 0)"},
    {"control-end", 0, 1, O_CONTROL_END,
     "F   fraction of the steps after which they stop, 0..1 (default 1)"},
    {"control-canny", 0, 1, O_CONTROL_CANNY,
     "L:H the --control images are photos: use their Canny edges\n"
     "                      (OpenCV's algorithm on RGB, thresholds L and H; the demo: 100:200)"},
    {"size", 0, 1, O_SIZE,
     "WxH          output size, multiples of " STR(KG_SIZE_STEP) " up to " STR(
         KG_SIZE_MAX) " (default " STR(KG_DEFAULT_SIZE) "x" STR(KG_DEFAULT_SIZE) ")"},
    {"backend", 0, 1, O_BACKEND, "NAME      auto (default), cpu, cuda"},
    {"precision", 0, 1, O_PRECISION,
     "NAME    auto (default: fp16 on CUDA, fp32 on the CPU), fp32, bf16 (CPU: bf16\n"
     "                      weights, fp32 activations), fp16 (CUDA only)"},
    {"threads", 0, 1, O_THREADS, "N         CPU threads, 1..1024 (default: all cores)"},
    {"latents", 0, 1, O_LATENTS,
     "FILE      start from tensor 'latents' F32 [n,4,H/8,W/8] in a safetensors FILE"},
    {"dump", 0, 1, O_DUMP, "FILE         write every stage to a safetensors FILE"},
    {"output", 'o', 1, O_OUTPUT,
     "PATTERN    output PNG path; %d is replaced by the image index, %% is a %"},
    {"help", 'h', 0, O_HELP, "              this help"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

void kg_cli_usage(FILE *f)
{
    fputs("usage: kosmosg-generate -m MODEL -p PROMPT [-i IMAGE.png]... -o OUT-%d.png\n", f);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].short_name)
            fprintf(f, "  -%c, --%s %s\n", options[i].short_name, options[i].name, options[i].help);
        else
            fprintf(f, "      --%s %s\n", options[i].name, options[i].help);
    }
}

void kg_cli_args_init(kg_cli_args *a)
{
    memset(a, 0, sizeof *a);
    kg_params_init(&a->params);
    kg_model_options_init(&a->mopt);
    a->control_end = 1.0f;
}

static kg_cli_result fail(char *msg, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kg_vformat_elided(msg, size, fmt, ap);
    va_end(ap);
    return KG_CLI_ERROR;
}

/* A whole decimal integer in [lo, hi]: optional '-', digits, nothing else (no blanks, no '+',
 * no saturation). */
static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    const char *d = s[0] == '-' ? s + 1 : s;
    if (*d < '0' || *d > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* A whole finite decimal number in [lo, hi]. */
static int parse_float(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;
    const char *d = s[0] == '-' ? s + 1 : s;
    if (!((*d >= '0' && *d <= '9') || (*d == '.' && d[1] >= '0' && d[1] <= '9')))
        return -1; /* refuses blanks, '+', "nan", "inf", "" */
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* "WxH" with both in KG_SIZE_MIN..KG_SIZE_MAX, multiples of KG_SIZE_STEP. */
static int parse_size(const char *s, int *w, int *h)
{
    const char *x = strchr(s, 'x');
    char wbuf[16];
    long long vw, vh;
    if (!x || (size_t)(x - s) >= sizeof wbuf)
        return -1;
    memcpy(wbuf, s, (size_t)(x - s));
    wbuf[x - s] = '\0';
    if (parse_int(wbuf, KG_SIZE_MIN, KG_SIZE_MAX, &vw) ||
        parse_int(x + 1, KG_SIZE_MIN, KG_SIZE_MAX, &vh) || vw % KG_SIZE_STEP || vh % KG_SIZE_STEP)
        return -1;
    *w = (int)vw;
    *h = (int)vh;
    return 0;
}

int kg_cli_check_pattern(const char *pattern, int n, char *msg, size_t msg_size)
{
    int conversions = 0;
    size_t len = 0;
    char widest[24];
    for (const char *p = pattern; *p; p++) {
        if (*p != '%') {
            len++;
            continue;
        }
        if (p[1] == '%') {
            len++;
            p++;
        } else if (p[1] == 'd') {
            conversions++;
            p++;
        } else {
            fail(msg, msg_size,
                 "-o %s: \"%%%.*s\" is not understood; the pattern may hold one %%d (the image "
                 "index) and %%%% (a literal %%), nothing else",
                 pattern, p[1] && !(p[1] & 0x80) ? 1 : 0, p + 1);
            return -1;
        }
    }
    if (!*pattern) {
        fail(msg, msg_size, "-o: empty output path");
        return -1;
    }
    if (conversions > 1) {
        fail(msg, msg_size, "-o %s: %d %%d in the pattern; at most one is understood", pattern,
             conversions);
        return -1;
    }
    if (conversions == 0 && n > 1) {
        fail(msg, msg_size,
             "-o %s has no %%d but %d images are asked for (-n %d): every image would go to the "
             "same file",
             pattern, n, n);
        return -1;
    }
    if (len + (size_t)snprintf(widest, sizeof widest, "%d", n > 0 ? n - 1 : 0) >= KG_CLI_PATH_MAX) {
        fail(msg, msg_size, "-o %s: the path is longer than %d bytes", pattern,
             KG_CLI_PATH_MAX - 1);
        return -1;
    }
    return 0;
}

int kg_cli_output_path(const char *pattern, int index, char *buf, size_t size)
{
    char num[24];
    size_t o = 0;
    snprintf(num, sizeof num, "%d", index);
    for (const char *p = pattern; *p; p++) {
        const char *piece = p;
        size_t len = 1;
        if (p[0] == '%' && p[1] == '%') {
            p++;
        } else if (p[0] == '%' && p[1] == 'd') {
            piece = num;
            len = strlen(num);
            p++;
        } else if (p[0] == '%') {
            return -1; /* kg_cli_check_pattern refuses it */
        }
        if (o + len >= size)
            return -1;
        memcpy(buf + o, piece, len);
        o += len;
    }
    if (o >= size)
        return -1;
    buf[o] = '\0';
    return 0;
}

static const opt_def *find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
            return &options[i];
    return NULL;
}

static const opt_def *find_short(char c)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].short_name && options[i].short_name == c)
            return &options[i];
    return NULL;
}

/* One option with its value (NULL for flags); spelled as the user wrote it, for messages. */
static kg_cli_result apply(kg_cli_args *a, const opt_def *o, const char *spelled, const char *v,
                           char *msg, size_t size)
{
    long long iv;
    double fv;
    switch (o->id) {
    case O_MODEL: a->model = v; break;
    case O_PROMPT: a->prompt = v; break;
    case O_NEGATIVE: a->negative = v; break;
    case O_LATENTS: a->latents = v; break;
    case O_DUMP: a->dump = v; break;
    case O_OUTPUT: a->out = v; break;
    case O_IMAGE:
        if (a->n_inputs == KG_CLI_MAX_IMAGES)
            return fail(msg, size, "%s %s: at most %d reference images", spelled, v,
                        KG_CLI_MAX_IMAGES);
        a->inputs[a->n_inputs++] = v;
        break;
    case O_STEPS:
        if (parse_int(v, 1, KG_CLI_MAX_STEPS, &iv))
            return fail(msg, size, "%s \"%s\": expected an integer in 1..%d", spelled, v,
                        KG_CLI_MAX_STEPS);
        a->params.steps = (int)iv;
        break;
    case O_GUIDANCE:
        if (parse_float(v, KG_GUIDANCE_MIN, KG_GUIDANCE_MAX, &fv))
            return fail(msg, size, "%s \"%s\": expected a number in %g..%g", spelled, v,
                        KG_GUIDANCE_MIN, KG_GUIDANCE_MAX);
        a->params.guidance_scale = (float)fv;
        break;
    case O_SEED:
        if (parse_int(v, -1, INT64_MAX, &iv))
            return fail(msg, size, "%s \"%s\": expected -1 (random) or an integer in 0..%lld",
                        spelled, v, (long long)INT64_MAX);
        a->params.seed = (int64_t)iv;
        break;
    case O_NUM_IMAGES:
        if (parse_int(v, 1, KG_CLI_MAX_NUM_IMAGES, &iv))
            return fail(msg, size, "%s \"%s\": expected an integer in 1..%d", spelled, v,
                        KG_CLI_MAX_NUM_IMAGES);
        a->params.num_images = (int)iv;
        break;
    case O_SCHEDULER:
        if (kg_scheduler_type_from_name(v, &a->params.scheduler, NULL) != KG_OK)
            return fail(msg, size,
                        "%s \"%s\": expected dpm++2m, ddim, pndm, euler, dpm++2m-karras or lcm",
                        spelled, v);
        break;
    case O_LORA: {
        const char *colon = strrchr(v, ':');
        size_t plen = strlen(v);
        double sc = 1.0;
        if (a->n_loras == KG_CLI_MAX_LORAS)
            return fail(msg, size, "%s %s: at most %d LoRAs", spelled, v, KG_CLI_MAX_LORAS);
        /* the scale is what follows the last ':' when that is a number (paths may hold ':') */
        if (colon && !parse_float(colon + 1, -1000.0, 1000.0, &sc))
            plen = (size_t)(colon - v);
        if (plen == 0 || plen >= KG_CLI_PATH_MAX)
            return fail(msg, size, "%s \"%s\": expected FILE or FILE:SCALE", spelled, v);
        memcpy(a->lora_paths[a->n_loras], v, plen);
        a->lora_scales[a->n_loras++] = (float)sc;
        break;
    }
    case O_CONTROL:
        if (a->n_controls == KG_CLI_MAX_CONTROLS)
            return fail(msg, size, "%s %s: at most %d control maps", spelled, v,
                        KG_CLI_MAX_CONTROLS);
        a->controls[a->n_controls++] = v;
        break;
    case O_CONTROLNET:
        if (a->n_controlnets == KG_CLI_MAX_CONTROLS)
            return fail(msg, size, "%s %s: at most %d ControlNets", spelled, v,
                        KG_CLI_MAX_CONTROLS);
        a->controlnets[a->n_controlnets++] = v;
        break;
    case O_CONTROL_SCALE:
        if (a->n_control_scales == KG_CLI_MAX_CONTROLS)
            return fail(msg, size, "%s %s: at most %d scales", spelled, v, KG_CLI_MAX_CONTROLS);
        if (parse_float(v, -100.0, 100.0, &fv))
            return fail(msg, size, "%s \"%s\": expected a number in -100..100", spelled, v);
        a->control_scales[a->n_control_scales++] = (float)fv;
        break;
    case O_CONTROL_START:
    case O_CONTROL_END:
        if (parse_float(v, 0.0, 1.0, &fv))
            return fail(msg, size, "%s \"%s\": expected a number in 0..1", spelled, v);
        *(o->id == O_CONTROL_START ? &a->control_start : &a->control_end) = (float)fv;
        break;
    case O_CONTROL_CANNY: {
        const char *colon = strchr(v, ':');
        char lo[64];
        double hv;
        if (!colon || (size_t)(colon - v) >= sizeof lo)
            return fail(msg, size, "%s \"%s\": expected LOW:HIGH (e.g. 100:200)", spelled, v);
        memcpy(lo, v, (size_t)(colon - v));
        lo[colon - v] = '\0';
        if (parse_float(lo, 0.0, 100000.0, &fv) || parse_float(colon + 1, 0.0, 100000.0, &hv))
            return fail(msg, size, "%s \"%s\": expected LOW:HIGH, numbers in 0..100000", spelled,
                        v);
        a->control_canny = 1;
        a->canny_low = (float)fv;
        a->canny_high = (float)hv;
        break;
    }
    case O_SIZE:
        if (parse_size(v, &a->params.width, &a->params.height))
            return fail(msg, size,
                        "%s \"%s\": expected WxH, multiples of 8 between 8 and %d (e.g. 512x512)",
                        spelled, v, KG_CLI_MAX_SIZE);
        break;
    case O_BACKEND:
        if (!strcmp(v, "auto"))
            a->mopt.backend = KG_BACKEND_AUTO;
        else if (!strcmp(v, "cpu"))
            a->mopt.backend = KG_BACKEND_CPU;
        else if (!strcmp(v, "cuda"))
            a->mopt.backend = KG_BACKEND_CUDA;
        else
            return fail(msg, size, "%s \"%s\": expected auto, cpu or cuda", spelled, v);
        break;
    case O_PRECISION:
        if (kg_precision_from_name(v, &a->mopt.precision, NULL) != KG_OK)
            return fail(msg, size, "%s \"%s\": expected auto, fp32, bf16 or fp16", spelled, v);
        break;
    case O_THREADS:
        if (parse_int(v, 1, KG_CLI_MAX_THREADS, &iv))
            return fail(msg, size,
                        "%s \"%s\": expected an integer in 1..%d (leave it out for all cores)",
                        spelled, v, KG_CLI_MAX_THREADS);
        a->mopt.n_threads = (int)iv;
        break;
    case O_HELP: return KG_CLI_HELP;
    }
    return KG_CLI_RUN;
}

kg_cli_result kg_cli_parse(kg_cli_args *a, int argc, char *const *argv, char *msg, size_t msg_size)
{
    int i;
    if (msg_size)
        msg[0] = '\0';
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = NULL;
        const opt_def *o;
        char spelled[32]; /* the option as the user wrote it, without a value */
        kg_cli_result r;
        if (!strcmp(arg, "--")) {
            i++;
            break;
        }
        if (arg[0] == '-' && arg[1] == '-') {
            const char *eq = strchr(arg + 2, '=');
            size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
            if (!(o = find_long(arg + 2, len)))
                return fail(msg, msg_size, "unknown option \"%.*s\" (--help lists them)",
                            (int)(len < 200 ? len + 2 : 202), arg);
            if (eq && !o->has_arg)
                return fail(msg, msg_size, "--%s takes no value", o->name);
            value = eq ? eq + 1 : NULL;
            snprintf(spelled, sizeof spelled, "--%s", o->name);
        } else if (arg[0] == '-' && arg[1] != '\0') {
            if (!(o = find_short(arg[1])))
                return fail(msg, msg_size, "unknown option \"%s\" (--help lists them)", arg);
            if (arg[2] != '\0') {
                if (!o->has_arg)
                    return fail(msg, msg_size, "-%c takes no value", o->short_name);
                value = arg + 2;
            }
            snprintf(spelled, sizeof spelled, "-%c", o->short_name);
        } else {
            return fail(msg, msg_size, "unexpected argument \"%s\" (options start with a dash)",
                        arg);
        }
        if (o->has_arg && !value) {
            if (i + 1 >= argc)
                return fail(msg, msg_size, "%s needs a value", spelled);
            value = argv[++i];
        }
        /* an empty prompt is the official unconditioned "<s>"; any other empty value is a slip */
        if (o->has_arg && !*value && o->id != O_PROMPT && o->id != O_NEGATIVE)
            return fail(msg, msg_size, "%s \"\": empty value", spelled);
        r = apply(a, o, spelled, value, msg, msg_size);
        if (r != KG_CLI_RUN)
            return r;
    }
    if (i < argc)
        return fail(msg, msg_size, "unexpected argument \"%s\"", argv[i]);
    if (!a->model)
        return fail(msg, msg_size, "no model: -m FILE is required");
    if (!a->prompt)
        return fail(msg, msg_size, "no prompt: -p TEXT is required (\"\" for none)");
    if (!a->out)
        return fail(msg, msg_size, "no output: -o PATTERN is required");
    if (a->n_controls && !a->n_controlnets)
        return fail(msg, msg_size, "--control %s needs a --controlnet FILE", a->controls[0]);
    if (!a->n_controls && (a->n_controlnets || a->n_control_scales || a->control_canny))
        return fail(msg, msg_size, "--%s given without a --control IMAGE",
                    a->n_controlnets      ? "controlnet"
                    : a->n_control_scales ? "control-scale"
                                          : "control-canny");
    if (a->n_controlnets > 1 && a->n_controlnets != a->n_controls)
        return fail(msg, msg_size,
                    "%d --controlnet for %d --control: give one for all or one per control map",
                    a->n_controlnets, a->n_controls);
    if (a->n_control_scales > 1 && a->n_control_scales != a->n_controls)
        return fail(msg, msg_size,
                    "%d --control-scale for %d --control: give one for all or one per control map",
                    a->n_control_scales, a->n_controls);
    if (!(a->control_start < a->control_end))
        return fail(msg, msg_size, "--control-start %g is not before --control-end %g",
                    (double)a->control_start, (double)a->control_end);
    if (kg_cli_check_pattern(a->out, a->params.num_images, msg, msg_size))
        return KG_CLI_ERROR;
    return KG_CLI_RUN;
}
