/* bench_ops.c - CPU backend throughput at the shapes SD1.5 runs most.
 *
 * Prints GEMM GFLOP/s (through kg_linear), conv2d time and GFLOP/s at the
 * U-Net's 320-channel 64x64 3x3 conv and its deeper levels, attention time
 * at 4096 tokens, and a few memory-bound ops. Each case runs once to warm
 * up, then REPS times; the best wall time is reported (the machine is
 * shared, the best run is the least disturbed one), with the process CPU
 * time of that run: on a busy machine wall time suffers from preemption,
 * while GFLOP per CPU-second still shows the per-core efficiency (with more
 * than one thread it also counts threads spinning at barriers).
 * The GEMM and conv cases also run on bf16 weights (precision bf16: the same
 * weights stored as bf16, x and y fp32), interleaved with the fp32 runs, and
 * print the bf16 / fp32 speed ratio; the header names the kernels (the CPU
 * backend's describe line), the CPU model and the load average.
 * Usage: bench_ops [threads]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "ops.h"

#define REPS 5

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void randomize(kg_ctx *c, kg_tensor *t)
{
    int64_t n = kg_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    uint32_t s = 12345u;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = (float)(s >> 8) / 8388608.0f - 1.0f;
    }
    kg_upload_f32(c, t, h);
    free(h);
}

typedef enum { B_LINEAR, B_CONV, B_ATTN, B_GROUPNORM, B_GEGLU } bench_kind;

typedef struct bench_case {
    bench_kind kind;
    const char *label;
    int64_t a, b, d, e; /* linear: M K N; conv: C_in C_out HW k; attention: Lq Lk heads dh */
} bench_case;

/* best[0], cpu_s[0]: fp32; best[1], cpu_s[1]: bf16 weights (linear, conv) */
static void run_case(kg_ctx *c, const bench_case *bc, double *flop, double best[2], double cpu_s[2])
{
    size_t mark = kg_mark(c);
    kg_tensor x = {0}, w = {0}, y = {0}, bias = {0}, k = {0}, v = {0}, w16 = {0};
    kg_backend *be = c->be;
    best[0] = best[1] = 1e30;
    switch (bc->kind) {
    case B_LINEAR:
        x = kg_new2(c, bc->a, bc->b);
        w = kg_new2(c, bc->d, bc->b);
        bias = kg_new1(c, bc->d);
        y = kg_new2(c, bc->a, bc->d);
        *flop = 2.0 * (double)bc->a * (double)bc->b * (double)bc->d;
        break;
    case B_CONV:
        x = kg_new4(c, 1, bc->a, bc->d, bc->d);
        w = kg_new4(c, bc->b, bc->a, bc->e, bc->e);
        bias = kg_new1(c, bc->b);
        y = kg_new4(c, 1, bc->b, bc->d, bc->d);
        *flop =
            2.0 * (double)bc->a * (double)bc->b * (double)(bc->e * bc->e) * (double)(bc->d * bc->d);
        break;
    case B_ATTN:
        x = kg_new3(c, 1, bc->a, bc->d * bc->e);
        k = kg_new3(c, 1, bc->b, bc->d * bc->e);
        v = kg_new3(c, 1, bc->b, bc->d * bc->e);
        y = kg_new3(c, 1, bc->a, bc->d * bc->e);
        *flop = 4.0 * (double)bc->a * (double)bc->b * (double)(bc->d * bc->e);
        break;
    case B_GROUPNORM:
        x = kg_new4(c, 1, bc->a, bc->d, bc->d);
        w = kg_new1(c, bc->a);
        bias = kg_new1(c, bc->a);
        y = kg_new4(c, 1, bc->a, bc->d, bc->d);
        *flop = 0;
        break;
    case B_GEGLU:
        x = kg_new2(c, bc->a, 2 * bc->b);
        y = kg_new2(c, bc->a, bc->b);
        *flop = 0;
        break;
    }
    randomize(c, &x);
    if (bc->kind == B_LINEAR || bc->kind == B_CONV) {
        w16 = kg_new_dt(c, KG_BF16, w.ndim, w.shape);
        randomize(c, &w16); /* the same values as w, rounded to bf16 */
    }
    if (w.data)
        randomize(c, &w);
    if (bias.data)
        randomize(c, &bias);
    if (k.data) {
        randomize(c, &k);
        randomize(c, &v);
    }
    for (int r = 0; r <= REPS; r++)
        for (int bf16 = 0; bf16 < (w16.data ? 2 : 1); bf16++) {
            double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), dt;
            /* bf16 weights through the op table: kg_ops takes them only on a
             * backend whose weight dtype is bf16 */
            switch (bc->kind) {
            case B_LINEAR:
                if (bf16)
                    be->ops->linear(be, &y, &x, &w16, &bias);
                else
                    kg_linear(c, &y, &x, &w, &bias);
                break;
            case B_CONV:
                if (bf16)
                    be->ops->conv2d(be, &y, &x, &w16, &bias, 1, (int)(bc->e / 2));
                else
                    kg_conv2d(c, &y, &x, &w, &bias, 1, (int)(bc->e / 2));
                break;
            case B_ATTN: kg_attention(c, &y, &x, &k, &v, NULL, (int)bc->d, 0.125f, 0); break;
            case B_GROUPNORM: kg_group_norm_silu(c, &y, &x, &w, &bias, 32, 1e-5f); break;
            case B_GEGLU: kg_geglu(c, &y, &x); break;
            }
            dt = clock_s(CLOCK_MONOTONIC) - t0;
            if (r > 0 && dt < best[bf16]) {
                best[bf16] = dt;
                cpu_s[bf16] = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
            }
        }
    kg_reset(c, mark);
}

