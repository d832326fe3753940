/* test_rng.c - the seeded noise generator.
 *
 * Philox4x32-10 against the Random123 known-answer vectors; the first
 * elements of a few streams against an independent Python implementation of
 * rng.h's definition; identical output whatever the chunking or the start
 * offset; and N(0, 1) statistics on 10^6 samples. The statistical bounds are
 * 5 standard errors of each statistic for a true N(0, 1) sample (the
 * Kolmogorov-Smirnov bound is the 1e-6 quantile, 2.63 / sqrt(n)): a correct
 * generator fails one of them with probability about 1e-5, and since seeds
 * are fixed the outcome is deterministic. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "testutil.h"

#define N_STAT 1000000

static void check_kat(void)
{
    /* Random123 kat_vectors: counter, key -> output */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        kg_philox4x32_10(kat[v], kat[v] + 4, out);
        kgt_check(memcmp(out, kat[v] + 6, sizeof out) == 0,
                  "philox4x32-10 KAT %d: %08x %08x %08x %08x", v, out[0], out[1], out[2], out[3]);
    }
}

/* Values from a separate Python implementation of the definition in rng.h
 * (printed with 9 significant digits). Equal up to one float32 ulp: libm's
 * log/cos/sin may differ in the last bit of a double between machines. */
static void check_reference_values(void)
{
    static const struct {
        uint64_t seed, offset;
        float v[6];
    } ref[] = {
        {0,
         0,
         {-0.121517979f, -1.35003269f, -0.0818742067f, -0.22270906f, 1.77642429f, 2.1735208f}},
        {42,
         0,
         {0.886497498f, 0.439356059f, -0.156609625f, -0.0137186786f, -0.494100511f, -0.372166872f}},
        {0x123456789abcdefull,
         KG_RNG_IMAGE_OFFSET(3) + 5,
         {-0.61852777f, -0.148116097f, -1.04125023f, 1.50657046f, -0.630679548f, 2.17174387f}},
    };
    for (size_t r = 0; r < sizeof ref / sizeof ref[0]; r++) {
        float got[6];
        double worst = 0.0;
        kg_rng_normal(ref[r].seed, ref[r].offset, got, 6);
        for (int i = 0; i < 6; i++)
            worst = fmax(worst, fabs(got[i] - ref[r].v[i]) / fabs(ref[r].v[i]));
        kgt_check(worst <= 1.2e-7, "seed %llu offset %llu: %.9g %.9g ... max rel diff %.1e",
                  (unsigned long long)ref[r].seed, (unsigned long long)ref[r].offset, got[0],
                  got[1], worst);
    }
}

static void check_chunking(const float *whole)
{
    /* chunk lengths with every parity of start and length */
    static const size_t chunks[] = {1, 2, 3, 7, 64, 1000, 4097, 1, 5};
    const size_t n = 200000;
    float *parts = malloc(n * sizeof *parts);
    size_t pos = 0, k = 0, diff = 0;
    while (pos < n) {
        size_t len = chunks[k++ % (sizeof chunks / sizeof chunks[0])];
        if (len > n - pos)
            len = n - pos;
        kg_rng_normal(7, pos, parts + pos, len);
        pos += len;
    }
    for (size_t i = 0; i < n; i++)
        diff += memcmp(&parts[i], &whole[i], sizeof(float)) != 0;
    kgt_check(diff == 0, "same elements whatever the chunking: %zu of %zu differ", diff, n);
    /* an odd offset into the middle */
    kg_rng_normal(7, 12345, parts, 11);
    kgt_check(memcmp(parts, whole + 12345, 11 * sizeof(float)) == 0, "odd start offset");
    free(parts);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double corr(const float *a, const float *b, size_t n)
{
    double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        sa += a[i];
        sb += b[i];
        sab += (double)a[i] * b[i];
        saa += (double)a[i] * a[i];
        sbb += (double)b[i] * b[i];
    }
    sa /= n;
    sb /= n;
    return (sab / n - sa * sb) / sqrt((saa / n - sa * sa) * (sbb / n - sb * sb));
}

