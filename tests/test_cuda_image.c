/* test_cuda_image.c - images written straight into device memory
 * (kg_params.device_out, the backend op image_to_device, kernels/cuda/image.cu):
 * what the GStreamer plugin's CUDA memory output rests on.
 *
 *   test_cuda_image cpu   everywhere: device output on the CPU backend is
 *                         KG_ERR_UNSUPPORTED with a message and no output.
 *   test_cuda_image       with a device (exit 77 without): for F16, BF16 and
 *                         F32, image_to_device on an odd-sized image with
 *                         values around every rounding boundary matches the
 *                         host quantisation of kg_generate byte for byte, for
 *                         RGB and RGB+255 rows at a padded pitch, and leaves the
 *                         padding alone; NaN/Inf is KG_ERR_NONFINITE at sync;
 *                         then kg_generate on the tiny model with device_out
 *                         (cudaMallocPitch memory) gives the bytes of the same
 *                         generation in kg_output.rgb.
 * NOT RUN ON A GPU YET: the session that wrote it had none. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/backend_cuda.h"
#include "kosmosg.h"
#include "testutil.h"

/* the host path of kg_generate (engine/pipeline.c, decode) */
static uint8_t host_quantise(float x)
{
    float v = x / 2.0f + 0.5f;
    v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    return (uint8_t)rintf(v * 255.0f);
}

static void op_case(kg_dtype dt)
{
    const int64_t H = 37, W = 53, plane = H * W;
    kg_error err = {0};
    kg_backend *be = NULL;
    float *h = malloc((size_t)(3 * plane) * sizeof *h),
          *back = malloc((size_t)(3 * plane) * sizeof *back);
    kg_status st = kg_backend_cuda_new(&be, 0, dt, &err);

    if (!kgt_check(st == KG_OK, "%s backend: %s", kg_dtype_name(dt), err.msg))
        goto done;
    {
        kg_tensor x = kg_tensor_make(be->ops->alloc(be, (size_t)(3 * plane) * kg_dtype_size(dt)),
                                     dt, 4, (const int64_t[]){1, 3, H, W});
        /* every k/255 boundary: x with (x/2+0.5)*255 = k + 0.5 and its neighbours, then
         * values beyond [-1, 1] and signed zeros */
        for (int64_t i = 0; i < 3 * plane; i++) {
            int64_t k = i % 771;
            float f = k < 768 ? ((float)(k / 3) + 0.5f) / 255.0f * 2.0f - 1.0f : 0.0f;
            if (k < 768)
                f = nextafterf(f, (k % 3) == 0 ? -INFINITY : (k % 3) == 1 ? f : INFINITY);
            else
                f = k == 768 ? -0.0f : k == 769 ? 1.75f : -1.75f;
            h[i] = f;
        }
        be->ops->upload_f32(be, &x, h);
        be->ops->download_f32(be, back, &x); /* what the kernel reads (rounded to dt) */
        for (int ch = 3; ch <= 4; ch++) {
            size_t pitch = (size_t)W * (size_t)ch + 29, bytes = pitch * (size_t)H;
            uint8_t *dev = be->ops->alloc(be, bytes), *got = malloc(bytes), *fill = malloc(bytes);
            int64_t bad = 0, pad_bad = 0;
            memset(fill, 0xab, bytes);
            be->ops->upload(be, dev, fill, bytes);
            be->ops->image_to_device(be, dev, pitch, ch, &x);
            st = be->ops->sync(be);
            be->ops->download(be, got, dev, bytes);
            for (int64_t y = 0; y < H; y++)
                for (size_t b = 0; b < pitch; b++) {
                    uint8_t g = got[(size_t)y * pitch + b];
                    if (b >= (size_t)W * (size_t)ch) {
                        pad_bad += g != 0xab;
                        continue;
                    }
                    int64_t px = (int64_t)(b / (size_t)ch), c = (int64_t)(b % (size_t)ch);
                    uint8_t want = c == 3 ? 255 : host_quantise(back[c * plane + y * W + px]);
                    bad += g != want;
                }
            kgt_check(st == KG_OK && bad == 0 && pad_bad == 0,
                      "image_to_device %s, %d channels, %lldx%lld at pitch %zu: %lld bytes differ "
                      "from the host quantisation, %lld padding bytes touched (%s)",
                      kg_dtype_name(dt), ch, (long long)W, (long long)H, pitch, (long long)bad,
                      (long long)pad_bad, kg_status_name(st));
            be->ops->free(be, dev);
            free(got);
            free(fill);
        }
        /* a NaN: reported at sync, the way the host path reports it */
        {
            size_t pitch = (size_t)W * 3;
            uint8_t *dev = be->ops->alloc(be, pitch * (size_t)H);
            h[5 * W + 7] = NAN;
            be->ops->upload_f32(be, &x, h);
            be->ops->image_to_device(be, dev, pitch, 3, &x);
            st = be->ops->sync(be);
            kgt_check(st == KG_ERR_NONFINITE && strstr(be->err.msg, "non-finite"),
                      "NaN in the image: %s \"%s\"", kg_status_name(st), be->err.msg);
            be->ops->free(be, dev);
        }
        be->ops->free(be, x.data);
    }
done:
    kg_backend_free(be);
    free(h);
    free(back);
}

