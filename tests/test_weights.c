/* test_weights.c - two-pass component loading (kg_load_component) on a
 * generated file: dtype conversion, every tensor copied into the blob (no
 * pointer into the file, so the file may go once loaded), the measure pass,
 * one allocation per component, and the error messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "weights.h"

/* ---- a generated file ------------------------------------------------ */

#define T(name, dt, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]},"

static const uint16_t w_f16[12] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x8001,
                                   0x03ff, 0x0400, 0x3555, 0xbc01, 0x0000, 0x8000};
static const uint16_t b_bf16[4] = {0x3f80, 0xc040, 0x0001, 0x4049};
static const float lnw[4] = {1.0f, 2.0f, 3.0f, 4.0f};
static const float lnb[3] = {0.1f, -0.2f, 1e-30f};
static const float layer0[4] = {1, 2, 3, 4}, layer1[4] = {5, 6, 7, 8};
static const float alt[1] = {9.5f};

/* Data offsets: F32 tensors at multiples of 4 except enc.ln.bias (offset
 * 98) so the loader must copy it; the data section starts 8-aligned. */
static unsigned char *make_file(size_t *len, size_t *data_off)
{
    char header[2048];
    size_t hlen;
    unsigned char *buf, *d;
    int64_t ids[2] = {3, 4};

    snprintf(header, sizeof header,
             "{" T("enc.ln.weight", "F32", "[4]", "0", "16")
                 T("enc.layers.0.w", "F32", "[2,2]", "16", "32") T("enc.layers.1.w", "F32", "[2,2]",
                                                                   "32", "48")
                     T("enc.w", "F16", "[3,4]", "48", "72") T("enc.b", "BF16", "[4]", "72", "80")
                         T("enc.ids", "I64", "[2]", "80", "96")
                             T("enc.ln.bias", "F32", "[3]", "98", "110")
                                 T("enc.alt", "F32", "[1]", "112",
                                   "116") "\"__metadata__\":{\"format\":\"test\"}}");
    hlen = strlen(header);
    while ((8 + hlen) % 8)
        header[hlen++] = ' ';
    header[hlen] = '\0';
    *data_off = 8 + hlen;
    *len = 8 + hlen + 116;
    buf = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    d = buf + 8 + hlen;
    memcpy(d + 0, lnw, 16);
    memcpy(d + 16, layer0, 16);
    memcpy(d + 32, layer1, 16);
    for (int i = 0; i < 12; i++)
        d[48 + 2 * i] = (unsigned char)w_f16[i], d[49 + 2 * i] = (unsigned char)(w_f16[i] >> 8);
    for (int i = 0; i < 4; i++)
        d[72 + 2 * i] = (unsigned char)b_bf16[i], d[73 + 2 * i] = (unsigned char)(b_bf16[i] >> 8);
    memcpy(d + 80, ids, 16);
    memcpy(d + 98, lnb, 12);
    memcpy(d + 112, alt, 4);
    return buf;
}

/* ---- a fake backend: host memory, any float dtype, counts uploads ----- */

typedef struct fake {
    size_t uploads;
} fake;

/* A 64-byte header in front of each block remembers its size. */
static void *fake_alloc(kg_backend *be, size_t n)
{
    char *p = aligned_alloc(64, 64 + (n + 63) / 64 * 64);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    be->n_allocs++;
    be->bytes_allocated += n;
    memset(p + 64, 0xff, n); /* stale bytes must not survive the fill */
    return p + 64;
}

static void fake_free(kg_backend *be, void *p)
{
    size_t n;
    if (!p)
        return;
    memcpy(&n, (char *)p - 64, sizeof n);
    be->bytes_allocated -= n;
    free((char *)p - 64);
}

static void fake_upload(kg_backend *be, void *dst, const void *src, size_t n)
{
    ((fake *)be->impl)->uploads++;
    memcpy(dst, src, n);
}

static void fake_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    int64_t n = kg_tensor_numel(dst);
    uint16_t *h = dst->data;
    ((fake *)be->impl)->uploads++;
    for (int64_t i = 0; i < n; i++)
        h[i] = dst->dtype == KG_F16 ? kg_f32_to_f16(src[i]) : kg_f32_to_bf16(src[i]);
}

static kg_status fake_sync(kg_backend *be)
{
    return be->err.code;
}

static const kg_backend_ops fake_ops = {
    .name = "fake",
    .alloc = fake_alloc,
    .free = fake_free,
    .upload = fake_upload,
    .upload_f32 = fake_upload_f32,
    .sync = fake_sync,
};

