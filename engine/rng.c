/* rng.c - see rng.h. */
#include "rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

void kg_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static double uniform53(uint32_t hi, uint32_t lo)
{
    uint64_t bits = (((uint64_t)hi << 32) | lo) >> 11;
    return ((double)bits + 0.5) * 0x1p-53;
}

/* The two elements of block b. */
static void normal_pair(uint64_t seed, uint64_t b, float pair[2])
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
    uint32_t r[4];
    double radius, angle;
    kg_philox4x32_10(ctr, key, r);
    radius = sqrt(-2.0 * log(uniform53(r[0], r[1])));
    angle = 6.283185307179586476925286766559 * uniform53(r[2], r[3]);
    pair[0] = (float)(radius * cos(angle));
    pair[1] = (float)(radius * sin(angle));
}

void kg_rng_normal(uint64_t seed, uint64_t offset, float *out, size_t n)
{
    size_t i = 0;
    float pair[2];
    if (n == 0)
        return;
    if (offset & 1) {
        normal_pair(seed, offset >> 1, pair);
        out[i++] = pair[1];
    }
    for (; i + 2 <= n; i += 2)
        normal_pair(seed, (offset + i) >> 1, out + i);
    if (i < n) {
        normal_pair(seed, (offset + i) >> 1, pair);
        out[i] = pair[0];
    }
}