static void check_statistics(const float *x, size_t n)
{
    const double se = 1.0 / sqrt((double)n);
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0, var, skew, kurt, tail;
    size_t n_tail = 0, n_bad = 0;
    float *sorted, *other;
    double ks = 0.0;

    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        n_bad += !isfinite(v);
        m1 += v;
        n_tail += fabs(v) > 3.0;
    }
    m1 /= n;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m1;
        m2 += d * d;
        m3 += d * d * d;
        m4 += d * d * d * d;
    }
    var = m2 / n;
    skew = (m3 / n) / pow(var, 1.5);
    kurt = (m4 / n) / (var * var) - 3.0;
    tail = (double)n_tail / n;
    kgt_check(n_bad == 0, "%zu samples, all finite", n);
    kgt_check(fabs(m1) <= 5 * se, "mean %.2e (|.| <= %.2e)", m1, 5 * se);
    kgt_check(fabs(var - 1) <= 5 * sqrt(2.0) * se, "variance %.6f (|.-1| <= %.2e)", var,
              5 * sqrt(2.0) * se);
    kgt_check(fabs(skew) <= 5 * sqrt(6.0) * se, "skewness %.2e (|.| <= %.2e)", skew,
              5 * sqrt(6.0) * se);
    kgt_check(fabs(kurt) <= 5 * sqrt(24.0) * se, "excess kurtosis %.2e (|.| <= %.2e)", kurt,
              5 * sqrt(24.0) * se);
    {
        const double p = erfc(3.0 / sqrt(2.0));
        const double bound = 5 * sqrt(p * (1 - p) / n);
        kgt_check(fabs(tail - p) <= bound, "P(|z| > 3) = %.6f, expected %.6f (+-%.1e)", tail, p,
                  bound);
    }

    sorted = malloc(n * sizeof *sorted);
    memcpy(sorted, x, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_float);
    for (size_t i = 0; i < n; i++) {
        double cdf = 0.5 * erfc(-sorted[i] / sqrt(2.0));
        ks = fmax(ks, fmax(fabs(cdf - (double)i / n), fabs(cdf - (double)(i + 1) / n)));
    }
    kgt_check(ks <= 2.63 * se, "Kolmogorov-Smirnov D = %.2e (<= %.2e)", ks, 2.63 * se);
    free(sorted);

    /* independence: neighbours (within and across Box-Muller pairs), even vs
     * odd elements of a pair, images of a request, nearby seeds */
    kgt_check(fabs(corr(x, x + 1, n - 1)) <= 5 * se, "lag-1 correlation %.2e (<= %.2e)",
              corr(x, x + 1, n - 1), 5 * se);
    kgt_check(fabs(corr(x, x + 2, n - 2)) <= 5 * se, "lag-2 correlation %.2e (<= %.2e)",
              corr(x, x + 2, n - 2), 5 * se);
    {
        float *ev = malloc(n / 2 * sizeof *ev), *od = malloc(n / 2 * sizeof *od);
        double c, c2 = 0;
        for (size_t i = 0; i < n / 2; i++) {
            ev[i] = x[2 * i];
            od[i] = x[2 * i + 1];
        }
        c = corr(ev, od, n / 2);
        /* z0^2 and z1^2 share the radius: their correlation must vanish too */
        for (size_t i = 0; i < n / 2; i++) {
            ev[i] = ev[i] * ev[i];
            od[i] = od[i] * od[i];
        }
        c2 = corr(ev, od, n / 2);
        kgt_check(fabs(c) <= 5 * sqrt(2.0) * se && fabs(c2) <= 5 * sqrt(2.0) * se,
                  "pair (cos, sin) correlation %.2e, of squares %.2e (<= %.2e)", c, c2,
                  5 * sqrt(2.0) * se);
        free(ev);
        free(od);
    }
    other = malloc(n * sizeof *other);
    kg_rng_normal(7, KG_RNG_IMAGE_OFFSET(1), other, n);
    kgt_check(fabs(corr(x, other, n)) <= 5 * se, "image 0 vs image 1 correlation %.2e (<= %.2e)",
              corr(x, other, n), 5 * se);
    kg_rng_normal(8, 0, other, n);
    kgt_check(fabs(corr(x, other, n)) <= 5 * se, "seed 7 vs seed 8 correlation %.2e (<= %.2e)",
              corr(x, other, n), 5 * se);
    kg_rng_normal(7 + (1ull << 32), 0, other, n);
    kgt_check(fabs(corr(x, other, n)) <= 5 * se,
              "seed 7 vs seed 7 + 2^32 correlation %.2e (<= %.2e): the high seed bits count",
              corr(x, other, n), 5 * se);
    free(other);
}

int main(void)
{
    float *x = malloc(N_STAT * sizeof *x);
    check_kat();
    check_reference_values();
    kg_rng_normal(7, 0, x, N_STAT);
    check_chunking(x);
    check_statistics(x, N_STAT);
    free(x);
    return kgt_finish();
}
