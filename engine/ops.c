/* ops.c - op entry points: validate once, then dispatch to the backend.
 *
 * Validation failures are programmer errors in model code (weights were
 * checked at load time), but a plugin must not abort its host application,
 * so they become the sticky error and every later op is skipped. */
#include "ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int ok(const kg_ctx *c)
{
    return c->be->err.code == KG_OK;
}

static int run(const kg_ctx *c)
{
    return ok(c) && !c->arena.measuring;
}

#define FAIL(c, ...)                                         \
    do {                                                     \
        kg_backend_fail((c)->be, KG_ERR_SHAPE, __VA_ARGS__); \
        return 0;                                            \
    } while (0)

static const char *shp(const kg_tensor *t, char *buf)
{
    return kg_shape_str(t, buf, 64);
}

static int is_float(kg_dtype dt)
{
    return dt == KG_F32 || dt == KG_F16 || dt == KG_BF16;
}

static int check_t(kg_ctx *c, const char *op, const char *what, const kg_tensor *t)
{
    if (!t)
        FAIL(c, "%s: %s is NULL", op, what);
    if (!t->data)
        FAIL(c, "%s: %s has no data (failed allocation or bad view)", op, what);
    if (t->ndim < 1 || t->ndim > KG_MAX_DIMS)
        FAIL(c, "%s: %s has %d dims", op, what, t->ndim);
    return 1;
}

static int check_act(kg_ctx *c, const char *op, const char *what, const kg_tensor *t)
{
    if (!check_t(c, op, what, t))
        return 0;
    if (t->dtype != c->be->act_dtype)
        FAIL(c, "%s: %s is %s, backend computes in %s", op, what, kg_dtype_name(t->dtype),
             kg_dtype_name(c->be->act_dtype));
    return 1;
}

/* The w of linear and conv2d: the backend's weight dtype (bf16 on the CPU in
 * bf16 mode, act_dtype elsewhere), so a weight that missed the conversion
 * is an error, not a silent fp32 path. */
static int check_weight(kg_ctx *c, const char *op, const kg_tensor *w)
{
    if (!check_t(c, op, "w", w))
        return 0;
    if (w->dtype != c->be->weight_dtype)
        FAIL(c, "%s: w is %s, backend keeps weights in %s", op, kg_dtype_name(w->dtype),
             kg_dtype_name(c->be->weight_dtype));
    return 1;
}

static int check_same(kg_ctx *c, const char *op, const kg_tensor *y, const kg_tensor *x)
{
    char a[64], b[64];
    if (!kg_tensor_same_shape(y, x))
        FAIL(c, "%s: output %s != input %s", op, shp(y, a), shp(x, b));
    return 1;
}

static int check_vec(kg_ctx *c, const char *op, const char *what, const kg_tensor *t, int64_t n)
{
    char a[64];
    if (!check_act(c, op, what, t))
        return 0;
    if (kg_tensor_numel(t) != n)
        FAIL(c, "%s: %s %s, expected %lld elements", op, what, shp(t, a), (long long)n);
    return 1;
}

static int64_t last(const kg_tensor *t)
{
    return t->shape[t->ndim - 1];
}

static int64_t rows(const kg_tensor *t)
{
    int64_t l = last(t);
    return l ? kg_tensor_numel(t) / l : 0;
}

/* ------------------------------------------------------------------ context */

void kg_ctx_init(kg_ctx *c, kg_backend *be)
{
    memset(c, 0, sizeof *c);
    c->be = be;
    kg_arena_init(&c->arena, NULL, 0);
}

void kg_ctx_release(kg_ctx *c)
{
    if (c->arena_mem)
        c->be->ops->free(c->be, c->arena_mem);
    c->arena_mem = NULL;
    c->arena_cap = 0;
    kg_arena_init(&c->arena, NULL, 0);
}

