"""kosmosg-convert --controlnet: an SD1.5 ControlNet -> a .safetensors file the engine loads beside the
model file (layout: docs/weights-format.md, "ControlNet files")."""

import argparse
import json
import os
import re

import numpy as np

from . import FORMAT_VERSION, layout, ldm
from .convert import (FLOAT_DTYPES, OUT_DTYPES, ConvertError, convert_array, find_weights, log,
                      open_weights, read_json, sha256_file)
from .stio import write_safetensors


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="kosmosg-convert --controlnet",
        description="Convert an SD1.5 ControlNet (a diffusers folder: config.json + "
                    "diffusion_pytorch_model.{safetensors,bin}, or an original single .pth/.safetensors file "
                    "with control_model.* keys; fp16 or fp32) into a file kosmosg-gst "
                    "loads beside the Kosmos-G model (kosmosg-generate --controlnet, kosmosgfilter "
                    "control_N::location).")
    ap.add_argument("--controlnet", required=True, metavar="SRC",
                    help="the ControlNet: its diffusers folder (e.g. lllyasviel/control_v11p_sd15_canny) or "
                         "an original single file (control_v11p_sd15_canny.pth / .safetensors)")
    ap.add_argument("-o", "--output", required=True, help="file to write (.safetensors)")
    ap.add_argument("--dtype", choices=sorted(OUT_DTYPES), default="fp16",
                    help="storage precision of the weights (default fp16)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    return ap.parse_args(argv)


LDM_PREFIX = "control_model."


def ldm_map(keys):
    """{original key: diffusers key} of a single-file ControlNet in the original cldm layout
    (control_model.* as lllyasviel's .pth/.safetensors, or the same keys without the prefix), the
    mapping diffusers 0.21.4's convert_ldm_unet_checkpoint(controlnet=True) applies: the U-Net's
    input/middle blocks as in ldm.py, input_hint_block -> controlnet_cond_embedding, zero_convs.k.0 ->
    controlnet_down_blocks.k, middle_block_out.0 -> controlnet_mid_block."""
    prefix = LDM_PREFIX if any(k.startswith(LDM_PREFIX) for k in keys) else ""
    sub = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    inp = sorted({int(m.group(1)) for k in sub for m in [re.match(r"input_blocks\.(\d+)\.", k)] if m})
    hint = sorted({int(m.group(1)) for k in sub for m in [re.match(r"input_hint_block\.(\d+)\.", k)] if m})
    downs = [i for i in inp if "input_blocks.%d.0.op.weight" % i in sub]
    n_blocks = len(downs) + 1
    layers, rem = divmod(len(inp) - n_blocks, n_blocks)
    if not inp or inp != list(range(len(inp))) or rem or layers < 1 or not hint or \
            hint != list(range(0, 2 * len(hint), 2)):
        raise ConvertError("not a single-file ControlNet: input_blocks / input_hint_block missing or not "
                           "numbered as the original layout")
    out = {}
    for k in sub:
        where = "'%s'" % (prefix + k)
        new = ldm.encoder_key(k, layers, where)
        if k.startswith("input_hint_block."):
            m = re.match(r"input_hint_block\.(\d+)\.(weight|bias)$", k)
            i = int(m.group(1)) // 2
            new = "controlnet_cond_embedding." + (
                "conv_in" if i == 0 else "conv_out" if i == len(hint) - 1 else "blocks.%d" % (i - 1)) + \
                "." + m.group(2)
        elif k.startswith("zero_convs."):
            m = re.match(r"zero_convs\.(\d+)\.0\.(weight|bias)$", k)
            if m:
                new = "controlnet_down_blocks.%s.%s" % m.groups()
        elif re.match(r"middle_block_out\.0\.(weight|bias)$", k):
            new = "controlnet_mid_block." + k.split(".")[-1]
        if new is None:
            raise ConvertError("%s has no place in a ControlNet (original layout)" % where)
        out[prefix + k] = new
    return out


def ldm_config(mapped):
    """diffusers ControlNetModel config of a mapped single-file ControlNet, from its shapes. The head
    count is in no tensor: SD1.5's cldm_v15.yaml has num_heads 8."""
    def shape(k):
        t = mapped.get(k)
        if t is None:
            raise ConvertError("single-file ControlNet: no tensor for '%s'" % k)
        return tuple(t.shape)
    n_blocks = 1 + max(int(k.split(".")[1]) for k in mapped if k.startswith("down_blocks."))
    lpb = 1 + max(int(k.split(".")[3]) for k in mapped if k.startswith("down_blocks.0.resnets."))
    n_hint = 1 + max([int(k.split(".")[2]) for k in mapped
                      if k.startswith("controlnet_cond_embedding.blocks.")] or [-1])
    emb = [shape("controlnet_cond_embedding.conv_in.weight")[0]] + \
        [shape("controlnet_cond_embedding.blocks.%d.weight" % (2 * i + 1))[0] for i in range(n_hint // 2)]
    to_k = shape("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
    return {"_class_name": "ControlNetModel", "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [shape("down_blocks.%d.resnets.0.conv1.weight" % i)[0] for i in range(n_blocks)],
            "conditioning_channels": shape("controlnet_cond_embedding.conv_in.weight")[1],
            "conditioning_embedding_out_channels": emb, "controlnet_conditioning_channel_order": "rgb",
            "cross_attention_dim": to_k[1],
            "down_block_types": ["CrossAttnDownBlock2D" if "down_blocks.%d.attentions.0.norm.weight" % i in mapped
                                 else "DownBlock2D" for i in range(n_blocks)],
            "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "global_pool_conditions": False,
            "in_channels": shape("conv_in.weight")[1], "layers_per_block": lpb, "mid_block_scale_factor": 1,
            "norm_eps": 1e-05, "norm_num_groups": 32,
            "use_linear_projection": len(shape("mid_block.attentions.0.proj_in.weight")) == 2}


def load_source(src):
    """(config, {diffusers key: tensor}, [files]) of a diffusers folder or an original single file."""
    if os.path.isdir(src):
        cfg_path = os.path.join(src, "config.json")
        if not os.path.isfile(cfg_path):
            raise ConvertError("%s has no config.json (expected a diffusers ControlNet folder)" % src)
        weights = find_weights(src)
        return read_json(cfg_path), open_weights(weights), [cfg_path, weights]
    if os.path.isfile(src):
        tensors = open_weights(src)
        if any(k.startswith("controlnet_cond_embedding.") for k in tensors):
            raise ConvertError("%s holds diffusers-named ControlNet weights without their config.json; give "
                               "the diffusers folder (config.json + diffusion_pytorch_model.safetensors)" % src)
        mapping = ldm_map(list(tensors))
        mapped = {new: tensors[old] for old, new in mapping.items()}
        cfg = ldm_config(mapped)
        log("  single-file ControlNet (original layout): %d tensors mapped to diffusers names" % len(mapped))
        return cfg, mapped, [src]
    raise ConvertError("ControlNet %s does not exist" % src)


def run(args):
    log("reading ControlNet %s" % args.controlnet)
    cfg, tensors, files = load_source(args.controlnet)
    cls = cfg.get("_class_name", "ControlNetModel")
    if cls != "ControlNetModel":
        raise ConvertError("%s: config.json describes a %s, not a ControlNetModel" % (args.controlnet, cls))
    expected = layout.controlnet(cfg)
    log("  %d tensors in the source, %d expected" % (len(tensors), len(expected)))
    pre = layout.CONTROLNET
    out_dtype, out_np = OUT_DTYPES[args.dtype]
    entries = []
    params = 0
    for k, shape in expected:
        sk = k[len(pre):]
        t = tensors.get(sk)
        if t is None:
            raise ConvertError("missing tensor '%s' (controlnet, expected shape %s)" % (sk, list(shape)))
        if tuple(t.shape) != tuple(shape):
            raise ConvertError("tensor '%s' has shape %s, expected %s (controlnet config.json)"
                               % (sk, list(t.shape), list(shape)))
        if t.dtype not in FLOAT_DTYPES:
            raise ConvertError("tensor '%s' has dtype %s, expected a float tensor" % (sk, t.dtype))
        params += int(np.prod(shape, dtype=np.int64))
        entries.append((k, out_dtype, shape,
                        lambda t=t, sk=sk: convert_array(t.read(), t.dtype, out_np, sk)))
    unused = sorted(set(tensors) - {k[len(pre):] for k, _ in expected})
    for k in unused:
        log("  unknown key, not used: %s" % k)
    sources = {"converter": "kosmosg-convert --controlnet (format %s)" % FORMAT_VERSION,
               "files": [{"path": p, "size": os.path.getsize(p), "sha256": sha256_file(p)} for p in files],
               "tensors": len(entries), "params": params, "unused_keys": unused}
    conf = {k: v for k, v in cfg.items() if not k.startswith("_")}
    metadata = {"kg.format_version": FORMAT_VERSION, "kg.kind": "controlnet", "kg.dtype": args.dtype,
                "kg.config.controlnet": json.dumps(conf, separators=(",", ":")),
                "kg.sources": json.dumps(sources, separators=(",", ":"))}
    log("controlnet: %d tensors, %s parameters" % (len(entries), "{:,}".format(params)))
    size = write_safetensors(args.output, entries, metadata)
    log("wrote %s: %d tensors, %s bytes (%s)" % (args.output, len(entries), "{:,}".format(size), args.dtype))
