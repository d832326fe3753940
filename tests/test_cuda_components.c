/* test_cuda_components.c - every Kosmos-G component on the CUDA backend against the
 * CPU backend, on the same weights and inputs (issue "whole model on the GPU").
 *
 *   test_cuda_components [tiny|full|all] [f16|f32]     (default: all f16)
 *
 * tiny: CLIP, connector, MLLM, AlignerNet, U-Net and VAE of $KG_TINY_MODEL, each
 * loaded once per backend with its kg_*_load (configs from the file's kg.config.*),
 * batch 2, U-Net and VAE at 8x8 latents (the golden e2e size); every module tap is
 * compared too and the worst one named. full: the same six with random weights of
 * the real shapes (tests/random_weights.h): CLIP ViT-L/14 at 224, connector 257 -> 64
 * tokens, MLLM d2048 x 24 layers at T = 136 with two images' slots, AlignerNet 12 + 12
 * layers d768 (batch 2, the second sequence padded), U-Net batch 2 at 64x64 with
 * 77x768 context, VAE 64x64 -> 512x512. Inputs: tests/component_run.h.
 *
 * Measure: NMSE = sum (dev - cpu)^2 / sum cpu^2 of each component's output. The
 * issue's goal in fp16 is NMSE <= 1e-3 (docs/gpu-parity.md: fp16 storage costs about
 * u^2/3 = 8e-8 per rounding, some hundreds of roundings on a path give 1e-5..1e-4, so
 * 1e-3 holds a 10x margin while a wrong kernel or a wrong layout gives NMSE ~ 1).
 * f32 mode (fp32 storage, fp32 GEMMs without TF32): NMSE <= 1e-6. Every device output
 * is checked for NaN/Inf first and the CPU output for being finite and nonzero.
 *
 * The device seat: the CUDA backend; the test exits 77 when there is none
 * (KG_ERR_NO_DEVICE). KG_CUDA_OPS_CPU=1 puts a second CPU backend there instead:
 * every NMSE must then be exactly 0 (checks the test). KG_F16_EMULATE=1 puts the
 * fp16-storage emulation of tests/f16_emulation.h there: every NMSE must be nonzero
 * and reach the fp16 goal (shows, without a GPU, that the goal fits fp16 storage and
 * that the comparison sees a difference). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "component_run.h"
#include "f16_emulation.h"
#include "testutil.h"
#ifdef KG_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

#define GOAL_F16 1e-3
#define GOAL_F32 1e-6

typedef enum seat { SEAT_CUDA, SEAT_CPU, SEAT_EMULATED } seat;

typedef struct row {
    char label[64];
    double nmse, goal;
    int ok;
} row;

static row rows[32];
static int n_rows;
static seat dev_seat = SEAT_CUDA;
static double goal = GOAL_F16;

/* Loads cp on be, runs it once (arena sized by a measure pass) and downloads the
 * output into out; taps, when given, records every module output. */
static kg_status run(kg_backend *be, const kgt_comp *cp, float *out, kgt_taps *taps, kg_error *err)
{
    kgt_model m;
    kg_ctx c;
    kg_tensor x, y, e;
    kg_status st = kgt_comp_load(&m, cp, be, err);

    if (st != KG_OK)
        return st;
    kg_ctx_init(&c, be);
    st = kgt_comp_prepare(&c, &m, cp, &x, &y, &e, err);
    if (st == KG_OK) {
        if (taps)
            kgt_taps_attach(taps, &c);
        kgt_comp_forward(&c, &m, cp, &y, &x, cp->ctx ? &e : NULL);
        kg_download_f32(&c, out, &y);
        if (be->ops->sync)
            be->ops->sync(be);
        st = kg_ctx_status(&c, err);
    }
    if (taps) {
        /* the context dies here: detach so kgt_taps_free does not look at it */
        c.tap = NULL;
        c.tap_user = NULL;
        taps->ctx = NULL;
    }
    kg_ctx_release(&c);
    kgt_comp_unload(&m, cp, be);
    return st;
}

/* NMSE of dev against ref; *bad = NaN/Inf count of dev, *ref_energy = sum ref^2 */
static double nmse(const float *dev, const float *ref, size_t n, size_t *bad, double *ref_energy,
                   double *max_abs)
{
    double se = 0.0, sr = 0.0, ma = 0.0;
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) {
        double d;
        if (!isfinite(dev[i])) {
            nb++;
            continue;
        }
        d = (double)dev[i] - (double)ref[i];
        se += d * d;
        sr += (double)ref[i] * ref[i];
        if (fabs(d) > ma)
            ma = fabs(d);
    }
    *bad = nb;
    *ref_energy = sr;
    *max_abs = ma;
    return sr > 0.0 ? se / sr : INFINITY;
}

/* The verdict on one NMSE for the seat in use. */
static int verdict(double e)
{
    switch (dev_seat) {
    case SEAT_CPU: return e == 0.0;
    case SEAT_EMULATED: return e > 0.0 && e <= goal;
    default: return e <= goal;
    }
}