static kg_status open_tiny(kg_backend_kind kind, kg_model **m, kg_session **s, kg_error *err)
{
    kg_model_options opt;
    const char *path = getenv("KG_TINY_MODEL");
    kg_status st;

    if (!path || !*path)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "KG_TINY_MODEL is not set");
    kg_model_options_init(&opt);
    opt.backend = kind;
    opt.precision = KG_PRECISION_FP32;
    st = kg_model_open(m, path, &opt, err);
    if (st == KG_OK)
        st = kg_session_new(s, *m, err);
    return st;
}

static void tiny_params(kg_params *p)
{
    kg_params_init(p);
    p->prompt = "a red bicycle";
    p->steps = 2;
    p->seed = 42;
    p->num_images = 2;
    p->width = 64;
    p->height = 48;
}

static void e2e_case(void)
{
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_error err = {0};
    kg_params p;
    kg_output host = {0}, dev = {0};
    kg_device_image out[2];
    void *mem[2] = {NULL, NULL};
    size_t pitch[2] = {0, 0};
    kg_status st = open_tiny(KG_BACKEND_CUDA, &m, &s, &err);

    if (!kgt_check(st == KG_OK, "tiny model on CUDA: %s", err.msg))
        goto done;
    tiny_params(&p);
    st = kg_generate(s, &p, NULL, NULL, NULL, &host, &err);
    if (!kgt_check(st == KG_OK, "host output: %s", err.msg))
        goto done;
    for (int i = 0; i < 2; i++) {
        int bpp = i == 0 ? 3 : 4;
        if (cudaMallocPitch(&mem[i], &pitch[i], (size_t)p.width * (size_t)bpp, (size_t)p.height) !=
            cudaSuccess)
            goto done;
        out[i].ptr = (uint64_t)(uintptr_t)mem[i];
        out[i].pitch = pitch[i];
        out[i].format = i == 0 ? KG_PIX_RGB : KG_PIX_RGBA;
    }
    p.device_out = out;
    st = kg_generate(s, &p, NULL, NULL, NULL, &dev, &err);
    if (!kgt_check(st == KG_OK && dev.rgb == NULL && dev.n == 2 && dev.seed == host.seed,
                   "device output: %s, rgb %s, seed %lld", err.msg, dev.rgb ? "set" : "NULL",
                   (long long)dev.seed))
        goto done;
    for (int i = 0; i < 2; i++) {
        int bpp = i == 0 ? 3 : 4;
        size_t row = (size_t)p.width * (size_t)bpp;
        uint8_t *got = malloc(row * (size_t)p.height);
        int64_t bad = 0;
        cudaMemcpy2D(got, row, mem[i], pitch[i], row, (size_t)p.height, cudaMemcpyDeviceToHost);
        for (int y = 0; y < p.height; y++)
            for (int x = 0; x < p.width; x++) {
                const uint8_t *g = got + (size_t)y * row + (size_t)x * (size_t)bpp;
                const uint8_t *w =
                    host.rgb +
                    (((size_t)i * (size_t)p.height + (size_t)y) * (size_t)p.width + (size_t)x) * 3;
                bad += memcmp(g, w, 3) != 0 || (bpp == 4 && g[3] != 255);
            }
        kgt_check(bad == 0,
                  "kg_generate image %d into device memory (%s, pitch %zu): %lld of %d "
                  "pixels differ from kg_output.rgb of the same generation",
                  i, i == 0 ? "RGB" : "RGBA", pitch[i], (long long)bad, p.width * p.height);
        free(got);
    }
done:
    for (int i = 0; i < 2; i++)
        cudaFree(mem[i]);
    kg_output_free(&host);
    kg_output_free(&dev);
    kg_session_free(s);
    kg_model_close(m);
}

/* On the CPU backend device output is refused, and nothing is half-done. */
static int cpu_case(void)
{
    kg_model *m = NULL;
    kg_session *s = NULL;
    kg_error err = {0};
    kg_params p;
    kg_output o;
    kg_device_image d[2] = {{1, 64 * 3, KG_PIX_RGB}, {1, 64 * 3, KG_PIX_RGB}};
    kg_status st = open_tiny(KG_BACKEND_CPU, &m, &s, &err);

    if (kgt_check(st == KG_OK, "tiny model on the CPU: %s", err.msg)) {
        tiny_params(&p);
        p.device_out = d;
        memset(&o, 0x5a, sizeof o);
        st = kg_generate(s, &p, NULL, NULL, NULL, &o, &err);
        kgt_check(st == KG_ERR_UNSUPPORTED && strstr(err.msg, "device output") &&
                      strstr(err.msg, "CUDA") && o.rgb == NULL && o.n == 0,
                  "device output on the CPU backend: %s \"%s\", no output", kg_status_name(st),
                  err.msg);
    }
    kg_session_free(s);
    kg_model_close(m);
    return kgt_finish();
}

int main(int argc, char **argv)
{
    int n;

    if (argc > 1 && !strcmp(argv[1], "cpu"))
        return cpu_case();
    n = kg_cuda_device_count();
    if (n == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    op_case(KG_F16);
    op_case(KG_BF16);
    op_case(KG_F32);
    e2e_case();
    return kgt_finish();
}
