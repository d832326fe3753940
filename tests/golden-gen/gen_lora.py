"""LoRA reference data for the tiny U-Nets (../shared/golden/sd/unet_tiny, unet_tiny4).

Run: /work/venv/bin/python tests/golden-gen/gen_lora.py   (diffusers 0.21.4, the version Kosmos-G pins,
over Debian's torch; no network)

For each tiny U-Net, two LoRA files are written to tests/data/lora/ and loaded back through the same
diffusers calls the official demo's load_lora makes (LoraLoaderMixin.lora_state_dict on the file +
load_lora_into_unet), so a wrong parser cannot agree with itself:
  <tag>.diffusers.safetensors  diffusers layout: unet.<module>.lora.{down,up}.weight (attention layers in
                               the legacy attn-processor form unet.<...>.attn1.processor.to_q_lora.*), plus
                               text_encoder.* entries the U-Net loader ignores; no alpha (factor 1)
  <tag>.kohya.safetensors      kohya/A1111 layout: lora_unet_<module>.{lora_down,lora_up}.weight + .alpha
                               with alpha != rank (and one module without .alpha), conv layers as LoCon
                               (3x3 down, 1x1 up), plus lora_te_* entries; F16 tensors
Layers: attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, proj_in/proj_out (1x1 conv),
resnet conv1/conv2, down/upsampler convs; the diffusers file also time_emb_proj and conv_shortcut
(diffusers 0.21.4's kohya converter cannot name those two). Ranks differ per layer.

<tag>.lora_io.safetensors: U-Net outputs (float32 `out.*` and float64 `out64.*`) for the golden inputs
(in.* of <tag>.io.safetensors) with cross_attention_kwargs={"scale": s}, s in 0, 0.5, 1, for each
layout, and for both LoRAs at once (the diffusers one loaded first: diffusers 0.21.4 replaces the
layer's LoRA, so "both" = the kohya one on the layers it has, the diffusers one elsewhere;
not recorded since kosmosg-gst sums them - see docs/critical-details.md).
Plus a short sampling run with the official loop (unilm/models/diffusion.py `sample`: CFG with
cat([x, x]), eps_u + g (eps_c - eps_u), DPMSolverMultistep from SD1.5's scheduler config, 4 steps,
guidance 6, LoRA scale 0.5, kohya layout): sample.x_init, sample.ehs, sample.timesteps,
sample.latents.<i> after each step (float64)."""
import json
import os
import struct
import sys

import numpy as np
import torch
import diffusers
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.loaders import LoraLoaderMixin
from safetensors.torch import load_file, save_file

assert diffusers.__version__ == "0.21.4", diffusers.__version__

# Debian's torch 1.13 baddbmm(beta=0) still reads its uninitialised `input` (diffusers' attention passes
# torch.empty there), so NaN garbage can propagate; the shared goldens were made with the same patch
_baddbmm = torch.baddbmm


def _baddbmm_fixed(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    if beta == 0 and out is None:
        return alpha * torch.bmm(batch1, batch2)
    return _baddbmm(input, batch1, batch2, beta=beta, alpha=alpha, out=out)


torch.baddbmm = _baddbmm_fixed
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GOLD = os.path.join(ROOT, "..", "shared", "golden", "sd")
OUT = os.path.join(ROOT, "tests", "data", "lora")
SCALES = (0.0, 0.5, 1.0)
SD15_SCHED = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
              "steps_offset": 1, "clip_sample": False, "trained_betas": None}


def meta(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]


def base_unet(tag):
    cfg = json.loads(meta(os.path.join(GOLD, tag + ".weights.safetensors"))["config"])
    unet = UNet2DConditionModel(**cfg)
    unet.load_state_dict(load_file(os.path.join(GOLD, tag + ".weights.safetensors")))
    return unet.eval()


def targets(unet):
    """(diffusers module path, module) of every layer the LoRA files patch."""
    out = []
    for name, mod in unet.named_modules():
        leaf = name.split(".")[-1]
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
                          "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")):
            out.append((name, mod))
        elif leaf in ("proj_in", "proj_out", "conv1", "conv2", "time_emb_proj", "conv_shortcut") and \
                ".resnets." in name or leaf in ("proj_in", "proj_out"):
            out.append((name, mod))
        elif name.endswith(("downsamplers.0.conv", "upsamplers.0.conv")):
            out.append((name, mod))
    return out


def lora_pair(mod, rank, g):
    if isinstance(mod, torch.nn.Conv2d):
        down = torch.randn(rank, mod.in_channels, *mod.kernel_size, generator=g) * 0.2
        up = torch.randn(mod.out_channels, rank, 1, 1, generator=g) * 0.2
    else:
        down = torch.randn(rank, mod.in_features, generator=g) * 0.2
        up = torch.randn(mod.out_features, rank, generator=g) * 0.2
    return down, up


