/* weights.c - two-pass weight loading: measure, one allocation, fill. */
#include "weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every tensor in the blob starts on this boundary (vector loads, and the
 * CUDA kernels' 16-byte accesses). */
#define KG_WEIGHT_ALIGN 64
#define KG_KEY_MAX 512

static size_t align_up(size_t n)
{
    return (n + KG_WEIGHT_ALIGN - 1) & ~(size_t)(KG_WEIGHT_ALIGN - 1);
}

static int is_float_dtype(kg_dtype dt)
{
    return dt == KG_F32 || dt == KG_F16 || dt == KG_BF16;
}

static int make_key(const kg_loader *L, char *key, const char *fmt, va_list ap)
{
    const char *prefix = L->prefix ? L->prefix : "";
    size_t plen = strlen(prefix);
    int n;
    if (plen >= KG_KEY_MAX)
        return 0;
    memcpy(key, prefix, plen);
    n = vsnprintf(key + plen, KG_KEY_MAX - plen, fmt, ap);
    return n >= 0 && (size_t)n < KG_KEY_MAX - plen;
}

static char *fmt_shape(int ndim, const int64_t *shape, char *buf, size_t n)
{
    kg_tensor t = kg_tensor_make(NULL, KG_F32, ndim, shape);
    return kg_shape_str(&t, buf, n);
}

