/* image.c - Resize(224, BICUBIC) + CenterCrop(224) + CLIP normalisation,
 * bit-exact with torchvision 0.14 on PIL 9.4 images.
 *
 * PIL resamples in two separable passes, horizontal first, with the
 * bicubic kernel (a = -0.5) widened by the scale factor when downscaling,
 * coefficients normalised to sum 1 and then quantised to 22-bit fixed
 * point, and an 8-bit clip after each pass. A dimension that keeps its size
 * is not resampled (Resample.c ImagingResampleInner). */
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor.h"

/* PIL: 32 - 8 bits of result - 2 bits of headroom for negative lobes. */
#define PRECISION_BITS 22
#define BICUBIC_SUPPORT 2.0
#define LANCZOS_SUPPORT 3.0

static const double clip_mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

int kg_pixel_format_bpp(kg_pixel_format f)
{
    switch (f) {
    case KG_PIX_RGB:
    case KG_PIX_BGR: return 3;
    case KG_PIX_RGBA:
    case KG_PIX_RGBX:
    case KG_PIX_BGRA:
    case KG_PIX_BGRX: return 4;
    case KG_PIX_GRAY8: return 1;
    }
    return 0;
}

/* Byte offsets of R, G, B inside one pixel. */
static void channel_offsets(kg_pixel_format f, int off[3])
{
    int bgr = f == KG_PIX_BGR || f == KG_PIX_BGRA || f == KG_PIX_BGRX;
    if (f == KG_PIX_GRAY8) {
        off[0] = off[1] = off[2] = 0;
    } else {
        off[0] = bgr ? 2 : 0;
        off[1] = 1;
        off[2] = bgr ? 0 : 2;
    }
}

kg_status kg_image_check(const kg_image *img, kg_error *err)
{
    int bpp;
    if (!img)
        return kg_error_set(err, KG_ERR_IMAGE, "image: NULL image");
    bpp = kg_pixel_format_bpp(img->format);
    if (bpp == 0)
        return kg_error_set(err, KG_ERR_IMAGE, "image: unknown pixel format %d", (int)img->format);
    if (img->width < 1 || img->height < 1 || img->width > KG_IMAGE_MAX_SIDE ||
        img->height > KG_IMAGE_MAX_SIDE)
        return kg_error_set(err, KG_ERR_IMAGE, "image: size %lldx%lld outside 1..%d",
                            (long long)img->width, (long long)img->height, KG_IMAGE_MAX_SIDE);
    if (img->stride < (size_t)img->width * (size_t)bpp)
        return kg_error_set(err, KG_ERR_IMAGE,
                            "image: stride %zu is smaller than width %lld x %d bytes per pixel",
                            img->stride, (long long)img->width, bpp);
    if (!img->data)
        return kg_error_set(err, KG_ERR_IMAGE, "image: NULL pixel data");
    return KG_OK;
}

void kg_image_resized_size(int64_t w, int64_t h, int64_t *out_w, int64_t *out_h)
{
    int64_t shrt = w <= h ? w : h;
    int64_t lng = w <= h ? h : w;
    /* Python's int(224 * long / short): a correctly rounded true division,
     * then truncation; 224 * long is exact in a double. */
    int64_t new_long = (int64_t)((double)(KG_IMAGE_SIZE * lng) / (double)shrt);
    if (w <= h) {
        *out_w = KG_IMAGE_SIZE;
        *out_h = new_long;
    } else {
        *out_w = new_long;
        *out_h = KG_IMAGE_SIZE;
    }
}

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= 3.14159265358979323846;
    return sin(x) / x;
}

