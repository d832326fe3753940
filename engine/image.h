/* image.h - reference-image preprocessing for the CLIP branch.
 *
 * Reproduces Kosmos-G's AppModel image transform ('gpt'): torchvision 0.14
 * Resize(224, BICUBIC) on a PIL image (PIL 9.4's antialiased separable
 * bicubic on 8-bit data), CenterCrop(224), CLIP mean/std normalisation in
 * float64, then the float16 cast kosmosg_preprocess applies before CLIP.
 * Host code: it runs before a forward pass and may use malloc. */
#ifndef KG_IMAGE_H
#define KG_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "kosmosg.h" /* kg_image, kg_pixel_format, KG_IMAGE_MAX_SIDE */
#include "status.h"

/* Side of the square CLIP input. */
#define KG_IMAGE_SIZE 224
/* Bytes per pixel of a format, 0 for an unknown one. */
int kg_pixel_format_bpp(kg_pixel_format f);

/* KG_ERR_IMAGE naming the problem when img is unusable (NULL data, size
 * outside 1..KG_IMAGE_MAX_SIDE, stride too small, unknown format). */
kg_status kg_image_check(const kg_image *img, kg_error *err);

/* torchvision Resize(KG_IMAGE_SIZE): short side -> 224, long side
 * int(224 * long / short). Equal to (w, h) when the short side already is
 * 224, in which case no resampling happens at all. */
void kg_image_resized_size(int64_t w, int64_t h, int64_t *out_w, int64_t *out_h);

/* PIL Image.resize((out_w, out_h), BICUBIC) of img converted to RGB (alpha
 * dropped, gray replicated: PIL convert("RGB")), written as packed RGB
 * [out_h, out_w, 3]. A dimension that keeps its size is not resampled. */
kg_status kg_image_resize_rgb(const kg_image *img, int64_t out_w, int64_t out_h, uint8_t *dst,
                              kg_error *err);

typedef enum kg_resample {
    KG_RESAMPLE_BICUBIC, /* PIL Image.BICUBIC (torchvision Resize) */
    KG_RESAMPLE_LANCZOS, /* PIL Image.LANCZOS (diffusers VaeImageProcessor's default) */
} kg_resample;

/* kg_image_resize_rgb with PIL's filter of choice. */
kg_status kg_image_resize_rgb_filter(const kg_image *img, int64_t out_w, int64_t out_h,
                                     kg_resample filter, uint8_t *dst, kg_error *err);

/* OpenCV cv2.Canny(img, low, high) (aperture 3, L1 gradient) as controlnet_aux's
 * CannyDetector runs it on the RGB image: Sobel 3x3 per channel with replicated borders,
 * per pixel the channel with the largest |dx| + |dy|, non-maximum suppression, hysteresis
 * (magnitude > high: edge; > low and 8-connected to an edge: edge). dst [h, w] gets 255 on
 * edges, 0 elsewhere. Thresholds are floored, swapped when low > high. */
kg_status kg_image_canny(const kg_image *img, double low, double high, uint8_t *dst, kg_error *err);

/* Resize(224) + CenterCrop(224) as packed RGB [224, 224, 3]. Only the
 * cropped window of the resized image is computed (each resampled pixel
 * depends on the source only, so the values are those of the full resize). */
kg_status kg_image_crop(const kg_image *img, uint8_t *dst, kg_error *err);

/* rgb [224, 224, 3] -> out [3, 224, 224]: (p / 255 - mean) / std in float64,
 * cast to float32; round_f16 != 0 then rounds to float16 values (float64 ->
 * float32 -> float16, torch's double rounding), stored as float32. */
void kg_image_normalize(const uint8_t *rgb, float *out, int round_f16);

/* The whole transform, as the model receives it: out [3, 224, 224] float32
 * holding float16-representable values. */
kg_status kg_image_preprocess(const kg_image *img, float *out, kg_error *err);

#endif