static kg_backend fake_backend(fake *impl, kg_dtype act, int host)
{
    kg_backend be;
    memset(&be, 0, sizeof be);
    memset(impl, 0, sizeof *impl);
    be.ops = &fake_ops;
    be.impl = impl;
    be.act_dtype = act;
    be.host_memory = host;
    return be;
}

/* ---- a toy component ----------------------------------------------- */

typedef struct toy {
    kg_tensor w;         /* [3, 4]  w (F16 in the file) */
    kg_tensor b;         /* [4]     b (BF16) */
    kg_tensor ln_w;      /* [4]     ln.weight (F32, aligned) */
    kg_tensor ln_b;      /* [3]     ln.bias (F32, unaligned) */
    kg_tensor layers[2]; /* [2, 2]  layers.%d.w */
    kg_tensor alt;       /* [1]     alt, only when present */
    int has_alt;
    int mode; /* which broken request to make, 0 = none */
} toy;

enum { GOOD, MISSING, WRONG_SHAPE, WRONG_RANK, WRONG_DTYPE, IGNORES_ERROR, EXTRA_IN_FILL };

static kg_status toy_load(void *model, kg_loader *L)
{
    toy *m = model;
    kg_status s;
    kg_tensor tmp;

    switch (m->mode) {
    case MISSING: return kg_load(L, &tmp, 2, (int64_t[]){2, 3}, "missing.weight");
    case WRONG_SHAPE: return kg_load(L, &tmp, 2, (int64_t[]){4, 3}, "w");
    case WRONG_RANK: return kg_load(L, &tmp, 3, (int64_t[]){1, 3, 4}, "w");
    case WRONG_DTYPE: return kg_load(L, &tmp, 1, (int64_t[]){2}, "ids");
    case IGNORES_ERROR:
        kg_load(L, &tmp, 1, (int64_t[]){7}, "b");
        kg_load(L, &tmp, 1, (int64_t[]){4}, "b");
        return KG_OK;
    case EXTRA_IN_FILL:
        if (!L->measuring && (s = kg_load(L, &tmp, 1, (int64_t[]){3}, "ln.bias")) != KG_OK)
            return s;
        break;
    default: break;
    }
    if ((s = kg_load(L, &m->w, 2, (int64_t[]){3, 4}, "w")) != KG_OK ||
        (s = kg_load(L, &m->b, 1, (int64_t[]){4}, "b")) != KG_OK ||
        (s = kg_load(L, &m->ln_w, 1, (int64_t[]){4}, "ln.weight")) != KG_OK ||
        (s = kg_load(L, &m->ln_b, 1, (int64_t[]){3}, "ln.bias")) != KG_OK)
        return s;
    for (int i = 0; i < 2; i++)
        if ((s = kg_load(L, &m->layers[i], 2, (int64_t[]){2, 2}, "layers.%d.w", i)) != KG_OK)
            return s;
    m->has_alt = kg_load_has(L, "alt");
    if (m->has_alt && (s = kg_load(L, &m->alt, 1, (int64_t[]){1}, "alt")) != KG_OK)
        return s;
    return KG_OK;
}

static int same_floats(const kg_tensor *t, const float *want, size_t n)
{
    return t->dtype == KG_F32 && t->data && memcmp(t->data, want, n * sizeof *want) == 0;
}

static int inside(const void *p, const void *base, size_t len)
{
    return (const char *)p >= (const char *)base && (const char *)p < (const char *)base + len;
}