kg_status kg_ctx_reserve(kg_ctx *c, size_t bytes, kg_error *err)
{
    if (bytes > c->arena_cap) {
        /* free first: old and new arena together would double the peak */
        void *mem;
        if (c->arena_mem)
            c->be->ops->free(c->be, c->arena_mem);
        c->arena_mem = NULL;
        c->arena_cap = 0;
        mem = c->be->ops->alloc(c->be, bytes);
        if (!mem) {
            kg_arena_init(&c->arena, NULL, 0);
            return kg_error_set(err, KG_ERR_NOMEM,
                                "%s backend: cannot allocate a %.1f MiB activation arena",
                                c->be->ops->name, (double)bytes / (1 << 20));
        }
        c->arena_mem = mem;
        c->arena_cap = bytes;
    }
    kg_arena_init(&c->arena, c->arena_mem, c->arena_cap);
    return KG_OK;
}

void kg_ctx_begin_measure(kg_ctx *c)
{
    kg_arena_init_measure(&c->arena);
}

kg_status kg_ctx_end_measure(kg_ctx *c, kg_error *err)
{
    size_t peak = c->arena.peak;
    kg_status st = kg_ctx_status(c, err);
    if (st != KG_OK)
        return st;
    return kg_ctx_reserve(c, peak, err);
}

int kg_ctx_measuring(const kg_ctx *c)
{
    return c->arena.measuring;
}

kg_status kg_ctx_status(const kg_ctx *c, kg_error *err)
{
    if (c->be->err.code != KG_OK && err) {
        err->code = c->be->err.code;
        memcpy(err->msg, c->be->err.msg, sizeof err->msg);
    }
    return c->be->err.code;
}

void kg_ctx_clear_error(kg_ctx *c)
{
    kg_error_clear(&c->be->err);
}

kg_tensor kg_new_dt(kg_ctx *c, kg_dtype dt, int ndim, const int64_t *shape)
{
    kg_tensor t = kg_tensor_make(NULL, dt, ndim, shape);
    int64_t n = kg_tensor_numel(&t);
    if (n < 0 || ndim < 1 || ndim > KG_MAX_DIMS) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "kg_new: bad shape");
        return t;
    }
    t.data = kg_arena_alloc(&c->arena, (size_t)n * kg_dtype_size(dt));
    if (!t.data) {
        char s[64];
        kg_backend_fail(c->be, KG_ERR_NOMEM,
                        "activation arena exhausted: %zu of %zu bytes used, %s %s requested",
                        c->arena.offset, c->arena.size, kg_dtype_name(dt), shp(&t, s));
    }
    return t;
}

kg_tensor kg_new(kg_ctx *c, int ndim, const int64_t *shape)
{
    return kg_new_dt(c, c->be->act_dtype, ndim, shape);
}

kg_tensor kg_new1(kg_ctx *c, int64_t d0)
{
    return kg_new(c, 1, (int64_t[]){d0});
}

kg_tensor kg_new2(kg_ctx *c, int64_t d0, int64_t d1)
{
    return kg_new(c, 2, (int64_t[]){d0, d1});
}

kg_tensor kg_new3(kg_ctx *c, int64_t d0, int64_t d1, int64_t d2)
{
    return kg_new(c, 3, (int64_t[]){d0, d1, d2});
}

kg_tensor kg_new4(kg_ctx *c, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    return kg_new(c, 4, (int64_t[]){d0, d1, d2, d3});
}

size_t kg_mark(const kg_ctx *c)
{
    return kg_arena_mark(&c->arena);
}

void kg_reset(kg_ctx *c, size_t mark)
{
    kg_arena_reset(&c->arena, mark);
}

void kg_upload_f32(kg_ctx *c, kg_tensor *dst, const float *src)
{
    if (!check_t(c, "upload_f32", "dst", dst))
        return;
    if (!is_float(dst->dtype)) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "upload_f32: dst is %s", kg_dtype_name(dst->dtype));
        return;
    }
    if (run(c))
        c->be->ops->upload_f32(c->be, dst, src);
}

void kg_download_f32(kg_ctx *c, float *dst, const kg_tensor *src)
{
    if (!check_t(c, "download_f32", "src", src))
        return;
    if (!is_float(src->dtype)) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "download_f32: src is %s", kg_dtype_name(src->dtype));
        return;
    }
    if (run(c))
        c->be->ops->download_f32(c->be, dst, src);
}

void kg_upload(kg_ctx *c, kg_tensor *dst, const void *src)
{
    if (check_t(c, "upload", "dst", dst) && run(c))
        c->be->ops->upload(c->be, dst->data, src, kg_tensor_nbytes(dst));
}

