/* fuzz_image.c - libFuzzer target: reference-image preprocessing on
 * arbitrary sizes, strides and pixel formats. Input header (10 bytes):
 *   [0] format (values past the last format are refused formats)
 *   [1..2] width, [3..4] height (u16 LE)
 *   [5] flags: bit0 width += 65535, bit1 height += 65535 (sizes past the
 *       65536 limit), bit2 stride one byte short, bit3 NULL data
 *   [6] stride padding bytes, [7] [8] resize output width/height (1 + value % 64)
 *   [9] unused
 * then the pixel bytes, tiled over the image. The image buffer ends exactly
 * at the last byte of the last row, so a read past it is an ASan report. */
#include <math.h>

#include "fuzz_common.h"
#include "image.h"
#include "tensor.h"

#define MAX_PIXEL_BYTES (1u << 20)

static const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
static const double stdv[3] = {0.26862954, 0.26130258, 0.27577711};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static float out[3 * KG_IMAGE_SIZE * KG_IMAGE_SIZE];
    static uint8_t small[64 * 64 * 3];
    kg_image img;
    kg_error err = {0};
    kg_status s;
    int bpp, ok;
    size_t row, need = 0;
    uint8_t *pix = NULL;
    const uint8_t *payload = data + 10;
    size_t plen = size > 10 ? size - 10 : 0;
    int64_t rw, rh;

    if (size < 10)
        return 0;
    img.format = (kg_pixel_format)(data[0] % 9);
    img.width = data[1] | data[2] << 8;
    img.height = data[3] | data[4] << 8;
    if (data[5] & 1)
        img.width += 65535;
    if (data[5] & 2)
        img.height += 65535;
    bpp = kg_pixel_format_bpp(img.format);
    row = (size_t)img.width * (size_t)bpp;
    img.stride = row + data[6];
    if ((data[5] & 4) && row > 0)
        img.stride = row - 1;
    ok = bpp > 0 && img.width >= 1 && img.height >= 1 && img.width <= KG_IMAGE_MAX_SIDE &&
         img.height <= KG_IMAGE_MAX_SIDE && img.stride >= row && !(data[5] & 8);
    if (ok) {
        need = (size_t)(img.height - 1) * img.stride + row;
        if (need > MAX_PIXEL_BYTES)
            return 0; /* valid but too slow to be worth fuzzing */
        pix = malloc(need);
        FUZZ_REQUIRE(pix != NULL);
        for (size_t i = 0; i < need; i += plen ? plen : need)
            if (plen)
                memcpy(pix + i, payload, need - i < plen ? need - i : plen);
            else
                memset(pix, 0x80, need);
    }
    img.data = (data[5] & 8) ? NULL : pix ? pix : (const uint8_t *)"";

    s = kg_image_check(&img, &err);
    FUZZ_REQUIRE(ok ? s == KG_OK : s == KG_ERR_IMAGE && err.msg[0] != '\0');
    err = (kg_error){0};
    s = kg_image_preprocess(&img, out, &err);
    if (!ok) {
        FUZZ_REFUSED(s, err);
        free(pix);
        return 0;
    }
    FUZZ_REQUIRE(s == KG_OK);
    for (int c = 0; c < 3; c++) {
        float lo = (float)((0.0 - mean[c]) / stdv[c]) - 1e-2f;
        float hi = (float)((1.0 - mean[c]) / stdv[c]) + 1e-2f;
        for (size_t i = 0; i < (size_t)KG_IMAGE_SIZE * KG_IMAGE_SIZE; i++) {
            float v = out[(size_t)c * KG_IMAGE_SIZE * KG_IMAGE_SIZE + i];
            FUZZ_REQUIRE(isfinite(v) && v >= lo && v <= hi);
            FUZZ_REQUIRE(kg_f16_to_f32(kg_f32_to_f16(v)) == v);
        }
    }
    /* a gray or constant image stays gray / constant through the resampler */
    rw = 1 + data[7] % 64;
    rh = 1 + data[8] % 64;
    s = kg_image_resize_rgb(&img, rw, rh, small, &err);
    FUZZ_REQUIRE(s == KG_OK);
    if (img.format == KG_PIX_GRAY8)
        for (size_t i = 0; i < (size_t)(rw * rh); i++)
            FUZZ_REQUIRE(small[3 * i] == small[3 * i + 1] && small[3 * i] == small[3 * i + 2]);
    free(pix);
    return 0;
}
