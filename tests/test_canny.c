/* test_canny.c - kg_image_canny against cv2.Canny (opencv-python-headless, as
 * controlnet_aux's CannyDetector calls it on the RGB image), reference maps from
 * tests/golden-gen/gen_canny.py: 4 images (two stored synthetic ones, two reference
 * photos of the official e2e goldens) x 3 threshold pairs. Each map must agree on at
 * least 99.5% of its pixels; the figure and the mismatches (how many lie next to an
 * edge pixel of the reference, i.e. on edges' ends) are printed. Also: a grey image
 * gives the same map as its RGB copy, low > high is swapped, bad thresholds refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "safetensors.h"
#include "testutil.h"

#define MIN_AGREEMENT 0.995

static const char *const sources[][3] = {
    {"synthetic", NULL, "in.synthetic.rgb"},
    {"smooth", NULL, "in.smooth.rgb"},
    {"two0", "kosmosg/e2e_two_images_dpms.safetensors", "in.image0.rgb"},
    {"two1", "kosmosg/e2e_two_images_dpms.safetensors", "in.image1.rgb"},
};
static const int thresholds[][2] = {{100, 200}, {50, 100}, {20, 60}};

static int near_edge(const uint8_t *ref, int64_t w, int64_t h, int64_t x, int64_t y)
{
    for (int64_t yy = y - 1; yy <= y + 1; yy++)
        for (int64_t xx = x - 1; xx <= x + 1; xx++)
            if (yy >= 0 && yy < h && xx >= 0 && xx < w && !(xx == x && yy == y) && ref[yy * w + xx])
                return 1;
    return 0;
}

int main(void)
{
    char path[4096];
    const char *dir = getenv("KG_CANNY_REF");
    kg_st_file *ref = NULL;
    kg_error err = {0};
    size_t total = 0, equal_total = 0;

    snprintf(path, sizeof path, "%s/canny_ref.safetensors", dir ? dir : "tests/golden-gen/canny");
    if (!kgt_check(kg_st_open(&ref, path, &err) == KG_OK, "open %s: %s", path, err.msg))
        return kgt_finish();
    for (size_t s = 0; s < sizeof sources / sizeof *sources; s++) {
        kg_st_file *g = sources[s][1] ? kgt_golden_open(sources[s][1]) : NULL;
        const kg_st_tensor *t = kg_st_find(sources[s][1] ? g : ref, sources[s][2]);
        kg_image im;
        if (!kgt_check(t && t->ndim == 3 && t->shape[2] == 3, "%s: %s present", sources[s][0],
                       sources[s][2])) {
            kg_st_close(g);
            continue;
        }
        im = (kg_image){KG_PIX_RGB, t->shape[1], t->shape[0], (size_t)t->shape[1] * 3, t->data};
        for (size_t k = 0; k < sizeof thresholds / sizeof *thresholds; k++) {
            char key[96];
            int64_t w = im.width, h = im.height, pw = (w + 7) / 8;
            const kg_st_tensor *e;
            uint8_t *got = malloc((size_t)(w * h)), *want = malloc((size_t)(w * h));
            size_t equal = 0, mism = 0, ends = 0, edges = 0;
            kg_status st;
            snprintf(key, sizeof key, "edges.%s.%d_%d", sources[s][0], thresholds[k][0],
                     thresholds[k][1]);
            e = kg_st_find(ref, key);
            if (!kgt_check(e && e->ndim == 2 && e->shape[0] == h && e->shape[1] == pw,
                           "%s present [%lld, %lld]", key, (long long)h, (long long)pw)) {
                free(got);
                free(want);
                continue;
            }
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++)
                    want[y * w + x] =
                        (((const uint8_t *)e->data)[y * pw + x / 8] >> (7 - x % 8)) & 1 ? 255 : 0;
            st = kg_image_canny(&im, thresholds[k][0], thresholds[k][1], got, &err);
            if (kgt_check(st == KG_OK, "%s: canny (%s)", key, st == KG_OK ? "ok" : err.msg)) {
                for (int64_t i = 0; i < w * h; i++) {
                    edges += want[i] != 0;
                    if (got[i] == want[i]) {
                        equal++;
                        continue;
                    }
                    mism++;
                    ends += near_edge(want, w, h, i % w, i / w);
                }
                total += (size_t)(w * h);
                equal_total += equal;
                kgt_check((double)equal >= MIN_AGREEMENT * (double)(w * h),
                          "%s: %.4f%% of %lld pixels equal (min %.1f%%; %zu edge pixels in cv2's "
                          "map, %zu differ, %zu of them next to one of its edge pixels)",
                          key, 100.0 * (double)equal / (double)(w * h), (long long)(w * h),
                          100.0 * MIN_AGREEMENT, edges, mism, ends);
            }
            free(got);
            free(want);
        }
        kg_st_close(g);
    }
    printf("overall: %.4f%% of %zu pixels equal\n",
           total ? 100.0 * (double)equal_total / (double)total : 0.0, total);
    kgt_check(total > 0, "pixels compared: %zu", total);

    {
        /* grey = its RGB replica (one channel), swapped thresholds, refusals */
        const kg_st_tensor *t = kg_st_find(ref, "in.smooth.rgb");
        int64_t w = t ? t->shape[1] : 0, h = t ? t->shape[0] : 0;
        uint8_t *grey = malloc((size_t)(w * h)), *rgb = malloc((size_t)(w * h * 3));
        uint8_t *a = malloc((size_t)(w * h)), *b = malloc((size_t)(w * h));
        kg_image gi, ri;
        for (int64_t i = 0; t && i < w * h; i++) {
            grey[i] = ((const uint8_t *)t->data)[i * 3 + 1];
            rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = grey[i];
        }
        gi = (kg_image){KG_PIX_GRAY8, w, h, (size_t)w, grey};
        ri = (kg_image){KG_PIX_RGB, w, h, (size_t)w * 3, rgb};
        if (t && kg_image_canny(&gi, 50, 100, a, &err) == KG_OK &&
            kg_image_canny(&ri, 100, 50, b, &err) == KG_OK)
            kgt_check(!memcmp(a, b, (size_t)(w * h)),
                      "grey image == its RGB replica, and low/high swapped are the same");
        else
            kgt_check(0, "grey/RGB canny ran: %s", err.msg);
        kgt_check(kg_image_canny(&ri, -1, 100, a, &err) == KG_ERR_INVALID_ARG,
                  "negative threshold refused (%s)", err.msg);
        kgt_check(kg_image_canny(&ri, 0.0 / 0.0, 100, a, &err) == KG_ERR_INVALID_ARG,
                  "NaN threshold refused (%s)", err.msg);
        free(grey);
        free(rgb);
        free(a);
        free(b);
    }
    kg_st_close(ref);
    return kgt_finish();
}