void kg_tap(kg_ctx *c, const kg_tensor *t, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    if (!c->tap || !run(c))
        return;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    c->tap(c->tap_user, name, t);
}

/* ---------------------------------------------------------------- compute */

void kg_linear(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *w, const kg_tensor *b)
{
    char s1[64], s2[64], s3[64];
    if (!ok(c) || !check_act(c, "linear", "y", y) || !check_act(c, "linear", "x", x) ||
        !check_weight(c, "linear", w))
        return;
    if (w->ndim != 2 || last(x) != w->shape[1] || last(y) != w->shape[0] || rows(x) != rows(y)) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "linear: x %s, w %s, y %s do not fit", shp(x, s1),
                        shp(w, s2), shp(y, s3));
        return;
    }
    if (b && !check_vec(c, "linear", "bias", b, w->shape[0]))
        return;
    if (y->data == x->data) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "linear: y aliases x");
        return;
    }
    if (run(c))
        c->be->ops->linear(c->be, y, x, w, b);
}

void kg_conv2d(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *w, const kg_tensor *b,
               int stride, int pad)
{
    char s1[64], s2[64], s3[64];
    int64_t ho, wo;
    if (!ok(c) || !check_act(c, "conv2d", "y", y) || !check_act(c, "conv2d", "x", x) ||
        !check_weight(c, "conv2d", w))
        return;
    if (stride < 1 || pad < 0 || x->ndim != 4 || w->ndim != 4 || y->ndim != 4) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "conv2d: needs 4-d tensors, stride >= 1, pad >= 0");
        return;
    }
    ho = (x->shape[2] + 2 * pad - w->shape[2]) / stride + 1;
    wo = (x->shape[3] + 2 * pad - w->shape[3]) / stride + 1;
    if (x->shape[1] != w->shape[1] || y->shape[0] != x->shape[0] || y->shape[1] != w->shape[0] ||
        y->shape[2] != ho || y->shape[3] != wo || ho < 1 || wo < 1) {
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "conv2d: x %s, w %s, stride %d, pad %d, y %s do not fit", shp(x, s1),
                        shp(w, s2), stride, pad, shp(y, s3));
        return;
    }
    if (b && !check_vec(c, "conv2d", "bias", b, w->shape[0]))
        return;
    if (y->data == x->data) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "conv2d: y aliases x");
        return;
    }
    if (run(c))
        c->be->ops->conv2d(c->be, y, x, w, b, stride, pad);
}

static void group_norm(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                       const kg_tensor *beta, int groups, float eps, int silu)
{
    char s1[64];
    if (!ok(c) || !check_act(c, "group_norm", "y", y) || !check_act(c, "group_norm", "x", x) ||
        !check_same(c, "group_norm", y, x))
        return;
    if (x->ndim < 2 || groups < 1 || x->shape[1] % groups != 0) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "group_norm: x %s cannot form %d groups", shp(x, s1),
                        groups);
        return;
    }
    if (!check_vec(c, "group_norm", "weight", gamma, x->shape[1]) ||
        !check_vec(c, "group_norm", "bias", beta, x->shape[1]))
        return;
    if (run(c))
        c->be->ops->group_norm(c->be, y, x, gamma, beta, groups, eps, silu);
}

void kg_group_norm(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                   const kg_tensor *beta, int groups, float eps)
{
    group_norm(c, y, x, gamma, beta, groups, eps, 0);
}

void kg_group_norm_silu(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                        const kg_tensor *beta, int groups, float eps)
{
    group_norm(c, y, x, gamma, beta, groups, eps, 1);
}

void kg_layer_norm(kg_ctx *c, kg_tensor *y, const kg_tensor *x, const kg_tensor *gamma,
                   const kg_tensor *beta, float eps)
{
    if (!ok(c) || !check_act(c, "layer_norm", "y", y) || !check_act(c, "layer_norm", "x", x) ||
        !check_same(c, "layer_norm", y, x) ||
        !check_vec(c, "layer_norm", "weight", gamma, last(x)) ||
        (beta && !check_vec(c, "layer_norm", "bias", beta, last(x))))
        return;
    if (run(c))
        c->be->ops->layer_norm(c->be, y, x, gamma, beta, eps);
}

