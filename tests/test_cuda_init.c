/* test_cuda_init.c - CUDA backend creation and release.
 *
 * Without a device (CI, build machines) creation must fail with
 * KG_ERR_NO_DEVICE, a message, no backend, and no leaked host memory over
 * repeated tries. With a device, creation and release must succeed for
 * every dtype, an impossible allocation must return NULL without a sticky
 * error, the converting transfers must round-trip across staging chunks,
 * and invalid arguments must still be rejected. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/backend_cuda.h"
#include "testutil.h"

static void check_bad_args(void)
{
    kg_backend *be = (kg_backend *)&be;
    kg_error err = {0};
    kg_status st = kg_backend_cuda_new(&be, 0, KG_I32, &err);
    kgt_check(st == KG_ERR_INVALID_ARG && be == NULL && err.msg[0],
              "dtype I32 rejected: %s, \"%s\"", kg_status_name(st), err.msg);
    kgt_check(kg_backend_cuda_new(NULL, 0, KG_F16, NULL) == KG_ERR_INVALID_ARG,
              "out == NULL rejected");
}

static void no_device(void)
{
    kg_backend *be = (kg_backend *)&be;
    kg_error err = {0};
    size_t before, after;
    kg_status st = kg_backend_cuda_new(&be, 0, KG_F16, &err);
    kgt_check(st == KG_ERR_NO_DEVICE, "no device: status %s", kg_status_name(st));
    kgt_check(be == NULL, "no device: no backend returned");
    kgt_check(err.code == KG_ERR_NO_DEVICE && strlen(err.msg) > 10, "no device: message \"%s\"",
              err.msg);
    kgt_check(kg_cuda_device_count() == 0, "kg_cuda_device_count() == 0");

    /* the first try above let the runtime set up whatever it keeps */
    before = mallinfo2().uordblks;
    for (int i = 0; i < 50; i++) {
        kg_error e2 = {0};
        kg_backend *b2 = NULL;
        kg_backend_cuda_new(&b2, 0, i % 2 ? KG_BF16 : KG_F16, &e2);
        kg_backend_free(b2);
    }
    after = mallinfo2().uordblks;
    kgt_check(after <= before,
              "no host memory leaked over 50 failed inits (%zu -> %zu bytes in use)", before,
              after);
}

static void with_device(int n)
{
    kg_dtype dts[3] = {KG_F16, KG_BF16, KG_F32};
    kg_error err = {0};
    kg_backend *be = NULL;
    kg_status st;

    printf("%d CUDA device(s)\n", n);
    for (int i = 0; i < 3; i++) {
        err.code = KG_OK;
        st = kg_backend_cuda_new(&be, 0, dts[i], &err);
        if (!kgt_check(st == KG_OK && be, "init %s on device 0: %s %s", kg_dtype_name(dts[i]),
                       kg_status_name(st), err.msg))
            continue;
        kgt_check(be->act_dtype == dts[i] && !be->host_memory && be->n_allocs == 0 &&
                      be->bytes_allocated == 0,
                  "fresh backend: act dtype %s, device memory, no allocations",
                  kg_dtype_name(be->act_dtype));
        {
            void *p = be->ops->alloc(be, 1 << 20);
            kgt_check(p && be->n_allocs == 1 && be->bytes_allocated == (1u << 20), "alloc 1 MiB");
            be->ops->free(be, p);
            kgt_check(be->bytes_allocated == 0, "free returns the bytes");
        }
        {
            /* out of memory is the caller's KG_ERR_NOMEM: NULL, no sticky error */
            size_t before = be->n_allocs;
            void *p = be->ops->alloc(be, (size_t)1 << 50);
            kgt_check(!p && be->n_allocs == before && be->err.code == KG_OK,
                      "alloc of 1 PiB returns NULL without a sticky error");
        }
        {
            /* f32 round trip through the 8 MiB staging buffers: 3 chunks */
            int64_t n = 5 << 20;
            float *h = malloc((size_t)n * sizeof *h), *back = malloc((size_t)n * sizeof *back);
            kg_tensor t = kg_tensor_make(be->ops->alloc(be, (size_t)n * kg_dtype_size(dts[i])),
                                         dts[i], 1, (int64_t[]){n});
            int64_t bad = 0;
            for (int64_t j = 0; j < n; j++)
                h[j] = (float)(j % 2049) - 1024.0f; /* integers: exact in f16, bf16 rounds some */
            be->ops->upload_f32(be, &t, h);
            be->ops->download_f32(be, back, &t);
            for (int64_t j = 0; j < n; j++) {
                float want = dts[i] == KG_BF16 ? kg_bf16_to_f32(kg_f32_to_bf16(h[j])) : h[j];
                bad += back[j] != want;
            }
            kgt_check(t.data && bad == 0 && be->err.code == KG_OK,
                      "upload_f32/download_f32 of %lld values round-trip (%lld differ)",
                      (long long)n, (long long)bad);
            be->ops->free(be, t.data);
            free(h);
            free(back);
        }
        kgt_check(be->ops->sync(be) == KG_OK, "sync on an idle backend");
        kg_backend_free(be);
        be = NULL;
    }
    st = kg_backend_cuda_new(&be, n, KG_F16, &err);
    kgt_check(st == KG_ERR_NO_DEVICE && !be, "device id %d (one past the last) rejected: \"%s\"", n,
              err.msg);
}

int main(void)
{
    int n = kg_cuda_device_count();
    check_bad_args();
    if (n == 0)
        no_device();
    else
        with_device(n);
    return kgt_finish();
}
