/* ops.h - the op entry points model code calls, and the context they run in.
 *
 * Each op validates shapes and dtypes once for every backend and then
 * dispatches through the backend's table. Ops return nothing: the first
 * failure is kept as the backend's sticky error, later ops become no-ops,
 * and a component checks kg_ctx_status() at its boundary. In measure mode
 * ops validate but do not run, and kg_new() only counts arena bytes. */
#ifndef KG_OPS_H
#define KG_OPS_H

#include <stdint.h>

#include "arena.h"
#include "backend.h"
#include "status.h"
#include "tensor.h"

/* Called with a PyTorch module path ("down_blocks.0.resnets.1") and the
 * module's output; tests compare it with the golden taps. */
typedef void (*kg_tap_fn)(void *user, const char *name, const kg_tensor *t);

typedef struct kg_ctx {
    kg_backend *be;
    kg_arena arena;
    void *arena_mem;  /* backend memory behind the arena */
    size_t arena_cap; /* bytes of arena_mem */
    kg_tap_fn tap;
    void *tap_user;
} kg_ctx;

void kg_ctx_init(kg_ctx *c, kg_backend *be);
/* Frees the arena memory (not the backend). */
void kg_ctx_release(kg_ctx *c);

/* Makes sure the arena holds at least `bytes`, reallocating through the
 * backend only when it must grow. Resets the arena. */
kg_status kg_ctx_reserve(kg_ctx *c, size_t bytes, kg_error *err);
/* Measure mode: ops validate but do not run; kg_new() only counts. */
void kg_ctx_begin_measure(kg_ctx *c);
/* Leaves measure mode and reserves the peak the measured code needed. */
kg_status kg_ctx_end_measure(kg_ctx *c, kg_error *err);
int kg_ctx_measuring(const kg_ctx *c);

/* The sticky error (copied into err when not OK). */
kg_status kg_ctx_status(const kg_ctx *c, kg_error *err);
void kg_ctx_clear_error(kg_ctx *c);

/* Activation tensors from the arena, in the backend's activation dtype
 * (F32 on the CPU). On exhaustion the sticky error is set and data is NULL. */
kg_tensor kg_new(kg_ctx *c, int ndim, const int64_t *shape);
kg_tensor kg_new_dt(kg_ctx *c, kg_dtype dt, int ndim, const int64_t *shape);
kg_tensor kg_new1(kg_ctx *c, int64_t d0);
kg_tensor kg_new2(kg_ctx *c, int64_t d0, int64_t d1);
kg_tensor kg_new3(kg_ctx *c, int64_t d0, int64_t d1, int64_t d2);
kg_tensor kg_new4(kg_ctx *c, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
size_t kg_mark(const kg_ctx *c);
void kg_reset(kg_ctx *c, size_t mark);

/* Host <-> backend transfers. The _f32 forms convert from/to float32 host
 * data for float tensors; kg_upload copies raw bytes. */
void kg_upload_f32(kg_ctx *c, kg_tensor *dst, const float *src);
void kg_download_f32(kg_ctx *c, float *dst, const kg_tensor *src);
void kg_upload(kg_ctx *c, kg_tensor *dst, const void *src);

/* Fires the tap, if any, with a printf-formatted module path. */
void kg_tap(kg_ctx *c, const kg_tensor *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* --- compute ops (see backend.h for exact semantics) --- */
void kg_linear(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *w, const kg_tensor *b);
void kg_conv2d(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *w, const kg_tensor *b,
               int stride, int pad);
void kg_group_norm(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                   const kg_tensor *beta, int groups, float eps);
/* group norm followed by SiLU, fused where the backend can */
void kg_group_norm_silu(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                        const kg_tensor *beta, int groups, float eps);
void kg_layer_norm(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                   const kg_tensor *beta, float eps);
void kg_attention(kg_ctx *c, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                  const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                  int causal);
void kg_gelu(kg_ctx *c, kg_tensor *y, const kg_tensor *x);
void kg_quick_gelu(kg_ctx *c, kg_tensor *y, const kg_tensor *x);
void kg_silu(kg_ctx *c, kg_tensor *y, const kg_tensor *x);
void kg_geglu(kg_ctx *c, kg_tensor *y, const kg_tensor *x);
void kg_add(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b);
void kg_add_tile(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b);
void kg_add_spread(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b);
void kg_axpby(kg_ctx *c, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
              const kg_tensor *b);
void kg_scale(kg_ctx *c, kg_tensor *y, const kg_tensor *x, float alpha);
/* nearest interpolation of x [B, C, H, W] to y's H and W (torch F.interpolate(size=...)) */
void kg_upsample_nearest(kg_ctx *c, kg_tensor *y, const kg_tensor *x);
void kg_concat(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim);
void kg_permute(kg_ctx *c, kg_tensor *y, const kg_tensor *x, int p0, int p1, int p2, int p3);
void kg_copy(kg_ctx *c, kg_tensor *y, const kg_tensor *x);
void kg_embedding(kg_ctx *c, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids);
void kg_l2_normalize(kg_ctx *c, kg_tensor *y, const kg_tensor *x, float eps);
void kg_fill(kg_ctx *c, kg_tensor *y, float value);
/* x [1, 3, H, W] -> 8-bit RGB(A) pixels in device memory (backend.h, image_to_device);
 * KG_ERR_UNSUPPORTED on a backend without device memory. */
void kg_image_to_device(kg_ctx *c, void *dst, size_t pitch, int channels, const kg_tensor *x);

#endif
