/* testutil.c - see testutil.h. Tests may exit(); library code may not. */
#include "testutil.h"

#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_passed;
static int n_failed;

int kgt_check(int cond, const char *fmt, ...)
{
    va_list ap;
    printf("%s ", cond ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (cond)
        n_passed++;
    else
        n_failed++;
    return cond;
}

int kgt_allclose(const float *got, const double *ref, size_t n, double atol, double rtol,
                 double *max_abs, double *max_rel, size_t *worst)
{
    int pass = 1;
    double worst_excess = -1.0;
    *max_abs = 0.0;
    *max_rel = 0.0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i];
        double d, excess;
        if (!isfinite(g) || !isfinite(r)) {
            if (pass || isfinite(*max_abs)) {
                *worst = i;
                *max_abs = NAN;
            }
            pass = 0;
            continue;
        }
        d = fabs(g - r);
        if (d > *max_abs && isfinite(*max_abs))
            *max_abs = d;
        if (fabs(r) > 0 && d / fabs(r) > *max_rel)
            *max_rel = d / fabs(r);
        excess = d - (atol + rtol * fabs(r));
        if (excess > 0)
            pass = 0;
        if (excess > worst_excess && isfinite(*max_abs)) {
            worst_excess = excess;
            *worst = i;
        }
    }
    return pass;
}

int kgt_compare(const char *name, const float *got, const double *ref, size_t n, double atol,
                double rtol)
{
    double ma, mr;
    size_t w;
    int pass = kgt_allclose(got, ref, n, atol, rtol, &ma, &mr, &w);
    return kgt_check(pass,
                     "%s: n=%zu max_abs=%.3g max_rel=%.3g (tol atol %.0e + rtol %.0e*|ref|; worst "
                     "[%zu] got %.9g ref %.9g)",
                     name, n, ma, mr, atol, rtol, w, n ? (double)got[w] : 0.0, n ? ref[w] : 0.0);
}

const char *kgt_golden_path(const char *rel)
{
    static char path[4096];
    const char *dir = getenv("KG_GOLDEN");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "../shared/golden", rel);
    return path;
}

kg_st_file *kgt_golden_open(const char *rel)
{
    kg_st_file *f = NULL;
    kg_error err = {0};
    const char *path = kgt_golden_path(rel);
    if (kg_st_open(&f, path, &err) != KG_OK) {
        kgt_check(0, "open golden %s: %s", path, err.msg);
        return NULL;
    }
    return f;
}

kg_st_file *kgt_tiny_model(void)
{
    const char *path = getenv("KG_TINY_MODEL");
    kg_st_file *st = NULL;
    kg_error err = {0};
    if (!path || !*path) {
        kgt_check(0, "KG_TINY_MODEL is set (path of the converted tiny model)");
        return NULL;
    }
    if (kg_st_open(&st, path, &err) != KG_OK) {
        kgt_check(0, "open %s: %s", path, err.msg);
        return NULL;
    }
    return st;
}

kg_json *kgt_meta_json(const kg_st_file *f, const char *key)
{
    const char *s = kg_st_metadata(f, key);
    kg_json *j = NULL;
    kg_error err = {0};
    if (!kgt_check(s != NULL, "%s: metadata %s present", kg_st_path(f), key))
        return NULL;
    if (!kgt_check(kg_json_parse(&j, s, strlen(s), key, &err) == KG_OK, "parse %s: %s", key,
                   err.msg))
        return NULL;
    return j;
}

static double elem(const kg_st_tensor *t, size_t i)
{
    const unsigned char *p = (const unsigned char *)t->data + i * kg_dtype_size(t->dtype);
    switch (t->dtype) {
    case KG_F32: {
        float v;
        memcpy(&v, p, 4);
        return v;
    }
    case KG_F64: {
        double v;
        memcpy(&v, p, 8);
        return v;
    }
    case KG_F16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return kg_f16_to_f32(v);
    }
    case KG_BF16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return kg_bf16_to_f32(v);
    }
    case KG_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case KG_I64: {
        int64_t v;
        memcpy(&v, p, 8);
        return (double)v;
    }
    case KG_U8: return *p;
    }
    return NAN;
}

double *kgt_read_f64(const kg_st_file *f, const char *name, size_t *n)
{
    const kg_st_tensor *t = f ? kg_st_find(f, name) : NULL;
    double *out;
    size_t cnt;
    if (!t) {
        kgt_check(0, "golden tensor %s present", name);
        return NULL;
    }
    cnt = t->nbytes / kg_dtype_size(t->dtype);
    out = malloc((cnt ? cnt : 1) * sizeof *out);
    for (size_t i = 0; i < cnt; i++)
        out[i] = elem(t, i);
    if (n)
        *n = cnt;
    return out;
}

