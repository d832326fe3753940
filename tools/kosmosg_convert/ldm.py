"""Key mapping of the original LDM / CompVis single-file Stable Diffusion layout
(`model.diffusion_model.*`, `first_stage_model.*`) onto diffusers names, as diffusers 0.21.4's
convert_from_ckpt.py maps them (non-EMA weights). Used by kosmosg-convert for single-file SD1.5
fine-tunes and by the ControlNet converter (`control_model.*`, same U-Net layout).

The mapping is a pure function of the U-Net structure (blocks, layers per block, which blocks have
attention) and the VAE's block counts; both are read from the checkpoint's own keys, so a file is
checked against itself: every key of the prefix must be mapped and every mapped key must exist.
tests/golden-gen/gen_ldm_mapping.py checks this mapping against diffusers' converter."""

import re

from .errors import ConvertError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# LDM ResBlock member -> diffusers ResnetBlock2D member
_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
# LDM VAE ResnetBlock / AttnBlock members
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "nin_shortcut": "conv_shortcut"}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _ids(keys, pattern):
    out = set()
    for k in keys:
        m = re.match(pattern, k)
        if m:
            out.add(int(m.group(1)))
    return sorted(out)


def _member(table, rest, where):
    """'in_layers.0.weight' -> 'norm1.weight' through table; ConvertError naming where on a miss."""
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise ConvertError("%s: unknown member '%s'" % (where, rest))


def unet_structure(keys):
    """Block structure of an LDM U-Net from its (prefix-stripped) keys:
    (n_blocks, layers_per_block, down_has_attn[], up_has_attn[])."""
    inp = _ids(keys, r"input_blocks\.(\d+)\.")
    out = _ids(keys, r"output_blocks\.(\d+)\.")
    if not inp or inp != list(range(len(inp))) or not out or out != list(range(len(out))):
        raise ConvertError("not an LDM U-Net: input_blocks/output_blocks missing or not numbered 0..n-1")
    downs = [i for i in inp if any(k.startswith("input_blocks.%d.0.op." % i) for k in keys)]
    n_blocks = len(downs) + 1
    # input_blocks: conv_in, then per level `layers` resnets and (except the last level) a downsampler
    per_level, rem = divmod(len(inp), n_blocks)
    if rem or per_level < 2 or len(out) != n_blocks * per_level:
        raise ConvertError("LDM U-Net with %d input and %d output blocks and %d downsamplers does not have "
                           "the same number of layers per level (diffusers' converter needs that)"
                           % (len(inp), len(out), len(downs)))
    layers = per_level - 1
    down_attn = [any(k.startswith("input_blocks.%d.1." % (1 + b * (layers + 1))) for k in keys)
                 for b in range(n_blocks)]
    up_attn = []
    for b in range(n_blocks):
        i = b * (layers + 1)
        up_attn.append(any(k.startswith("output_blocks.%d.1.norm." % i) for k in keys))
    return n_blocks, layers, down_attn, up_attn


