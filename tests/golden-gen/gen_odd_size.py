#!/usr/bin/env python3
"""Reference outputs for a size that is a multiple of 8 but not of 64: 72x56 pixels, latent 9x7.

Runs diffusers 0.21.4 (the version Kosmos-G pins) on the golden tiny models of
../shared/golden/sd (unet_tiny4: SD1.5's topology, 3 downsamplers; vae_tiny4: 4 levels),
built from the configs in their weights' metadata and loaded with their weights:

  - UNet2DConditionModel on a [2, 4, 9, 7] sample: 9 and 7 are not multiples of 2**3, so
    diffusers forwards each skip's size to the upsamplers (`forward_upsample_size`), and the
    stride-2 downsamplers give 9x7 -> 5x4 -> 3x2 -> 2x1;
  - AutoencoderKL.decode on a [1, 4, 9, 7] latent -> [1, 3, 72, 56].

Each runs in float32 (out.*) and float64 (out64.*), with the per-module outputs of the
up/down samplers recorded (act64.*) so a mismatch points at the level. Writes
data/odd_size.safetensors beside this script (inputs + outputs, ~60 KB).

usage: /work/venv/bin/python tests/golden-gen/gen_odd_size.py [GOLDEN_DIR]
"""
import json
import os
import sys

import torch
import diffusers
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "golden")
LAT_H, LAT_W = 9, 7


# diffusers 0.21.4 over torch 1.13 (no SDPA) computes attention scores as
# baddbmm(torch.empty(...), q, k^T, beta=0). torch documents that with beta 0 the input is
# ignored, but for the odd token counts here (63 = 9 * 7) torch 1.13's CPU kernel multiplies the
# uninitialised input by 0, so whole float32 outputs turned NaN (0 * NaN). Passing zeros instead
# gives exactly the documented result.
_baddbmm = torch.baddbmm


def _baddbmm_beta0_ignores_input(inp, b1, b2, *, beta=1, alpha=1, out=None):
    if beta == 0:
        inp = torch.zeros_like(inp)
    return _baddbmm(inp, b1, b2, beta=beta, alpha=alpha, out=out)


torch.baddbmm = _baddbmm_beta0_ignores_input


def load(cls, tag):
    path = os.path.join(GOLDEN, "sd", tag + ".weights.safetensors")
    with safe_open(path, "pt") as f:
        cfg = json.loads(f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = cls.from_config(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # the VAE file holds the decoder only; everything the decoder needs must be there
    if cls is UNet2DConditionModel:
        assert not missing and not unexpected, (missing, unexpected)
    else:
        assert not [k for k in missing if k.startswith(("decoder.", "post_quant_conv."))], missing
        assert not unexpected, unexpected
    return model.eval(), cfg


def record(model, names):
    acts = {}

    def hook(name):
        def fn(_mod, _inp, out):
            acts[name] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return fn

    handles = [dict(model.named_modules())[n].register_forward_hook(hook(n)) for n in names]
    return acts, handles


def main():
    assert diffusers.__version__ == "0.21.4", diffusers.__version__
    torch.manual_seed(72)
    out = {}
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__,
            "golden": "sd/unet_tiny4, sd/vae_tiny4", "latent": f"{LAT_H}x{LAT_W}",
            "pixels": f"{LAT_H * 8}x{LAT_W * 8}",
            "generator": "tests/golden-gen/gen_odd_size.py"}

    unet, ucfg = load(UNet2DConditionModel, "unet_tiny4")
    sample = torch.randn(2, ucfg["in_channels"], LAT_H, LAT_W)
    ehs = torch.randn(2, 7, ucfg["cross_attention_dim"])
    timestep = torch.tensor([981, 421], dtype=torch.int64)
    out["unet.in.sample"] = sample
    out["unet.in.encoder_hidden_states"] = ehs
    out["unet.in.timestep"] = timestep
    names = [n for n, _ in unet.named_modules() if n.endswith(("downsamplers.0", "upsamplers.0"))]
    with torch.no_grad():
        out["unet.out.sample"] = unet(sample, timestep, ehs).sample
        unet64 = unet.double()
        acts, handles = record(unet64, names)
        out["unet.out64.sample"] = unet64(sample.double(), timestep, ehs.double()).sample
        for h in handles:
            h.remove()
    for n in names:
        out["unet.act64." + n] = acts[n]
    for k in ("unet.out.sample", "unet.out64.sample"):
        assert torch.isfinite(out[k]).all(), k
    err = (out["unet.out.sample"].double() - out["unet.out64.sample"]).abs().max().item()
    meta["unet_f32_vs_f64_max_abs"] = repr(err)
    meta["unet_config"] = json.dumps(ucfg, sort_keys=True)
    meta["unet_levels"] = json.dumps({n: list(acts[n].shape[2:]) for n in names})

    vae, vcfg = load(AutoencoderKL, "vae_tiny4")
    latent = torch.randn(1, vcfg["latent_channels"], LAT_H, LAT_W)
    out["vae.in.latent"] = latent
    with torch.no_grad():
        out["vae.out.sample"] = vae.decode(latent).sample
        out["vae.out64.sample"] = vae.double().decode(latent.double()).sample
    for k in ("vae.out.sample", "vae.out64.sample"):
        assert torch.isfinite(out[k]).all(), k
    err = (out["vae.out.sample"].double() - out["vae.out64.sample"]).abs().max().item()
    meta["vae_f32_vs_f64_max_abs"] = repr(err)
    meta["vae_config"] = json.dumps(vcfg, sort_keys=True)

    os.makedirs(os.path.join(HERE, "data"), exist_ok=True)
    dst = os.path.join(HERE, "data", "odd_size.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, dst, metadata=meta)
    print(f"wrote {dst}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in out.items() if ".act64." not in k))
    print("levels:", meta["unet_levels"])
    print("f32 vs f64: unet", meta["unet_f32_vs_f64_max_abs"], "vae", meta["vae_f32_vs_f64_max_abs"])


if __name__ == "__main__":
    main()
