"""The conversion: official Kosmos-G files -> one .safetensors model file (layout: docs/weights-format.md)."""

import argparse
import hashlib
import json
import os
import re
import sys

import numpy as np

from . import FORMAT_VERSION, layout, ldm
from .errors import ConvertError
from .files import check_output, require_regular
from .ptload import Archive, LazyTensor, plain
from .stio import SafetensorsFile, write_safetensors

# official defaults of what no tensor tells: kosmosg_xl has 32 decoder heads and
# max_target_positions 2048 (fairseq base_lm_architecture)
DEFAULT_MLLM_HEADS = 32
DEFAULT_MAX_POSITIONS = 2048
# the engine builds the MLLM's sinusoid table (max_positions x dim) at load and refuses more
MAX_POSITIONS_LIMIT = 65536

FLOAT_DTYPES = ("F16", "F32", "BF16", "F64")
OUT_DTYPES = {"fp16": ("F16", np.float16), "fp32": ("F32", np.float32)}

# checkpoint keys the engine does not need, with the reason printed in the report
UNUSED_RULES = [
    (r"gpt_model\.decoder\.output_projection\.weight$", "tied to embed_tokens; logits are discarded"),
    (r"gpt_model\.decoder\.embed_positions\._float_tensor$", "dummy buffer; the sinusoid is computed"),
    (r"gpt_model\.decoder\.self_attn_sope\.scale$", "xPos buffer; never applied by LMDecoder"),
    (r"img_model\.visual\.transformer\.resblocks\.\d+\.attn\.", "nn.MultiheadAttention, replaced by ts_attn"),
    (r"img_model\.visual\.proj$", "projection not used by Kosmos-G"),
    (r"vae\.vae\.(encoder\.|quant_conv\.)", "VAE encoder; only decoding is needed"),
    (r"aligner\.(clip_encoder|decoder_query|decoder\.|decoder_proj)", "AlignerNet training-only part"),
]
LEGACY_VAE_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")


