/* test_image.c - kg_image_* against kosmosg/preprocess.safetensors (PIL 9.4 +
 * torchvision 0.14 run by Kosmos-G's own transform), pixel formats, strides
 * and invalid inputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "tensor.h"
#include "testutil.h"

#define N_PIX ((size_t)KG_IMAGE_SIZE * KG_IMAGE_SIZE)

static const char *keys[] = {"px1x1",    "w7h300",   "w300h7",   "w225h224",
                             "w640h480", "w333h517", "noise224", "w2h3"};

static const kg_st_tensor *find_u8(const kg_st_file *g, const char *name)
{
    const kg_st_tensor *t = kg_st_find(g, name);
    if (t && t->dtype != KG_U8)
        t = NULL;
    return t;
}

/* Exact byte comparison; prints mismatches and the largest difference. */
static int compare_u8(const char *what, const uint8_t *got, const uint8_t *ref, size_t n)
{
    size_t bad = 0, first = 0;
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)ref[i]);
        if (d) {
            if (!bad)
                first = i;
            bad++;
            if (d > maxd)
                maxd = d;
        }
    }
    return kgt_check(bad == 0, "%s: %zu values, %zu differ (max |diff| %d, first at %zu)", what, n,
                     bad, maxd, first);
}

static kg_image rgb_image(const kg_st_tensor *t)
{
    kg_image im;
    im.format = KG_PIX_RGB;
    im.height = t->shape[0];
    im.width = t->shape[1];
    im.stride = (size_t)im.width * 3;
    im.data = t->data;
    return im;
}

static void check_golden(const kg_st_file *g, const char *k)
{
    char name[128];
    const kg_st_tensor *in, *res, *crop;
    kg_image im;
    kg_error err = {0};
    int64_t rw, rh;
    uint8_t *rgb = malloc(N_PIX * 3);
    float *norm = malloc(N_PIX * 3 * sizeof(float));
    float *pre = malloc(N_PIX * 3 * sizeof(float));
    double *ref = NULL;
    size_t n = 0;

    snprintf(name, sizeof name, "in.%s.rgb", k);
    in = find_u8(g, name);
    if (!kgt_check(in != NULL, "%s present", name))
        goto done;
    im = rgb_image(in);

    kg_image_resized_size(im.width, im.height, &rw, &rh);
    snprintf(name, sizeof name, "act.%s.resized", k);
    res = find_u8(g, name);
    if (res) {
        uint8_t *buf = malloc((size_t)rw * (size_t)rh * 3);
        kgt_check(res->shape[0] == rh && res->shape[1] == rw, "%s: resized size %lldx%lld", k,
                  (long long)rw, (long long)rh);
        if (res->shape[0] == rh && res->shape[1] == rw &&
            kgt_check(kg_image_resize_rgb(&im, rw, rh, buf, &err) == KG_OK,
                      "%s: kg_image_resize_rgb %s", k, err.msg[0] ? err.msg : "ok"))
            compare_u8(name, buf, res->data, (size_t)rw * (size_t)rh * 3);
        free(buf);
    }

    snprintf(name, sizeof name, "act.%s.cropped", k);
    crop = find_u8(g, name);
    if (kgt_check(crop != NULL, "%s present", name) &&
        kgt_check(kg_image_crop(&im, rgb, &err) == KG_OK, "%s: kg_image_crop %s", k,
                  err.msg[0] ? err.msg : "ok"))
        compare_u8(name, rgb, crop->data, N_PIX * 3);

    /* float64 normalisation cast to float32: the golden .f64 where stored,
     * else .f32 (= the float64 result cast) */
    kg_image_normalize(rgb, norm, 0);
    snprintf(name, sizeof name, "out.%s.f64", k);
    if (!kg_st_find(g, name))
        snprintf(name, sizeof name, "out.%s.f32", k);
    ref = kgt_read_f64(g, name, &n);
    if (ref && kgt_check(n == N_PIX * 3, "%s has %zu values", name, n))
        kgt_compare(name, norm, ref, n, 1e-6, 0.0);
    free(ref);

    /* what CLIP receives: the golden .f16 where stored, else the golden
     * float32 values rounded to float16 */
    if (!kgt_check(kg_image_preprocess(&im, pre, &err) == KG_OK, "%s: kg_image_preprocess %s", k,
                   err.msg[0] ? err.msg : "ok"))
        goto done;
    snprintf(name, sizeof name, "out.%s.f16", k);
    if (kg_st_find(g, name)) {
        ref = kgt_read_f64(g, name, &n);
    } else {
        float *f32;
        snprintf(name, sizeof name, "out.%s.f32", k);
        f32 = kgt_read_f32(g, name, &n);
        ref = f32 ? malloc(n * sizeof *ref) : NULL;
        for (size_t i = 0; ref && i < n; i++)
            ref[i] = kg_f16_to_f32(kg_f32_to_f16(f32[i]));
        snprintf(name, sizeof name, "f16(out.%s.f32)", k);
        free(f32);
    }
    if (ref && n == N_PIX * 3)
        kgt_compare(name, pre, ref, n, 1e-6, 0.0);
    free(ref);
done:
    free(rgb);
    free(norm);
    free(pre);
}