static kg_status loader_fail(kg_loader *L, kg_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static kg_status loader_fail(kg_loader *L, kg_status code, const char *fmt, ...)
{
    char msg[KG_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    L->status = kg_error_set(L->err, code, "%s", msg);
    return L->status;
}

/* Reads (converting if needed) the file tensor into blob memory: the blob
 * is the process's own copy, read with pread (kg_st_read), so nothing
 * refers to the file once the load is done. */
static kg_status fill(kg_loader *L, kg_tensor *dst, const kg_st_tensor *t, const char *key)
{
    kg_backend *be = L->be;
    size_t n = (size_t)kg_tensor_numel(dst);
    float *tmp;
    kg_status s;

    if (be->host_memory && (t->dtype == dst->dtype || dst->dtype == KG_F32)) {
        /* host blob: read (and widen) straight into it, no staging copy */
        s = t->dtype == dst->dtype ? kg_st_read(L->st, t, dst->data, L->err)
                                   : kg_st_to_f32(L->st, t, dst->data, L->err);
        if (s != KG_OK)
            L->status = s;
        return s;
    }
    tmp = malloc(n ? n * sizeof *tmp : 1);
    if (!tmp)
        return loader_fail(L, KG_ERR_NOMEM, "%s: out of memory converting '%s'", kg_st_path(L->st),
                           key);
    if (t->dtype == dst->dtype) {
        /* n floats hold n elements of any 2- or 4-byte float dtype */
        s = kg_st_read(L->st, t, tmp, L->err);
        if (s == KG_OK)
            be->ops->upload(be, dst->data, tmp, t->nbytes);
        else
            L->status = s;
        free(tmp);
        return s;
    }
    s = kg_st_to_f32(L->st, t, tmp, L->err);
    if (s != KG_OK) {
        free(tmp);
        L->status = s;
        return s;
    }
    if (dst->dtype == KG_F32)
        be->ops->upload(be, dst->data, tmp, n * sizeof *tmp);
    else
        be->ops->upload_f32(be, dst, tmp);
    free(tmp);
    return KG_OK;
}

static kg_status load_v(kg_loader *L, kg_tensor *out, int weight, int ndim, const int64_t *shape,
                        const char *fmt, va_list ap)
{
    char key[KG_KEY_MAX], want[96], got[96];
    const kg_st_tensor *t;
    kg_dtype ad;
    size_t nbytes;
    int ok;

    if (!L)
        return KG_ERR_INVALID_ARG;
    if (L->status != KG_OK)
        return L->status;
    if (!out || !fmt || ndim < 0 || ndim > KG_MAX_DIMS || (ndim > 0 && !shape))
        return loader_fail(L, KG_ERR_INVALID_ARG, "kg_load: invalid argument");
    ok = make_key(L, key, fmt, ap);
    if (!ok)
        return loader_fail(L, KG_ERR_INVALID_ARG, "kg_load: tensor key longer than %d bytes",
                           KG_KEY_MAX - 1);
    fmt_shape(ndim, shape, want, sizeof want);
    t = kg_st_find(L->st, key);
    if (!t)
        return loader_fail(L, KG_ERR_WEIGHTS, "%s: missing tensor '%s' (expected shape %s)",
                           kg_st_path(L->st), key, want);
    fmt_shape(t->ndim, t->shape, got, sizeof got);
    if (!is_float_dtype(t->dtype))
        return loader_fail(L, KG_ERR_WEIGHTS,
                           "%s: tensor '%s' is %s %s, expected a float tensor (F32/F16/BF16) %s",
                           kg_st_path(L->st), key, kg_dtype_name(t->dtype), got, want);
    ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok)
        return loader_fail(L, KG_ERR_WEIGHTS, "%s: tensor '%s' has shape %s (%s), expected %s",
                           kg_st_path(L->st), key, got, kg_dtype_name(t->dtype), want);

    ad = weight ? L->be->weight_dtype : L->be->act_dtype;
    *out = kg_tensor_make(NULL, ad, ndim, shape);
    nbytes = (size_t)kg_tensor_numel(out) * kg_dtype_size(ad);
    if (L->measuring) {
        L->need += align_up(nbytes);
        return KG_OK;
    }
    if (L->used + align_up(nbytes) > L->blob_size)
        return loader_fail(L, KG_ERR_INVALID_ARG,
                           "%s: tensor '%s': the fill pass asks for more memory than the measure "
                           "pass counted (a load function must request the same tensors in both)",
                           kg_st_path(L->st), key);
    out->data = L->blob + L->used;
    L->used += align_up(nbytes);
    return fill(L, out, t, key);
}

kg_status kg_load(kg_loader *L, kg_tensor *out, int ndim, const int64_t *shape, const char *fmt,
                  ...)
{
    kg_status s;
    va_list ap;
    va_start(ap, fmt);
    s = load_v(L, out, 0, ndim, shape, fmt, ap);
    va_end(ap);
    return s;
}

kg_status kg_load_weight(kg_loader *L, kg_tensor *out, int ndim, const int64_t *shape,
                         const char *fmt, ...)
{
    kg_status s;
    va_list ap;
    va_start(ap, fmt);
    s = load_v(L, out, 1, ndim, shape, fmt, ap);
    va_end(ap);
    return s;
}

int kg_load_has(const kg_loader *L, const char *fmt, ...)
{
    char key[KG_KEY_MAX];
    va_list ap;
    int ok;
    if (!L || !fmt)
        return 0;
    va_start(ap, fmt);
    ok = make_key(L, key, fmt, ap);
    va_end(ap);
    return ok && kg_st_find(L->st, key) != NULL;
}

kg_status kg_load_component(kg_backend *be, const kg_st_file *st, const char *prefix, kg_load_fn fn,
                            void *model, void **blob, kg_error *err)
{
    kg_loader L;
    kg_status s;
    const char *what = prefix && prefix[0] ? prefix : "weights";

    if (!be || !st || !fn || !blob)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_load_component: NULL argument");
    *blob = NULL;
    memset(&L, 0, sizeof L);
    L.be = be;
    L.st = st;
    L.prefix = prefix ? prefix : "";
    L.measuring = 1;
    L.err = err;
    L.status = KG_OK;

    s = fn(model, &L);
    if (s == KG_OK)
        s = L.status;
    if (s != KG_OK)
        return s;

    if (L.need) {
        L.blob = be->ops->alloc(be, L.need);
        if (!L.blob)
            return kg_error_set(err, KG_ERR_NOMEM, "%s: cannot allocate %zu bytes for '%s'",
                                kg_st_path(st), L.need, what);
        L.blob_size = L.need;
    }
    L.measuring = 0;
    s = fn(model, &L);
    if (s == KG_OK)
        s = L.status;
    if (s == KG_OK && L.used != L.need)
        s = kg_error_set(err, KG_ERR_INVALID_ARG,
                         "%s: loading '%s' asked for %zu bytes in the fill pass, %zu when measured",
                         kg_st_path(st), what, L.used, L.need);
    if (s == KG_OK) {
        kg_status bs = be->ops->sync ? be->ops->sync(be) : be->err.code;
        if (bs != KG_OK)
            s = kg_error_set(err, bs, "%s: uploading '%s': %.300s", kg_st_path(st), what,
                             be->err.msg);
    }
    if (s != KG_OK) {
        if (L.blob)
            be->ops->free(be, L.blob);
        return s;
    }
    *blob = L.blob;
    return KG_OK;
}

void kg_weights_free(kg_backend *be, void *blob)
{
    if (be && blob)
        be->ops->free(be, blob);
}

/* ------------------------------------------------------- host weight store */

/* Each block carries its size in front, so free() keeps bytes_allocated exact;
 * the header keeps the payload on the weight alignment. */
static void *host_alloc(kg_backend *be, size_t nbytes)
{
    void *p = NULL;
    if (nbytes > SIZE_MAX - KG_WEIGHT_ALIGN ||
        posix_memalign(&p, KG_WEIGHT_ALIGN, nbytes + KG_WEIGHT_ALIGN) != 0)
        return NULL;
    *(size_t *)p = nbytes;
    be->n_allocs++;
    be->bytes_allocated += nbytes;
    return (char *)p + KG_WEIGHT_ALIGN;
}

static void host_free(kg_backend *be, void *p)
{
    char *base;
    if (!p)
        return;
    base = (char *)p - KG_WEIGHT_ALIGN;
    be->bytes_allocated -= *(size_t *)base;
    free(base);
}

static void host_copy(kg_backend *be, void *dst, const void *src, size_t nbytes)
{
    if (nbytes)
        memmove(dst, src, nbytes);
}

/* The store holds fp32 (act_dtype) and, in bf16 mode, bf16 linear and conv
 * weights: rounded to nearest even, as PyTorch's .to(torch.bfloat16). */
static void host_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    size_t n = (size_t)kg_tensor_numel(dst);
    if (dst->dtype == KG_BF16) {
        uint16_t *d = dst->data;
        for (size_t i = 0; i < n; i++)
            d[i] = kg_f32_to_bf16(src[i]);
        return;
    }
    host_copy(be, dst->data, src, n * sizeof(float));
}

