/* backend_cuda.c - creation, memory, transfers and the sticky error of the
 * CUDA backend; the op table points at the kernels in the other files.
 *
 * Everything a forward needs on the device (library workspaces, staging
 * buffers, the error flags) is allocated here, once. Transfers go through
 * the backend's stream and return when the data has arrived, so callers
 * may reuse their host buffers right away. */
#include "cuda/backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernels.h"

int kg_cuda_check(kg_backend *be, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 1;
    kg_backend_fail(be, KG_ERR_DEVICE, "cuda: %s: %s (%s)", what, cudaGetErrorString(e),
                    cudaGetErrorName(e));
    return 0;
}

int kg_cuda_check_launch(kg_backend *be, const char *what)
{
    return kg_cuda_check(be, cudaGetLastError(), what);
}

int kg_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

/* ------------------------------------------------------------------ memory */

static void *cuda_alloc(kg_backend *be, size_t nbytes)
{
    kg_cuda *cu = kg_cuda_of(be);
    kg_cuda_block *blk = malloc(sizeof *blk);
    void *p = NULL;
    if (!blk)
        return NULL;
    if (cudaMalloc(&p, nbytes ? nbytes : 1) != cudaSuccess) {
        /* out of memory is the caller's KG_ERR_NOMEM, not a sticky error;
         * clear the runtime's last error so no later launch is blamed */
        cudaGetLastError();
        free(blk);
        return NULL;
    }
    blk->p = p;
    blk->n = nbytes;
    blk->next = cu->blocks;
    cu->blocks = blk;
    be->n_allocs++;
    be->bytes_allocated += nbytes;
    return p;
}

static void cuda_free(kg_backend *be, void *p)
{
    kg_cuda *cu = kg_cuda_of(be);
    kg_cuda_block **link = &cu->blocks;
    if (!p)
        return;
    while (*link && (*link)->p != p)
        link = &(*link)->next;
    if (!*link) {
        kg_backend_fail(be, KG_ERR_INVALID_ARG,
                        "cuda: free of %p, which this backend did not allocate", p);
        return;
    }
    /* queued kernels may still read the block */
    kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "free: stream synchronize");
    kg_cuda_check(be, cudaFree(p), "cudaFree");
    be->bytes_allocated -= (*link)->n;
    {
        kg_cuda_block *dead = *link;
        *link = dead->next;
        free(dead);
    }
}

/* --------------------------------------------------------------- transfers */

static void cuda_upload(kg_backend *be, void *dst, const void *src, size_t nbytes)
{
    kg_cuda *cu = kg_cuda_of(be);
    if (!nbytes)
        return;
    if (kg_cuda_check(be, cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, cu->stream),
                      "upload"))
        kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "upload: stream synchronize");
}

static void cuda_download(kg_backend *be, void *dst, const void *src, size_t nbytes)
{
    kg_cuda *cu = kg_cuda_of(be);
    if (!nbytes)
        return;
    if (kg_cuda_check(be, cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, cu->stream),
                      "download"))
        kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "download: stream synchronize");
}

/* Host float32 -> pinned staging -> device float32 staging -> converted
 * into dst, one fixed-size chunk at a time (no allocation). */
static void cuda_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t n = kg_tensor_numel(dst), chunk = (int64_t)(KG_CUDA_STAGE_BYTES / sizeof(float));
    size_t es = kg_dtype_size(dst->dtype);
    for (int64_t i0 = 0; i0 < n && be->err.code == KG_OK; i0 += chunk) {
        int64_t m = n - i0 < chunk ? n - i0 : chunk;
        /* the previous chunk's copy and conversion must be done with the buffers */
        if (!kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "upload_f32: stream synchronize"))
            return;
        memcpy(cu->stage_host, src + i0, (size_t)m * sizeof(float));
        if (!kg_cuda_check(be,
                           cudaMemcpyAsync(cu->stage_dev, cu->stage_host, (size_t)m * sizeof(float),
                                           cudaMemcpyHostToDevice, cu->stream),
                           "upload_f32"))
            return;
        kg_cuda_convert(be, (char *)dst->data + (size_t)i0 * es, dst->dtype, cu->stage_dev, KG_F32,
                        m);
    }
    kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "upload_f32: stream synchronize");
}