static void test_cpu(const kg_st_file *st, const unsigned char *file, size_t file_len)
{
    kg_backend *be = kgt_cpu_backend();
    kg_error err = {0};
    toy m;
    void *blob = NULL;
    float w_ref[12], b_ref[4];
    size_t allocs0 = be->n_allocs, bytes0 = be->bytes_allocated;
    kg_loader L;
    kg_status s;

    for (int i = 0; i < 12; i++)
        w_ref[i] = kg_f16_to_f32(w_f16[i]);
    for (int i = 0; i < 4; i++)
        b_ref[i] = kg_bf16_to_f32(b_bf16[i]);

    /* the measure pass alone: validates, counts, allocates nothing */
    memset(&m, 0, sizeof m);
    memset(&L, 0, sizeof L);
    L.be = be, L.st = st, L.prefix = "enc.", L.measuring = 1, L.err = &err;
    s = toy_load(&m, &L);
    /* all seven copied, each on a 64-byte boundary */
    kgt_check(s == KG_OK && L.need == 7 * 64 && be->n_allocs == allocs0 && m.w.data == NULL &&
                  m.w.dtype == KG_F32 && m.w.shape[1] == 4,
              "measure pass: need %zu bytes (want 448), %zu allocations (want 0)", L.need,
              be->n_allocs - allocs0);

    memset(&m, 0, sizeof m);
    s = kg_load_component(be, st, "enc.", toy_load, &m, &blob, &err);
    kgt_check(s == KG_OK, "kg_load_component on the CPU backend: %s", err.msg);
    kgt_check(be->n_allocs - allocs0 == 1 && be->bytes_allocated - bytes0 == 448 && blob,
              "one allocation per component (%zu), %zu bytes (want 448)", be->n_allocs - allocs0,
              be->bytes_allocated - bytes0);
    kgt_check(same_floats(&m.w, w_ref, 12) && m.w.ndim == 2 && m.w.shape[0] == 3,
              "F16 -> F32 exact, incl. subnormals and 65504");
    kgt_check(((float *)m.w.data)[3] == 65504.0f &&
                  ((float *)m.w.data)[4] == 5.9604644775390625e-8f,
              "F16 values 65504 and 2^-24 survive");
    kgt_check(same_floats(&m.b, b_ref, 4) && ((float *)m.b.data)[1] == -3.0f, "BF16 -> F32 exact");
    kgt_check(same_floats(&m.ln_b, lnb, 3) && inside(m.ln_b.data, blob, 448) &&
                  ((uintptr_t)m.ln_b.data % 64) == 0,
              "unaligned F32 copied into the blob, 64-byte aligned");
    kgt_check(same_floats(&m.ln_w, lnw, 4) && inside(m.ln_w.data, blob, 448) &&
                  !inside(m.ln_w.data, file, file_len),
              "aligned F32 copied into the blob too, not used from the file");
    kgt_check(same_floats(&m.layers[0], layer0, 4) && same_floats(&m.layers[1], layer1, 4),
              "formatted keys layers.%%d.w");
    kgt_check(m.has_alt && same_floats(&m.alt, alt, 1), "kg_load_has finds an optional key");
    kg_weights_free(be, blob);
    kgt_check(be->bytes_allocated == bytes0, "kg_weights_free releases the blob");

    {
        static const struct {
            int mode;
            const char *msg;
        } cases[] = {
            {MISSING,
             "mem.safetensors: missing tensor 'enc.missing.weight' (expected shape [2, 3])"},
            {WRONG_SHAPE,
             "mem.safetensors: tensor 'enc.w' has shape [3, 4] (F16), expected [4, 3]"},
            {WRONG_RANK, "tensor 'enc.w' has shape [3, 4] (F16), expected [1, 3, 4]"},
            {WRONG_DTYPE,
             "tensor 'enc.ids' is I64 [2], expected a float tensor (F32/F16/BF16) [2]"},
            {IGNORES_ERROR, "tensor 'enc.b' has shape [4] (BF16), expected [7]"},
            {EXTRA_IN_FILL, "the fill pass asks for more memory than the measure pass counted"},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            size_t a0 = be->n_allocs;
            memset(&m, 0, sizeof m);
            m.mode = cases[i].mode;
            blob = (void *)1;
            err.msg[0] = '\0';
            s = kg_load_component(be, st, "enc.", toy_load, &m, &blob, &err);
            kgt_check(s == (cases[i].mode == EXTRA_IN_FILL ? KG_ERR_INVALID_ARG : KG_ERR_WEIGHTS) &&
                          strstr(err.msg, cases[i].msg) && blob == NULL &&
                          be->bytes_allocated == bytes0 &&
                          be->n_allocs - a0 == (cases[i].mode == EXTRA_IN_FILL ? 1u : 0u),
                      "error case %zu -> %s \"%s\"", i, kg_status_name(s), err.msg);
        }
    }
    kg_backend_free(be);
}

