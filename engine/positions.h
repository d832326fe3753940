/* positions.h - fairseq's SinusoidalPositionalEmbedding and make_positions.
 *
 * fairseq builds the table in float32 (fairseq/modules/sinusoidal_positional_embedding.py
 * get_embedding): half = dim / 2, f_k = exp(k * -(ln 10000 / (half - 1))), row p =
 * [sin(p f_k) | cos(p f_k)] (halves concatenated, not interleaved), a zero column when
 * dim is odd, and the padding row zeroed. Positions come from the tokens
 * (fairseq/utils.py make_positions): a non-pad token gets pad + (number of non-pad
 * tokens up to and including it), a pad token gets pad, whose row is zero. With pad
 * id 1 an unpadded row therefore starts at position 2. */
#ifndef KG_POSITIONS_H
#define KG_POSITIONS_H

#include <stdint.h>

#include "ops.h"
#include "tensor.h"

/* Host table dst [n_pos, dim] (float32, row pad_idx zero; pad_idx < 0: none).
 * The frequencies and the products p * f_k are rounded to float32 as fairseq's
 * float32 tensors do: float64 arguments would differ by up to ~1e-5 at p ~ 150. */
void kg_sinusoid_table(float *dst, int64_t n_pos, int64_t dim, int64_t pad_idx);

/* y [B*T, D] (or [B, T, D]) = table[make_positions(tokens)]: a zero row for every
 * pad token, the table rows of each run of consecutive non-pad tokens copied with
 * one kg_copy. tokens: host [B*T]. Fails (sticky error) when a position is past
 * the table. */
void kg_positions_lookup(kg_ctx *c, kg_tensor *y, const kg_tensor *table, const int32_t *tokens,
                         int64_t B, int64_t T, int32_t pad);

#endif