static const char *goal_text(void)
{
    static char buf[48];
    switch (dev_seat) {
    case SEAT_CPU: return "== 0, CPU in both seats";
    case SEAT_EMULATED: snprintf(buf, sizeof buf, "in (0, %.0e], emulated fp16", goal); return buf;
    default: snprintf(buf, sizeof buf, "<= %.0e", goal); return buf;
    }
}

static void compare(const kgt_comp *cp, const float *dev, const float *ref)
{
    size_t n = kgt_numel(cp->out_ndim, cp->out_shape), bad = 0, ref_bad = 0;
    double energy, max_abs, e;
    row *r = &rows[n_rows < 32 ? n_rows++ : 31];

    for (size_t i = 0; i < n; i++)
        ref_bad += !isfinite(ref[i]);
    e = nmse(dev, ref, n, &bad, &energy, &max_abs);
    snprintf(r->label, sizeof r->label, "%s", cp->label);
    r->nmse = bad ? INFINITY : e;
    r->goal = goal;
    r->ok = 0;
    if (!kgt_check(ref_bad == 0 && energy > 0.0, "%s: CPU output finite and nonzero (%zu NaN/Inf, "
                   "mean square %.3e)", cp->label, ref_bad, energy / (double)n))
        return;
    if (!kgt_check(bad == 0, "%s: device output has no NaN/Inf (%zu of %zu)", cp->label, bad, n))
        return;
    r->ok = kgt_check(verdict(e), "%s: NMSE %.3e (%s), max |diff| %.3e, rms %.3e, %zu values",
                      cp->label, e, goal_text(), max_abs, sqrt(energy / (double)n), n);
}

/* Per-tap NMSE (informational): the worst tap and every tap over the goal. */
static void compare_taps(const kgt_comp *cp, const kgt_taps *dev, const kgt_taps *ref)
{
    double worst = 0.0;
    const char *worst_name = "-";
    size_t compared = 0;
    for (size_t i = 0; i < ref->count; i++) {
        const kgt_tap *r = &ref->items[i], *d = kgt_taps_find(dev, r->name);
        size_t bad;
        double energy, max_abs, e;
        if (!d || d->n != r->n) {
            printf("INFO %s: tap %s missing or resized on the device\n", cp->label, r->name);
            continue;
        }
        e = nmse(d->data, r->data, r->n, &bad, &energy, &max_abs);
        if (bad)
            e = INFINITY;
        compared++;
        if (e > goal && dev_seat != SEAT_CPU)
            printf("INFO %s: tap %s NMSE %.3e over %.0e (%zu NaN/Inf)\n", cp->label, r->name, e,
                   goal, bad);
        if (!(e <= worst)) {
            worst = e;
            worst_name = r->name;
        }
    }
    printf("INFO %s: %zu taps compared, worst NMSE %.3e at %s\n", cp->label, compared, worst,
           worst_name);
}

static void run_pair(kg_backend *dev, kg_backend *cpu, const kgt_comp *cp, int with_taps)
{
    size_t n = kgt_numel(cp->out_ndim, cp->out_shape);
    float *yd = malloc(n * sizeof *yd), *yc = malloc(n * sizeof *yc);
    kgt_taps td = {0}, tc = {0};
    kg_error err = {0};
    kg_status st;

    if (!yd || !yc) {
        kgt_check(0, "%s: memory for the outputs", cp->label);
        goto done;
    }
    st = run(cpu, cp, yc, with_taps ? &tc : NULL, &err);
    if (!kgt_check(st == KG_OK, "%s: CPU run: %s %s", cp->label, kg_status_name(st), err.msg))
        goto done;
    kg_error_clear(&err);
    st = run(dev, cp, yd, with_taps ? &td : NULL, &err);
    if (!kgt_check(st == KG_OK, "%s: %s run: %s %s", cp->label, dev->ops->name,
                   kg_status_name(st), err.msg))
        goto done;
    compare(cp, yd, yc);
    if (with_taps)
        compare_taps(cp, &td, &tc);
done:
    kgt_taps_free(&td);
    kgt_taps_free(&tc);
    free(yd);
    free(yc);
}

/* ------------------------------------------------------------- the suites */

static void run_tiny(kg_backend *dev, kg_backend *cpu)
{
    const char *path = getenv("KG_TINY_MODEL");
    kg_st_file *st = NULL;
    kg_error err = {0};

    if (!path || !*path) {
        printf("NOTE: KG_TINY_MODEL is not set: the tiny-model components are not run\n");
        return;
    }
    if (!kgt_check(kg_st_open(&st, path, &err) == KG_OK, "open %s: %s", path, err.msg))
        return;
    for (int k = 0; k < KGT_N_KINDS; k++) {
        kgt_comp cp;
        char key[48];
        const char *text;
        memset(&cp, 0, sizeof cp);
        cp.k = (kgt_kind)k;
        cp.st = st;
        cp.prefix = kgt_kind_prefixes[k];
        snprintf(cp.label, sizeof cp.label, "%s (tiny)", kgt_kind_names[k]);
        snprintf(key, sizeof key, "kg.config.%s", kgt_kind_names[k]);
        text = kg_st_metadata(st, key);
        if (!kgt_check(text && kgt_comp_config(&cp, text, &err) == KG_OK, "%s: %s: %s", cp.label,
                       key, text ? err.msg : "missing"))
            continue;
        /* batch 2 throughout; the U-Net and VAE at the golden e2e size (8x8 latents) */
        kgt_comp_inputs(&cp, 2, 8);
        run_pair(dev, cpu, &cp, 1);
        kgt_comp_free_inputs(&cp);
    }
    kg_st_close(st);
}

