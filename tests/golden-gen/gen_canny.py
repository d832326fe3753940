#!/usr/bin/env python3
"""Reference edge maps for engine/image.c kg_image_canny (tests/test_canny.c).

    /work/venv/bin/python tests/golden-gen/gen_canny.py ../shared/golden tests/golden-gen/canny

cv2.Canny(rgb, low, high) exactly as controlnet_aux's CannyDetector calls it (an HWC uint8 RGB array,
aperture 3, L1 gradient), from PyPI's opencv-python-headless. Inputs: the reference photos of the
official e2e goldens (read from ../shared/golden at test time, not copied) and one synthetic image
stored here: shapes, a gradient and noise (96x128), and blurred colour noise (120x160, soft edges of
every orientation). Output canny_ref.safetensors: in.<name>.rgb for the stored ones and
edges.<image>.<low>_<high>: the edge map as np.packbits(edges > 0, axis=1) (U8 [H, ceil(W/8)], most
significant bit first) for the CannyDetector default (100, 200) and two lower pairs."""
import json
import os
import sys

import cv2
import numpy as np
from safetensors.numpy import load_file, save_file

THRESHOLDS = [(100, 200), (50, 100), (20, 60)]
SOURCES = {  # name -> (golden file, key)
    "two0": ("kosmosg/e2e_two_images_dpms.safetensors", "in.image0.rgb"),
    "two1": ("kosmosg/e2e_two_images_dpms.safetensors", "in.image1.rgb"),
}


def synthetic():
    rng = np.random.default_rng(11)
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.float64)
    img[20:60, 30:90] = (200, 40, 40)
    img[((yy - 70) ** 2 + (xx - 30) ** 2) < 15 ** 2] = (30, 200, 60)
    img[10:12, :] = (0, 0, 255)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def smooth():
    # a photo-like image: blurred colour noise at two scales (soft edges of every orientation)
    rng = np.random.default_rng(12)
    big = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (160, 120),
                     interpolation=cv2.INTER_CUBIC).astype(np.float64)
    fine = cv2.GaussianBlur(rng.normal(0, 40, (120, 160, 3)), (0, 0), 2.0)
    return np.clip(big + fine, 0, 255).astype(np.uint8)


def main():
    golden, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    images = {"synthetic": synthetic(), "smooth": smooth()}
    for name, (f, key) in SOURCES.items():
        images[name] = load_file(os.path.join(golden, f))[key]
    out = {"in.synthetic.rgb": images["synthetic"], "in.smooth.rgb": images["smooth"]}
    for name, rgb in images.items():
        for lo, hi in THRESHOLDS:
            e = cv2.Canny(np.ascontiguousarray(rgb), lo, hi)
            out["edges.%s.%d_%d" % (name, lo, hi)] = np.packbits(e > 0, axis=1)
            print("%s %dx%d (%d, %d): %.2f%% edge pixels" % (name, rgb.shape[1], rgb.shape[0], lo, hi,
                                                            100.0 * (e > 0).mean()))
    meta = {"generator": "tests/golden-gen/gen_canny.py", "opencv": cv2.__version__,
            "sources": json.dumps(SOURCES), "thresholds": json.dumps(THRESHOLDS)}
    save_file(out, os.path.join(outdir, "canny_ref.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
