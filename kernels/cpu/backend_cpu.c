/* backend_cpu.c - the CPU reference backend: fp32, host memory, our own
 * worker pool (pool.c), oneDNN's GEMM.
 *
 * The op table points at the kernels in the other files of this folder;
 * this file owns creation, memory, the fixed scratch buffer and the choice
 * of instruction set. */
#include "cpu_kernels.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(KG_HAVE_DNNL)
#include <oneapi/dnnl/dnnl.h>
#endif

/* Each allocation carries its size in a header so free() can keep
 * bytes_allocated exact; the header keeps the payload 64-byte aligned. */
#define KG_CPU_ALIGN 64

static void *cpu_alloc(kg_backend *be, size_t nbytes)
{
    void *p = NULL;
    if (nbytes > SIZE_MAX - KG_CPU_ALIGN ||
        posix_memalign(&p, KG_CPU_ALIGN, nbytes + KG_CPU_ALIGN) != 0)
        return NULL;
    *(size_t *)p = nbytes;
    be->n_allocs++;
    be->bytes_allocated += nbytes;
    return (char *)p + KG_CPU_ALIGN;
}

static void cpu_free(kg_backend *be, void *p)
{
    char *base;
    if (!p)
        return;
    base = (char *)p - KG_CPU_ALIGN;
    be->bytes_allocated -= *(size_t *)base;
    free(base);
}

static void cpu_memcpy(kg_backend *be, void *dst, const void *src, size_t nbytes)
{
    if (nbytes)
        memmove(dst, src, nbytes);
}

static kg_status cpu_sync(kg_backend *be)
{
    return be->err.code;
}

static void cpu_destroy(kg_backend *be)
{
    kg_cpu *cpu = kg_cpu_of(be);
    if (cpu) {
        kg_pool_free(cpu->pool);
        free(cpu->scratch);
        free(cpu->wino);
        free(cpu->lowp);
    }
    free(cpu);
    free(be);
}

static const kg_backend_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .upload_f32 = kg_cpu_upload_f32,
    .download_f32 = kg_cpu_download_f32,
    .sync = cpu_sync,
    .destroy = cpu_destroy,
    .linear = kg_cpu_linear,
    .conv2d = kg_cpu_conv2d,
    .group_norm = kg_cpu_group_norm,
    .layer_norm = kg_cpu_layer_norm,
    .attention = kg_cpu_attention,
    .activation = kg_cpu_activation,
    .geglu = kg_cpu_geglu,
    .binary = kg_cpu_binary,
    .axpby = kg_cpu_axpby,
    .upsample_nearest2x = kg_cpu_upsample_nearest2x,
    .upsample_nearest = kg_cpu_upsample_nearest,
    .concat = kg_cpu_concat,
    .permute = kg_cpu_permute,
    .copy = kg_cpu_copy,
    .embedding = kg_cpu_embedding,
    .l2_normalize = kg_cpu_l2_normalize,
    .fill = kg_cpu_fill,
};

static int core_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static const char *isa_name(kg_cpu_isa isa)
{
    switch (isa) {
    case KG_CPU_ISA_AVX512: return "avx512";
    case KG_CPU_ISA_AVX2: return "avx2";
    case KG_CPU_ISA_BASE: return "base";
    }
    return "?";
}

/* What this CPU can do, from cpuid (and the OS's register saving, which
 * __builtin_cpu_supports checks): never from a list of CPU models. */
static kg_cpu_isa detect_isa(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma"))
        return KG_CPU_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return KG_CPU_ISA_AVX2;
#endif
    return KG_CPU_ISA_BASE;
}

#if defined(KG_HAVE_DNNL)
const char *kg_cpu_dnnl_isa_name(int isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
    }
}
#endif

/* KOSMOSG_CPU_ISA=base|avx2|avx512 caps the instruction set, for our kernels
 * and for oneDNN (process-wide: oneDNN takes its cap once, before its first
 * kernel), so every path can be tested on one machine. */
static kg_status apply_isa_cap(kg_cpu *cpu, kg_error *err)
{
    const char *cap = getenv("KOSMOSG_CPU_ISA");
    kg_cpu_isa want;
    cpu->isa = detect_isa();
    if (!cap || !*cap)
        return KG_OK;
    if (!strcmp(cap, "base"))
        want = KG_CPU_ISA_BASE;
    else if (!strcmp(cap, "avx2"))
        want = KG_CPU_ISA_AVX2;
    else if (!strcmp(cap, "avx512"))
        want = KG_CPU_ISA_AVX512;
    else
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "KOSMOSG_CPU_ISA=%.40s: expected base, avx2 or avx512", cap);
    if (want < cpu->isa)
        cpu->isa = want;