class Derived:
    """A tensor computed from a source tensor (a row slice of a packed in_proj, a reshape)."""

    def __init__(self, base, shape, fn):
        self.base = base
        self.shape = tuple(shape)
        self.dtype = base.dtype
        self.fn = fn

    @property
    def numel(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def read(self):
        return np.ascontiguousarray(self.fn(self.base.read()))


class Entry:
    def __init__(self, tensor, source):
        self.tensor = tensor
        self.source = source


QUIET = [False]


def log(msg):
    if not QUIET[0]:
        print(msg, flush=True)


def sha256_file(path):
    require_regular(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(16 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def read_json(path):
    require_regular(path, "config")
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: invalid JSON: %s" % (path, e))
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a JSON object" % path)
    return obj


def open_weights(path):
    """name -> tensor of a diffusers weight file (.safetensors, or a torch .bin state dict)."""
    if path.endswith(".safetensors"):
        return SafetensorsFile(path).tensors
    obj = Archive(path).load()
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a state dict" % path)
    for k, v in obj.items():
        if not isinstance(v, LazyTensor):
            raise ConvertError("%s: entry '%s' is not a tensor" % (path, k))
    return obj


def find_weights(folder):
    for name in WEIGHT_NAMES:
        p = os.path.join(folder, name)
        if os.path.exists(p):
            require_regular(p, "weights")
            return p
    raise ConvertError("%s has no weights file (looked for %s)" % (folder, ", ".join(WEIGHT_NAMES)))


class Sources:
    def __init__(self):
        self.files = []     # [{"role", "path", "size", "sha256"}]
        self.merged = {}    # full key -> Entry, in load order

    def add_file(self, role, path):
        self.files.append({"role": role, "path": path, "size": os.path.getsize(path),
                           "sha256": sha256_file(path)})


def open_single_file(path):
    """name -> tensor of a single-file checkpoint (.safetensors, or a torch .ckpt whose state dict
    may sit under 'state_dict')."""
    if path.endswith(".safetensors"):
        return SafetensorsFile(path).tensors
    obj = Archive(path).load()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a state dict" % path)
    return {k: v for k, v in obj.items() if isinstance(v, LazyTensor)}


def vae_entry(key, t):
    # LDM (and old diffusers) files store the VAE mid attention's projections as 1x1 convs;
    # diffusers keeps Linear [C, C]
    if ldm.is_vae_attn_conv(key, t.shape):
        return Derived(t, t.shape[:2], lambda a: a.reshape(a.shape[:2]))
    return t


def load_single_unet(tensors, path, heads):
    """(config, {diffusers key: tensor}) of the LDM U-Net in a single-file checkpoint."""
    umap = ldm.unet_map(tensors.keys())
    cfg = ldm.unet_config(lambda k: tuple(tensors[k].shape), umap, heads)
    log("  %s: LDM U-Net, %d tensors, blocks %s, %d layers per block"
        % (path, len(umap), cfg["block_out_channels"], cfg["layers_per_block"]))
    return cfg, {dk: tensors[lk] for lk, dk in umap.items()}


def load_sd15_single(src, path, heads):
    """SD1.5 (or a fine-tune) as one file in the original LDM layout (`model.diffusion_model.*`,
    `first_stage_model.*`), mapped as diffusers' convert_from_ckpt does (tools/kosmosg_convert/ldm.py)."""
    src.add_file("sd15 single file", path)
    label = os.path.basename(path)
    tensors = open_single_file(path)
    ucfg, unet = load_single_unet(tensors, path, heads)
    vmap, vskipped = ldm.vae_map(tensors.keys())
    vcfg = ldm.vae_config(lambda k: tuple(tensors[k].shape), vmap)
    for dk, t in unet.items():
        src.merged[layout.UNET + dk] = Entry(t, label)
    renamed = 0
    for lk, dk in vmap.items():
        t = vae_entry(dk, tensors[lk])
        renamed += t is not tensors[lk]
        src.merged[layout.VAE + dk] = Entry(t, label)
    rest = [k for k in tensors if not k.startswith((ldm.UNET_PREFIX, ldm.VAE_PREFIX))]
    log("  %s: VAE decoder %d tensors (%d encoder tensors not needed); %d other tensors not used "
        "(text encoder, EMA, ...)" % (path, len(vmap), len(vskipped), len(rest)))
    return {"unet": ucfg, "vae": vcfg, "scheduler": dict(ldm.SD15_SCHEDULER)}, renamed


def load_unet_source(path, heads):
    """(config, {diffusers key: tensor}, label) of a U-Net given as a diffusers unet folder
    (config.json + weights) or a single LDM-layout file (a full checkpoint or the U-Net alone)."""
    if os.path.isdir(path):
        cfg = read_json(os.path.join(path, "config.json"))
        wpath = find_weights(path)
        return cfg, open_weights(wpath), wpath
    if not os.path.exists(path):
        raise ConvertError("U-Net source %s does not exist" % path)
    require_regular(path, "U-Net source")
    cfg, unet = load_single_unet(open_single_file(path), path, heads)
    return cfg, unet, path


VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def load_vae_source(path):
    """(config, {diffusers key: tensor}, label) of a VAE given as a diffusers vae folder (config.json
    + weights) or a single LDM-layout file: a whole SD checkpoint (first_stage_model.*) or a VAE alone
    (encoder./decoder./quant_conv./post_quant_conv. at the top, as the SD VAE fine-tunes ship; their
    loss.* and EMA entries are not used). Decoder half and post_quant_conv only."""
    if os.path.isdir(path):
        cfg = read_json(os.path.join(path, "config.json"))
        wpath = find_weights(path)
        out = {}
        for k, t in open_weights(wpath).items():
            m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.(\d+)\.(query|key|value|proj_attn)"
                         r"\.(weight|bias)$", k)
            if m:
                k = "%s.mid_block.attentions.%s.%s.%s" % (m.group(1), m.group(2),
                                                         LEGACY_VAE_ATTN[m.group(3)], m.group(4))
            out[k] = vae_entry(k, t)
        return cfg, out, wpath
    if not os.path.exists(path):
        raise ConvertError("VAE source %s does not exist" % path)
    require_regular(path, "VAE source")
    tensors = open_single_file(path)
    if any(k.startswith(ldm.VAE_PREFIX) for k in tensors):
        prefix, keys = ldm.VAE_PREFIX, list(tensors)
    else:
        prefix, keys = "", [k for k in tensors if k.startswith(VAE_PARTS)]
    vmap, _ = ldm.vae_map(keys, prefix=prefix)
    cfg = ldm.vae_config(lambda k: tuple(tensors[k].shape), vmap)
    log("  %s: LDM VAE, %d decoder tensors, blocks %s" % (path, len(vmap), cfg["block_out_channels"]))
    return cfg, {dk: vae_entry(dk, tensors[lk]) for lk, dk in vmap.items()}, path


def load_sd15(src, folder, heads=8):
    if os.path.isfile(folder):
        return load_sd15_single(src, folder, heads)
    if not os.path.exists(folder):
        raise ConvertError("SD1.5 folder %s does not exist" % folder)
    if not os.path.isdir(folder):
        require_regular(folder, "--sd15")
    for sub in ("unet", "vae", "scheduler"):
        if not os.path.isdir(os.path.join(folder, sub)):
            raise ConvertError("SD1.5 folder %s has no %s/ (expected the diffusers layout unet/, vae/, "
                               "scheduler/)" % (folder, sub))
    configs = {}
    for sub, fname in (("unet", "config.json"), ("vae", "config.json"),
                       ("scheduler", "scheduler_config.json")):
        p = os.path.join(folder, sub, fname)
        if not os.path.exists(p):
            raise ConvertError("SD1.5 folder %s has no %s/%s" % (folder, sub, fname))
        require_regular(p, "config")
        configs[sub] = read_json(p)
        src.add_file("sd15 %s config" % sub, p)
    renamed = 0
    for sub, prefix in (("unet", layout.UNET), ("vae", layout.VAE)):
        path = find_weights(os.path.join(folder, sub))
        src.add_file("sd15 %s weights" % sub, path)
        label = os.path.join(os.path.basename(os.path.normpath(folder)), sub, os.path.basename(path))
        tensors = open_weights(path)
        log("  %s: %d tensors" % (path, len(tensors)))
        for k, t in tensors.items():
            m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.(\d+)\.(query|key|value|proj_attn)"
                         r"\.(weight|bias)$", k) if sub == "vae" else None
            if m:
                # diffusers renames these on load (_from_deprecated_attn_block); ldm-era files store
                # the weights as 1x1 convs, diffusers keeps Linear [C, C]
                k = "%s.mid_block.attentions.%s.%s.%s" % (m.group(1), m.group(2),
                                                         LEGACY_VAE_ATTN[m.group(3)], m.group(4))
                if len(t.shape) == 4 and t.shape[2:] == (1, 1):
                    t = Derived(t, t.shape[:2], lambda a: a.reshape(a.shape[:2]))
                renamed += 1
            src.merged[prefix + k] = Entry(t, label)
    if renamed:
        log("  vae: %d legacy attention tensors (query/key/value/proj_attn) renamed to "
            "to_q/to_k/to_v/to_out.0" % renamed)
    return configs, renamed


def load_checkpoint(src, path):
    if not os.path.exists(path):
        raise ConvertError("checkpoint %s does not exist" % path)
    require_regular(path, "checkpoint")
    src.add_file("checkpoint", path)
    archive = Archive(path)
    obj = archive.load()
    if archive.placeholders:
        log("  pickled classes kept inert (not imported): %s" % ", ".join(sorted(archive.placeholders)))
    if not isinstance(obj, dict) or "model" not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:10]) if isinstance(obj, dict) else type(obj).__name__
        raise ConvertError("checkpoint %s has no ['model'] entry (a fairseq checkpoint keeps the weights "
                           "there; found: %s)" % (path, keys))
    model = obj["model"]
    if not isinstance(model, dict):
        raise ConvertError("checkpoint %s: ['model'] is not a state dict" % path)
    dtypes = {}
    for k, t in model.items():
        if not isinstance(k, str) or not isinstance(t, LazyTensor):
            raise ConvertError("checkpoint %s: ['model'][%r] is not a tensor" % (path, k))
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + 1
    log("  %s: %d tensors (%s)" % (path, len(model),
                                   ", ".join("%s %d" % kv for kv in sorted(dtypes.items()))))
    return obj, model