static void cuda_download_f32(kg_backend *be, float *dst, const kg_tensor *src)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t n = kg_tensor_numel(src), chunk = (int64_t)(KG_CUDA_STAGE_BYTES / sizeof(float));
    size_t es = kg_dtype_size(src->dtype);
    for (int64_t i0 = 0; i0 < n && be->err.code == KG_OK; i0 += chunk) {
        int64_t m = n - i0 < chunk ? n - i0 : chunk;
        kg_cuda_convert(be, cu->stage_dev, KG_F32, (const char *)src->data + (size_t)i0 * es,
                        src->dtype, m);
        if (!kg_cuda_check(be,
                           cudaMemcpyAsync(cu->stage_host, cu->stage_dev, (size_t)m * sizeof(float),
                                           cudaMemcpyDeviceToHost, cu->stream),
                           "download_f32") ||
            !kg_cuda_check(be, cudaStreamSynchronize(cu->stream),
                           "download_f32: stream synchronize"))
            return;
        memcpy(dst + i0, cu->stage_host, (size_t)m * sizeof(float));
    }
}

/* Waits for the stream, then surfaces asynchronous runtime errors and the
 * errors kernels flagged on the device. */
static kg_status cuda_sync(kg_backend *be)
{
    kg_cuda *cu = kg_cuda_of(be);
    kg_cuda_flags *f = cu->flags_host;
    if (!kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "stream synchronize") ||
        !kg_cuda_check(be, cudaGetLastError(), "asynchronous error"))
        return be->err.code;
    if (!kg_cuda_check(
            be, cudaMemcpyAsync(f, cu->flags_dev, sizeof *f, cudaMemcpyDeviceToHost, cu->stream),
            "sync: read device flags") ||
        !kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "sync: read device flags"))
        return be->err.code;
    if (f->embed_bad || f->image_bad) {
        if (f->embed_bad)
            kg_backend_fail(be, KG_ERR_INVALID_ARG,
                            "embedding: id %lld at position %lld is outside the %lld-row table",
                            f->embed_id, f->embed_pos, f->embed_rows);
        else
            kg_backend_fail(be, KG_ERR_NONFINITE,
                            "the VAE decoder produced a non-finite value (element %lld of an "
                            "image): its weights hold NaN/Inf or overflow",
                            f->image_pos);
        memset(f, 0, sizeof *f);
        if (kg_cuda_check(be, cudaMemsetAsync(cu->flags_dev, 0, sizeof *f, cu->stream),
                          "sync: clear device flags"))
            kg_cuda_check(be, cudaStreamSynchronize(cu->stream), "sync: clear device flags");
    }
    return be->err.code;
}

/* ---------------------------------------------------------------- lifetime */

/* Releases whatever exists of cu (used by destroy and by a failed init). */
static void release(kg_cuda *cu)
{
    if (!cu)
        return;
    if (cu->stream)
        cudaStreamSynchronize(cu->stream);
    while (cu->blocks) {
        kg_cuda_block *b = cu->blocks;
        cu->blocks = b->next;
        cudaFree(b->p);
        free(b);
    }
    if (cu->conv_desc)
        cudnnDestroyConvolutionDescriptor(cu->conv_desc);
    if (cu->w_desc)
        cudnnDestroyFilterDescriptor(cu->w_desc);
    if (cu->y_desc)
        cudnnDestroyTensorDescriptor(cu->y_desc);
    if (cu->x_desc)
        cudnnDestroyTensorDescriptor(cu->x_desc);
    if (cu->dnn)
        cudnnDestroy(cu->dnn);
    if (cu->lt)
        cublasLtDestroy(cu->lt);
    cudaFree(cu->gn_partials);
    cudaFree(cu->flags_dev);
    cudaFreeHost(cu->flags_host);
    cudaFree(cu->stage_dev);
    cudaFreeHost(cu->stage_host);
    cudaFree(cu->dnn_ws);
    cudaFree(cu->lt_ws);
    if (cu->stream)
        cudaStreamDestroy(cu->stream);
    free(cu);
}