#if defined(KG_HAVE_DNNL)
    {
        dnnl_cpu_isa_t d = want == KG_CPU_ISA_BASE   ? dnnl_cpu_isa_sse41
                           : want == KG_CPU_ISA_AVX2 ? dnnl_cpu_isa_avx2
                                                     : dnnl_cpu_isa_avx512_core_bf16;
        if (dnnl_set_max_cpu_isa(d) != dnnl_success &&
            (int)(dnnl_get_effective_cpu_isa() & ~d) != 0)
            return kg_error_set(err, KG_ERR_INVALID_ARG,
                                "KOSMOSG_CPU_ISA=%s cannot take effect: oneDNN already runs at %s "
                                "in this process",
                                cap, kg_cpu_dnnl_isa_name((int)dnnl_get_effective_cpu_isa()));
    }
#endif
    return KG_OK;
}

int kg_backend_cpu_describe(kg_backend *be, char *buf, size_t n)
{
    const kg_cpu *cpu = kg_cpu_of(be);
    char bf16[128];
#if defined(KG_HAVE_DNNL)
    const dnnl_version_t *v = dnnl_version();
    kg_cpu_bf16_describe(cpu, bf16, sizeof bf16);
    return snprintf(buf, n,
                    "%d threads (own pool, no OpenMP spin); ISA level %s; own kernels %s; GEMM: "
                    "oneDNN %d.%d.%d sgemm, JIT ISA %s; bf16 GEMM: %s",
                    cpu->n_threads, isa_name(cpu->isa), kg_cpu_avx2(cpu) ? "AVX2+FMA" : "scalar C",
                    v->major, v->minor, v->patch,
                    kg_cpu_dnnl_isa_name((int)dnnl_get_effective_cpu_isa()), bf16);
#else
    kg_cpu_bf16_describe(cpu, bf16, sizeof bf16);
    return snprintf(buf, n,
                    "%d threads (own pool, no OpenMP spin); ISA level %s; own kernels %s; "
                    "GEMM: %s; bf16 GEMM: %s",
                    cpu->n_threads, isa_name(cpu->isa), kg_cpu_avx2(cpu) ? "AVX2+FMA" : "scalar C",
                    kg_cpu_gemm_name(cpu), bf16);
#endif
}

int64_t kg_backend_cpu_bf16_gemms(kg_backend *be)
{
    return (int64_t)atomic_load(&kg_cpu_of(be)->bf16_gemms);
}

kg_status kg_backend_cpu_new(kg_backend **out, int n_threads, kg_error *err)
{
    kg_backend *be = NULL;
    kg_cpu *cpu = NULL;
    void *scratch = NULL;
    kg_status st;
    if (!out)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "cpu backend: out is NULL");
    *out = NULL;
    if (n_threads > KG_CPU_MAX_THREADS)
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "cpu backend: %d threads requested, at most %d supported", n_threads,
                            KG_CPU_MAX_THREADS);
    be = calloc(1, sizeof *be);
    cpu = calloc(1, sizeof *cpu);
    if (!be || !cpu || posix_memalign(&scratch, KG_CPU_ALIGN, KG_CPU_SCRATCH_BYTES) != 0) {
        st = kg_error_set(err, KG_ERR_NOMEM, "cpu backend: cannot allocate %zu MiB of scratch",
                          KG_CPU_SCRATCH_BYTES >> 20);
        goto fail;
    }
    cpu->n_threads = n_threads > 0 ? n_threads : core_count();
    cpu->scratch = scratch;
    scratch = NULL;
    if (posix_memalign(&scratch, KG_CPU_ALIGN, KG_CPU_WINO_BYTES) != 0) {
        st = kg_error_set(err, KG_ERR_NOMEM, "cpu backend: cannot allocate %zu MiB of scratch",
                          KG_CPU_WINO_BYTES >> 20);
        goto fail;
    }
    cpu->wino = scratch;
    cpu->wino_floats = KG_CPU_WINO_BYTES / sizeof(float);
    scratch = NULL;
    /* bf16 operands: address space only until a bf16 op touches it */
    if (posix_memalign(&scratch, KG_CPU_ALIGN, KG_CPU_LOWP_BYTES) != 0) {
        st = kg_error_set(err, KG_ERR_NOMEM, "cpu backend: cannot allocate %zu MiB of scratch",
                          KG_CPU_LOWP_BYTES >> 20);
        goto fail;
    }
    cpu->lowp = scratch;
    scratch = NULL;
    cpu->scratch_floats_per_thread =
        KG_CPU_SCRATCH_BYTES / sizeof(float) / (size_t)cpu->n_threads / 16 * 16;
    st = apply_isa_cap(cpu, err);
    if (st != KG_OK)
        goto fail;
    st = kg_cpu_gemm_init(cpu, err);
    if (st != KG_OK)
        goto fail;
    st = kg_cpu_bf16_init(cpu, err);
    if (st != KG_OK)
        goto fail;
    st = kg_pool_new(&cpu->pool, cpu->n_threads, err);
    if (st != KG_OK)
        goto fail;
    be->ops = &cpu_ops;
    be->impl = cpu;
    be->act_dtype = KG_F32;
    be->host_memory = 1;
    *out = be;
    return KG_OK;
fail:
    free(scratch);
    if (cpu) {
        free(cpu->scratch);
        free(cpu->wino);
        free(cpu->lowp);
    }
    free(cpu);
    free(be);
    return st;
}