def encoder_key(k, layers, where):
    """The diffusers key of an LDM U-Net key of the time embedding, conv_in, the input blocks or the
    middle block (the part a ControlNet copies), or None for any other key."""
    m = re.match(r"time_embed\.([02])\.(weight|bias)$", k)
    if m:
        return "time_embedding.linear_%d.%s" % (1 if m.group(1) == "0" else 2, m.group(2))
    if re.match(r"input_blocks\.0\.0\.(weight|bias)$", k):
        return "conv_in." + k.split(".")[-1]
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)$", k)
    if m:
        i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        b, layer = divmod(i - 1, layers + 1)
        if layer == layers:
            if j == 0 and rest.startswith("op."):
                return "down_blocks.%d.downsamplers.0.conv.%s" % (b, rest[3:])
        elif j == 0:
            return "down_blocks.%d.resnets.%d.%s" % (b, layer, _member(_RESNET, rest, where))
        elif j == 1:
            return "down_blocks.%d.attentions.%d.%s" % (b, layer, rest)
        return None
    m = re.match(r"middle_block\.([012])\.(.*)$", k)
    if m:
        j, rest = int(m.group(1)), m.group(2)
        return ("mid_block.attentions.0." + rest if j == 1 else
                "mid_block.resnets.%d.%s" % (j // 2, _member(_RESNET, rest, where)))
    return None


def unet_map(keys, prefix=UNET_PREFIX):
    """{ldm key: diffusers key} for every key under prefix (other keys are not looked at).
    Raises ConvertError naming the first key that has no place in the U-Net."""
    sub = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    if not sub:
        raise ConvertError("no tensor under '%s' (not an LDM single-file Stable Diffusion checkpoint)" % prefix)
    n_blocks, layers, _, up_attn = unet_structure(sub)
    out = {}
    for k in sub:
        full = prefix + k
        where = "'%s'" % full
        new = None
        new = encoder_key(k, layers, where)
        if re.match(r"out\.([02])\.(weight|bias)$", k):
            new = ("conv_norm_out." if k.startswith("out.0.") else "conv_out.") + k.split(".")[-1]
        elif k.startswith("output_blocks."):
            m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)$", k)
            i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            b, layer = divmod(i, layers + 1)
            up_j = 2 if up_attn[b] else 1
            if j == 0:
                new = "up_blocks.%d.resnets.%d.%s" % (b, layer, _member(_RESNET, rest, where))
            elif j == 1 and up_attn[b] and not rest.startswith("conv."):
                new = "up_blocks.%d.attentions.%d.%s" % (b, layer, rest)
            elif j == up_j and layer == layers and rest.startswith("conv.") and b < n_blocks - 1:
                new = "up_blocks.%d.upsamplers.0.conv.%s" % (b, rest[5:])
        if new is None:
            raise ConvertError("%s has no place in an SD U-Net (LDM layout)" % where)
        out[full] = new
    return out


def vae_map(keys, prefix=VAE_PREFIX, with_encoder=False):
    """{ldm key: diffusers key} of the VAE decoder and post_quant_conv (also the encoder and
    quant_conv with with_encoder). Other keys under prefix are returned in the second result."""
    sub = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    if not sub:
        raise ConvertError("no tensor under '%s' (no VAE in this single-file checkpoint)" % prefix)
    n_up = len(_ids(sub, r"decoder\.up\.(\d+)\."))
    out, skipped = {}, []
    for k in sub:
        full = prefix + k
        where = "'%s'" % full
        part = k.split(".")[0]
        if part in ("encoder", "quant_conv") and not with_encoder:
            skipped.append(full)
            continue
        new = None
        if part in ("quant_conv", "post_quant_conv"):
            new = k
        elif part in ("encoder", "decoder"):
            rest = k[len(part) + 1:]
            m = re.match(r"(conv_in|conv_out|norm_out)\.(weight|bias)$", rest)
            if m:
                new = "%s.%s.%s" % (part, "conv_norm_out" if m.group(1) == "norm_out" else m.group(1),
                                   m.group(2))
            m2 = re.match(r"mid\.(block_[12]|attn_1)\.(.*)$", rest)
            if m2:
                if m2.group(1) == "attn_1":
                    new = "%s.mid_block.attentions.0.%s" % (part, _member(_VAE_ATTN, m2.group(2), where))
                else:
                    new = "%s.mid_block.resnets.%d.%s" % (part, int(m2.group(1)[-1]) - 1,
                                                          _member(_VAE_RESNET, m2.group(2), where))
            m3 = re.match(r"(up|down)\.(\d+)\.(block\.(\d+)|upsample|downsample)\.(.*)$", rest)
            if m3 and (m3.group(1) == "up") == (part == "decoder"):
                i = int(m3.group(2))
                blk = "up_blocks.%d" % (n_up - 1 - i) if part == "decoder" else "down_blocks.%d" % i
                if m3.group(4) is not None:
                    new = "%s.%s.resnets.%s.%s" % (part, blk, m3.group(4),
                                                   _member(_VAE_RESNET, m3.group(5), where))
                elif m3.group(5).startswith("conv."):
                    new = "%s.%s.%s.0.conv.%s" % (part, blk, "upsamplers" if part == "decoder"
                                                  else "downsamplers", m3.group(5)[5:])
        if new is None:
            raise ConvertError("%s has no place in an SD VAE (LDM layout)" % where)
        out[full] = new
    return out, skipped


def is_vae_attn_conv(diffusers_key, shape):
    """LDM stores the VAE mid attention's q/k/v/proj_out as 1x1 convs; diffusers as Linear."""
    return (".mid_block.attentions." in diffusers_key and diffusers_key.endswith(".weight")
            and "group_norm" not in diffusers_key and len(shape) == 4 and tuple(shape[2:]) == (1, 1))


# SD1.5's scheduler_config.json (the v1-inference.yaml schedule: linear_start 0.00085, linear_end 0.012,
# 1000 steps, scaled_linear); a single file carries no scheduler config
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None}


