/* rng.h - the seeded Gaussian noise a generation starts from.
 *
 * Counter-based, so any element can be computed on its own: the noise is the
 * same whatever the chunking, the thread count, the backend or the machine
 * (it is always made on the host, in this code, and uploaded).
 *
 * Definition (element k >= 0 of the stream of a 64-bit seed):
 *   key     = (seed mod 2^32, seed div 2^32)
 *   b       = k div 2                      (one Philox block feeds two elements)
 *   counter = (b mod 2^32, b div 2^32, 0, 0)
 *   (r0, r1, r2, r3) = Philox4x32-10(counter, key)      (Salmon et al., SC'11)
 *   u1 = ((r0 * 2^32 + r1) div 2^11 + 0.5) * 2^-53     (53-bit uniform in (0, 1))
 *   u2 = ((r2 * 2^32 + r3) div 2^11 + 0.5) * 2^-53
 *   radius = sqrt(-2 ln u1), angle = 2 pi u2             (Box-Muller, in double)
 *   element 2b = radius * cos(angle), element 2b + 1 = radius * sin(angle),
 *   each rounded to the nearest float32.
 * The only machine dependence left is the last bit of libm's log/cos/sin in
 * double, which moves a float32 result only when it falls within 2^-29 of a
 * rounding boundary.
 *
 * Latents of image j of a request (j = 0, 1, ...) are the elements starting
 * at KG_RNG_IMAGE_OFFSET(j) = j * 2^40: image 0 is the same whatever the
 * number of images, and the images never share elements. */
#ifndef KG_RNG_H
#define KG_RNG_H

#include <stddef.h>
#include <stdint.h>

#define KG_RNG_IMAGE_OFFSET(j) ((uint64_t)(j) << 40)
/* The fresh noise a stochastic scheduler (LCM) adds after step i (0, 1, ...) of image j:
 * elements from j * 2^40 + (i + 1) * 2^32 (a latent has fewer than 2^32 elements, so no
 * stream overlaps the initial latents or another step's). */
#define KG_RNG_STEP_OFFSET(j, i) \
    (KG_RNG_IMAGE_OFFSET(j) + ((uint64_t)(i) + 1) * ((uint64_t)1 << 32))

/* One Philox4x32 block with 10 rounds (Random123's philox4x32_10). */
void kg_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* out[i] = element offset + i of the seed's N(0, 1) stream, i < n. */
void kg_rng_normal(uint64_t seed, uint64_t offset, float *out, size_t n);

#endif