static void test_fake_f16(const kg_st_file *st, const unsigned char *file, size_t file_len)
{
    fake impl;
    kg_backend be = fake_backend(&impl, KG_F16, 1);
    kg_error err = {0};
    toy m;
    void *blob = NULL;
    kg_status s;
    int ok = 1;

    memset(&m, 0, sizeof m);
    s = kg_load_component(&be, st, "enc.", toy_load, &m, &blob, &err);
    /* F16 w is read straight into the blob; the five F32 and one BF16 tensors
     * are converted through upload_f32 */
    kgt_check(s == KG_OK && be.n_allocs == 1 && be.bytes_allocated == 7 * 64 && impl.uploads == 6,
              "F16 host backend: %s; %zu allocation, %zu bytes (want 448), %zu uploads (want 6)",
              err.msg, be.n_allocs, be.bytes_allocated, impl.uploads);
    kgt_check(!inside(m.w.data, file, file_len) && m.w.dtype == KG_F16 &&
                  !memcmp(m.w.data, w_f16, sizeof w_f16),
              "F16 tensor copied into the blob on an F16 host backend");
    for (int i = 0; i < 4 && m.ln_w.data; i++)
        ok &= ((uint16_t *)m.ln_w.data)[i] == kg_f32_to_f16(lnw[i]);
    for (int i = 0; i < 4 && m.b.data; i++)
        ok &= ((uint16_t *)m.b.data)[i] == kg_f32_to_f16(kg_bf16_to_f32(b_bf16[i]));
    kgt_check(ok && m.ln_w.dtype == KG_F16 && m.b.dtype == KG_F16 && m.ln_w.data && m.b.data,
              "F32 and BF16 converted to F16 through upload_f32");
    kg_weights_free(&be, blob);
}

static void test_fake_device(const kg_st_file *st)
{
    fake impl;
    kg_backend be = fake_backend(&impl, KG_F32, 0);
    kg_error err = {0};
    toy m;
    void *blob = NULL;
    kg_status s;

    memset(&m, 0, sizeof m);
    s = kg_load_component(&be, st, "enc.", toy_load, &m, &blob, &err);
    /* device memory: nothing aliases the mapping, all 7 tensors are copied */
    kgt_check(s == KG_OK && be.n_allocs == 1 && be.bytes_allocated == 7 * 64 && impl.uploads == 7,
              "device-like backend: %s; %zu allocation, %zu bytes (want 448), %zu uploads (want 7)",
              err.msg, be.n_allocs, be.bytes_allocated, impl.uploads);
    kgt_check(same_floats(&m.ln_w, lnw, 4) && inside(m.ln_w.data, blob, 448) &&
                  same_floats(&m.alt, alt, 1),
              "aligned F32 copied on a device-like backend");
    {
        float w_ref[12];
        for (int i = 0; i < 12; i++)
            w_ref[i] = kg_f16_to_f32(w_f16[i]);
        kgt_check(same_floats(&m.w, w_ref, 12) && inside(m.w.data, blob, 448),
                  "F16 -> F32 staged on the host, then uploaded");
    }
    kg_weights_free(&be, blob);

    /* a sticky backend error surfaces from kg_load_component */
    impl.uploads = 0;
    be.err.code = KG_ERR_DEVICE;
    snprintf(be.err.msg, sizeof be.err.msg, "fake copy failed");
    memset(&m, 0, sizeof m);
    s = kg_load_component(&be, st, "enc.", toy_load, &m, &blob, &err);
    kgt_check(s == KG_ERR_DEVICE && strstr(err.msg, "uploading 'enc.': fake copy failed") &&
                  blob == NULL && be.bytes_allocated == 0,
              "backend failure -> %s \"%s\"", kg_status_name(s), err.msg);
}

static kg_status only_ln_w(void *model, kg_loader *L)
{
    return kg_load(L, model, 1, (int64_t[]){4}, "enc.ln.weight");
}

int main(void)
{
    size_t len, data_off;
    unsigned char *file = make_file(&len, &data_off);
    kg_st_file *st = NULL;
    kg_error err = {0};

    if (!kgt_check(kg_st_open_memory(&st, file, len, "mem.safetensors", &err) == KG_OK,
                   "generated file opens: %s", err.msg))
        return kgt_finish();
    test_cpu(st, file, len);
    test_fake_f16(st, file, len);
    test_fake_device(st);
    {
        kg_backend *be = kgt_cpu_backend();
        kg_tensor t;
        void *blob = (void *)1;
        size_t a0 = be->n_allocs;
        kg_status s = kg_load_component(be, st, NULL, only_ln_w, &t, &blob, &err);
        kgt_check(s == KG_OK && blob != NULL && be->n_allocs == a0 + 1 && same_floats(&t, lnw, 4) &&
                      !inside(t.data, file, len),
                  "an aligned F32 tensor already in the backend's dtype is copied too (one blob)");
        if (s == KG_OK)
            kg_weights_free(be, blob);
        kg_backend_free(be);
    }
    kg_st_close(st);
    free(file);
    return kgt_finish();
}