/* PIL Resample.c lanczos_filter: a = 3 */
static double lanczos(double x)
{
    if (-3.0 <= x && x < 3.0)
        return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

/* Fixed-point taps of outputs first .. first + n - 1 along one axis. */
typedef struct taps {
    int ksize;
    int64_t *start; /* [n] first source index */
    int64_t *count; /* [n] number of source samples */
    int32_t *k;     /* [n, ksize] coefficients, 2^22 = 1.0 */
} taps;

static void taps_free(taps *t)
{
    free(t->start);
    free(t->count);
    free(t->k);
    memset(t, 0, sizeof *t);
}

/* Resample.c precompute_coeffs + normalize_coeffs_8bpc for a full-image box
 * (in0 = 0, in1 = in_size as a float). */
static kg_status taps_init(taps *t, int64_t in_size, int64_t out_size, int64_t first, int64_t n,
                           kg_resample filter, kg_error *err)
{
    double scale = (double)(float)in_size / (double)out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double (*kernel)(double) = filter == KG_RESAMPLE_LANCZOS ? lanczos : bicubic;
    double support =
        (filter == KG_RESAMPLE_LANCZOS ? LANCZOS_SUPPORT : BICUBIC_SUPPORT) * filterscale;
    double ss = 1.0 / filterscale; /* PIL multiplies by the reciprocal */
    double *w = NULL;
    int64_t i;

    memset(t, 0, sizeof *t);
    t->ksize = (int)ceil(support) * 2 + 1;
    t->start = malloc((size_t)n * sizeof *t->start);
    t->count = malloc((size_t)n * sizeof *t->count);
    t->k = calloc((size_t)n * (size_t)t->ksize, sizeof *t->k);
    w = malloc((size_t)t->ksize * sizeof *w);
    if (!t->start || !t->count || !t->k || !w) {
        free(w);
        taps_free(t);
        return kg_error_set(err, KG_ERR_NOMEM, "image: no memory for %lld resampling taps",
                            (long long)n);
    }
    for (i = 0; i < n; i++) {
        double center = ((double)(first + i) + 0.5) * scale;
        double ww = 0.0;
        /* PIL rounds the bounds by truncating value + 0.5 */
        int64_t xmin = (int64_t)(center - support + 0.5);
        int64_t xmax = (int64_t)(center + support + 0.5);
        int64_t x;
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        for (x = 0; x < xmax; x++) {
            w[x] = kernel(((double)(x + xmin) - center + 0.5) * ss);
            ww += w[x];
        }
        for (x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            v *= (double)(1 << PRECISION_BITS);
            t->k[i * t->ksize + x] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
        t->start[i] = xmin;
        t->count[i] = xmax;
    }
    free(w);
    return KG_OK;
}

static uint8_t clip8(int64_t acc)
{
    int64_t v;
    if (acc < 0)
        return 0;
    v = acc >> PRECISION_BITS;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* Resizes img to out_w x out_h (as RGB) and writes the window
 * [x0, x0 + win_w) x [y0, y0 + win_h) of the result to dst [win_h, win_w, 3]. */
static kg_status resample_window(const kg_image *img, int64_t out_w, int64_t out_h, int64_t x0,
                                 int64_t y0, int64_t win_w, int64_t win_h, kg_resample filter,
                                 uint8_t *dst, kg_error *err)
{
    int need_h = out_w != img->width;
    int need_v = out_h != img->height;
    int bpp = kg_pixel_format_bpp(img->format);
    int off[3];
    taps th = {0}, tv = {0};
    int64_t row0, nrows, y, x, j;
    uint8_t *tmp = NULL;
    kg_status st = KG_OK;

    channel_offsets(img->format, off);
    if (need_v) {
        st = taps_init(&tv, img->height, out_h, y0, win_h, filter, err);
        if (st != KG_OK)
            goto fail;
        row0 = tv.start[0];
        nrows = tv.start[win_h - 1] + tv.count[win_h - 1] - row0;
    } else {
        row0 = y0;
        nrows = win_h;
    }
    if (need_h) {
        st = taps_init(&th, img->width, out_w, x0, win_w, filter, err);
        if (st != KG_OK)
            goto fail;
    }

    /* horizontal pass (or format conversion) into tmp [nrows, win_w, 3] */
    tmp = malloc((size_t)nrows * (size_t)win_w * 3);
    if (!tmp) {
        st = kg_error_set(err, KG_ERR_NOMEM, "image: no memory for %lldx%lld intermediate",
                          (long long)win_w, (long long)nrows);
        goto fail;
    }
    for (y = 0; y < nrows; y++) {
        const uint8_t *src = img->data + (size_t)(row0 + y) * img->stride;
        uint8_t *o = tmp + (size_t)y * (size_t)win_w * 3;
        for (x = 0; x < win_w; x++) {
            int c;
            if (!need_h) {
                const uint8_t *p = src + (size_t)(x0 + x) * (size_t)bpp;
                for (c = 0; c < 3; c++)
                    o[x * 3 + c] = p[off[c]];
                continue;
            }
            for (c = 0; c < 3; c++) {
                const int32_t *k = th.k + x * th.ksize;
                const uint8_t *p = src + (size_t)th.start[x] * (size_t)bpp + off[c];
                int64_t acc = 1 << (PRECISION_BITS - 1);
                for (j = 0; j < th.count[x]; j++)
                    acc += (int64_t)p[j * bpp] * k[j];
                o[x * 3 + c] = clip8(acc);
            }
        }
    }

    /* vertical pass (or copy) into dst */
    for (y = 0; y < win_h; y++) {
        uint8_t *o = dst + (size_t)y * (size_t)win_w * 3;
        if (!need_v) {
            memcpy(o, tmp + (size_t)y * (size_t)win_w * 3, (size_t)win_w * 3);
            continue;
        }
        {
            const int32_t *k = tv.k + y * tv.ksize;
            const uint8_t *base = tmp + (size_t)(tv.start[y] - row0) * (size_t)win_w * 3;
            size_t rs = (size_t)win_w * 3;
            for (x = 0; x < win_w * 3; x++) {
                int64_t acc = 1 << (PRECISION_BITS - 1);
                for (j = 0; j < tv.count[y]; j++)
                    acc += (int64_t)base[(size_t)j * rs + (size_t)x] * k[j];
                o[x] = clip8(acc);
            }
        }
    }

fail:
    free(tmp);
    taps_free(&th);
    taps_free(&tv);
    return st;
}

kg_status kg_image_resize_rgb(const kg_image *img, int64_t out_w, int64_t out_h, uint8_t *dst,
                              kg_error *err)
{
    return kg_image_resize_rgb_filter(img, out_w, out_h, KG_RESAMPLE_BICUBIC, dst, err);
}

kg_status kg_image_resize_rgb_filter(const kg_image *img, int64_t out_w, int64_t out_h,
                                     kg_resample filter, uint8_t *dst, kg_error *err)
{
    kg_status st = kg_image_check(img, err);
    if (st != KG_OK)
        return st;
    if (out_w < 1 || out_h < 1 || out_w > (int64_t)KG_IMAGE_SIZE * KG_IMAGE_MAX_SIDE ||
        out_h > (int64_t)KG_IMAGE_SIZE * KG_IMAGE_MAX_SIDE)
        return kg_error_set(err, KG_ERR_IMAGE, "image: resize target %lldx%lld is invalid",
                            (long long)out_w, (long long)out_h);
    if (!dst)
        return kg_error_set(err, KG_ERR_IMAGE, "image: NULL output buffer");
    return resample_window(img, out_w, out_h, 0, 0, out_w, out_h, filter, dst, err);
}

/* torchvision CenterCrop: int(round((size - 224) / 2)), Python rounds half
 * to even (225 -> 0, 347 -> 62). */
static int64_t crop_offset(int64_t size)
{
    int64_t d = size - KG_IMAGE_SIZE;
    int64_t q = d / 2;
    if ((d & 1) && (q & 1))
        q++;
    return q;
}

kg_status kg_image_crop(const kg_image *img, uint8_t *dst, kg_error *err)
{
    int64_t rw, rh;
    kg_status st = kg_image_check(img, err);
    if (st != KG_OK)
        return st;
    if (!dst)
        return kg_error_set(err, KG_ERR_IMAGE, "image: NULL output buffer");
    kg_image_resized_size(img->width, img->height, &rw, &rh);
    return resample_window(img, rw, rh, crop_offset(rw), crop_offset(rh), KG_IMAGE_SIZE,
                           KG_IMAGE_SIZE, KG_RESAMPLE_BICUBIC, dst, err);
}

void kg_image_normalize(const uint8_t *rgb, float *out, int round_f16)
{
    const size_t plane = (size_t)KG_IMAGE_SIZE * KG_IMAGE_SIZE;
    size_t i;
    int c;
    for (c = 0; c < 3; c++) {
        for (i = 0; i < plane; i++) {
            double v = ((double)rgb[i * 3 + (size_t)c] / 255.0 - clip_mean[c]) / clip_std[c];
            float f = (float)v;
            out[(size_t)c * plane + i] = round_f16 ? kg_f16_to_f32(kg_f32_to_f16(f)) : f;
        }
    }
}

kg_status kg_image_preprocess(const kg_image *img, float *out, kg_error *err)
{
    uint8_t *rgb;
    kg_status st;
    if (!out)
        return kg_error_set(err, KG_ERR_IMAGE, "image: NULL output tensor");
    rgb = malloc((size_t)KG_IMAGE_SIZE * KG_IMAGE_SIZE * 3);
    if (!rgb)
        return kg_error_set(err, KG_ERR_NOMEM, "image: no memory for the cropped image");
    st = kg_image_crop(img, rgb, err);
    if (st == KG_OK)
        kg_image_normalize(rgb, out, 1);
    free(rgb);
    return st;
}

/* ------------------------------------------------------------------ canny */

/* OpenCV canny.cpp: tan(22.5 deg) in 15-bit fixed point */
#define CANNY_SHIFT 15
#define CANNY_TG22 13573 /* (int)(0.4142135623730950488 * (1 << 15) + 0.5) */

kg_status kg_image_canny(const kg_image *img, double low_thresh, double high_thresh, uint8_t *dst,
                         kg_error *err)
{
    int64_t W, H;
    int bpp, off[3];
    int32_t *dx = NULL, *dy = NULL, *mag = NULL;
    uint8_t *map = NULL;
    int64_t *stack = NULL, top = 0;
    int low, high;
    kg_status st = kg_image_check(img, err);

    if (st != KG_OK)
        return st;
    if (!dst)
        return kg_error_set(err, KG_ERR_IMAGE, "canny: NULL output buffer");
    if (!(low_thresh >= 0.0 && high_thresh >= 0.0 && low_thresh < 1e9 && high_thresh < 1e9))
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "canny: thresholds %g / %g: expected finite values >= 0", low_thresh,
                            high_thresh);
    if (low_thresh > high_thresh) {
        double t = low_thresh;
        low_thresh = high_thresh;
        high_thresh = t;
    }
    low = (int)floor(low_thresh); /* cvFloor, L1 gradient */
    high = (int)floor(high_thresh);
    W = img->width;
    H = img->height;
    bpp = kg_pixel_format_bpp(img->format);
    channel_offsets(img->format, off);
    dx = malloc((size_t)(W * H) * sizeof *dx);
    dy = malloc((size_t)(W * H) * sizeof *dy);
    mag = calloc((size_t)((W + 2) * (H + 2)), sizeof *mag);
    map = malloc((size_t)((W + 2) * (H + 2)));
    stack = malloc((size_t)(W * H) * sizeof *stack);
    if (!dx || !dy || !mag || !map || !stack) {
        st = kg_error_set(err, KG_ERR_NOMEM, "canny: no memory for a %lldx%lld image", (long long)W,
                          (long long)H);
        goto done;
    }

    /* Sobel 3x3 (BORDER_REPLICATE) per channel; per pixel the channel with the largest
     * |dx| + |dy| (the first on ties) gives dx, dy and the magnitude */
    for (int64_t y = 0; y < H; y++) {
        const uint8_t *rows[3];
        rows[0] = img->data + (size_t)(y > 0 ? y - 1 : 0) * img->stride;
        rows[1] = img->data + (size_t)y * img->stride;
        rows[2] = img->data + (size_t)(y < H - 1 ? y + 1 : H - 1) * img->stride;
        for (int64_t x = 0; x < W; x++) {
            int64_t xl = x > 0 ? x - 1 : 0, xr = x < W - 1 ? x + 1 : W - 1;
            int best = -1, bx = 0, by = 0;
            for (int c = 0; c < 3; c++) {
#define P(r, xx) ((int)rows[r][(size_t)(xx) * (size_t)bpp + (size_t)off[c]])
                int gx = (P(0, xr) - P(0, xl)) + 2 * (P(1, xr) - P(1, xl)) + (P(2, xr) - P(2, xl));
                int gy = (P(2, xl) + 2 * P(2, x) + P(2, xr)) - (P(0, xl) + 2 * P(0, x) + P(0, xr));
#undef P
                int m = abs(gx) + abs(gy);
                if (m > best) {
                    best = m;
                    bx = gx;
                    by = gy;
                }
                if (img->format == KG_PIX_GRAY8)
                    break; /* one channel: what cv2 sees for a grey image */
            }
            dx[y * W + x] = bx;
            dy[y * W + x] = by;
            mag[(y + 1) * (W + 2) + x + 1] = best;
        }
    }

    /* non-maximum suppression along the gradient's octant (OpenCV's comparisons: strict on
     * one side, >= on the other for horizontal/vertical, strict on both diagonally);
     * map: 0 candidate, 1 not an edge, 2 edge */
    memset(map, 1, (size_t)((W + 2) * (H + 2)));
    for (int64_t y = 0; y < H; y++) {
        for (int64_t x = 0; x < W; x++) {
            int64_t j = (y + 1) * (W + 2) + x + 1, s2 = W + 2;
            int m = mag[j], keep = 0;
            if (m > low) {
                int xs = dx[y * W + x], ys = dy[y * W + x];
                int64_t ax = abs(xs), ay = (int64_t)abs(ys) << CANNY_SHIFT;
                int64_t tg22x = ax * CANNY_TG22;
                if (ay < tg22x) {
                    keep = m > mag[j - 1] && m >= mag[j + 1];
                } else {
                    int64_t tg67x = tg22x + (ax << (CANNY_SHIFT + 1));
                    if (ay > tg67x) {
                        keep = m > mag[j - s2] && m >= mag[j + s2];
                    } else {
                        int64_t sgn = (xs ^ ys) < 0 ? -1 : 1;
                        keep = m > mag[j - s2 - sgn] && m > mag[j + s2 + sgn];
                    }
                }
            }
            if (!keep)
                continue;
            if (m > high) {
                map[j] = 2;
                stack[top++] = j;
            } else {
                map[j] = 0;
            }
        }
    }

    /* hysteresis: candidates 8-connected to an edge become edges */
    while (top > 0) {
        int64_t j = stack[--top], s2 = W + 2;
        const int64_t nb[8] = {-s2 - 1, -s2, -s2 + 1, -1, 1, s2 - 1, s2, s2 + 1};
        for (int k = 0; k < 8; k++) {
            if (map[j + nb[k]] == 0) {
                map[j + nb[k]] = 2;
                stack[top++] = j + nb[k];
            }
        }
    }
    for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++)
            dst[y * W + x] = map[(y + 1) * (W + 2) + x + 1] == 2 ? 255 : 0;
done:
    free(dx);
    free(dy);
    free(mag);
    free(map);
    free(stack);
    return st;
}