def make_files(tag, unet, seed):
    g = torch.Generator().manual_seed(seed)
    diff, kohya = {}, {}
    kohya_skip = ("time_emb_proj", "conv_shortcut")
    for i, (name, mod) in enumerate(targets(unet)):
        rank = 2 + i % 3
        down, up = lora_pair(mod, rank, g)
        if ".attn1." in name or ".attn2." in name:
            head, proj = name.rsplit(".attn", 1)
            attn, proj = "attn" + proj.split(".", 1)[0], proj.split(".", 1)[1]
            proc = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora"}[proj]
            key = "unet.%s.%s.processor.%s" % (head, attn, proc)
            diff[key + ".down.weight"], diff[key + ".up.weight"] = down, up
        else:
            diff["unet.%s.lora.down.weight" % name], diff["unet.%s.lora.up.weight" % name] = down, up
        if name.split(".")[-1] in kohya_skip:
            continue
        down, up = lora_pair(mod, rank + 1, g)
        k = "lora_unet_" + name.replace(".", "_")
        kohya[k + ".lora_down.weight"] = down.half()
        kohya[k + ".lora_up.weight"] = up.half()
        if i != 3:  # one module without alpha: factor 1
            kohya[k + ".alpha"] = torch.tensor(float(rank + 1) * 0.75 + 0.5 * (i % 2)).half()
    diff["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight"] = torch.randn(2, 8)
    diff["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight"] = torch.randn(8, 2)
    kohya["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.randn(2, 8).half()
    kohya["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.randn(8, 2).half()
    kohya["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = torch.tensor(1.0).half()
    paths = {}
    for layout, sd in (("diffusers", diff), ("kohya", kohya)):
        p = os.path.join(OUT, "%s.%s.safetensors" % (tag, layout))
        save_file({k: v.contiguous() for k, v in sd.items()}, p,
                  metadata={"generator": "tests/golden-gen/gen_lora.py", "diffusers": diffusers.__version__})
        paths[layout] = p
    return paths


def with_lora(tag, paths):
    unet = base_unet(tag)
    for p in paths:
        # the official demo's load_lora: lora_state_dict + load_lora_into_unet
        sd, alphas = LoraLoaderMixin.lora_state_dict(os.path.dirname(p), weight_name=os.path.basename(p))
        LoraLoaderMixin.load_lora_into_unet(sd, alphas, unet, low_cpu_mem_usage=False)
    return unet


def run(unet, io, dtype, scale):
    u = unet.to(dtype)
    with torch.no_grad():
        return u(io["in.sample"].to(dtype), io["in.timestep"], io["in.encoder_hidden_states"].to(dtype),
                 cross_attention_kwargs={"scale": scale}).sample


def sample(unet, io, steps=4, guidance=6.0, scale=0.5):
    """unilm/models/diffusion.py `sample` (CFG branch), float64."""
    u = unet.to(torch.float64)
    sched = DPMSolverMultistepScheduler.from_config(SD15_SCHED)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 4, io["in.sample"].shape[2], io["in.sample"].shape[3], generator=g, dtype=torch.float64)
    ehs = io["in.encoder_hidden_states"].to(torch.float64)  # [uncond; cond]
    rec = {"sample.x_init": x.clone(), "sample.ehs": ehs.clone(),
           "sample.timesteps": sched.timesteps.clone().to(torch.int64)}
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            latent_in = torch.cat([x] * 2)
            latent_in = sched.scale_model_input(latent_in, t)
            eps = u(latent_in, t, encoder_hidden_states=ehs, cross_attention_kwargs={"scale": scale}).sample
            eu, ec = eps.chunk(2)
            eps = eu + guidance * (ec - eu)
            x = sched.step(eps, t, x).prev_sample
            rec["sample.latents.%d" % i] = x.clone()
    return rec


def tiny_kosmosg_lora():
    """A kohya LoRA for the tiny Kosmos-G model's U-Net (../shared/golden/kosmosg/kosmosg_tiny/sd15/unet
    config), for the API/CLI/element tests of loading and switching (no reference output)."""
    cfg = json.load(open(os.path.join(GOLD, "..", "kosmosg", "kosmosg_tiny", "sd15", "unet", "config.json")))
    unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    make_files("kosmosg_tiny", unet, 300)
    os.unlink(os.path.join(OUT, "kosmosg_tiny.diffusers.safetensors"))
    p = os.path.join(OUT, "kosmosg_tiny.kohya.safetensors")
    with_lora_unet = unet
    sd, alphas = LoraLoaderMixin.lora_state_dict(OUT, weight_name=os.path.basename(p))
    LoraLoaderMixin.load_lora_into_unet(sd, alphas, with_lora_unet, low_cpu_mem_usage=False)


def main():
    os.makedirs(OUT, exist_ok=True)
    tiny_kosmosg_lora()
    torch.manual_seed(0)
    for seed, tag in enumerate(("unet_tiny", "unet_tiny4")):
        io = load_file(os.path.join(GOLD, tag + ".io.safetensors"))
        paths = make_files(tag, base_unet(tag), 100 + seed)
        res, report = {}, {}
        for layout in ("diffusers", "kohya"):
            for s in SCALES:
                key = "%s.s%.1f" % (layout, s)
                o64 = run(with_lora(tag, [paths[layout]]), io, torch.float64, s)
                o32 = run(with_lora(tag, [paths[layout]]), io, torch.float32, s)
                res["out64." + key], res["out." + key] = o64, o32
                report[key] = {"f32_vs_f64_max_abs": float((o32.double() - o64).abs().max()),
                               "effect_vs_scale0": float((o64 - res["out64.%s.s0.0" % layout]).abs().max())}
        base = run(base_unet(tag), io, torch.float64, 1.0)
        report["scale0_equals_no_lora"] = {l: float((res["out64.%s.s0.0" % l] - base).abs().max())
                                           for l in ("diffusers", "kohya")}
        res.update(sample(with_lora(tag, [paths["kohya"]]), io))
        p = os.path.join(OUT, tag + ".lora_io.safetensors")
        save_file({k: v.contiguous() for k, v in res.items()}, p,
                  metadata={"generator": "tests/golden-gen/gen_lora.py", "diffusers": diffusers.__version__,
                            "torch": torch.__version__, "inputs": "../shared/golden/sd/%s.io.safetensors in.*" % tag,
                            "sample": "DPMSolverMultistep (SD1.5 config), 4 steps, guidance 6, LoRA scale 0.5, kohya",
                            "report": json.dumps(report)})
        print(tag, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