void kg_attention(kg_ctx *c, kg_tensor *o, const kg_tensor *q, const kg_tensor *k,
                  const kg_tensor *v, const kg_tensor *key_pad, int n_heads, float scale,
                  int causal)
{
    char s1[64], s2[64], s3[64], s4[64];
    if (!ok(c) || !check_act(c, "attention", "o", o) || !check_act(c, "attention", "q", q) ||
        !check_act(c, "attention", "k", k) || !check_act(c, "attention", "v", v))
        return;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || o->ndim != 3 || n_heads < 1 ||
        q->shape[0] != k->shape[0] || v->shape[0] != k->shape[0] || o->shape[0] != q->shape[0] ||
        q->shape[2] != k->shape[2] || k->shape[1] != v->shape[1] || o->shape[1] != q->shape[1] ||
        o->shape[2] != v->shape[2] || q->shape[2] % n_heads || v->shape[2] % n_heads ||
        (causal && q->shape[1] != k->shape[1])) {
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "attention: q %s, k %s, v %s, o %s, %d heads%s do not fit", shp(q, s1),
                        shp(k, s2), shp(v, s3), shp(o, s4), n_heads, causal ? ", causal" : "");
        return;
    }
    if (o->data == q->data || o->data == k->data || o->data == v->data) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "attention: o aliases an input");
        return;
    }
    if (key_pad) {
        if (!check_t(c, "attention", "key_pad", key_pad))
            return;
        if (key_pad->dtype != KG_U8 || kg_tensor_numel(key_pad) != k->shape[0] * k->shape[1]) {
            kg_backend_fail(c->be, KG_ERR_SHAPE,
                            "attention: key_pad %s %s, expected U8 [%lld, %lld]",
                            kg_dtype_name(key_pad->dtype), shp(key_pad, s1), (long long)k->shape[0],
                            (long long)k->shape[1]);
            return;
        }
    }
    if (run(c))
        c->be->ops->attention(c->be, o, q, k, v, key_pad, n_heads, scale, causal);
}

static void activation(kg_ctx *c, kg_tensor *y, const kg_tensor *x, kg_act act)
{
    if (!ok(c) || !check_act(c, "activation", "y", y) || !check_act(c, "activation", "x", x) ||
        !check_same(c, "activation", y, x))
        return;
    if (run(c))
        c->be->ops->activation(c->be, y, x, act);
}

void kg_gelu(kg_ctx *c, kg_tensor *y, const kg_tensor *x)
{
    activation(c, y, x, KG_ACT_GELU);
}

void kg_quick_gelu(kg_ctx *c, kg_tensor *y, const kg_tensor *x)
{
    activation(c, y, x, KG_ACT_QUICK_GELU);
}

void kg_silu(kg_ctx *c, kg_tensor *y, const kg_tensor *x)
{
    activation(c, y, x, KG_ACT_SILU);
}

void kg_geglu(kg_ctx *c, kg_tensor *y, const kg_tensor *x)
{
    char s1[64], s2[64];
    if (!ok(c) || !check_act(c, "geglu", "y", y) || !check_act(c, "geglu", "x", x))
        return;
    if (last(x) != 2 * last(y) || rows(x) != rows(y) || y->data == x->data) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "geglu: x %s -> y %s", shp(x, s1), shp(y, s2));
        return;
    }
    if (run(c))
        c->be->ops->geglu(c->be, y, x);
}

static void binary(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, kg_binary_op op,
                   kg_bcast bc)
{
    char s1[64], s2[64];
    const char *name = op == KG_BIN_ADD ? "add" : "mul";
    int fits = 1;
    if (!ok(c) || !check_act(c, name, "y", y) || !check_act(c, name, "a", a) ||
        !check_act(c, name, "b", b) || !check_same(c, name, y, a))
        return;
    if (bc == KG_BCAST_SAME) {
        fits = kg_tensor_same_shape(a, b);
    } else if (bc == KG_BCAST_TILE) {
        fits = b->ndim <= a->ndim;
        for (int i = 0; fits && i < b->ndim; i++)
            fits = b->shape[b->ndim - 1 - i] == a->shape[a->ndim - 1 - i];
    } else {
        fits = b->ndim <= a->ndim;
        for (int i = 0; fits && i < b->ndim; i++)
            fits = b->shape[i] == a->shape[i];
    }
    if (!fits) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "%s: b %s does not broadcast (%s) onto a %s", name,
                        shp(b, s1),
                        bc == KG_BCAST_SAME   ? "same"
                        : bc == KG_BCAST_TILE ? "tile"
                                              : "spread",
                        shp(a, s2));
        return;
    }
    if (run(c))
        c->be->ops->binary(c->be, y, a, b, op, bc);
}

