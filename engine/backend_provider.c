/* backend_provider.c - where a backend kind comes from.
 *
 * The CPU provider is always here. The CUDA provider is linked in statically
 * (KG_HAVE_CUDA: the static engine the tests and tools use), or lives in a
 * separate module, libkosmosg-cuda.so, that libkosmosg dlopens on first use
 * (KG_CUDA_MODULE: its installed path). Only the module links cudart,
 * cuBLASLt and cuDNN, so libkosmosg and the GStreamer plugin load and run on
 * a host without them; asking for CUDA there is KG_ERR_NO_DEVICE naming the
 * library the loader could not find. */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KG_CUDA_MODULE
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>
#endif

/* The CPU computes in fp32; KG_BF16 stores the linear and conv weights in bf16
 * (weight_dtype), which its linear and conv2d read directly. It has no fp16
 * arithmetic: fp16 is refused rather than silently run in fp32. */
static kg_status cpu_dtype_check(const kg_backend_config *cfg, kg_error *err)
{
    if (cfg->dtype == KG_F32 || cfg->dtype == KG_BF16)
        return KG_OK;
    return kg_error_set(err, KG_ERR_UNSUPPORTED,
                        "precision %s is not available on the CPU backend: choose fp32 (the "
                        "reference) or bf16 (bf16 weights, fp32 activations)",
                        cfg->dtype == KG_F16 ? "fp16" : kg_dtype_name(cfg->dtype));
}

static kg_status cpu_weights_new(kg_backend **out, const kg_backend_config *cfg, kg_error *err)
{
    kg_status st = cpu_dtype_check(cfg, err);
    *out = NULL;
    return st == KG_OK ? kg_weight_store_host_new(out, cfg->dtype, err) : st;
}

static kg_status cpu_compute_new(kg_backend **out, const kg_backend_config *cfg, kg_error *err)
{
    kg_status st = cpu_dtype_check(cfg, err);
    *out = NULL;
    if (st == KG_OK)
        st = kg_backend_cpu_new(out, cfg->n_threads, err);
    if (st == KG_OK)
        (*out)->weight_dtype = cfg->dtype;
    return st;
}

static const kg_backend_provider cpu_provider = {
    .abi = KG_BACKEND_PROVIDER_ABI,
    .ops_size = sizeof(kg_backend_ops),
    .name = "cpu",
    .weights_new = cpu_weights_new,
    .compute_new = cpu_compute_new,
};

#if defined(KG_HAVE_CUDA)
/* kernels/cuda/backend_cuda.c, linked in */
extern const kg_backend_provider kg_cuda_provider;

static kg_status cuda_provider(const kg_backend_provider **out, kg_error *err)
{
    *out = &kg_cuda_provider;
    return KG_OK;
}
#elif defined(KG_CUDA_MODULE)
/* Tries KOSMOSG_CUDA_MODULE, then kosmosg/libkosmosg-cuda.so beside the
 * library this code is in (a relocated or DESTDIR install), then the
 * installed path. The module stays loaded for the life of the process, as the
 * CUDA runtime it brings would. */
static kg_status cuda_provider(const kg_backend_provider **out, kg_error *err)
{
    char beside[PATH_MAX], why[KG_ERROR_MSG_LEN] = "";
    const char *tries[3];
    int n = 0, found = 0;
    Dl_info self;
    const char *env = getenv("KOSMOSG_CUDA_MODULE");

    if (env && *env)
        tries[n++] = env;
    if (dladdr((void *)cuda_provider, &self) && self.dli_fname && strrchr(self.dli_fname, '/')) {
        int dir = (int)(strrchr(self.dli_fname, '/') - self.dli_fname);
        int len =
            snprintf(beside, sizeof beside, "%.*s/kosmosg/libkosmosg-cuda.so", dir, self.dli_fname);
        if (len > 0 && (size_t)len < sizeof beside && strcmp(beside, KG_CUDA_MODULE) != 0)
            tries[n++] = beside;
    }
    tries[n++] = KG_CUDA_MODULE;
    for (int i = 0; i < n; i++) {
        void *h = dlopen(tries[i], RTLD_NOW | RTLD_LOCAL);
        const kg_backend_provider *p;
        if (!h) {
            const char *e = dlerror();
            found |= access(tries[i], F_OK) == 0;
            /* a module that exists but cannot load (missing CUDA libraries) is the reason to
             * report; a path where there is no module only when nothing better is known */
            if (!why[0] || (e && !strstr(e, tries[i])))
                snprintf(why, sizeof why, "%s", e ? e : tries[i]);
            continue;
        }
        p = (const kg_backend_provider *)dlsym(h, "kg_cuda_provider");
        if (!p || p->abi != KG_BACKEND_PROVIDER_ABI || p->ops_size != sizeof(kg_backend_ops)) {
            snprintf(why, sizeof why, "%s: not a CUDA backend module of this version of libkosmosg",
                     tries[i]);
            dlclose(h);
            continue;
        }
        *out = p;
        return KG_OK;
    }
    if (!found)
        return kg_error_set(err, KG_ERR_NO_DEVICE,
                            "backend cuda: the CUDA backend module libkosmosg-cuda.so was not "
                            "found; set KOSMOSG_CUDA_MODULE to its path (tried %s%s%s%s%s)",
                            tries[0], n > 1 ? ", " : "", n > 1 ? tries[1] : "", n > 2 ? ", " : "",
                            n > 2 ? tries[2] : "");
    return kg_error_set(err, KG_ERR_NO_DEVICE,
                        "backend cuda: the CUDA backend module cannot be "
                        "loaded: %s",
                        why);
}
#else
static kg_status cuda_provider(const kg_backend_provider **out, kg_error *err)
{
    return kg_error_set(err, KG_ERR_NO_DEVICE,
                        "backend cuda requested, but this build has no CUDA backend "
                        "(configured with -Dcuda=disabled or without the CUDA toolkit)");
}
#endif

kg_status kg_backend_provider_get(kg_backend_kind kind, const kg_backend_provider **out,
                                  kg_error *err)
{
    *out = NULL;
    switch (kind) {
    case KG_BACKEND_CPU: *out = &cpu_provider; return KG_OK;
    case KG_BACKEND_CUDA: return cuda_provider(out, err);
    case KG_BACKEND_AUTO: break;
    }
    return kg_error_set(err, KG_ERR_INVALID_ARG, "backend kind %d: expected cpu or cuda",
                        (int)kind);
}