float *kgt_read_f32(const kg_st_file *f, const char *name, size_t *n)
{
    size_t cnt = 0;
    double *d = kgt_read_f64(f, name, &cnt);
    float *out;
    if (!d)
        return NULL;
    out = malloc((cnt ? cnt : 1) * sizeof *out);
    for (size_t i = 0; i < cnt; i++)
        out[i] = (float)d[i];
    free(d);
    if (n)
        *n = cnt;
    return out;
}

static void tap_cb(void *user, const char *name, const kg_tensor *t)
{
    kgt_taps *taps = user;
    kgt_tap *tp;
    if (taps->count == taps->cap) {
        taps->cap = taps->cap ? 2 * taps->cap : 64;
        taps->items = realloc(taps->items, taps->cap * sizeof *taps->items);
    }
    tp = &taps->items[taps->count++];
    memset(tp, 0, sizeof *tp);
    snprintf(tp->name, sizeof tp->name, "%s", name);
    tp->ndim = t->ndim;
    memcpy(tp->shape, t->shape, sizeof tp->shape);
    tp->n = (size_t)kg_tensor_numel(t);
    tp->data = malloc((tp->n ? tp->n : 1) * sizeof(float));
    taps->ctx->be->ops->download_f32(taps->ctx->be, tp->data, t);
}

void kgt_taps_attach(kgt_taps *t, kg_ctx *c)
{
    memset(t, 0, sizeof *t);
    t->ctx = c;
    c->tap = tap_cb;
    c->tap_user = t;
}

void kgt_taps_free(kgt_taps *t)
{
    for (size_t i = 0; i < t->count; i++)
        free(t->items[i].data);
    free(t->items);
    if (t->ctx && t->ctx->tap_user == t) {
        t->ctx->tap = NULL;
        t->ctx->tap_user = NULL;
    }
    memset(t, 0, sizeof *t);
}

const kgt_tap *kgt_taps_find(const kgt_taps *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (!strcmp(t->items[i].name, name))
            return &t->items[i];
    return NULL;
}

static int starts(const char *s, const char *p)
{
    return p && *p && !strncmp(s, p, strlen(p));
}

int kgt_taps_compare(const kgt_taps *t, const kg_st_file *golden, const char *prefix64,
                     const char *prefix32, double atol, double rtol, kgt_name_map map)
{
    int fails = 0;
    const char *first = NULL;
    size_t nkeys = kg_st_count(golden);
    char *used = calloc(nkeys ? nkeys : 1, 1);

    for (size_t i = 0; i < t->count; i++) {
        const kgt_tap *tp = &t->items[i];
        char mapped[256], key[400];
        const char *gname = tp->name;
        const kg_st_tensor *g = NULL;
        double *ref;
        size_t n = 0;
        if (map) {
            gname = map(tp->name, mapped, sizeof mapped);
            if (!gname)
                continue;
        }
        if (prefix64) {
            snprintf(key, sizeof key, "%s%s", prefix64, gname);
            g = kg_st_find(golden, key);
        }
        if (!g && prefix32) {
            snprintf(key, sizeof key, "%s%s", prefix32, gname);
            g = kg_st_find(golden, key);
        }
        if (!g) {
            printf("note: tap %s has no golden counterpart\n", tp->name);
            continue;
        }
        for (size_t k = 0; k < nkeys; k++)
            if (kg_st_at(golden, k) == g)
                used[k] = 1;
        ref = kgt_read_f64(golden, key, &n);
        if (!ref || n != tp->n) {
            kgt_check(0, "tap %s: %zu elements, golden %s has %zu", tp->name, tp->n, key, n);
            fails++;
            if (!first)
                first = tp->name;
            free(ref);
            continue;
        }
        if (!kgt_compare(tp->name, tp->data, ref, n, atol, rtol)) {
            fails++;
            if (!first)
                first = tp->name;
        }
        free(ref);
    }
    /* also mark the float32 twins of used float64 keys */
    for (size_t k = 0; k < nkeys; k++) {
        const char *name = kg_st_at(golden, k)->name;
        int under64 = starts(name, prefix64);
        int under32 = starts(name, prefix32) && !under64;
        char twin[400];
        if (used[k] || (!under64 && !under32))
            continue;
        if (under32 && prefix64) {
            const kg_st_tensor *g64;
            snprintf(twin, sizeof twin, "%s%s", prefix64, name + strlen(prefix32));
            g64 = kg_st_find(golden, twin);
            if (g64) {
                int seen = 0;
                for (size_t j = 0; j < nkeys; j++)
                    if (kg_st_at(golden, j) == g64 && used[j])
                        seen = 1;
                if (seen)
                    continue;
            }
        }
        kgt_check(0, "golden %s was never tapped", name);
        fails++;
    }
    if (first)
        printf("first divergence: %s\n", first);
    free(used);
    return fails;
}

int kgt_finish(void)
{
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}

