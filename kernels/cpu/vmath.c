/* vmath.c - vectorised exp and erf for the softmax, sigmoid and GELU loops.
 *
 * glibc's expf/erff are exact but scalar; softmax over a 4096-key attention
 * row spends most of its time there. The AVX2 path uses the Cephes expf
 * polynomial (about 1 ulp) and, for erf, Abramowitz & Stegun 7.1.26 (absolute
 * error below 1.5e-7, the same formula PyTorch's vectorised CPU erf uses).
 * It is picked at run time (cpu->isa: cpuid, capped by KOSMOSG_CPU_ISA), so
 * the build needs no -march flag; other CPUs take the scalar libm loop. */
#include "cpu_kernels.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KG_VMATH_X86 1
#endif

#ifdef KG_VMATH_X86

/* exp(x) for 8 lanes; lanes below the float range (including -inf) give 0,
 * NaN stays NaN */
__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.72283f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 x0 = x, n, r, p;
    __m256i e, e1, e2;
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n ln2, with ln2 split in two so r stays exact */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* n in [-126, 128]: 2^n built in the exponent field; 2^128 is split */
    e = _mm256_cvtps_epi32(n);
    e1 = _mm256_srai_epi32(e, 1);
    e2 = _mm256_sub_epi32(e, e1);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(
                             _mm256_slli_epi32(_mm256_add_epi32(e1, _mm256_set1_epi32(127)), 23)));
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(
                             _mm256_slli_epi32(_mm256_add_epi32(e2, _mm256_set1_epi32(127)), 23)));
    return _mm256_blendv_ps(_mm256_andnot_ps(under, p), x0, nan);
}

/* 0.5 x (1 + erf(x / sqrt 2)) */
__attribute__((target("avx2,fma"))) static inline __m256 gelu8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    __m256 s = _mm256_and_ps(sign, z), a = _mm256_xor_ps(s, z);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
    __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(1.061405429f), t, _mm256_set1_ps(-1.453152027f));
    __m256 e;
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(1.421413741f));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(-0.284496736f));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.254829592f));
    e = exp8(_mm256_xor_ps(sign, _mm256_mul_ps(a, a)));
    /* erf(|z|) = 1 - r t exp(-z^2), then the sign of z */
    e = _mm256_xor_ps(s, _mm256_fnmadd_ps(_mm256_mul_ps(r, t), e, one));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, e));
}

__attribute__((target("avx2,fma"))) static void gelu_mul_avx2(float *y, const float *x,
                                                              const float *m, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = gelu8(_mm256_loadu_ps(x + i));
        if (m)
            g = _mm256_mul_ps(g, _mm256_loadu_ps(m + i));
        _mm256_storeu_ps(y + i, g);
    }
    for (; i < n; i++)
        y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f)) * (m ? m[i] : 1.0f);
}

__attribute__((target("avx2,fma"))) static float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float exp_shift_sum_avx2(float *y, const float *x,
                                                                    int64_t n, float shift)
{
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    float sum;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(y + i, v);
        acc = _mm256_add_ps(acc, v);
    }
    sum = hsum8(acc);
    for (; i < n; i++) {
        y[i] = expf(x[i] - shift);
        sum += y[i];
    }
    return sum;
}

__attribute__((target("avx2,fma"))) static void
silu_affine_avx2(float *y, const float *x, int64_t n, float a, float sc, float sh)
{
    __m256 va = _mm256_set1_ps(-a), vsc = _mm256_set1_ps(sc), vsh = _mm256_set1_ps(sh);
    __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vsc, vsh);
        __m256 e = exp8(_mm256_mul_ps(va, v));
        _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) {
        float v = x[i] * sc + sh;
        y[i] = v / (1.0f + expf(-a * v));
    }
}

__attribute__((target("avx2,fma"))) static float max_avx2(const float *x, int64_t n)
{
    __m256 m = _mm256_set1_ps(-INFINITY);
    __m128 s;
    float mx;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    mx = _mm_cvtss_f32(s);
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

#endif

float kg_cpu_exp_shift_sum(const kg_cpu *cpu, float *y, const float *x, int64_t n, float shift)
{
    double sum = 0.0;
#ifdef KG_VMATH_X86
    if (kg_cpu_avx2(cpu))
        return exp_shift_sum_avx2(y, x, n, shift);
#endif
    for (int64_t i = 0; i < n; i++) {
        y[i] = expf(x[i] - shift);
        sum += y[i];
    }
    return (float)sum;
}

void kg_cpu_silu_affine(const kg_cpu *cpu, float *y, const float *x, int64_t n, float a, float sc,
                        float sh)
{
#ifdef KG_VMATH_X86
    if (kg_cpu_avx2(cpu)) {
        silu_affine_avx2(y, x, n, a, sc, sh);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * sc + sh;
        y[i] = v / (1.0f + expf(-a * v));
    }
}

float kg_cpu_max(const kg_cpu *cpu, const float *x, int64_t n)
{
    float mx = -INFINITY;
#ifdef KG_VMATH_X86
    if (kg_cpu_avx2(cpu))
        return max_avx2(x, n);
#endif
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

void kg_cpu_gelu_mul(const kg_cpu *cpu, float *y, const float *x, const float *m, int64_t n)
{
#ifdef KG_VMATH_X86
    if (kg_cpu_avx2(cpu)) {
        gelu_mul_avx2(y, x, m, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f)) * (m ? m[i] : 1.0f);
}
