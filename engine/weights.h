/* weights.h - loading a component's weights onto a backend.
 *
 * A component's load function asks for each tensor by PyTorch key with the
 * exact shape it expects. kg_load_component runs it twice: a measure pass
 * that only validates and counts bytes, then one backend allocation (one
 * blob per component) and a fill pass that reads (pread, never the mapping),
 * converts and uploads. Every tensor is copied into memory the process owns,
 * so the kg_st_file may be closed right after the load, and a model file
 * truncated or rewritten on disk later changes nothing. The first missing or
 * mismatched tensor stops the load with KG_ERR_WEIGHTS naming it. */
#ifndef KG_WEIGHTS_H
#define KG_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "safetensors.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_loader {
    kg_backend *be;
    const kg_st_file *st;
    const char *prefix; /* prepended to every key, e.g. "gpt_model.decoder." */
    int measuring;
    size_t need; /* bytes the measure pass counted */
    char *blob;  /* backend memory of the fill pass */
    size_t blob_size;
    size_t used;
    kg_error *err;
    kg_status status; /* first failure; later calls return it */
} kg_loader;

/* *out = tensor prefix + printf(fmt, ...), which must have exactly `shape`;
 * converted to the backend's activation dtype. */
kg_status kg_load(kg_loader *L, kg_tensor *out, int ndim, const int64_t *shape, const char *fmt,
                  ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* kg_load for the weight of a linear or conv layer (2-D [N, K] or 4-D
 * [Co, Ci, kh, kw], the w of kg_linear / kg_conv2d): stored in the backend's
 * weight_dtype (bf16 on the CPU in bf16 mode), everything else in act_dtype. */
kg_status kg_load_weight(kg_loader *L, kg_tensor *out, int ndim, const int64_t *shape,
                         const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* 1 when prefix + printf(fmt, ...) exists (for alternative key namings). */
int kg_load_has(const kg_loader *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

typedef kg_status (*kg_load_fn)(void *model, kg_loader *L);

/* Runs fn(model, L) in measure mode, allocates one blob, runs it again to
 * fill. *blob receives the allocation (NULL when nothing needed copying);
 * release it with kg_weights_free. */
kg_status kg_load_component(kg_backend *be, const kg_st_file *st, const char *prefix, kg_load_fn fn,
                            void *model, void **blob, kg_error *err);
void kg_weights_free(kg_backend *be, void *blob);

#endif