/* Repacks an RGB image into another format with a padded stride. */
static uint8_t *repack(const kg_st_tensor *t, kg_pixel_format f, size_t pad, kg_image *out)
{
    int bpp = kg_pixel_format_bpp(f);
    int64_t h = t->shape[0], w = t->shape[1];
    size_t stride = (size_t)w * (size_t)bpp + pad;
    uint8_t *buf = malloc(stride * (size_t)h);
    const uint8_t *src = t->data;
    memset(buf, 0xA5, stride * (size_t)h);
    for (int64_t y = 0; y < h; y++) {
        for (int64_t x = 0; x < w; x++) {
            const uint8_t *s = src + ((size_t)y * (size_t)w + (size_t)x) * 3;
            uint8_t *d = buf + (size_t)y * stride + (size_t)x * (size_t)bpp;
            switch (f) {
            case KG_PIX_RGB:
                d[0] = s[0];
                d[1] = s[1];
                d[2] = s[2];
                break;
            case KG_PIX_BGR:
                d[0] = s[2];
                d[1] = s[1];
                d[2] = s[0];
                break;
            case KG_PIX_RGBA:
            case KG_PIX_RGBX:
                d[0] = s[0];
                d[1] = s[1];
                d[2] = s[2];
                d[3] = (uint8_t)(x * 7 + y);
                break;
            case KG_PIX_BGRA:
            case KG_PIX_BGRX:
                d[0] = s[2];
                d[1] = s[1];
                d[2] = s[0];
                d[3] = (uint8_t)(x * 7 + y);
                break;
            case KG_PIX_GRAY8: d[0] = s[1]; break;
            }
        }
    }
    out->format = f;
    out->width = w;
    out->height = h;
    out->stride = stride;
    out->data = buf;
    return buf;
}

static void check_formats(const kg_st_file *g)
{
    static const struct {
        kg_pixel_format f;
        const char *name;
        size_t pad;
    } fm[] = {
        {KG_PIX_RGB, "RGB+pad", 5}, {KG_PIX_RGBA, "RGBA", 0},      {KG_PIX_RGBX, "RGBX+pad", 12},
        {KG_PIX_BGR, "BGR", 0},     {KG_PIX_BGRA, "BGRA+pad", 13}, {KG_PIX_BGRX, "BGRX", 0},
    };
    const kg_st_tensor *in = find_u8(g, "in.w333h517.rgb");
    kg_image ref_im, im;
    kg_error err = {0};
    uint8_t *ref = malloc(N_PIX * 3), *got = malloc(N_PIX * 3);

    if (!kgt_check(in != NULL, "in.w333h517.rgb present"))
        goto done;
    ref_im = rgb_image(in);
    kg_image_crop(&ref_im, ref, &err);
    for (size_t i = 0; i < sizeof fm / sizeof fm[0]; i++) {
        char what[64];
        uint8_t *buf = repack(in, fm[i].f, fm[i].pad, &im);
        snprintf(what, sizeof what, "w333h517 as %s equals RGB", fm[i].name);
        if (kgt_check(kg_image_crop(&im, got, &err) == KG_OK, "%s: kg_image_crop %s", what,
                      err.msg[0] ? err.msg : "ok"))
            compare_u8(what, got, ref, N_PIX * 3);
        free(buf);
    }

    /* GRAY8 (the green plane) = the RGB image with that plane replicated */
    {
        uint8_t *gray = repack(in, KG_PIX_GRAY8, 3, &im);
        uint8_t *rep = malloc((size_t)im.width * (size_t)im.height * 3);
        kg_image rim = im;
        for (int64_t y = 0; y < im.height; y++)
            for (int64_t x = 0; x < im.width; x++)
                memset(rep + ((size_t)y * (size_t)im.width + (size_t)x) * 3,
                       gray[(size_t)y * im.stride + (size_t)x], 3);
        rim.format = KG_PIX_RGB;
        rim.stride = (size_t)im.width * 3;
        rim.data = rep;
        kg_image_crop(&rim, ref, &err);
        if (kgt_check(kg_image_crop(&im, got, &err) == KG_OK, "GRAY8: kg_image_crop %s",
                      err.msg[0] ? err.msg : "ok"))
            compare_u8("w333h517 GRAY8 equals replicated RGB", got, ref, N_PIX * 3);
        free(rep);
        free(gray);
    }
done:
    free(ref);
    free(got);
}

static void expect_image_error(const char *what, const kg_image *im, float *out)
{
    kg_error err = {0};
    kg_status st = kg_image_preprocess(im, out, &err);
    kgt_check(st == KG_ERR_IMAGE && err.msg[0], "%s -> %s \"%s\"", what, kg_status_name(st),
              err.msg);
}

static void check_invalid(void)
{
    static const uint8_t px[64] = {0};
    float *out = malloc(N_PIX * 3 * sizeof(float));
    kg_image ok = {KG_PIX_RGB, 2, 2, 6, px}, im;

    expect_image_error("NULL image", NULL, out);
    expect_image_error("NULL output", &ok, NULL);
    im = ok;
    im.width = 0;
    expect_image_error("width 0", &im, out);
    im = ok;
    im.height = -3;
    expect_image_error("height -3", &im, out);
    im = ok;
    im.width = KG_IMAGE_MAX_SIDE + 1;
    expect_image_error("width above the limit", &im, out);
    im = ok;
    im.stride = 5;
    expect_image_error("stride 5 < 2 x 3", &im, out);
    im = ok;
    im.format = KG_PIX_BGRA;
    im.stride = 7;
    expect_image_error("BGRA stride 7 < 2 x 4", &im, out);
    im = ok;
    im.data = NULL;
    expect_image_error("NULL data", &im, out);
    im = ok;
    im.format = (kg_pixel_format)99;
    expect_image_error("unknown format", &im, out);
    {
        kg_error err = {0};
        kgt_check(kg_image_preprocess(&ok, out, &err) == KG_OK, "2x2 black image accepted");
    }
    free(out);
}

int main(void)
{
    kg_st_file *g = kgt_golden_open("kosmosg/preprocess.safetensors");
    if (g) {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            check_golden(g, keys[i]);
        check_formats(g);
        kg_st_close(g);
    }
    check_invalid();
    return kgt_finish();
}
