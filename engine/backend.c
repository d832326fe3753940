/* backend.c - backend-independent helpers: providers, release and the sticky error. */
#include "backend.h"

#include <stdarg.h>
#include <stdio.h>

static kg_status cpu_weights_new(kg_backend **out, const kg_backend_config *cfg, kg_error *err)
{
    return kg_weight_store_host_new(out, err);
}

static kg_status cpu_compute_new(kg_backend **out, const kg_backend_config *cfg, kg_error *err)
{
    return kg_backend_cpu_new(out, cfg->n_threads, err);
}

static const kg_backend_provider cpu_provider = {
    .name = "cpu",
    .weights_new = cpu_weights_new,
    .compute_new = cpu_compute_new,
};

#ifdef KG_HAVE_CUDA
/* kernels/cuda/backend_cuda.c */
extern const kg_backend_provider kg_cuda_provider;
#endif

kg_status kg_backend_provider_get(kg_backend_kind kind, const kg_backend_provider **out,
                                  kg_error *err)
{
    *out = NULL;
    switch (kind) {
    case KG_BACKEND_CPU: *out = &cpu_provider; return KG_OK;
    case KG_BACKEND_CUDA:
#ifdef KG_HAVE_CUDA
        *out = &kg_cuda_provider;
        return KG_OK;
#else
        return kg_error_set(err, KG_ERR_NO_DEVICE,
                            "backend cuda requested, but this build has no CUDA backend "
                            "(configured with -Dcuda=disabled or without the CUDA toolkit)");
#endif
    case KG_BACKEND_AUTO: break;
    }
    return kg_error_set(err, KG_ERR_INVALID_ARG, "backend kind %d: expected cpu or cuda",
                        (int)kind);
}

void kg_backend_free(kg_backend *be)
{
    if (be && be->ops && be->ops->destroy)
        be->ops->destroy(be);
}

void kg_backend_fail(kg_backend *be, kg_status code, const char *fmt, ...)
{
    va_list ap;
    if (!be || be->err.code != KG_OK)
        return;
    be->err.code = code;
    va_start(ap, fmt);
    vsnprintf(be->err.msg, sizeof be->err.msg, fmt, ap);
    va_end(ap);
}
