/* finite.h - the scan behind kg_generate's NaN/Inf checks (pipeline.c), shared with
 * kosmosg-bench, which times it against a U-Net step. */
#ifndef KG_FINITE_H
#define KG_FINITE_H

#include <math.h>
#include <stddef.h>

/* Index of the first NaN/Inf in v[0..n), or n when every value is finite. */
static inline size_t kg_first_nonfinite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return i;
    return n;
}

#endif
