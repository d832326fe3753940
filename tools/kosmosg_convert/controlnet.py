"""kosmosg-convert --controlnet: an SD1.5 ControlNet -> a .safetensors file the engine loads beside the
model file (layout: docs/weights-format.md, "ControlNet files")."""

import argparse
import json
import os

import numpy as np

from . import FORMAT_VERSION, layout
from .convert import (FLOAT_DTYPES, OUT_DTYPES, ConvertError, convert_array, find_weights, log,
                      open_weights, read_json, sha256_file)
from .stio import write_safetensors


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="kosmosg-convert --controlnet",
        description="Convert an SD1.5 ControlNet (a diffusers folder: config.json + "
                    "diffusion_pytorch_model.{safetensors,bin}, fp16 or fp32) into a file kosmosg-gst "
                    "loads beside the Kosmos-G model (kosmosg-generate --controlnet, kosmosgfilter "
                    "control_N::location).")
    ap.add_argument("--controlnet", required=True, metavar="SRC",
                    help="the ControlNet's diffusers folder (e.g. lllyasviel/control_v11p_sd15_canny)")
    ap.add_argument("-o", "--output", required=True, help="file to write (.safetensors)")
    ap.add_argument("--dtype", choices=sorted(OUT_DTYPES), default="fp16",
                    help="storage precision of the weights (default fp16)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    return ap.parse_args(argv)


def load_source(src):
    """(config, {diffusers key: tensor}, [files]) of a diffusers folder."""
    if os.path.isdir(src):
        cfg_path = os.path.join(src, "config.json")
        if not os.path.isfile(cfg_path):
            raise ConvertError("%s has no config.json (expected a diffusers ControlNet folder)" % src)
        weights = find_weights(src)
        return read_json(cfg_path), open_weights(weights), [cfg_path, weights]
    if os.path.isfile(src):
        raise ConvertError("%s: single-file ControlNets (original .pth/.safetensors with control_model.* "
                           "keys) are not supported yet; give the diffusers folder (config.json + "
                           "diffusion_pytorch_model.safetensors)" % src)
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
