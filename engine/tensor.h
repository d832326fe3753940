/* tensor.h - the one tensor type every layer shares.
 *
 * A kg_tensor is a view: dtype, up to four dims in PyTorch order (outermost
 * first), contiguous row-major, and a data pointer owned elsewhere (a weight
 * blob, an arena, a caller's buffer). On the CUDA backend data is a device
 * pointer; model code never dereferences it. */
#ifndef KG_TENSOR_H
#define KG_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "kosmosg.h" /* kg_dtype, kg_tensor, kg_dtype_size/name, kg_tensor_numel */

size_t kg_tensor_nbytes(const kg_tensor *t);

/* Builds a tensor header; unused trailing dims are set to 1. */
kg_tensor kg_tensor_make(void *data, kg_dtype dt, int ndim, const int64_t *shape);
kg_tensor kg_tensor_2d(void *data, kg_dtype dt, int64_t d0, int64_t d1);

/* Same bytes, new shape; returns a tensor with data == NULL when the element
 * counts differ (ops then report the mismatch). */
kg_tensor kg_tensor_reshape(const kg_tensor *t, int ndim, const int64_t *shape);

/* A contiguous slice: `count` rows of the outermost dim starting at `first`,
 * e.g. one batch item of [B, T, D]. data == NULL when out of range. */
kg_tensor kg_tensor_rows(const kg_tensor *t, int64_t first, int64_t count);

int kg_tensor_same_shape(const kg_tensor *a, const kg_tensor *b);

/* Writes "[2, 4, 8, 8]" into buf. Returns buf. */
char *kg_shape_str(const kg_tensor *t, char *buf, size_t n);

/* IEEE half and bfloat16 conversions, round-to-nearest-even. */
float kg_f16_to_f32(uint16_t h);
uint16_t kg_f32_to_f16(float f);
float kg_bf16_to_f32(uint16_t h);
uint16_t kg_f32_to_bf16(float f);

#endif
