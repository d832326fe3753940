"""LDM single-file key mapping reference for the tiny SD1.5-topology U-Net and VAE (unet_tiny4, vae_tiny4).

Run: /work/venv/bin/python tests/golden-gen/gen_ldm_map.py   (diffusers 0.21.4 over Debian's torch)

Writes tests/golden-gen/ldm_tiny4_map.json: {ldm key: diffusers key} as diffusers 0.21.4's own
convert_from_ckpt.py (convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint) maps them. The LDM
names are proposed by a reverse mapping written here; diffusers' converter is the judge: every
proposed LDM tensor must come out under exactly one diffusers key and every diffusers key of the
model must be produced. The converter test (tests/test_convert.py) then builds a single-file LDM
checkpoint from the golden diffusers weights with this map and checks kosmosg-convert turns it back
into exactly those tensors. Also checks tools/kosmosg_convert/ldm.py agrees with diffusers."""
import json
import os
import re
import sys


import torch
import diffusers

from diffusers import AutoencoderKL


def _diffusers_converters():
    """diffusers 0.21.4's convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint and their helpers,
    executed from the installed convert_from_ckpt.py (importing the module would need transformers,
    which only its text-encoder converters use and the venv does not have)."""
    import ast
    import logging
    from diffusers.pipelines.stable_diffusion import __file__ as sd_init
    path = os.path.join(os.path.dirname(sd_init), "convert_from_ckpt.py")
    want = {"shave_segments", "renew_resnet_paths", "renew_vae_resnet_paths", "renew_attention_paths",
            "renew_vae_attention_paths", "assign_to_checkpoint", "conv_attn_to_linear",
            "convert_ldm_unet_checkpoint", "convert_ldm_vae_checkpoint"}
    tree = ast.parse(open(path).read(), path)
    tree.body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in want]
    ns = {"torch": torch, "logger": logging.getLogger("convert_from_ckpt"), "re": re}
    exec(compile(tree, path, "exec"), ns)
    return ns["convert_ldm_unet_checkpoint"], ns["convert_ldm_vae_checkpoint"]


convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint = _diffusers_converters()
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GOLD = os.path.join(ROOT, "..", "shared", "golden", "sd")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from kosmosg_convert import ldm  # noqa: E402

assert diffusers.__version__ == "0.21.4", diffusers.__version__

RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
       "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def unet_to_ldm(k, cfg):
    L = cfg["layers_per_block"]
    up_attn = [t.startswith("CrossAttn") for t in cfg["up_block_types"]]
    m = re.match(r"time_embedding\.linear_([12])\.(.*)", k)
    if m:
        return "time_embed.%d.%s" % (0 if m.group(1) == "1" else 2, m.group(2))
    if k.startswith("conv_in."):
        return "input_blocks.0.0." + k[8:]
    if k.startswith("conv_norm_out."):
        return "out.0." + k[14:]
    if k.startswith("conv_out."):
        return "out.2." + k[9:]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", k)
    if m:
        b, kind, l, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "downsamplers":
            return "input_blocks.%d.0.op.%s" % ((b + 1) * (L + 1), rest[5:])
        i = 1 + b * (L + 1) + l
        if kind == "attentions":
            return "input_blocks.%d.1.%s" % (i, rest)
        mod, p = rest.split(".", 1)
        return "input_blocks.%d.0.%s.%s" % (i, RES[mod], p)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k)
    if m:
        if m.group(1) == "attentions":
            return "middle_block.1." + m.group(3)
        mod, p = m.group(3).split(".", 1)
        return "middle_block.%d.%s.%s" % (2 * int(m.group(2)), RES[mod], p)
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", k)
    b, kind, l, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
    if kind == "upsamplers":
        return "output_blocks.%d.%d.conv.%s" % (b * (L + 1) + L, 2 if up_attn[b] else 1, rest[5:])
    i = b * (L + 1) + l
    if kind == "attentions":
        return "output_blocks.%d.1.%s" % (i, rest)
    mod, p = rest.split(".", 1)
    return "output_blocks.%d.0.%s.%s" % (i, RES[mod], p)