/* The real shapes: one image through CLIP and the connector, the U-Net at batch 2
 * (classifier-free guidance), the AlignerNet at batch 2 (padding), one VAE decode. */
static void run_full(kg_backend *dev, kg_backend *cpu)
{
    static const int64_t batch[KGT_N_KINDS] = {1, 1, 1, 2, 2, 1};
    for (int k = 0; k < KGT_N_KINDS; k++) {
        kgt_comp cp;
        kgt_rw im = {0};
        kg_st_file *st = NULL;
        kg_error err = {0};
        char *file = NULL;
        size_t len = 0;

        memset(&cp, 0, sizeof cp);
        cp.k = (kgt_kind)k;
        cp.prefix = "";
        snprintf(cp.label, sizeof cp.label, "%s (full size)", kgt_kind_names[k]);
        if (!kgt_check(kgt_comp_config(&cp, kgt_kind_full_json[k], &err) == KG_OK,
                       "%s: config: %s", cp.label, err.msg))
            continue;
        kgt_comp_tensors(&cp, &im);
        file = kgt_rw_build(&im, 0x5eed0000u + (uint64_t)k, &len);
        if (kgt_check(kg_st_open_memory(&st, file, len, "random-weights", &err) == KG_OK,
                      "%s: open the random-weight image: %s", cp.label, err.msg)) {
            printf("%s: %zu tensors, %lld parameters\n", cp.label, im.n, (long long)im.params);
            cp.st = st;
            kgt_comp_inputs(&cp, batch[k], 64);
            run_pair(dev, cpu, &cp, 0);
            kgt_comp_free_inputs(&cp);
        }
        kg_st_close(st);
        free(file);
        kgt_rw_free(&im);
    }
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all", *prec = argc > 2 ? argv[2] : "f16";
    kg_backend *dev = NULL, *cpu = NULL;
    kg_error err = {0};
    kg_status st;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((strcmp(what, "tiny") && strcmp(what, "full") && strcmp(what, "all")) ||
        (strcmp(prec, "f16") && strcmp(prec, "f32"))) {
        fprintf(stderr, "usage: test_cuda_components [tiny|full|all] [f16|f32]\n");
        return 2;
    }
    goal = strcmp(prec, "f32") ? GOAL_F16 : GOAL_F32;
    if (getenv("KG_CUDA_OPS_CPU") && atoi(getenv("KG_CUDA_OPS_CPU")))
        dev_seat = SEAT_CPU;
    else if (getenv("KG_F16_EMULATE") && atoi(getenv("KG_F16_EMULATE")))
        dev_seat = SEAT_EMULATED;
    if (dev_seat == SEAT_EMULATED && goal != GOAL_F16) {
        fprintf(stderr, "KG_F16_EMULATE=1 emulates fp16: use the f16 mode\n");
        return 2;
    }

    switch (dev_seat) {
    case SEAT_CPU: st = kg_backend_cpu_new(&dev, 0, &err); break;
    case SEAT_EMULATED: st = kgt_f16e_backend_new(&dev, 0, &err); break;
    default:
#ifdef KG_HAVE_CUDA
        st = kg_backend_cuda_new(&dev, 0, goal == GOAL_F16 ? KG_F16 : KG_F32, &err);
#else
        st = kg_error_set(&err, KG_ERR_NO_DEVICE, "this build has no CUDA backend");
#endif
        break;
    }
    if (st == KG_ERR_NO_DEVICE) {
        printf("SKIP: no CUDA device: %s\n", err.msg);
        return 77;
    }
    if (!kgt_check(st == KG_OK, "device backend: %s %s", kg_status_name(st), err.msg))
        return kgt_finish();
    if (!kgt_check(kg_backend_cpu_new(&cpu, 0, &err) == KG_OK, "CPU backend: %s", err.msg)) {
        kg_backend_free(dev);
        return kgt_finish();
    }
    printf("device seat: %s (%s), reference: %s\n", dev->ops->name, prec, cpu->ops->name);

    if (strcmp(what, "full"))
        run_tiny(dev, cpu);
    if (strcmp(what, "tiny"))
        run_full(dev, cpu);

    printf("\n| component | NMSE | goal | verdict |\n| --- | --- | --- | --- |\n");
    for (int i = 0; i < n_rows; i++)
        printf("| %s | %.3e | %s | %s |\n", rows[i].label, rows[i].nmse, goal_text(),
               rows[i].ok ? "ok" : "FAIL");
    kg_backend_free(cpu);
    kg_backend_free(dev);
    return kgt_finish();
}