void kg_add(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b)
{
    binary(c, y, a, b, KG_BIN_ADD, KG_BCAST_SAME);
}

void kg_add_tile(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b)
{
    binary(c, y, a, b, KG_BIN_ADD, KG_BCAST_TILE);
}

void kg_add_spread(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b)
{
    binary(c, y, a, b, KG_BIN_ADD, KG_BCAST_SPREAD);
}

void kg_axpby(kg_ctx *c, kg_tensor *y, float alpha, const kg_tensor *a, float beta,
              const kg_tensor *b)
{
    if (!ok(c) || !check_act(c, "axpby", "y", y) || !check_act(c, "axpby", "a", a) ||
        !check_same(c, "axpby", y, a))
        return;
    if (b && (!check_act(c, "axpby", "b", b) || !check_same(c, "axpby", y, b)))
        return;
    if (run(c))
        c->be->ops->axpby(c->be, y, alpha, a, beta, b);
}

void kg_scale(kg_ctx *c, kg_tensor *y, const kg_tensor *x, float alpha)
{
    kg_axpby(c, y, alpha, x, 0.0f, NULL);
}

void kg_upsample_nearest(kg_ctx *c, kg_tensor *y, const kg_tensor *x)
{
    char s1[64], s2[64];
    if (!ok(c) || !check_act(c, "upsample", "y", y) || !check_act(c, "upsample", "x", x))
        return;
    if (x->ndim != 4 || y->ndim != 4 || y->shape[0] != x->shape[0] || y->shape[1] != x->shape[1] ||
        x->shape[2] < 1 || x->shape[3] < 1 || y->shape[2] < 1 || y->shape[3] < 1 ||
        y->data == x->data) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "upsample_nearest: x %s -> y %s", shp(x, s1),
                        shp(y, s2));
        return;
    }
    if (!run(c))
        return;
    /* exactly twice the size: the same indices (floor(o * 0.5f) = o / 2), the faster kernel */
    if (y->shape[2] == 2 * x->shape[2] && y->shape[3] == 2 * x->shape[3])
        c->be->ops->upsample_nearest2x(c->be, y, x);
    else
        c->be->ops->upsample_nearest(c->be, y, x);
}

void kg_concat(kg_ctx *c, kg_tensor *y, const kg_tensor *a, const kg_tensor *b, int dim)
{
    char s1[64], s2[64], s3[64];
    int fits;
    if (!ok(c) || !check_t(c, "concat", "y", y) || !check_t(c, "concat", "a", a) ||
        !check_t(c, "concat", "b", b))
        return;
    fits = a->ndim == y->ndim && b->ndim == y->ndim && dim >= 0 && dim < y->ndim &&
           a->dtype == y->dtype && b->dtype == y->dtype && y->data != a->data && y->data != b->data;
    for (int i = 0; fits && i < y->ndim; i++)
        fits = i == dim ? a->shape[i] + b->shape[i] == y->shape[i]
                        : a->shape[i] == y->shape[i] && b->shape[i] == y->shape[i];
    if (!fits) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "concat: a %s + b %s along dim %d -> y %s", shp(a, s1),
                        shp(b, s2), dim, shp(y, s3));
        return;
    }
    if (run(c))
        c->be->ops->concat(c->be, y, a, b, dim);
}

