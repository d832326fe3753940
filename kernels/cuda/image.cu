/* image.cu - the decoded image to 8-bit pixels in device memory (image_to_device): the
 * last stage of kg_generate when its caller asked for device output (a GstCudaMemory of
 * the GStreamer plugin), so the pixels never cross to the host. */
#include "cuda_common.cuh"

#define IMAGE_THREADS 256

/* x [3, H, W] planes -> rows of pitch bytes, channels 3 (RGB) or 4 (RGB, 255). The same
 * arithmetic as the host loop in engine/pipeline.c, step by step in fp32 without
 * contraction: v = x / 2 + 0.5 clamped to [0, 1], then v * 255 rounded half to even. */
template <typename T>
static __global__ void image_to_device_kernel(uint8_t *dst, size_t pitch, int channels, const T *x,
                                              int64_t h, int64_t w, kg_cuda_flags *flags)
{
    int64_t plane = h * w;
    KG_GRID_STRIDE(i, plane)
    {
        int64_t y = i / w, col = i % w;
        uint8_t *px = dst + (size_t)y * pitch + (size_t)col * (size_t)channels;
        for (int ch = 0; ch < 3; ch++) {
            float v = kg_ld(x[(int64_t)ch * plane + i]);
            if (!isfinite(v)) {
                if (atomicCAS(&flags->image_bad, 0, 1) == 0)
                    flags->image_pos = (long long)ch * plane + i;
                v = 0.0f;
            }
            v = __fadd_rn(__fdiv_rn(v, 2.0f), 0.5f);
            v = fminf(fmaxf(v, 0.0f), 1.0f);
            px[ch] = (uint8_t)__float2int_rn(__fmul_rn(v, 255.0f));
        }
        if (channels == 4)
            px[3] = 255;
    }
}

template <typename T>
static void image_to_device_cuda(uint8_t *dst, size_t pitch, int channels, const T *x, int64_t h,
                                 int64_t w, kg_cuda_flags *flags, cudaStream_t s)
{
    image_to_device_kernel<T><<<kg_grid(h * w, IMAGE_THREADS), IMAGE_THREADS, 0, s>>>(
        dst, pitch, channels, x, h, w, flags);
}

extern "C" void kg_cuda_image_to_device(kg_backend *be, void *dst, size_t pitch, int channels,
                                        const kg_tensor *x)
{
    kg_cuda *cu = kg_cuda_of(be);
    int64_t h = x->shape[2], w = x->shape[3];
    if (h * w == 0)
        return;
    KG_FLOAT_DISPATCH(x->dtype, T,
                      image_to_device_cuda<T>((uint8_t *)dst, pitch, channels, (const T *)x->data,
                                              h, w, cu->flags_dev, cu->stream));
    kg_cuda_check_launch(be, "image_to_device");
}
