/* positions.c - fairseq sinusoidal positions (see positions.h). */
#include "positions.h"

#include <math.h>

void kg_sinusoid_table(float *dst, int64_t n_pos, int64_t dim, int64_t pad_idx)
{
    int64_t half = dim / 2;
    /* torch: arange(half, float32) * -(python float); the scalar joins in float32 */
    float step = half > 1 ? (float)(-log(10000.0) / (double)(half - 1)) : 0.0f;

    for (int64_t p = 0; p < n_pos; p++) {
        float *row = dst + p * dim;
        for (int64_t k = 0; k < half; k++) {
            float f = (float)exp((double)((float)k * step));
            float arg = (float)p * f;
            row[k] = (float)sin((double)arg);
            row[half + k] = (float)cos((double)arg);
        }
        if (dim % 2)
            row[dim - 1] = 0.0f;
        if (p == pad_idx)
            for (int64_t k = 0; k < dim; k++)
                row[k] = 0.0f;
    }
}

void kg_positions_lookup(kg_ctx *c, kg_tensor *y, const kg_tensor *table, const int32_t *tokens,
                         int64_t B, int64_t T, int32_t pad)
{
    int64_t dim = table->shape[1];
    kg_tensor rows = kg_tensor_2d(y->data, y->dtype, B * T, dim);

    if (kg_tensor_numel(y) != B * T * dim) {
        kg_backend_fail(c->be, KG_ERR_SHAPE, "positions: output has %lld elements, expected %lld",
                        (long long)kg_tensor_numel(y), (long long)(B * T * dim));
        return;
    }
    kg_fill(c, &rows, 0.0f);
    for (int64_t b = 0; b < B; b++) {
        int64_t pos = pad; /* make_positions: pad + running count of non-pad tokens */
        int64_t i = 0;
        while (i < T) {
            int64_t start, n;
            kg_tensor dst, src;
            if (tokens[b * T + i] == pad) {
                i++;
                continue;
            }
            start = i;
            while (i < T && tokens[b * T + i] != pad)
                i++;
            n = i - start;
            if (pos + n >= table->shape[0]) {
                kg_backend_fail(c->be, KG_ERR_INVALID_ARG,
                                "positions: sequence %lld needs position %lld, the table has %lld",
                                (long long)b, (long long)(pos + n), (long long)table->shape[0]);
                return;
            }
            dst = kg_tensor_rows(&rows, b * T + start, n);
            src = kg_tensor_rows(table, pos + 1, n);
            kg_copy(c, &dst, &src);
            pos += n;
        }
    }
}