static void host_download_f32(kg_backend *be, float *dst, const kg_tensor *src)
{
    size_t n = (size_t)kg_tensor_numel(src);
    if (src->dtype == KG_BF16) {
        const uint16_t *h = src->data;
        for (size_t i = 0; i < n; i++)
            dst[i] = kg_bf16_to_f32(h[i]);
        return;
    }
    host_copy(be, dst, src->data, n * sizeof(float));
}

static kg_status host_sync(kg_backend *be)
{
    return be->err.code;
}

static void host_destroy(kg_backend *be)
{
    free(be);
}

static const kg_backend_ops host_store_ops = {
    .name = "host weights",
    .alloc = host_alloc,
    .free = host_free,
    .upload = host_copy,
    .download = host_copy,
    .upload_f32 = host_upload_f32,
    .download_f32 = host_download_f32,
    .sync = host_sync,
    .destroy = host_destroy,
};

kg_status kg_weight_store_host_new(kg_backend **out, kg_dtype weight_dtype, kg_error *err)
{
    kg_backend *be;
    *out = NULL;
    if (weight_dtype != KG_F32 && weight_dtype != KG_BF16)
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "host weight store: weights in %s, expected F32 or BF16",
                            kg_dtype_name(weight_dtype));
    be = calloc(1, sizeof *be);
    if (!be)
        return kg_error_set(err, KG_ERR_NOMEM, "no memory for a weight store");
    be->ops = &host_store_ops;
    be->act_dtype = KG_F32;
    be->weight_dtype = weight_dtype;
    be->host_memory = 1;
    *out = be;
    return KG_OK;
}