def unet_config(shape_of, mapping, heads=8):
    """diffusers U-Net config of a mapped LDM U-Net, from its tensor shapes. The head count is not in
    any tensor: SD1.5's v1-inference.yaml has num_heads 8 (diffusers' attention_head_dim 8)."""
    inv = {v: k for k, v in mapping.items()}

    def shape(dk):
        return shape_of(inv[dk]) if dk in inv else None

    n_blocks = 1 + max(int(re.match(r"down_blocks\.(\d+)", v).group(1))
                       for v in inv if v.startswith("down_blocks."))
    lpb = 1 + max(int(re.match(r"down_blocks\.0\.resnets\.(\d+)", v).group(1))
                  for v in inv if v.startswith("down_blocks.0.resnets."))
    boc = [shape("down_blocks.%d.resnets.0.conv1.weight" % i)[0] for i in range(n_blocks)]
    down = ["CrossAttnDownBlock2D" if shape("down_blocks.%d.attentions.0.norm.weight" % i) else "DownBlock2D"
            for i in range(n_blocks)]
    up = ["CrossAttnUpBlock2D" if shape("up_blocks.%d.attentions.0.norm.weight" % i) else "UpBlock2D"
          for i in range(n_blocks)]
    k = shape("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")
    if k is None or len(k) != 2:
        raise ConvertError("LDM U-Net: no mid-block cross-attention to_k weight to read cross_attention_dim from")
    linear_proj = len(shape("mid_block.attentions.0.proj_in.weight")) == 2
    ntb = 1 + max(int(re.match(r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)", v).group(1))
                  for v in inv if v.startswith("mid_block.attentions.0.transformer_blocks."))
    return {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": heads,
            "block_out_channels": boc, "center_input_sample": False, "cross_attention_dim": k[1],
            "down_block_types": down, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
            "in_channels": shape("conv_in.weight")[1], "layers_per_block": lpb, "mid_block_scale_factor": 1,
            "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": shape("conv_out.weight")[0],
            "transformer_layers_per_block": ntb, "up_block_types": up, "use_linear_projection": linear_proj}


def vae_config(shape_of, mapping):
    """diffusers AutoencoderKL config of a mapped LDM VAE decoder, from its tensor shapes."""
    inv = {v: k for k, v in mapping.items()}
    n_up = 1 + max(int(re.match(r"decoder\.up_blocks\.(\d+)", v).group(1))
                   for v in inv if v.startswith("decoder.up_blocks."))
    lpb = max(int(re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)", v).group(1))
              for v in inv if v.startswith("decoder.up_blocks.0.resnets."))
    boc = [shape_of(inv["decoder.up_blocks.%d.resnets.0.conv2.weight" % i])[0] for i in range(n_up)][::-1]
    lat = shape_of(inv["post_quant_conv.weight"])[0]
    return {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": boc,
            "down_block_types": ["DownEncoderBlock2D"] * n_up, "in_channels": 3, "latent_channels": lat,
            "layers_per_block": lpb, "norm_num_groups": 32,
            "out_channels": shape_of(inv["decoder.conv_out.weight"])[0], "scaling_factor": 0.18215,
            "up_block_types": ["UpDecoderBlock2D"] * n_up}
