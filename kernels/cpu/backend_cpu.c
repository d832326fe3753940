/* backend_cpu.c - the CPU reference backend: fp32, host memory, OpenMP.
 *
 * The op table points at the kernels in the other files of this folder;
 * this file owns creation, memory and the fixed scratch buffer. */
#include "cpu_kernels.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(KG_HAVE_BLAS)
#include <cblas.h>
#endif

/* Each allocation carries its size in a header so free() can keep
 * bytes_allocated exact; the header keeps the payload 64-byte aligned. */
#define KG_CPU_ALIGN 64

int kg_cpu_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

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
    if (cpu)
        free(cpu->scratch);
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
    .softmax = kg_cpu_softmax,
    .attention = kg_cpu_attention,
    .activation = kg_cpu_activation,
    .geglu = kg_cpu_geglu,
    .binary = kg_cpu_binary,
    .axpby = kg_cpu_axpby,
    .upsample_nearest2x = kg_cpu_upsample_nearest2x,
    .concat = kg_cpu_concat,
    .permute = kg_cpu_permute,
    .copy = kg_cpu_copy,
    .embedding = kg_cpu_embedding,
    .l2_normalize = kg_cpu_l2_normalize,
    .fill = kg_cpu_fill,
};

static int core_count(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

kg_status kg_backend_cpu_new(kg_backend **out, int n_threads, kg_error *err)
{
    kg_backend *be = NULL;
    kg_cpu *cpu = NULL;
    void *scratch = NULL;
    if (!out)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "cpu backend: out is NULL");
    *out = NULL;
    be = calloc(1, sizeof *be);
    cpu = calloc(1, sizeof *cpu);
    if (!be || !cpu || posix_memalign(&scratch, KG_CPU_ALIGN, KG_CPU_SCRATCH_BYTES) != 0)
        goto fail;
    cpu->n_threads = n_threads > 0 ? n_threads : core_count();
#ifndef _OPENMP
    cpu->n_threads = 1;
#endif
    cpu->scratch = scratch;
    cpu->scratch_floats_per_thread =
        KG_CPU_SCRATCH_BYTES / sizeof(float) / (size_t)cpu->n_threads / 16 * 16;
#if defined(KG_HAVE_BLAS) && defined(OPENBLAS_VERSION)
    /* Our OpenMP regions do the splitting; a threaded BLAS inside them
     * would oversubscribe the cores. */
    openblas_set_num_threads(1);
#endif
    be->ops = &cpu_ops;
    be->impl = cpu;
    be->act_dtype = KG_F32;
    be->host_memory = 1;
    *out = be;
    return KG_OK;
fail:
    free(scratch);
    free(cpu);
    free(be);
    return kg_error_set(err, KG_ERR_NOMEM, "cpu backend: cannot allocate %zu MiB of scratch",
                        KG_CPU_SCRATCH_BYTES >> 20);
}