VRES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
VATT = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(k, n_up):
    if k.startswith(("quant_conv.", "post_quant_conv.")):
        return k
    part, rest = k.split(".", 1)
    m = re.match(r"(conv_in|conv_out|conv_norm_out)\.(.*)", rest)
    if m:
        return "%s.%s.%s" % (part, "norm_out" if m.group(1) == "conv_norm_out" else m.group(1), m.group(2))
    m = re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", rest)
    if m:
        return "%s.mid.attn_1.%s.%s" % (part, VATT[m.group(1)], m.group(2))
    m = re.match(r"mid_block\.resnets\.(\d)\.(\w+)\.(.*)", rest)
    if m:
        return "%s.mid.block_%d.%s.%s" % (part, int(m.group(1)) + 1, VRES[m.group(2)], m.group(3))
    m = re.match(r"(up|down)_blocks\.(\d+)\.(resnets|upsamplers|downsamplers)\.(\d+)\.(\w+)\.(.*)", rest)
    i = int(m.group(2))
    ldm_i = n_up - 1 - i if m.group(1) == "up" else i
    if m.group(3) == "resnets":
        return "%s.%s.%d.block.%s.%s.%s" % (part, m.group(1), ldm_i, m.group(4), VRES[m.group(5)], m.group(6))
    return "%s.%s.%d.%s.conv.%s" % (part, m.group(1), ldm_i, m.group(1) + "sample", m.group(6))


def oracle(ldm_keys, convert):
    """Run diffusers' converter on tensors tagged by index; return {ldm key: diffusers key}."""
    tagged = {k: torch.full((1, 1, 1, 1) if re.search(r"attn_1\.(q|k|v|proj_out)\.weight$", k) else (1,),
                            float(i), dtype=torch.float64) for i, k in enumerate(ldm_keys)}
    out = convert(dict(tagged))
    m = {}
    for dk, t in out.items():
        lk = ldm_keys[int(t.reshape(-1)[0].item())]
        assert lk not in m, "diffusers maps %s twice" % lk
        m[lk] = dk
    return m


def main():
    ucfg = json.loads(load_meta(os.path.join(GOLD, "unet_tiny4.weights.safetensors"))["config"])
    ukeys = list(load_file(os.path.join(GOLD, "unet_tiny4.weights.safetensors")))
    uldm = ["model.diffusion_model." + unet_to_ldm(k, ucfg) for k in ukeys]
    dcfg = dict(ucfg, class_embed_type=None, addition_embed_type=None)
    umap = oracle(uldm, lambda sd: convert_ldm_unet_checkpoint(sd, dcfg))
    assert sorted(umap.values()) == sorted(ukeys), "diffusers' U-Net mapping is not a bijection onto the model"
    assert set(umap) == set(uldm)

    vcfg = json.loads(load_meta(os.path.join(GOLD, "vae_tiny4.weights.safetensors"))["config"])
    full = AutoencoderKL(**{k: v for k, v in vcfg.items() if not k.startswith("_")})
    vkeys = list(full.state_dict())
    n_up = len(vcfg["up_block_types"])
    vldm = ["first_stage_model." + vae_to_ldm(k, n_up) for k in vkeys]
    vmap = oracle(vldm, lambda sd: convert_ldm_vae_checkpoint(sd, dict(vcfg)))
    assert sorted(vmap.values()) == sorted(vkeys), "diffusers' VAE mapping is not a bijection onto the model"

    mine = ldm.unet_map(uldm)
    bad = [k for k in uldm if mine[k] != umap[k]]
    assert not bad, "ldm.py U-Net disagrees with diffusers: %s" % bad[:5]
    mine_v, _ = ldm.vae_map(vldm, with_encoder=True)
    bad = [k for k in vldm if mine_v[k] != vmap[k]]
    assert not bad, "ldm.py VAE disagrees with diffusers: %s" % bad[:5]

    dec = {k: v for k, v in vmap.items() if v.startswith(("decoder.", "post_quant_conv."))}
    res = {"generator": "tests/golden-gen/gen_ldm_map.py", "diffusers": diffusers.__version__,
           "torch": torch.__version__, "unet_tiny4": umap, "vae_tiny4_decoder": dec}
    with open(os.path.join(HERE, "ldm_tiny4_map.json"), "w") as f:
        json.dump(res, f, indent=0, sort_keys=True)
    print("U-Net %d keys, VAE %d keys (%d decoder): ldm.py == diffusers 0.21.4" % (len(umap), len(vmap), len(dec)))


def load_meta(path):
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]


if __name__ == "__main__":
    main()
