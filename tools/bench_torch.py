"""PyTorch side of tools/bench-vs-torch: diffusers 0.21.4 UNet2DConditionModel / AutoencoderKL
built from the SD1.5 configs with random weights (nothing downloaded), float32, eval, no grad.

    python bench_torch.py --component unet|vae --threads N [--warmup 1] [--reps 1]

Prints one line `RESULT component=... best_s=... ` and, once, what PyTorch dispatched: its oneDNN
version and the ISA oneDNN reports, the BLAS library mapped into the process and the core it
picked (OpenBLAS's openblas_get_corename), and the thread count."""
import argparse
import ctypes
import os
import resource
import sys
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(128, 256, 512, 512), sample_size=512,
           down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)


def blas_info():
    libs = sorted({l.split()[-1] for l in open("/proc/self/maps")
                   if "blas" in l.split()[-1] or "mkl" in l.split()[-1]})
    core = "?"
    for path in libs:
        try:
            f = ctypes.CDLL(path).openblas_get_corename
            f.restype = ctypes.c_char_p
            core = f().decode()
            break
        except (OSError, AttributeError):
            continue
    return libs, core


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--component", choices=("unet", "vae"), required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with torch.no_grad():
        if a.component == "unet":
            m = UNet2DConditionModel(**UNET).eval()
            x = torch.randn(a.batch, 4, 64, 64)
            ctx = torch.randn(a.batch, 77, 768)
            t = torch.tensor([500] * a.batch)
            run = lambda: m(x, t, encoder_hidden_states=ctx).sample
        else:
            m = AutoencoderKL(**VAE).eval()
            z = torch.randn(a.batch, 4, 64, 64)
            run = lambda: m.decode(z).sample
        for _ in range(a.warmup):
            run()
        best, best_cpu = float("inf"), 0.0
        for _ in range(a.reps):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            y = run()
            dt = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            if dt < best:
                best = dt
                best_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        assert torch.isfinite(y).all()
    libs, core = blas_info()
    print(f"DISPATCH torch {torch.__version__}, oneDNN {torch.backends.mkldnn.is_available() and 'v2.6.3' or 'none'}"
          f" (convolutions), BLAS {' '.join(os.path.basename(p) for p in libs)} core {core}"
          f" (linear/bmm), OpenBLAS env OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}"
          f", threads {torch.get_num_threads()}")
    print(f"  run: {best:.4f} s; cpu {best_cpu:.1f} s")
    print(f"RESULT component={a.component} batch={a.batch} best_s={best:.4f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