kg_backend *kgt_cpu_backend(void)
{
    kg_backend *be = NULL;
    kg_error err = {0};
    if (kg_backend_cpu_new(&be, 0, &err) != KG_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        exit(1);
    }
    return be;
}

void kgt_ctx(kg_ctx *c, kg_backend *be, size_t arena_bytes)
{
    kg_error err = {0};
    kg_ctx_init(c, be);
    if (kg_ctx_reserve(c, arena_bytes, &err) != KG_OK) {
        fprintf(stderr, "arena: %s\n", err.msg);
        exit(1);
    }
}

void kgt_read_str(const kg_st_file *g, const char *key, char *dst, size_t cap)
{
    const kg_st_tensor *t = kg_st_find(g, key);
    size_t n = t ? t->nbytes : 0;
    if (n >= cap)
        n = cap - 1;
    if (t)
        memcpy(dst, t->data, n);
    dst[n] = '\0';
}

int kgt_e2e_case_load(kgt_e2e_case *c, const char *name)
{
    char rel[128];
    kg_json *j = NULL;
    const char *meta;
    kg_error err = {0};
    size_t nn = 0;
    float *noise;

    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(rel, sizeof rel, "kosmosg/e2e_%s.safetensors", name);
    c->g = kgt_golden_open(rel);
    if (!c->g)
        return 0;
    meta = kg_st_metadata(c->g, "case");
    if (!meta || kg_json_parse(&j, meta, strlen(meta), "case", &err) != KG_OK)
        return kgt_check(0, "%s: metadata case parses", name);
    snprintf(c->scheduler, sizeof c->scheduler, "%s",
             kg_json_string(kg_json_get(j, "scheduler"))
                 ? kg_json_string(kg_json_get(j, "scheduler"))
                 : "");
    c->n = (int)kg_json_number(kg_json_get(j, "n"), 1);
    c->steps = (int)kg_json_number(kg_json_get(j, "steps"), 0);
    c->size = (int)kg_json_number(kg_json_get(j, "size"), 512);
    c->guidance = kg_json_number(kg_json_get(j, "guidance"), 6.0);
    c->n_images = (int)kg_json_count(kg_json_get(j, "images"));
    if (c->n_images > (int)(sizeof c->images / sizeof *c->images)) {
        kg_json_free(j);
        return kgt_check(0, "%s: %d reference images, at most 4 here", name, c->n_images);
    }
    c->cfg = c->guidance > 1.0;
    kg_json_free(j);
    kgt_read_str(c->g, "in.prompt.utf8", c->prompt, sizeof c->prompt);
    kgt_read_str(c->g, "in.negative_prompt.utf8", c->negative, sizeof c->negative);
    for (int i = 0; i < c->n_images; i++) {
        char key[64];
        const kg_st_tensor *t;
        snprintf(key, sizeof key, "in.image%d.rgb", i);
        t = kg_st_find(c->g, key);
        if (!t || t->ndim != 3)
            return kgt_check(0, "%s: %s present", name, key);
        c->images[i] =
            (kg_image){KG_PIX_RGB, t->shape[1], t->shape[0], (size_t)t->shape[1] * 3, t->data};
    }
    noise = kgt_read_f32(c->g, "in.noise", &nn);
    if (!noise)
        return 0;
    /* without CFG the official run drew 2n latents and the conditional half is the second */
    c->noise = malloc(nn * sizeof(float));
    memcpy(c->noise, noise + (c->cfg ? 0 : nn / 2), (c->cfg ? nn : nn / 2) * sizeof(float));
    free(noise);
    return 1;
}

void kgt_e2e_case_free(kgt_e2e_case *c)
{
    free(c->noise);
    kg_st_close(c->g);
}

void kgt_e2e_case_params(const kgt_e2e_case *c, kg_params *p)
{
    kg_params_init(p);
    p->prompt = c->prompt;
    p->negative_prompt = c->negative;
    p->images = c->images;
    p->n_images = c->n_images;
    p->steps = c->steps;
    p->guidance_scale = (float)c->guidance;
    p->seed = 1234;
    p->num_images = c->n;
    kg_scheduler_type_from_name(c->scheduler, &p->scheduler, NULL);
    p->width = p->height = c->size;
    p->init_latents = c->noise;
}

float *kgt_download(kg_ctx *c, const kg_tensor *t)
{
    float *p = malloc((size_t)kg_tensor_numel(t) * sizeof *p);
    kg_download_f32(c, p, t);
    return p;
}

int kgt_ctx_ok(kg_ctx *c, const char *what)
{
    kg_error err = {0};
    if (kg_ctx_status(c, &err) == KG_OK)
        return 1;
    kgt_check(0, "%s: unexpected error %s: %s", what, kg_status_name(err.code), err.msg);
    kg_ctx_clear_error(c);
    return 0;
}