def cfg_value(ckpt, name):
    """A hyper-parameter from the checkpoint's fairseq config: cfg['model'] (omegaconf or dict) or
    the older args Namespace."""
    cfg = plain(ckpt.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) and name in cfg["model"]:
        return cfg["model"][name]
    args = plain(ckpt.get("args"))
    if isinstance(args, dict) and name in args:
        return args[name]
    return None


def split_clip_in_proj(src):
    """Checkpoints built without Kosmos-G's ts_attn conversion (open_clip layout) keep q/k/v packed
    in attn.in_proj_*: rows [0:W) q, [W:2W) k, [2W:3W) v, as Kosmos-G's own split does."""
    pat = re.compile(re.escape(layout.CLIP) + r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$")
    consumed = set()
    for k in list(src.merged):
        m = pat.match(k)
        if not m:
            continue
        b = "%stransformer.resblocks.%s." % (layout.CLIP, m.group(1))
        if b + "ts_attn.q_proj.weight" in src.merged:
            continue
        w = src.merged[k]
        bias = src.merged.get(b + "attn.in_proj_bias")
        if len(w.tensor.shape) != 2 or w.tensor.shape[0] % 3:
            raise ConvertError("tensor '%s' has shape %s, expected [3*width, width]" % (k, list(w.tensor.shape)))
        width = w.tensor.shape[0] // 3
        if bias is not None and tuple(bias.tensor.shape) != (3 * width,):
            raise ConvertError("tensor '%sattn.in_proj_bias' has shape %s, expected [%d]"
                               % (b, list(bias.tensor.shape), 3 * width))
        consumed.update({k, b + "attn.in_proj_bias", b + "attn.out_proj.weight", b + "attn.out_proj.bias"})
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sl = slice(i * width, (i + 1) * width)
            src.merged[b + "ts_attn." + name + ".weight"] = Entry(
                Derived(w.tensor, (width, w.tensor.shape[1]), lambda a, sl=sl: a[sl]), w.source)
            if bias is not None:
                src.merged[b + "ts_attn." + name + ".bias"] = Entry(
                    Derived(bias.tensor, (width,), lambda a, sl=sl: a[sl]), bias.source)
        for n in ("weight", "bias"):
            e = src.merged.get(b + "attn.out_proj." + n)
            if e is not None:
                src.merged[b + "ts_attn.out_proj." + n] = Entry(e.tensor, e.source)
    if consumed:
        log("  clip: %d blocks had only attn.in_proj_*: split into ts_attn.{q,k,v}_proj"
            % (len(consumed) // 4))
    return consumed


def check_dict(path):
    require_regular(path, "--dict")
    try:
        with open(path, "rb") as f:
            data = f.read()
        lines = data.decode("utf-8").splitlines()
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    except UnicodeDecodeError:
        raise ConvertError("%s: not UTF-8 text (expected fairseq dict.txt lines 'piece count')" % path)
    for i, line in enumerate(lines):
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ConvertError("%s:%d: expected 'piece count', got %r" % (path, i + 1, line[:60]))
    if not lines:
        raise ConvertError("%s: empty dictionary: every word of a prompt would become <unk>" % path)
    return data, len(lines)


def check_spm(path):
    require_regular(path, "--spm")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    # a ModelProto starts with its repeated field 1 (pieces): tag byte 0x0a
    if len(data) < 16 or data[0] != 0x0A:
        raise ConvertError("%s: not a SentencePiece model file" % path)
    return data


def convert_array(a, src_dtype, out_np, key):
    if src_dtype == "BF16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore"):
        out = a.astype(out_np)
    if out_np is np.float16:
        bad = np.isfinite(a) & ~np.isfinite(out)
        if bad.any():
            raise ConvertError("tensor '%s': %d values overflow float16 (largest |x| = %g); use "
                               "--dtype fp32" % (key, int(bad.sum()), float(np.abs(a[bad]).max())))
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="kosmosg-convert",
        description="Convert the official Kosmos-G release (checkpoint_final.pt + SD1.5 diffusers folder + "
                    "tokenizer files) into one self-contained .safetensors model file for kosmosg-gst.")
    ap.add_argument("--checkpoint", help="Kosmos-G checkpoint_final.pt (fairseq, torch zip)")
    ap.add_argument("--sd15", metavar="DIR|FILE",
                    help="Stable Diffusion 1.5 (or a fine-tune) in diffusers layout (unet/, vae/, scheduler/), "
                         "or as one .safetensors/.ckpt file in the original LDM layout")
    ap.add_argument("--spm", help="Kosmos-G data/sentencepiece.bpe.model")
    ap.add_argument("--dict", help="Kosmos-G data/dict.txt")
    ap.add_argument("--unet", metavar="DIR|FILE",
                    help="an SD1.5 U-Net fine-tune (diffusers unet folder, or an LDM-layout single file) "
                         "that replaces the U-Net of the checkpoint / SD1.5 folder; with --model: of that "
                         "model file")
    ap.add_argument("--vae", metavar="DIR|FILE",
                    help="an SD1.5 VAE (diffusers vae folder, or an LDM-layout file: a whole checkpoint or "
                         "a VAE alone such as the ft-MSE VAE) that replaces the VAE decoder; with --model: "
                         "of that model file")
    ap.add_argument("--model", metavar="FILE",
                    help="swap the U-Net (--unet) and/or the VAE (--vae) of this existing model file instead "
                         "of converting: writes -o (default: FILE itself) as a new file renamed into place "
                         "when complete")
    ap.add_argument("--unet-heads", type=int, default=8,
                    help="attention heads of a single-file U-Net (not stored in the file; SD1.5: 8)")
    ap.add_argument("-o", "--output", help="model file to write (.safetensors)")
    ap.add_argument("--dtype", choices=sorted(OUT_DTYPES), default="fp16",
                    help="storage precision of the weights (default fp16)")
    ap.add_argument("--mllm-heads", type=int, default=None,
                    help="MLLM (and connector) attention heads; default: the checkpoint's "
                         "decoder_attention_heads, else 32")
    ap.add_argument("--clip-head-width", type=int, default=None,
                    help="CLIP head width (not stored in checkpoints; default 64 = ViT-L/14)")
    ap.add_argument("--aligner-heads", type=int, default=None,
                    help="AlignerNet attention heads (not stored in checkpoints; default 12)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    args = ap.parse_args(argv)
    if args.model:
        if not args.unet and not args.vae:
            ap.error("--model needs --unet and/or --vae (what to swap in)")
        bad = [f for f in ("checkpoint", "sd15", "spm", "dict") if getattr(args, f)]
        if bad:
            ap.error("--model swaps a U-Net and/or a VAE only; --%s does not apply" % bad[0])
        args.output = args.output or args.model
    else:
        missing = [f for f in ("checkpoint", "sd15", "spm", "dict", "output") if not getattr(args, f)]
        if missing:
            ap.error("the following arguments are required: --%s" % missing[0])
    return args


def run(args):
    src = Sources()
    log("reading SD1.5 folder %s" % args.sd15)
    configs, renamed = load_sd15(src, args.sd15, args.unet_heads)
    log("reading checkpoint %s" % args.checkpoint)
    sd15_keys = set(src.merged)
    ckpt, model = load_checkpoint(src, args.checkpoint)
    # the official order: SD1.5 first, then every checkpoint key on top (load_state_dict strict=False)
    overridden = 0
    for k, t in model.items():
        if k in src.merged:
            overridden += 1
        src.merged[k] = Entry(t, "checkpoint")
    log("  %d checkpoint tensors replace the SD1.5 folder's" % overridden)
    if args.unet:
        # a U-Net fine-tune replaces whatever U-Net the checkpoint and the SD1.5 files brought
        log("reading U-Net %s" % args.unet)
        configs["unet"], unet, label = load_unet_source(args.unet, args.unet_heads)
        src.add_file("unet", label)
        for k in [k for k in src.merged if k.startswith(layout.UNET)]:
            del src.merged[k]
        for k, t in unet.items():
            src.merged[layout.UNET + k] = Entry(t, os.path.basename(label))
    if args.vae:
        log("reading VAE %s" % args.vae)
        configs["vae"], vae, label = load_vae_source(args.vae)
        src.add_file("vae", label)
        for k in [k for k in src.merged if k.startswith(layout.VAE)]:
            del src.merged[k]
        for k, t in vae.items():
            src.merged[layout.VAE + k] = Entry(t, os.path.basename(label))
    consumed = split_clip_in_proj(src)
    spm = check_spm(args.spm)
    dict_bytes, dict_lines = check_dict(args.dict)
    src.add_file("sentencepiece", args.spm)
    src.add_file("dict", args.dict)

    heads = args.mllm_heads
    heads_from = "--mllm-heads"
    if heads is None:
        heads = cfg_value(ckpt, "decoder_attention_heads")
        heads_from = "checkpoint cfg decoder_attention_heads"
        if not isinstance(heads, int) or isinstance(heads, bool):
            heads, heads_from = DEFAULT_MLLM_HEADS, "default (kosmosg_xl)"
    maxpos = cfg_value(ckpt, "max_target_positions")
    if maxpos is None:
        maxpos = DEFAULT_MAX_POSITIONS
    elif not isinstance(maxpos, int) or isinstance(maxpos, bool) or not 1 <= maxpos <= MAX_POSITIONS_LIMIT:
        raise ConvertError("checkpoint %s: cfg max_target_positions %r: expected an integer in 1..%d"
                           % (args.checkpoint, maxpos, MAX_POSITIONS_LIMIT))

    keys = list(src.merged)

    def shape_of(k):
        e = src.merged.get(k)
        return tuple(e.tensor.shape) if e is not None else None

    cfgs = {}
    expected = {}
    mllm_cfg, mllm_exp = layout.mllm(shape_of, keys, heads, maxpos)
    cfgs["clip"], expected["clip"] = layout.clip(shape_of, keys, args.clip_head_width)
    cfgs["connector"], expected["connector"] = layout.connector(shape_of, keys, heads)
    cfgs["mllm"], expected["mllm"] = mllm_cfg, mllm_exp
    cfgs["aligner"], expected["aligner"] = layout.aligner(shape_of, keys, args.aligner_heads)
    expected["unet"] = layout.unet(configs["unet"])
    expected["vae"] = layout.vae(configs["vae"])
    cfgs["unet"], cfgs["vae"], cfgs["scheduler"] = configs["unet"], configs["vae"], configs["scheduler"]
    log("MLLM/connector heads: %d (%s)" % (heads, heads_from))

    # every tensor present, float, with the shape its component's config implies
    for comp, exp in expected.items():
        for k, shape in exp:
            e = src.merged.get(k)
            if e is None:
                raise ConvertError("missing tensor '%s' (%s, expected shape %s)" % (k, comp, list(shape)))
            if tuple(e.tensor.shape) != tuple(shape):
                raise ConvertError("tensor '%s' from %s has shape %s, expected %s (%s)"
                                   % (k, e.source, list(e.tensor.shape), list(shape), comp))
            if e.tensor.dtype not in FLOAT_DTYPES:
                raise ConvertError("tensor '%s' from %s has dtype %s, expected a float tensor"
                                   % (k, e.source, e.tensor.dtype))

    # the components must fit each other
    links = [
        ("CLIP width", cfgs["clip"]["width"], "connector input", cfgs["connector"]["in"],
         layout.CONNECTOR + "dense.weight"),
        ("MLLM dim", cfgs["mllm"]["dim"], "connector output", cfgs["connector"]["out"],
         layout.CONNECTOR + "dense.weight"),
        ("MLLM dim", cfgs["mllm"]["dim"], "AlignerNet input", cfgs["aligner"]["in"],
         layout.ALIGNER + "encoder_proj.embed_tokens.weight"),
        ("U-Net cross_attention_dim", int(configs["unet"].get("cross_attention_dim", -1)),
         "AlignerNet width", cfgs["aligner"]["dim"], layout.ALIGNER + "encoder_query"),
        ("dict.txt lines + 10 (4 fairseq specials, <mask>, 5 Kosmos-G symbols)", dict_lines + 10,
         "MLLM vocabulary", cfgs["mllm"]["vocab"], layout.MLLM + "embed_tokens.weight"),
    ]
    for what_a, a, what_b, b, key in links:
        if a != b:
            raise ConvertError("inconsistent inputs: %s is %d but %s is %d (tensor '%s')"
                               % (what_a, a, what_b, b, key))

    used = {k for exp in expected.values() for k, _ in exp} | consumed
    ck_unused = [k for k in model if k not in used]
    reasons = {}
    unknown = []
    for k in ck_unused:
        for pat, why in UNUSED_RULES:
            if re.match(pat, k):
                reasons.setdefault(why, []).append(k)
                break
        else:
            unknown.append(k)
    log("checkpoint keys not used: %d" % len(ck_unused))
    for why, ks in reasons.items():
        log("  %4d  %s (e.g. %s)" % (len(ks), why, ks[0]))
    for k in unknown:
        log("  unknown key, not used: %s" % k)
    sd_unused = len([k for k in sd15_keys if k not in used and k not in model])

    out_dtype, out_np = OUT_DTYPES[args.dtype]
    entries = []
    components = {}
    log("%-10s %8s %14s  source" % ("component", "tensors", "parameters"))
    total = 0
    for comp, exp in expected.items():
        count = {}
        params = 0
        for k, shape in exp:
            e = src.merged[k]
            count[e.source] = count.get(e.source, 0) + 1
            params += int(np.prod(shape, dtype=np.int64))
            entries.append((k, out_dtype, shape,
                            lambda e=e, k=k: convert_array(e.tensor.read(), e.tensor.dtype, out_np, k)))
        total += params
        components[comp] = {"tensors": len(exp), "params": params, "from": count}
        log("%-10s %8d %14s  %s" % (comp, len(exp), "{:,}".format(params),
                                    ", ".join("%s (%d)" % kv for kv in count.items())))
    log("%-10s %8d %14s" % ("total", sum(len(e) for e in expected.values()), "{:,}".format(total)))
    for name, data in (("tokenizer.sentencepiece", spm), ("tokenizer.dict", dict_bytes)):
        entries.append((name, "U8", (len(data),),
                        lambda data=data: np.frombuffer(data, np.uint8)))

    sources = {
        "converter": "kosmosg-convert (format %s)" % FORMAT_VERSION,
        "files": src.files,
        "components": components,
        "load_order": "SD1.5 folder first, then every checkpoint key on top",
        "checkpoint_tensors_overriding_sd15": overridden,
        "vae_legacy_attention_renamed": renamed,
        "clip_in_proj_split_blocks": len(consumed) // 4,
        "mllm_heads_from": heads_from,
        "unused_checkpoint_keys": ck_unused,
        "unused_sd15_tensors": sd_unused,
    }
    metadata = {"kg.format_version": FORMAT_VERSION, "kg.dtype": args.dtype,
                "kg.sources": json.dumps(sources, separators=(",", ":"))}
    for comp, cfg in cfgs.items():
        metadata["kg.config." + comp] = json.dumps(cfg, separators=(",", ":"))
    log("writing %s (%s)" % (args.output, args.dtype))
    size = write_safetensors(args.output, entries, metadata)
    log("wrote %s: %d tensors, %s bytes" % (args.output, len(entries), "{:,}".format(size)))


def _check_component(label, prefix, expected, tensors):
    for k, shape in expected:
        t = tensors.get(k[len(prefix):])
        name = k[len(prefix):]
        if t is None:
            raise ConvertError("%s: missing tensor '%s' (expected shape %s)" % (label, name, list(shape)))
        if tuple(t.shape) != tuple(shape):
            raise ConvertError("%s: tensor '%s' has shape %s, expected %s" % (label, name, list(t.shape),
                                                                             list(shape)))
        if t.dtype not in FLOAT_DTYPES:
            raise ConvertError("%s: tensor '%s' has dtype %s, expected a float tensor" % (label, name, t.dtype))


def swap_components(args):
    """Replace the U-Net and/or the VAE of an existing model file. The new file is written beside the
    output and renamed over it only when complete, so a process that has the old file mapped keeps
    reading the old (unlinked) file and the model file is never modified in place."""
    model = SafetensorsFile(args.model)
    meta = dict(model.metadata)
    if meta.get("kg.format_version") != FORMAT_VERSION:
        raise ConvertError("%s: not a kosmosg-convert model file of format %s (kg.format_version %r)"
                           % (args.model, FORMAT_VERSION, meta.get("kg.format_version")))
    dtype = meta.get("kg.dtype")
    if dtype not in OUT_DTYPES:
        raise ConvertError("%s: unknown kg.dtype %r" % (args.model, dtype))
    out_dtype, out_np = OUT_DTYPES[dtype]
    swaps = []  # (component, prefix, config, tensors, label)
    if args.unet:
        log("reading U-Net %s" % args.unet)
        cfg, unet, label = load_unet_source(args.unet, args.unet_heads)
        _check_component(label, layout.UNET, layout.unet(cfg), unet)
        aligner = json.loads(meta.get("kg.config.aligner", "{}"))
        if int(cfg.get("cross_attention_dim", -1)) != int(aligner.get("dim", cfg.get("cross_attention_dim", -1))):
            raise ConvertError("%s: cross_attention_dim %s does not match the model's AlignerNet width %s "
                               "(not an SD1.5 U-Net?)" % (label, cfg.get("cross_attention_dim"), aligner.get("dim")))
        swaps.append(("unet", layout.UNET, cfg, layout.unet(cfg), unet, label))
    if args.vae:
        log("reading VAE %s" % args.vae)
        cfg, vae, label = load_vae_source(args.vae)
        _check_component(label, layout.VAE, layout.vae(cfg), vae)
        unet_cfg = swaps[0][2] if swaps else json.loads(meta["kg.config.unet"])
        if int(cfg.get("latent_channels", -1)) != int(unet_cfg.get("out_channels", 4)):
            raise ConvertError("%s: latent_channels %s does not match the U-Net's %s channels"
                               % (label, cfg.get("latent_channels"), unet_cfg.get("out_channels", 4)))
        swaps.append(("vae", layout.VAE, cfg, layout.vae(cfg), vae, label))
    prefixes = tuple(sw[1] for sw in swaps)
    entries = [(name, t.dtype, tuple(t.shape), t.read) for name, t in model.tensors.items()
               if not name.startswith(prefixes)]
    sources = json.loads(meta.get("kg.sources", "{}"))
    for comp, prefix, cfg, expected, tensors, label in swaps:
        for k, shape in expected:
            t = tensors[k[len(prefix):]]
            entries.append((k, out_dtype, tuple(shape),
                            lambda t=t, k=k: convert_array(t.read(), t.dtype, out_np, k)))
        old = json.loads(meta["kg.config." + comp])
        sources.setdefault(comp + "_swaps", []).append(
            {"path": label, "size": os.path.getsize(label) if os.path.isfile(label) else None,
             "sha256": sha256_file(label) if os.path.isfile(label) else None,
             "previous_block_out_channels": old.get("block_out_channels")})
        meta["kg.config." + comp] = json.dumps(cfg, separators=(",", ":"))
        log("%s: %d tensors swapped in" % (comp, len(expected)))
    meta["kg.sources"] = json.dumps(sources, separators=(",", ":"))
    log("writing %s (%s)" % (args.output, dtype))
    size = write_safetensors(args.output, entries, meta)
    log("wrote %s: %d tensors, %s bytes" % (args.output, len(entries), "{:,}".format(size)))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--controlnet" or a.startswith("--controlnet=") for a in argv):
        from . import controlnet
        args = controlnet.parse_args(argv)
        job = controlnet.run
    else:
        args = parse_args(argv)
        job = swap_components if args.model else run
    QUIET[0] = args.quiet
    try:
        check_output(args.output)
        job(args)
    except ConvertError as e:
        print("kosmosg-convert: error: %s" % e, file=sys.stderr)
        return 1
    except MemoryError:
        print("kosmosg-convert: error: out of memory (a corrupt or malicious input declaring huge "
              "sizes, or too little memory for this model)", file=sys.stderr)
        return 1
    return 0
