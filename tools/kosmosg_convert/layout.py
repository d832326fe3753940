"""Which tensors each component needs, with which shapes, and the config written for the C side.

Every function takes `shape_of(key)` (the merged sources' shape of a full key, or None when
absent) and returns (config, [(full key, shape), ...]). Dimensions come from the tensors; what no
tensor can tell (attention heads) comes from the caller. Layer counts come from the highest layer
index present, so a missing middle layer shows up as a missing tensor."""

import re

from .errors import ConvertError

LN_EPS = 1e-5

CLIP = "img_model.visual."
CONNECTOR = "img_connector."
MLLM = "gpt_model.decoder."
ALIGNER = "aligner."
UNET = "diffusion_unet.unet."
VAE = "vae.vae."


def _need(shape_of, key, ndim=None):
    s = shape_of(key)
    if s is None:
        raise ConvertError("missing tensor '%s'" % key)
    if ndim is not None and len(s) != ndim:
        raise ConvertError("tensor '%s' has shape %s, expected a %d-D tensor" % (key, list(s), ndim))
    return s


def count_layers(keys, prefix):
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = [int(m.group(1)) for m in (pat.match(k) for k in keys) if m]
    return max(idx) + 1 if idx else 0


def _ln(out, key, dim):
    out.append((key + ".weight", (dim,)))
    out.append((key + ".bias", (dim,)))


def _linear(out, key, dout, din, bias=True):
    out.append((key + ".weight", (dout, din)))
    if bias:
        out.append((key + ".bias", (dout,)))


def _heads_check(what, dim, heads, flag):
    if heads <= 0 or dim % heads:
        raise ConvertError("%s: width %d is not divisible by %d heads (set %s)" % (what, dim, heads, flag))