/* "model name" of /proc/cpuinfo, and the load average, for the header */
static void print_machine(void)
{
    char line[256], model[128] = "?", load[64] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    f = fopen("/proc/loadavg", "r");
    if (f && fgets(load, sizeof load, f))
        load[strcspn(load, "\n")] = 0;
    if (f)
        fclose(f);
    printf("CPU: %s; load average: %s\n", model, load);
}

int main(int argc, char **argv)
{
    static const bench_case cases[] = {
        {B_LINEAR, "gemm 4096x320x320 (M x K x N)", 4096, 320, 320, 0},
        {B_LINEAR, "gemm 4096x320x1280", 4096, 320, 1280, 0},
        {B_LINEAR, "gemm 4096x1280x320", 4096, 1280, 320, 0},
        {B_LINEAR, "gemm 4096x320x2560 (GEGLU proj)", 4096, 320, 2560, 0},
        {B_LINEAR, "gemm 1024x640x640", 1024, 640, 640, 0},
        {B_LINEAR, "gemm 256x1280x1280", 256, 1280, 1280, 0},
        {B_LINEAR, "gemm 77x768x768", 77, 768, 768, 0},
        {B_LINEAR, "gemm 77x768x320 (cross-attn k/v)", 77, 768, 320, 0},
        {B_CONV, "conv2d 320->320 64x64 3x3 p1 (SD1.5)", 320, 320, 64, 3},
        {B_CONV, "conv2d 640->640 32x32 3x3 p1", 640, 640, 32, 3},
        {B_CONV, "conv2d 1280->1280 16x16 3x3 p1", 1280, 1280, 16, 3},
        {B_CONV, "conv2d 1280->1280 8x8 3x3 p1", 1280, 1280, 8, 3},
        {B_CONV, "conv2d 320->320 64x64 1x1", 320, 320, 64, 1},
        {B_CONV, "conv2d 128->128 256x256 3x3 p1 (VAE)", 128, 128, 256, 3},
        {B_ATTN, "attention self 4096x4096, 8 heads x 40", 4096, 4096, 8, 40},
        {B_ATTN, "attention cross 4096x77, 8 heads x 40", 4096, 77, 8, 40},
        {B_ATTN, "attention self 1024x1024, 8 heads x 80", 1024, 1024, 8, 80},
        {B_ATTN, "attention self 4096x4096, 1 head x 512 (VAE)", 4096, 4096, 1, 512},
        {B_GROUPNORM, "group_norm+silu 320x64x64, 32 groups", 320, 0, 64, 0},
        {B_GEGLU, "geglu 4096x2560 -> 1280", 4096, 1280, 0, 0},
    };
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    kg_backend *be = NULL;
    kg_error err = {0};
    kg_ctx c;
    if (kg_backend_cpu_new(&be, threads, &err) != KG_OK) {
        fprintf(stderr, "bench_ops: %s\n", err.msg);
        return 1;
    }
    kg_ctx_init(&c, be);
    if (kg_ctx_reserve(&c, (size_t)256 << 20, &err) != KG_OK) {
        fprintf(stderr, "bench_ops: %s\n", err.msg);
        kg_backend_free(be);
        return 1;
    }
    {
        char line[512];
        kg_backend_cpu_describe(be, line, sizeof line);
        print_machine();
        printf("dispatch: %s\n", line);
    }
    printf("CPU backend, %s threads, best of %d runs (wall time; CPU time of that run)\n",
           threads > 0 ? argv[1] : "all", REPS);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double flop = 0, t[2], cpu[2];
        run_case(&c, &cases[i], &flop, t, cpu);
        if (kg_ctx_status(&c, &err) != KG_OK) {
            fprintf(stderr, "bench_ops: %s: %s\n", cases[i].label, err.msg);
            break;
        }
        if (flop > 0)
            printf("%-46s %8.2f ms %7.1f GFLOP/s | cpu %8.2f ms %6.1f GFLOP/cpu-s\n",
                   cases[i].label, 1e3 * t[0], flop / t[0] * 1e-9, 1e3 * cpu[0],
                   flop / cpu[0] * 1e-9);
        else
            printf("%-46s %8.2f ms                 | cpu %8.2f ms\n", cases[i].label, 1e3 * t[0],
                   1e3 * cpu[0]);
        if (t[1] < 1e30)
            printf("%-46s %8.2f ms %7.1f GFLOP/s | cpu %8.2f ms %6.1f GFLOP/cpu-s | %.2fx fp32\n",
                   "  bf16 weights", 1e3 * t[1], flop / t[1] * 1e-9, 1e3 * cpu[1],
                   flop / cpu[1] * 1e-9, t[0] / t[1]);
        fflush(stdout);
    }
    kg_ctx_release(&c);
    kg_backend_free(be);
    return err.code == KG_OK ? 0 : 1;
}
