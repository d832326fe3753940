#!/usr/bin/env python3
"""Reference data for the SD1.5 ControlNet (tests/test_controlnet.c, tests/test_e2e.c).

Run with the venv that holds diffusers 0.21.4 (the version Kosmos-G pins) over Debian's torch:

    /work/venv/bin/python tests/golden-gen/gen_controlnet.py ../shared/golden tests/golden-gen/controlnet

Writes, for two tiny ControlNetModels matching U-Nets of ../shared/golden:
  <tag>/                     the ControlNet as a diffusers folder (config.json,
                             diffusion_pytorch_model.safetensors in float16: every weight is rounded
                             to a float16 value before the float64 run, so nothing is lost)
  <tag>.io.safetensors       in.* inputs; out64.down.<i> / out64.mid: the scaled residuals;
                             act64.<module>: ControlNet taps; out64.unet: the U-Net's output with
                             those residuals added (down_block_additional_residuals /
                             mid_block_additional_residual)
  cnet_k_ldm.safetensors     cnet_k in the original single-file layout (control_model.*), checked
                             against diffusers' own LDM converter
Tags: cnet_tiny (for sd/unet_tiny, widths (32, 64), 1 layer) and cnet_k (for the tiny Kosmos-G
model's U-Net, SD1.5 topology, widths 32, weights from the official checkpoint).

cnet_k.sample.safetensors: short sampling runs written after Kosmos-G's sample_controlnet
(unilm/models/diffusion.py) on the tiny Kosmos-G U-Net, starting from the condition, the
unconditional embedding and the initial noise of the official e2e goldens:
  control image through VaeImageProcessor(do_normalize=False) (u8 RGB at the output size, so no
  resize: /255, no [-1, 1] mapping), repeated for CFG, controlnet_keep[i] = 1 - (i/N < start or
  (i+1)/N > end), residuals scaled by conditioning_scale * keep, several ControlNets summed
  (diffusers MultiControlNetModel), one control image per latent (diffusers 0.21.4
  StableDiffusionControlNetPipeline; the official code repeats it twice even without CFG).
Cases: g6 (two images, guidance 6, n 2, DPM++ 4 steps, keep window [0.25, 0.75], scale 0.5),
g1 (guidance 1, n 1, 128x128 with seeded noise, control2, 3 steps, scale 1), multi (the g6 case with two ControlNets: cnet_k with
control0 at scale 0.5 in [0, 1] and cnet_k with control1 at scale 1.0 in [0, 0.5]).
Weights: constructor init under torch.manual_seed, then every parameter whose elements are all
equal (biases, the zero convs) gets +0.1 N(0, 1), so a swapped, dropped or zero tensor is seen.
"""
import copy
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file, load_file

import diffusers
from diffusers import ControlNetModel, UNet2DConditionModel, DPMSolverMultistepScheduler

# torch 1.13: baddbmm with beta=0 propagates NaN from the uninitialised input; the shared
# goldens patch it the same way
_baddbmm = torch.baddbmm


def _baddbmm_fixed(inp, b1, b2, *, beta=1, alpha=1, out=None):
    if beta == 0:
        return alpha * torch.bmm(b1, b2)
    return _baddbmm(inp, b1, b2, beta=beta, alpha=alpha)


torch.baddbmm = _baddbmm_fixed

COND_CHANNELS = (8, 16, 24, 32)  # 3 stride-2 convs: control image = 8x the latent, as SD1.5


def read_meta(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)).get("__metadata__", {})