static void cuda_destroy(kg_backend *be)
{
    release(kg_cuda_of(be));
    free(be);
}

static const kg_backend_ops cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .upload_f32 = cuda_upload_f32,
    .download_f32 = cuda_download_f32,
    .sync = cuda_sync,
    .destroy = cuda_destroy,
    .linear = kg_cuda_linear,
    .conv2d = kg_cuda_conv2d,
    .group_norm = kg_cuda_group_norm,
    .layer_norm = kg_cuda_layer_norm,
    .attention = kg_cuda_attention,
    .activation = kg_cuda_activation,
    .geglu = kg_cuda_geglu,
    .binary = kg_cuda_binary,
    .axpby = kg_cuda_axpby,
    .upsample_nearest2x = kg_cuda_upsample_nearest2x,
    .upsample_nearest = kg_cuda_upsample_nearest,
    .concat = kg_cuda_concat,
    .permute = kg_cuda_permute,
    .copy = kg_cuda_copy,
    .embedding = kg_cuda_embedding,
    .l2_normalize = kg_cuda_l2_normalize,
    .fill = kg_cuda_fill,
    .image_to_device = kg_cuda_image_to_device,
};

#define RT(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            st = kg_error_set(err, e_ == cudaErrorMemoryAllocation ? KG_ERR_NOMEM : KG_ERR_DEVICE, \
                              "cuda backend, device %d: %s: %s", device_id, what,                  \
                              cudaGetErrorString(e_));                                             \
            cudaGetLastError();                                                                    \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define DNN(call, what)                                                                         \
    do {                                                                                        \
        cudnnStatus_t s_ = (call);                                                              \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                       \
            st = kg_error_set(err, KG_ERR_DEVICE, "cuda backend, device %d: %s: %s", device_id, \
                              what, cudnnGetErrorString(s_));                                   \
            goto fail;                                                                          \
        }                                                                                       \
    } while (0)

/* KG_OK when device_id is a device this build can run on; KG_ERR_NO_DEVICE
 * with the runtime's reason otherwise. */
static kg_status check_device(int device_id, kg_error *err)
{
    struct cudaDeviceProp prop;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return kg_error_set(err, KG_ERR_NO_DEVICE, "cuda backend: no usable CUDA device: %s (%s)",
                            cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (n == 0)
        return kg_error_set(err, KG_ERR_NO_DEVICE, "cuda backend: no CUDA device present");
    if (device_id < 0 || device_id >= n)
        return kg_error_set(err, KG_ERR_NO_DEVICE,
                            "cuda backend: device %d requested, %d device%s present", device_id, n,
                            n == 1 ? "" : "s");
    e = cudaGetDeviceProperties(&prop, device_id);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return kg_error_set(err, KG_ERR_DEVICE,
                            "cuda backend, device %d: cudaGetDeviceProperties: %s", device_id,
                            cudaGetErrorString(e));
    }
    /* the kernels are built for sm_80 and sm_90 (+ compute_90 PTX) */
    if (prop.major < 8)
        return kg_error_set(err, KG_ERR_NO_DEVICE,
                            "cuda backend: device %d (%s) has compute capability %d.%d; this build "
                            "needs 8.0 or newer",
                            device_id, prop.name, prop.major, prop.minor);
    return KG_OK;
}