def clip(shape_of, keys, head_width):
    p = CLIP
    w, cin, ph, pw = _need(shape_of, p + "conv1.weight", 4)
    if cin != 3 or ph != pw:
        raise ConvertError("tensor '%sconv1.weight' has shape %s, expected [width, 3, patch, patch]"
                           % (p, [w, cin, ph, pw]))
    npos = _need(shape_of, p + "positional_embedding", 2)[0]
    grid = int(round((npos - 1) ** 0.5))
    if grid * grid + 1 != npos:
        raise ConvertError("tensor '%spositional_embedding' has %d rows, expected grid*grid + 1"
                           % (p, npos))
    layers = count_layers(keys, p + "transformer.resblocks.")
    if layers == 0:
        raise ConvertError("missing tensor '%stransformer.resblocks.0.ln_1.weight'" % p)
    mlp = _need(shape_of, p + "transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
    if head_width is None:
        if w != 1024:
            raise ConvertError("CLIP width %d is not ViT-L/14's 1024: the head width is not stored "
                               "in the checkpoint, pass --clip-head-width" % w)
        head_width = 64
    _heads_check("CLIP", w, head_width, "--clip-head-width")
    out = [(p + "conv1.weight", (w, 3, ph, ph)), (p + "class_embedding", (w,)),
           (p + "positional_embedding", (npos, w))]
    _ln(out, p + "ln_pre", w)
    for i in range(layers):
        b = "%stransformer.resblocks.%d." % (p, i)
        _ln(out, b + "ln_1", w)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(out, b + "ts_attn." + proj, w, w)
        _ln(out, b + "ln_2", w)
        _linear(out, b + "mlp.c_fc", mlp, w)
        _linear(out, b + "mlp.c_proj", w, mlp)
    _ln(out, p + "ln_post", w)
    cfg = {"width": w, "layers": layers, "head_width": head_width, "patch_size": ph,
           "image_size": grid * ph, "mlp_ratio": mlp / w, "act": "quick_gelu", "ln_eps": LN_EPS}
    return cfg, out


def connector(shape_of, keys, heads):
    p = CONNECTOR
    d, cin = _need(shape_of, p + "dense.weight", 2)
    q = _need(shape_of, p + "latent_query", 2)[0]
    _heads_check("connector", d, heads, "--mllm-heads")
    out = []
    _linear(out, p + "dense", d, cin)
    out.append((p + "latent_query", (q, d)))
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        _linear(out, p + "x_attn." + proj, d, d)
    return {"in": cin, "out": d, "heads": heads, "latent_query_num": q}, out


def _torchscale_layer(out, b, d, f, cross):
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        _linear(out, b + "self_attn." + proj, d, d)
    _ln(out, b + "self_attn.inner_attn_ln", d)
    _ln(out, b + "self_attn_layer_norm", d)
    if cross:
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(out, b + "encoder_attn." + proj, d, d)
        _ln(out, b + "encoder_attn_layer_norm", d)
    _linear(out, b + "ffn.fc1", f, d)
    _linear(out, b + "ffn.fc2", d, f)
    _ln(out, b + "ffn.ffn_layernorm", f)
    _ln(out, b + "final_layer_norm", d)


def mllm(shape_of, keys, heads, max_positions):
    p = MLLM
    vocab, d = _need(shape_of, p + "embed_tokens.weight", 2)
    layers = count_layers(keys, p + "layers.")
    if layers == 0:
        raise ConvertError("missing tensor '%slayers.0.self_attn.q_proj.weight'" % p)
    f = _need(shape_of, p + "layers.0.ffn.fc1.weight", 2)[0]
    _heads_check("MLLM", d, heads, "--mllm-heads")
    out = [(p + "embed_tokens.weight", (vocab, d))]
    for i in range(layers):
        _torchscale_layer(out, "%slayers.%d." % (p, i), d, f, False)
    _ln(out, p + "layer_norm", d)
    cfg = {"dim": d, "ffn": f, "heads": heads, "layers": layers, "vocab": vocab, "ln_eps": LN_EPS,
           "max_positions": max_positions, "pad": 1}
    return cfg, out


def aligner(shape_of, keys, heads):
    p = ALIGNER
    q, d = _need(shape_of, p + "encoder_query", 2)
    din = _need(shape_of, p + "encoder_proj.embed_tokens.weight", 2)[1]
    npos = _need(shape_of, p + "encoder_proj.embed_positions.weight", 2)[0]
    f = _need(shape_of, p + "encoder_proj.layers.0.ffn.fc1.weight", 2)[0]
    enc = count_layers(keys, p + "encoder_proj.layers.")
    dec = count_layers(keys, p + "encoder.layers.")
    if dec == 0:
        raise ConvertError("missing tensor '%sencoder.layers.0.self_attn.q_proj.weight'" % p)
    if heads is None:
        if d != 768:
            raise ConvertError("AlignerNet width %d is not the official 768: the head count is not "
                               "stored in the checkpoint, pass --aligner-heads" % d)
        heads = 12
    _heads_check("AlignerNet", d, heads, "--aligner-heads")
    out = []
    _linear(out, p + "encoder_proj.embed_tokens", d, din)
    out.append((p + "encoder_proj.embed_positions.weight", (npos, d)))
    for i in range(enc):
        _torchscale_layer(out, "%sencoder_proj.layers.%d." % (p, i), d, f, False)
    _ln(out, p + "encoder_proj.layer_norm", d)
    out.append((p + "encoder_query", (q, d)))
    for i in range(dec):
        _torchscale_layer(out, "%sencoder.layers.%d." % (p, i), d, f, True)
    _ln(out, p + "encoder.layer_norm", d)
    cfg = {"in": din, "dim": d, "ffn": f, "heads": heads, "enc_layers": enc, "dec_layers": dec,
           "queries": q, "positions": npos, "ln_eps": LN_EPS}
    return cfg, out


# --- diffusers models: the key set follows from config.json (diffusers 0.21.4 constructors)

def _cfg(cfg, name, default, what, allowed=None):
    v = cfg.get(name, default)
    if allowed is not None and v not in allowed:
        raise ConvertError("%s config.json: %s = %r is not supported (the SD1.5 architecture has %r)"
                           % (what, name, v, allowed[0]))
    return v


def _resnet(out, b, cin, cout, temb):
    _ln(out, b + "norm1", cin)
    out.append((b + "conv1.weight", (cout, cin, 3, 3)))
    out.append((b + "conv1.bias", (cout,)))
    if temb:
        _linear(out, b + "time_emb_proj", cout, temb)
    _ln(out, b + "norm2", cout)
    out.append((b + "conv2.weight", (cout, cout, 3, 3)))
    out.append((b + "conv2.bias", (cout,)))
    if cin != cout:
        out.append((b + "conv_shortcut.weight", (cout, cin, 1, 1)))
        out.append((b + "conv_shortcut.bias", (cout,)))


def _conv(out, key, cout, cin, k):
    out.append((key + ".weight", (cout, cin, k, k)))
    out.append((key + ".bias", (cout,)))


def _transformer(out, b, c, cross, nblocks, linear_proj):
    _ln(out, b + "norm", c)
    proj = (c, c) if linear_proj else (c, c, 1, 1)
    out.append((b + "proj_in.weight", proj))
    out.append((b + "proj_in.bias", (c,)))
    for t in range(nblocks):
        tb = "%stransformer_blocks.%d." % (b, t)
        _ln(out, tb + "norm1", c)
        for n in ("to_q", "to_k", "to_v"):
            _linear(out, tb + "attn1." + n, c, c, bias=False)
        _linear(out, tb + "attn1.to_out.0", c, c)
        _ln(out, tb + "norm2", c)
        _linear(out, tb + "attn2.to_q", c, c, bias=False)
        _linear(out, tb + "attn2.to_k", c, cross, bias=False)
        _linear(out, tb + "attn2.to_v", c, cross, bias=False)
        _linear(out, tb + "attn2.to_out.0", c, c)
        _ln(out, tb + "norm3", c)
        _linear(out, tb + "ff.net.0.proj", 8 * c, c)
        _linear(out, tb + "ff.net.2", c, 4 * c)
    out.append((b + "proj_out.weight", proj))
    out.append((b + "proj_out.bias", (c,)))


def _unet_encoder(out, p, boc, lpb, cross, cin, down, ntb, linear_proj, what):
    """conv_in, time embedding, down blocks and mid block: the part a ControlNet copies."""
    temb = boc[0] * 4
    _conv(out, p + "conv_in", boc[0], cin, 3)
    _linear(out, p + "time_embedding.linear_1", temb, boc[0])
    _linear(out, p + "time_embedding.linear_2", temb, temb)
    ch = boc[0]
    for i, kind in enumerate(down):
        if kind not in ("CrossAttnDownBlock2D", "DownBlock2D"):
            raise ConvertError("%s config.json: down block type %s is not supported" % (what, kind))
        b = "%sdown_blocks.%d." % (p, i)
        for j in range(lpb):
            _resnet(out, "%sresnets.%d." % (b, j), ch if j == 0 else boc[i], boc[i], temb)
            if kind == "CrossAttnDownBlock2D":
                _transformer(out, "%sattentions.%d." % (b, j), boc[i], cross, ntb, linear_proj)
        if i < len(boc) - 1:
            _conv(out, b + "downsamplers.0.conv", boc[i], boc[i], 3)
        ch = boc[i]
    m = p + "mid_block."
    _resnet(out, m + "resnets.0.", boc[-1], boc[-1], temb)
    _transformer(out, m + "attentions.0.", boc[-1], cross, ntb, linear_proj)
    _resnet(out, m + "resnets.1.", boc[-1], boc[-1], temb)


def unet(cfg):
    what = "unet"
    for name, default in (("class_embed_type", None), ("addition_embed_type", None),
                          ("encoder_hid_dim", None), ("num_class_embeds", None),
                          ("time_embedding_dim", None), ("projection_class_embeddings_input_dim", None)):
        _cfg(cfg, name, default, what, [None])
    for name in ("only_cross_attention", "dual_cross_attention", "upcast_attention"):
        if _cfg(cfg, name, False, what) not in (False, [False] * 4):
            raise ConvertError("unet config.json: %s is not supported" % name)
    _cfg(cfg, "mid_block_type", "UNetMidBlock2DCrossAttn", what, ["UNetMidBlock2DCrossAttn"])
    _cfg(cfg, "time_embedding_type", "positional", what, ["positional"])
    _cfg(cfg, "resnet_time_scale_shift", "default", what, ["default"])
    _cfg(cfg, "conv_in_kernel", 3, what, [3])
    _cfg(cfg, "conv_out_kernel", 3, what, [3])
    ntb = _cfg(cfg, "transformer_layers_per_block", 1, what)
    if not isinstance(ntb, int):
        raise ConvertError("unet config.json: a per-block transformer_layers_per_block is not supported")
    linear_proj = bool(cfg.get("use_linear_projection", False))
    try:
        boc = [int(c) for c in cfg["block_out_channels"]]
        lpb = int(cfg["layers_per_block"])
        cross = int(cfg["cross_attention_dim"])
        cin = int(cfg["in_channels"])
        cout = int(cfg["out_channels"])
        down = list(cfg["down_block_types"])
        up = list(cfg["up_block_types"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError("unet config.json: missing or invalid entry %s" % e)
    if len(down) != len(boc) or len(up) != len(boc):
        raise ConvertError("unet config.json: block types and block_out_channels differ in length")
    p = UNET
    temb = boc[0] * 4
    out = []
    _unet_encoder(out, p, boc, lpb, cross, cin, down, ntb, linear_proj, "unet")
    rev = boc[::-1]
    och = rev[0]
    for i, kind in enumerate(up):
        if kind not in ("CrossAttnUpBlock2D", "UpBlock2D"):
            raise ConvertError("unet config.json: up block type %s is not supported" % kind)
        b = "%sup_blocks.%d." % (p, i)
        prev = och
        och = rev[i]
        inch = rev[min(i + 1, len(boc) - 1)]
        for j in range(lpb + 1):
            skip = inch if j == lpb else och
            rin = prev if j == 0 else och
            _resnet(out, "%sresnets.%d." % (b, j), rin + skip, och, temb)
            if kind == "CrossAttnUpBlock2D":
                _transformer(out, "%sattentions.%d." % (b, j), och, cross, ntb, linear_proj)
        if i < len(boc) - 1:
            _conv(out, b + "upsamplers.0.conv", och, och, 3)
    _ln(out, p + "conv_norm_out", boc[0])
    _conv(out, p + "conv_out", cout, boc[0], 3)
    return out


def vae(cfg):
    """Decoder half + post_quant_conv (the encoder and quant_conv are not needed to decode)."""
    what = "vae"
    if not cfg.get("mid_block_add_attention", True):
        raise ConvertError("vae config.json: mid_block_add_attention = false is not supported")
    try:
        boc = [int(c) for c in cfg["block_out_channels"]]
        lpb = int(cfg["layers_per_block"])
        lat = int(cfg["latent_channels"])
        cout = int(cfg["out_channels"])
        up = list(cfg["up_block_types"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError("vae config.json: missing or invalid entry %s" % e)
    for kind in up:
        if kind != "UpDecoderBlock2D":
            raise ConvertError("%s config.json: up block type %s is not supported" % (what, kind))
    if len(up) != len(boc):
        raise ConvertError("vae config.json: up_block_types and block_out_channels differ in length")
    p = VAE + "decoder."
    out = []
    _conv(out, p + "conv_in", boc[-1], lat, 3)
    m = p + "mid_block."
    _resnet(out, m + "resnets.0.", boc[-1], boc[-1], 0)
    _ln(out, m + "attentions.0.group_norm", boc[-1])
    for n in ("to_q", "to_k", "to_v", "to_out.0"):
        _linear(out, m + "attentions.0." + n, boc[-1], boc[-1])
    _resnet(out, m + "resnets.1.", boc[-1], boc[-1], 0)
    rev = boc[::-1]
    och = rev[0]
    for i in range(len(up)):
        b = "%sup_blocks.%d." % (p, i)
        prev = och
        och = rev[i]
        for j in range(lpb + 1):
            _resnet(out, "%sresnets.%d." % (b, j), prev if j == 0 else och, och, 0)
        if i < len(boc) - 1:
            _conv(out, b + "upsamplers.0.conv", och, och, 3)
    _ln(out, p + "conv_norm_out", boc[0])
    _conv(out, p + "conv_out", cout, boc[0], 3)
    _conv(out, VAE + "post_quant_conv", lat, lat, 1)
    return out


CONTROLNET = "controlnet."


def controlnet_base(cfg):
    """None for an SD1.5 ControlNet config, else the base model's name (what it was made for)."""
    cross = cfg.get("cross_attention_dim", 1280)
    if cfg.get("addition_embed_type") == "text_time" or cross == 2048:
        return "SDXL"
    if cross == 1024:
        return "SD2"
    return None  # SD1.5 (768) or a test model; the engine checks it against the model's U-Net


def controlnet(cfg):
    """Expected keys/shapes of a diffusers 0.21.4 ControlNetModel with this config.json."""
    what = "controlnet"
    base = controlnet_base(cfg)
    if base is not None:
        raise ConvertError("controlnet config.json: this ControlNet is for %s; Kosmos-G builds on "
                           "Stable Diffusion 1.5 and needs an SD1.5 ControlNet (cross_attention_dim 768)"
                           % base)
    for name, default in (("class_embed_type", None), ("addition_embed_type", None),
                          ("encoder_hid_dim", None), ("num_class_embeds", None),
                          ("projection_class_embeddings_input_dim", None)):
        _cfg(cfg, name, default, what, [None])
    for name in ("only_cross_attention", "upcast_attention", "global_pool_conditions"):
        if _cfg(cfg, name, False, what) not in (False, [False] * 4):
            raise ConvertError("controlnet config.json: %s is not supported" % name)
    _cfg(cfg, "resnet_time_scale_shift", "default", what, ["default"])
    _cfg(cfg, "controlnet_conditioning_channel_order", "rgb", what, ["rgb"])
    ntb = _cfg(cfg, "transformer_layers_per_block", 1, what)
    if not isinstance(ntb, int):
        raise ConvertError("controlnet config.json: a per-block transformer_layers_per_block is not supported")
    linear_proj = bool(cfg.get("use_linear_projection", False))
    try:
        boc = [int(c) for c in cfg.get("block_out_channels", (320, 640, 1280, 1280))]
        lpb = int(cfg.get("layers_per_block", 2))
        cross = int(cfg.get("cross_attention_dim", 1280))
        cin = int(cfg.get("in_channels", 4))
        cond = int(cfg.get("conditioning_channels", 3))
        emb = [int(c) for c in cfg.get("conditioning_embedding_out_channels", (16, 32, 96, 256))]
        down = list(cfg.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    except (TypeError, ValueError) as e:
        raise ConvertError("controlnet config.json: invalid entry %s" % e)
    if len(down) != len(boc) or not emb:
        raise ConvertError("controlnet config.json: down_block_types and block_out_channels differ in "
                           "length, or conditioning_embedding_out_channels is empty")
    p = CONTROLNET
    out = []
    _unet_encoder(out, p, boc, lpb, cross, cin, down, ntb, linear_proj, what)
    e = p + "controlnet_cond_embedding."
    _conv(out, e + "conv_in", emb[0], cond, 3)
    for i in range(len(emb) - 1):
        _conv(out, "%sblocks.%d" % (e, 2 * i), emb[i], emb[i], 3)
        _conv(out, "%sblocks.%d" % (e, 2 * i + 1), emb[i + 1], emb[i], 3)
    _conv(out, e + "conv_out", boc[0], emb[-1], 3)
    skips = [boc[0]]
    for i in range(len(boc)):
        skips += [boc[i]] * lpb
        if i < len(boc) - 1:
            skips.append(boc[i])
    for k, c in enumerate(skips):
        _conv(out, "%scontrolnet_down_blocks.%d" % (p, k), c, c, 1)
    _conv(out, p + "controlnet_mid_block", boc[-1], boc[-1], 1)
    return out