void kg_permute(kg_ctx *c, kg_tensor *y, const kg_tensor *x, int p0, int p1, int p2, int p3)
{
    char s1[64], s2[64];
    int perm[KG_MAX_DIMS] = {p0, p1, p2, p3};
    int seen[KG_MAX_DIMS] = {0, 0, 0, 0};
    int fits;
    if (!ok(c) || !check_t(c, "permute", "y", y) || !check_t(c, "permute", "x", x))
        return;
    fits = y->ndim == x->ndim && y->dtype == x->dtype && y->data != x->data;
    for (int i = 0; fits && i < KG_MAX_DIMS; i++) {
        if (i >= x->ndim)
            perm[i] = i;
        fits = perm[i] >= 0 && perm[i] < KG_MAX_DIMS && !seen[perm[i]] &&
               (i >= x->ndim || (perm[i] < x->ndim && y->shape[i] == x->shape[perm[i]]));
        if (fits)
            seen[perm[i]] = 1;
    }
    if (!fits) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "permute: x %s by (%d,%d,%d,%d) -> y %s", shp(x, s1),
                        p0, p1, p2, p3, shp(y, s2));
        return;
    }
    if (run(c))
        c->be->ops->permute(c->be, y, x, perm);
}

void kg_copy(kg_ctx *c, kg_tensor *y, const kg_tensor *x)
{
    char s1[64], s2[64];
    if (!ok(c) || !check_t(c, "copy", "y", y) || !check_t(c, "copy", "x", x))
        return;
    if (kg_tensor_numel(y) != kg_tensor_numel(x) ||
        (y->dtype != x->dtype && !(is_float(y->dtype) && is_float(x->dtype)))) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "copy: %s %s -> %s %s", kg_dtype_name(x->dtype),
                        shp(x, s1), kg_dtype_name(y->dtype), shp(y, s2));
        return;
    }
    if (run(c))
        c->be->ops->copy(c->be, y, x);
}

void kg_embedding(kg_ctx *c, kg_tensor *y, const kg_tensor *table, const kg_tensor *ids)
{
    char s1[64], s2[64], s3[64];
    if (!ok(c) || !check_act(c, "embedding", "y", y) ||
        !check_act(c, "embedding", "table", table) || !check_t(c, "embedding", "ids", ids))
        return;
    if (table->ndim != 2 || (ids->dtype != KG_I32 && ids->dtype != KG_I64) ||
        rows(y) != kg_tensor_numel(ids) || last(y) != table->shape[1]) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "embedding: table %s, ids %s %s -> y %s",
                        shp(table, s1), kg_dtype_name(ids->dtype), shp(ids, s2), shp(y, s3));
        return;
    }
    if (run(c))
        c->be->ops->embedding(c->be, y, table, ids);
}

void kg_l2_normalize(kg_ctx *c, kg_tensor *y, const kg_tensor *x, float eps)
{
    if (!ok(c) || !check_act(c, "l2_normalize", "y", y) || !check_act(c, "l2_normalize", "x", x) ||
        !check_same(c, "l2_normalize", y, x))
        return;
    if (run(c))
        c->be->ops->l2_normalize(c->be, y, x, eps);
}

void kg_fill(kg_ctx *c, kg_tensor *y, float value)
{
    if (!ok(c) || !check_act(c, "fill", "y", y))
        return;
    if (run(c))
        c->be->ops->fill(c->be, y, value);
}

void kg_image_to_device(kg_ctx *c, void *dst, size_t pitch, int channels, const kg_tensor *x)
{
    if (!ok(c) || !check_act(c, "image_to_device", "x", x))
        return;
    if (!c->be->ops->image_to_device) {
        kg_backend_fail(c->be, KG_ERR_UNSUPPORTED,
                        "image_to_device: the %s backend has no "
                        "device memory",
                        c->be->ops->name);
        return;
    }
    if (x->ndim != 4 || x->shape[0] != 1 || x->shape[1] != 3 || (channels != 3 && channels != 4) ||
        pitch < (size_t)x->shape[3] * (size_t)channels) {
        kg_backend_fail(c->be, KG_ERR_SHAPE,
                        "image_to_device: x [%lld, %lld, %lld, %lld], %d channels, pitch %zu: "
                        "expected [1, 3, H, W], 3 or 4 channels, pitch >= W * channels",
                        (long long)x->shape[0], (long long)x->shape[1], (long long)x->shape[2],
                        (long long)x->shape[3], channels, pitch);
        return;
    }
    if (run(c))
        c->be->ops->image_to_device(c->be, dst, pitch, channels, x);
}