kg_status kg_backend_cuda_new(kg_backend **out, int device_id, kg_dtype dtype, kg_error *err)
{
    kg_backend *be = NULL;
    kg_cuda *cu = NULL;
    kg_status st = KG_OK;
    cublasStatus_t bs;

    if (!out)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "cuda backend: out is NULL");
    *out = NULL;
    if (dtype != KG_F16 && dtype != KG_BF16 && dtype != KG_F32)
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "cuda backend: cannot compute in %s (F16, BF16 or F32)",
                            kg_dtype_name(dtype));
    st = check_device(device_id, err);
    if (st != KG_OK)
        return st;

    be = calloc(1, sizeof *be);
    cu = calloc(1, sizeof *cu);
    if (!be || !cu) {
        st = kg_error_set(err, KG_ERR_NOMEM, "cuda backend: out of host memory");
        goto fail;
    }
    cu->device = device_id;
    RT(cudaSetDevice(device_id), "cudaSetDevice");
    RT(cudaDeviceGetAttribute(&cu->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_id),
       "shared memory attribute");
    RT(cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    bs = cublasLtCreate(&cu->lt);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        st = kg_error_set(err, KG_ERR_DEVICE, "cuda backend, device %d: cublasLtCreate: %s",
                          device_id, cublasLtGetStatusString(bs));
        cu->lt = NULL;
        goto fail;
    }
    DNN(cudnnCreate(&cu->dnn), "cudnnCreate");
    DNN(cudnnSetStream(cu->dnn, cu->stream), "cudnnSetStream");
    DNN(cudnnCreateTensorDescriptor(&cu->x_desc), "cudnnCreateTensorDescriptor");
    DNN(cudnnCreateTensorDescriptor(&cu->y_desc), "cudnnCreateTensorDescriptor");
    DNN(cudnnCreateFilterDescriptor(&cu->w_desc), "cudnnCreateFilterDescriptor");
    DNN(cudnnCreateConvolutionDescriptor(&cu->conv_desc), "cudnnCreateConvolutionDescriptor");
    RT(cudaMalloc(&cu->lt_ws, KG_CUDA_LT_WS_BYTES), "cuBLASLt workspace");
    RT(cudaMalloc(&cu->dnn_ws, KG_CUDA_DNN_WS_BYTES), "cuDNN workspace");
    RT(cudaMalloc(&cu->stage_dev, KG_CUDA_STAGE_BYTES), "device staging buffer");
    RT(cudaHostAlloc(&cu->stage_host, KG_CUDA_STAGE_BYTES, cudaHostAllocDefault),
       "pinned staging buffer");
    RT(cudaMalloc((void **)&cu->gn_partials, 2 * KG_CUDA_GN_PARTIALS * sizeof(float)),
       "group norm partial sums");
    RT(cudaMalloc((void **)&cu->flags_dev, sizeof *cu->flags_dev), "device flags");
    RT(cudaHostAlloc((void **)&cu->flags_host, sizeof *cu->flags_host, cudaHostAllocDefault),
       "pinned flags");
    RT(cudaMemsetAsync(cu->flags_dev, 0, sizeof *cu->flags_dev, cu->stream), "clear flags");
    RT(cudaStreamSynchronize(cu->stream), "stream synchronize");

    be->ops = &cuda_ops;
    be->impl = cu;
    be->act_dtype = dtype;
    be->weight_dtype = dtype;
    be->host_memory = 0;
    *out = be;
    return KG_OK;
fail:
    release(cu);
    free(be);
    return st;
}

/* ------------------------------------------------------------ weight store */

/* A model's weights: device memory and synchronous copies on the legacy
 * default stream, nothing else (no stream, handles, workspaces or staging).
 * Sessions' backends on the same device read these blocks from their own
 * streams; every upload has completed when kg_load_component's sync returns. */