def perturb_and_round(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            if flat.numel() and bool((flat == flat[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())


def make_controlnet(ucfg, seed):
    torch.manual_seed(seed)
    keys = ["in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "block_out_channels",
            "layers_per_block", "downsample_padding", "mid_block_scale_factor", "norm_num_groups",
            "norm_eps", "cross_attention_dim", "attention_head_dim"]
    cfg = {k: ucfg[k] for k in keys if k in ucfg}
    cfg["conditioning_embedding_out_channels"] = list(COND_CHANNELS)
    cn = ControlNetModel(**cfg)
    perturb_and_round(cn, seed + 1)
    return cn.eval()


def hooks(model, names, store):
    hs = []
    mods = dict(model.named_modules())
    for name in names:
        def fn(_m, _i, out, name=name):
            o = out[0] if isinstance(out, tuple) else out
            store[name] = o.detach().clone()
        hs.append(mods[name].register_forward_hook(fn))
    return hs


def cnet_taps(cn):
    names = ["conv_in", "controlnet_cond_embedding", "mid_block", "controlnet_mid_block"]
    names += ["down_blocks.%d" % i for i in range(len(cn.down_blocks))]
    names += ["controlnet_down_blocks.%d" % i for i in range(len(cn.controlnet_down_blocks))]
    return names


def run_component(cn, unet, inputs, scale, dtype):
    cn = cn.to(dtype)
    unet = unet.to(dtype)
    acts = {}
    hs = hooks(cn, cnet_taps(cn), acts)
    x = inputs["sample"].to(dtype)
    ehs = inputs["encoder_hidden_states"].to(dtype)
    cond = inputs["controlnet_cond"].to(dtype)
    with torch.no_grad():
        down, mid = cn(x, inputs["timestep"], encoder_hidden_states=ehs, controlnet_cond=cond,
                       conditioning_scale=scale, return_dict=False)
        out = unet(x, inputs["timestep"], encoder_hidden_states=ehs,
                   down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    for h in hs:
        h.remove()
    return down, mid, out, acts


def component_case(tag, cn, unet, B, H, W, scale, outdir, seed):
    g = torch.Generator().manual_seed(seed)
    ucfg = unet.config
    inputs = {
        "sample": torch.randn(B, ucfg.in_channels, H, W, generator=g),
        "timestep": torch.tensor([981, 421][:B] + [500] * max(0, B - 2), dtype=torch.int64),
        "encoder_hidden_states": torch.randn(B, 7, ucfg.cross_attention_dim, generator=g),
        "controlnet_cond": torch.rand(B, 3, 8 * H, 8 * W, generator=g),
    }
    res = {}
    d32, m32, o32, a32 = run_component(cn, unet, inputs, scale, torch.float32)
    d64, m64, o64, a64 = run_component(cn, unet, inputs, scale, torch.float64)
    for k, v in inputs.items():
        res["in." + k] = v.contiguous()
    res["in.conditioning_scale"] = torch.tensor([scale], dtype=torch.float32)
    for i, (a, b) in enumerate(zip(d32, d64)):
        res["out.down.%d" % i] = a.float().contiguous()
        res["out64.down.%d" % i] = b.contiguous()
    res["out.mid"], res["out64.mid"] = m32.float().contiguous(), m64.contiguous()
    res["out.unet"], res["out64.unet"] = o32.float().contiguous(), o64.contiguous()
    for k in a64:
        res["act64." + k] = a64[k].contiguous()
    err = max(float((d32[i].double() - d64[i]).abs().max()) for i in range(len(d64)))
    err = max(err, float((o32.double() - o64).abs().max()))
    with torch.no_grad():  # how much the residuals move the U-Net (the test must see them)
        plain = unet.to(torch.float64)(inputs["sample"].double(), inputs["timestep"],
                                       encoder_hidden_states=inputs["encoder_hidden_states"].double()).sample
    effect = float((plain - o64).abs().max())
    meta = {"generator": "tests/golden-gen/gen_controlnet.py", "diffusers": diffusers.__version__,
            "torch": torch.__version__, "unet_config": json.dumps(dict(unet.config)),
            "f32_vs_f64_maxabs": repr(err), "residual_effect_maxabs": repr(effect)}
    save_file(res, os.path.join(outdir, tag + ".io.safetensors"), metadata=meta)
    print("%s: %d residuals, f32 vs f64 max-abs %.3g, U-Net output moved by the residuals: max-abs %.3g"
          % (tag, len(d64), err, effect))


def save_weights(tag, cn, outdir):
    # a diffusers folder (config.json + diffusion_pytorch_model.safetensors) in float16, the form
    # the lllyasviel v1.1 ControlNets take on the Hub
    half = copy.deepcopy(cn).half()
    half.save_pretrained(os.path.join(outdir, tag), safe_serialization=True)


RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                 "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def to_ldm(sd, cfg):
    """The ControlNet in the original (cldm, lllyasviel .pth/.safetensors) layout under
    control_model., written independently of the converter and checked against diffusers'
    convert_ldm_unet_checkpoint(controlnet=True) below."""
    L = cfg["layers_per_block"]
    n_hint = len(cfg["conditioning_embedding_out_channels"]) * 2 - 2
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        new = None
        if k.startswith("time_embedding.linear_"):
            new = "time_embed.%d.%s" % (0 if parts[1] == "linear_1" else 2, parts[2])
        elif k.startswith("conv_in."):
            new = "input_blocks.0.0." + parts[1]
        elif k.startswith("down_blocks."):
            b = int(parts[1])
            if parts[2] == "resnets":
                l = int(parts[3])
                new = "input_blocks.%d.0.%s.%s" % (1 + b * (L + 1) + l, RESNET_TO_LDM[parts[4]], parts[5])
            elif parts[2] == "attentions":
                l = int(parts[3])
                new = "input_blocks.%d.1.%s" % (1 + b * (L + 1) + l, ".".join(parts[4:]))
            else:  # downsamplers.0.conv
                new = "input_blocks.%d.0.op.%s" % ((b + 1) * (L + 1), parts[-1])
        elif k.startswith("mid_block.resnets."):
            new = "middle_block.%d.%s.%s" % (2 * int(parts[2]), RESNET_TO_LDM[parts[3]], parts[4])
        elif k.startswith("mid_block.attentions.0."):
            new = "middle_block.1." + ".".join(parts[3:])
        elif k.startswith("controlnet_cond_embedding.conv_in."):
            new = "input_hint_block.0." + parts[-1]
        elif k.startswith("controlnet_cond_embedding.blocks."):
            new = "input_hint_block.%d.%s" % (2 * (int(parts[2]) + 1), parts[-1])
        elif k.startswith("controlnet_cond_embedding.conv_out."):
            new = "input_hint_block.%d.%s" % (2 * (n_hint + 1), parts[-1])
        elif k.startswith("controlnet_down_blocks."):
            new = "zero_convs.%s.0.%s" % (parts[1], parts[2])
        elif k.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + parts[1]
        assert new is not None, k
        out["control_model." + new] = v
    return out


def save_ldm(tag, cn, outdir):
    # diffusers' own converter, loaded as gen_ldm_map.py does (its module needs transformers)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from gen_ldm_map import convert_ldm_unet_checkpoint
    sd = {k: v.detach().half().contiguous() for k, v in cn.state_dict().items()}
    cfg = dict(cn.config)
    ldm = to_ldm(sd, cfg)
    back = convert_ldm_unet_checkpoint(dict(ldm), cfg, path=None, extract_ema=False, controlnet=True)
    assert sorted(back) == sorted(sd), set(back) ^ set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    save_file(ldm, os.path.join(outdir, tag + "_ldm.safetensors"), metadata={
        "generator": "tests/golden-gen/gen_controlnet.py",
        "note": "original cldm layout (control_model.*); diffusers 0.21.4 convert_ldm_unet_checkpoint"
                "(controlnet=True) maps it back onto the folder's tensors exactly"})
    print("%s_ldm: %d tensors, round trip through diffusers' converter exact" % (tag, len(ldm)))


def keep(i, n, start, end):
    return 1.0 - float(i / n < start or (i + 1) / n > end)


def control_image(u8):
    # VaeImageProcessor(do_normalize=False).preprocess at the image's own size: HWC u8 -> 1x3xHxW
    # in [0, 1]
    return torch.from_numpy(u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def sample(unet, nets, sched_cfg, cond, uncond, noise, guidance, steps):
    """nets: list of (controlnet, u8 image, scale, start, end); float64 throughout."""
    sch = DPMSolverMultistepScheduler.from_config(sched_cfg)
    sch.set_timesteps(steps)
    n = noise.shape[0]
    cfg = guidance > 1.0
    ehs = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)]) if cfg else \
        cond.expand(n, -1, -1)
    imgs = []
    for _, u8, _, _, _ in nets:
        im = control_image(u8).double().repeat(n, 1, 1, 1)  # one control image per latent
        imgs.append(torch.cat([im] * 2) if cfg else im)
    x = noise.double()
    rec = {}
    T = len(sch.timesteps)
    with torch.no_grad():
        for i, t in enumerate(sch.timesteps):
            xin = torch.cat([x] * 2) if cfg else x
            xin = sch.scale_model_input(xin, t)
            down = mid = None
            for (cn, _, scale, s, e), im in zip(nets, imgs):
                d, m = cn(xin, t, encoder_hidden_states=ehs, controlnet_cond=im,
                          conditioning_scale=scale * keep(i, T, s, e), return_dict=False)
                if down is None:
                    down, mid = list(d), m
                else:
                    down = [a + b for a, b in zip(down, d)]
                    mid = mid + m
            eps = unet(xin, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
            if cfg:
                eu, ec = eps.chunk(2)
                eps = eu + guidance * (ec - eu)
            x = sch.step(eps, t, x).prev_sample
            rec["step%d.latents" % i] = x.clone()
    rec["timesteps"] = sch.timesteps.clone()
    return rec


def main():
    golden, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)

    # --- cnet_tiny: for sd/unet_tiny
    w = os.path.join(golden, "sd", "unet_tiny.weights.safetensors")
    ucfg = json.loads(read_meta(w)["config"])
    unet = UNet2DConditionModel(**ucfg)
    unet.load_state_dict(load_file(w))
    unet.eval()
    cn = make_controlnet(dict(unet.config), 100)
    save_weights("cnet_tiny", cn, outdir)
    component_case("cnet_tiny", cn, unet, 2, 8, 8, 0.7, outdir, 101)

    # --- cnet_k: for the tiny Kosmos-G model's U-Net (weights from the official checkpoint)
    kdir = os.path.join(golden, "kosmosg", "kosmosg_tiny")
    with open(os.path.join(kdir, "sd15", "unet", "config.json")) as f:
        kcfg = json.load(f)
    unet = UNet2DConditionModel.from_config(kcfg)
    ck = torch.load(os.path.join(kdir, "checkpoint_final_fp32.pt"), map_location="cpu")["model"]
    pre = "diffusion_unet.unet."
    unet.load_state_dict({k[len(pre):]: v.float() for k, v in ck.items() if k.startswith(pre)})
    unet.eval()
    cn = make_controlnet(dict(unet.config), 200)
    save_weights("cnet_k", cn, outdir)
    save_ldm("cnet_k", cn, outdir)
    component_case("cnet_k", cn, unet, 2, 8, 8, 1.0, outdir, 201)

    # --- sampling runs from the official e2e goldens' conditions and noise
    with open(os.path.join(kdir, "sd15", "scheduler", "scheduler_config.json")) as f:
        sched_cfg = json.load(f)
    unet = unet.double()
    cn = cn.double()
    rng = np.random.default_rng(7)
    c0 = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    c0[:, 20:24] = 255  # an edge-like stripe over noise
    c1 = np.zeros((64, 64, 3), dtype=np.uint8)
    c1[16:48, 16:48] = (255, 128, 0)
    c2 = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = {"in.control0.rgb": torch.from_numpy(c0), "in.control1.rgb": torch.from_numpy(c1),
           "in.control2.rgb": torch.from_numpy(c2)}
    cases = {
        "g6": ("e2e_two_images_dpms", 6.0, 4, [(cn, c0, 0.5, 0.25, 0.75)]),
        "g1": ("e2e_variation_g1_dpms", 1.0, 3, [(cn, c2, 1.0, 0.0, 1.0)]),
        "multi": ("e2e_two_images_dpms", 6.0, 4, [(cn, c0, 0.5, 0.0, 1.0), (cn, c1, 1.0, 0.0, 0.5)]),
    }
    for name, (src, g, steps, nets) in cases.items():
        e2e = load_file(os.path.join(golden, "kosmosg", src + ".safetensors"))
        cond = e2e["out64.aligner.cond"]
        uncond = e2e["out64.aligner.uncond"]
        noise = e2e["in.noise"]
        if g <= 1.0:
            # one latent per requested image (our deviation, see the docs); 16x16 because torch's
            # group_norm refuses batch 1 at 1x1 with one channel per group (the 8x8 level)
            noise = torch.from_numpy(rng.standard_normal((1, 4, 16, 16)).astype(np.float32))
        rec = sample(unet, nets, sched_cfg, cond, uncond, noise, g, steps)
        out["%s.in.noise" % name] = noise.float().contiguous()
        for k, v in rec.items():
            out["%s.%s" % (name, k)] = v.contiguous()
        print("%s: from %s, guidance %g, %d steps, final |x| max %.3g" % (
            name, src, g, steps, float(rec["step%d.latents" % (steps - 1)].abs().max())))
    meta = {"generator": "tests/golden-gen/gen_controlnet.py", "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "cases": json.dumps({k: {"source": v[0], "guidance": v[1], "steps": v[2],
                                     "nets": [{"image": "control%d" % [c0 is im, c1 is im, c2 is im].index(True),
                                               "scale": s, "start": a, "end": b}
                                              for (_, im, s, a, b) in v[3]]}
                                 for k, v in cases.items()})}
    save_file(out, os.path.join(outdir, "cnet_k.sample.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
