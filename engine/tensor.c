/* tensor.c - tensor header helpers and half/bfloat16 conversion. */
#include "tensor.h"

#include <stdio.h>
#include <string.h>

size_t kg_dtype_size(kg_dtype dt)
{
    switch (dt) {
    case KG_F32: return 4;
    case KG_F16: return 2;
    case KG_BF16: return 2;
    case KG_I32: return 4;
    case KG_I64: return 8;
    case KG_U8: return 1;
    case KG_F64: return 8;
    }
    return 0;
}

const char *kg_dtype_name(kg_dtype dt)
{
    switch (dt) {
    case KG_F32: return "F32";
    case KG_F16: return "F16";
    case KG_BF16: return "BF16";
    case KG_I32: return "I32";
    case KG_I64: return "I64";
    case KG_U8: return "U8";
    case KG_F64: return "F64";
    }
    return "?";
}

int64_t kg_tensor_numel(const kg_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t kg_tensor_nbytes(const kg_tensor *t)
{
    return (size_t)kg_tensor_numel(t) * kg_dtype_size(t->dtype);
}

kg_tensor kg_tensor_make(void *data, kg_dtype dt, int ndim, const int64_t *shape)
{
    kg_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = ndim < 0 ? 0 : (ndim > KG_MAX_DIMS ? KG_MAX_DIMS : ndim);
    for (int i = 0; i < KG_MAX_DIMS; i++)
        t.shape[i] = i < t.ndim ? shape[i] : 1;
    t.data = data;
    return t;
}

kg_tensor kg_tensor_2d(void *data, kg_dtype dt, int64_t d0, int64_t d1)
{
    return kg_tensor_make(data, dt, 2, (int64_t[]){d0, d1});
}

kg_tensor kg_tensor_reshape(const kg_tensor *t, int ndim, const int64_t *shape)
{
    kg_tensor r = kg_tensor_make(t->data, t->dtype, ndim, shape);
    if (kg_tensor_numel(&r) != kg_tensor_numel(t))
        r.data = NULL;
    return r;
}

kg_tensor kg_tensor_rows(const kg_tensor *t, int64_t first, int64_t count)
{
    kg_tensor r = *t;
    int64_t row = t->ndim > 0 ? kg_tensor_numel(t) / t->shape[0] : 1;
    if (t->ndim < 1 || first < 0 || count < 0 || first + count > t->shape[0]) {
        r.data = NULL;
        return r;
    }
    r.shape[0] = count;
    r.data = t->data ? (char *)t->data + (size_t)(first * row) * kg_dtype_size(t->dtype) : NULL;
    return r;
}

int kg_tensor_same_shape(const kg_tensor *a, const kg_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

char *kg_shape_str(const kg_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    if (n == 0)
        return buf;
    buf[0] = '\0';
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (off < n)
        snprintf(buf + off, n - off, "]");
    return buf;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float kg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        /* subnormal: value = man * 2^-24, exact in float */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t kg_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        /* result is subnormal or zero: round a * 2^24 to an integer, half-even */
        float v = bits_f32(a) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float r = v - (float)m;
        if (r > 0.5f || (r == 0.5f && (m & 1u)))
            m++;
        return (uint16_t)(sign | m);
    }
    {
        uint32_t mant = a & 0x7fffffu;
        uint32_t exp = (a >> 23) - 112;
        uint32_t h = (exp << 10) | (mant >> 13);
        uint32_t rest = mant & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
            h++; /* carry into the exponent is the correct rounding */
        return (uint16_t)(sign | h);
    }
}

float kg_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t kg_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