static void store_upload_f32(kg_backend *be, kg_tensor *dst, const float *src)
{
    int64_t n = kg_tensor_numel(dst);
    uint16_t *half;
    if (dst->dtype == KG_F32) {
        cuda_upload(be, dst->data, src, (size_t)n * sizeof(float));
        return;
    }
    /* converted on the host with the same round-to-nearest-even as the
     * device's __float2half_rn / __float2bfloat16_rn */
    half = malloc(n ? (size_t)n * sizeof *half : 1);
    if (!half) {
        kg_backend_fail(be, KG_ERR_NOMEM, "cuda weights: no host memory to convert %lld values",
                        (long long)n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        half[i] = dst->dtype == KG_F16 ? kg_f32_to_f16(src[i]) : kg_f32_to_bf16(src[i]);
    cuda_upload(be, dst->data, half, (size_t)n * sizeof *half);
    free(half);
}

static void store_download_f32(kg_backend *be, float *dst, const kg_tensor *src)
{
    int64_t n = kg_tensor_numel(src);
    uint16_t *half;
    if (src->dtype == KG_F32) {
        cuda_download(be, dst, src->data, (size_t)n * sizeof(float));
        return;
    }
    half = malloc(n ? (size_t)n * sizeof *half : 1);
    if (!half) {
        kg_backend_fail(be, KG_ERR_NOMEM, "cuda weights: no host memory to convert %lld values",
                        (long long)n);
        return;
    }
    cuda_download(be, half, src->data, (size_t)n * sizeof *half);
    for (int64_t i = 0; i < n; i++)
        dst[i] = src->dtype == KG_F16 ? kg_f16_to_f32(half[i]) : kg_bf16_to_f32(half[i]);
    free(half);
}

static kg_status store_sync(kg_backend *be)
{
    if (kg_cuda_check(be, cudaSetDevice(kg_cuda_of(be)->device), "weights: cudaSetDevice"))
        kg_cuda_check(be, cudaDeviceSynchronize(), "weights: device synchronize");
    return be->err.code;
}

static const kg_backend_ops store_ops = {
    .name = "cuda weights",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .upload_f32 = store_upload_f32,
    .download_f32 = store_download_f32,
    .sync = store_sync,
    .destroy = cuda_destroy,
};

static kg_status cuda_weights_new(kg_backend **out, const kg_backend_config *cfg, kg_error *err)
{
    kg_backend *be;
    kg_cuda *cu;
    kg_status st;
    cudaError_t e;

    *out = NULL;
    if (cfg->dtype != KG_F16 && cfg->dtype != KG_BF16 && cfg->dtype != KG_F32)
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "cuda backend: cannot compute in %s (F16, BF16 or F32)",
                            kg_dtype_name(cfg->dtype));
    st = check_device(cfg->device_id, err);
    if (st != KG_OK)
        return st;
    e = cudaSetDevice(cfg->device_id);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return kg_error_set(err, KG_ERR_DEVICE, "cuda backend, device %d: cudaSetDevice: %s",
                            cfg->device_id, cudaGetErrorString(e));
    }
    be = calloc(1, sizeof *be);
    cu = calloc(1, sizeof *cu);
    if (!be || !cu) {
        free(be);
        free(cu);
        return kg_error_set(err, KG_ERR_NOMEM, "cuda backend: out of host memory");
    }
    cu->device = cfg->device_id;
    be->ops = &store_ops;
    be->impl = cu;
    be->act_dtype = cfg->dtype;
    be->weight_dtype = cfg->dtype;
    be->host_memory = 0;
    *out = be;
    return KG_OK;
}

static kg_status cuda_compute_new(kg_backend **out, const kg_backend_config *cfg, kg_error *err)
{
    return kg_backend_cuda_new(out, cfg->device_id, cfg->dtype, err);
}

const kg_backend_provider kg_cuda_provider = {
    .abi = KG_BACKEND_PROVIDER_ABI,
    .ops_size = sizeof(kg_backend_ops),
    .name = "cuda",
    .weights_new = cuda_weights_new,
    .compute_new = cuda_compute_new,
};
