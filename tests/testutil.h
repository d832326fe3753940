/* testutil.h - checks, golden access and tap recording shared by the tests.
 *
 * Every comparison checks NaN/Inf first, prints the measured error next to
 * its tolerance, and counts a pass or a failure; kgt_finish() prints
 * "N passed, N failed" and returns the process exit code. */
#ifndef KG_TESTUTIL_H
#define KG_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "safetensors.h"

/* Counts and prints one check. Returns cond. */
int kgt_check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Passes when every element satisfies |got - ref| <= atol + rtol * |ref|
 * (numpy.allclose) and no element of got is NaN/Inf. Prints max-abs,
 * max-rel and the worst element. */
int kgt_compare(const char *name, const float *got, const double *ref, size_t n, double atol,
                double rtol);

/* Same, returning the verdict without counting or printing when quiet. */
int kgt_allclose(const float *got, const double *ref, size_t n, double atol, double rtol,
                 double *max_abs, double *max_rel, size_t *worst);

/* Path of a golden file: $KG_GOLDEN/rel (KG_GOLDEN is set by meson). */
const char *kgt_golden_path(const char *rel);
/* Opens a golden safetensors file; on failure prints why and returns NULL. */
kg_st_file *kgt_golden_open(const char *rel);

/* Opens the converted tiny model at $KG_TINY_MODEL; NULL (and a failure
 * counted) when unset or unreadable. */
kg_st_file *kgt_tiny_model(void);

/* Parses the JSON stored under `key` in a file's __metadata__; NULL (and a
 * failure counted) when absent or malformed. Free with kg_json_free. */
struct kg_json *kgt_meta_json(const kg_st_file *f, const char *key);

/* Reads any float tensor (F32/F16/BF16/F64) or integer tensor as doubles /
 * floats; malloc'd, NULL (and a failure counted) when missing. *n = numel. */
double *kgt_read_f64(const kg_st_file *f, const char *name, size_t *n);
float *kgt_read_f32(const kg_st_file *f, const char *name, size_t *n);

/* Tap recorder: keeps a float32 copy of every tapped tensor, in order. */
typedef struct kgt_tap {
    char name[160];
    int ndim;
    int64_t shape[KG_MAX_DIMS];
    float *data;
    size_t n;
} kgt_tap;

typedef struct kgt_taps {
    kg_ctx *ctx;
    kgt_tap *items;
    size_t count, cap;
} kgt_taps;

void kgt_taps_attach(kgt_taps *t, kg_ctx *c); /* sets c->tap */
void kgt_taps_free(kgt_taps *t);
const kgt_tap *kgt_taps_find(const kgt_taps *t, const char *name);

/* Compares every recorded tap `name` with golden `<prefix64>name` (falling
 * back to `<prefix32>name`), in recording order, and also fails for every
 * golden key under prefix64/prefix32 that was never tapped. Prints one line
 * per tap; the first failing tap is named as "first divergence". Returns
 * the number of failures. name_map, when given, maps a tap name to a
 * golden name (NULL = skip that tap). */
typedef const char *(*kgt_name_map)(const char *tap_name, char *buf, size_t n);
int kgt_taps_compare(const kgt_taps *t, const kg_st_file *golden, const char *prefix64,
                     const char *prefix32, double atol, double rtol, kgt_name_map map);

/* Copies the UTF-8 bytes of tensor `key` (e.g. "in.prompt.utf8") into dst, cut to cap - 1
 * bytes and NUL-terminated; "" when the tensor is missing. */
void kgt_read_str(const kg_st_file *g, const char *key, char *dst, size_t cap);

/* An official end-to-end request (golden kosmosg/e2e_NAME.safetensors): its prompt, negative
 * prompt, reference images, scheduler, steps, size, guidance, image count and the noise the
 * official run started from (without CFG the conditional half of its 2n latents). */
typedef struct kgt_e2e_case {
    char name[64];
    char prompt[256];
    char negative[256];
    char scheduler[32];
    int n_images, n, steps, size, cfg;
    double guidance;
    kg_st_file *g;
    kg_image images[4]; /* pixels in g */
    float *noise;       /* the n latents we start from */
} kgt_e2e_case;

/* Returns 1, or 0 with a failure counted; kgt_e2e_case_free either way. */
int kgt_e2e_case_load(kgt_e2e_case *c, const char *name);
void kgt_e2e_case_free(kgt_e2e_case *c);
/* The case's request (seed 1234, init_latents = its noise); points into c. */
void kgt_e2e_case_params(const kgt_e2e_case *c, kg_params *p);

/* Prints "N passed, N failed" and returns 0 when nothing failed, else 1. */
int kgt_finish(void);

/* A CPU backend + context with an arena of `arena_bytes`; exits on failure
 * (tests only). */
kg_backend *kgt_cpu_backend(void);
void kgt_ctx(kg_ctx *c, kg_backend *be, size_t arena_bytes);
/* t as a malloc'd float array. */
float *kgt_download(kg_ctx *c, const kg_tensor *t);
/* 1 when the context has no error; else a failure naming `what` and the error, cleared. */
int kgt_ctx_ok(kg_ctx *c, const char *what);

#endif
