#!/usr/bin/env python3
"""tools/kosmosg-convert on the tiny Kosmos-G checkpoint in the official formats.

The expected values come from independent readers: torch.load for the checkpoints and a minimal
safetensors parser below for the SD1.5 files and the output (the converter itself uses neither).
Needs KG_GOLDEN; KG_TINY_MODEL (the build-time model) is checked too when set."""

import collections
import functools
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = os.path.join(HERE, "..", "tools", "kosmosg-convert")
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from kosmosg_convert import ptload  # noqa: E402

GOLDEN = os.environ.get("KG_GOLDEN", os.path.join(HERE, "..", "..", "shared", "golden"))
KG = os.path.join(GOLDEN, "kosmosg")
TINY = os.path.join(KG, "kosmosg_tiny")
SD15 = os.path.join(TINY, "sd15")
SPM = os.path.join(KG, "sentencepiece.bpe.model")
DICT = os.path.join(KG, "dict.txt")
TINY_HEADS = ["--clip-head-width", "16", "--aligner-heads", "4"]

UNUSED = ("gpt_model.decoder.output_projection.weight", "gpt_model.decoder.embed_positions._float_tensor",
          "gpt_model.decoder.self_attn_sope.scale")
LEGACY = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
ST_DTYPES = {"F16": "<f2", "F32": "<f4", "BF16": "<u2", "U8": "u1", "I64": "<i8"}


def read_st(path):
    """(metadata, {name: array}, header dict, data start) - deliberately not the converter's reader."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    hdr = json.loads(blob[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    data = blob[8 + n:]
    out = collections.OrderedDict()
    for k, d in hdr.items():
        b, e = d["data_offsets"]
        out[k] = np.frombuffer(data[b:e], ST_DTYPES[d["dtype"]]).reshape(d["shape"])
    return meta, out, hdr, 8 + n


@functools.lru_cache(maxsize=None)
def file_digest(path, mtime):
    with open(path, "rb") as f:
        data = f.read()
    return len(data), hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=None)
def sd15_tensors(sd15):
    """SD1.5 folder tensors under their full model keys, legacy VAE names renamed like diffusers."""
    src = {}
    for sub, prefix in (("unet", "diffusion_unet.unet."), ("vae", "vae.vae.")):
        _, t, _, _ = read_st(os.path.join(sd15, sub, "diffusion_pytorch_model.safetensors"))
        for k, v in t.items():
            parts = k.split(".")
            if sub == "vae" and len(parts) == 6 and parts[1] == "mid_block" and parts[4] in LEGACY:
                k = ".".join(parts[:4] + [LEGACY[parts[4]], parts[5]])
            src[prefix + k] = v
    return src


def torch_state(path):
    return collections.OrderedDict((k, v.numpy()) for k, v in torch.load(path, map_location="cpu")["model"].items())


def expected_values(ckpt_state, sd15=SD15):
    """The official load order: SD1.5 folder (legacy VAE names renamed like diffusers), then the
    checkpoint on top; then only what the engine needs."""
    src = dict(sd15_tensors(sd15))
    src.update(ckpt_state)
    return {k: v for k, v in src.items()
            if k not in UNUSED and not k.startswith("vae.vae.encoder.") and not k.startswith("vae.vae.quant_conv.")
            and ".attn." not in k}


def golden_config(name):
    with open(os.path.join(KG, name + ".safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(json.loads(f.read(n))["__metadata__"]["config"])


def convert(out, ckpt=os.path.join(TINY, "checkpoint_final.pt"), sd15=SD15, spm=SPM, dct=DICT,
            dtype=None, extra=TINY_HEADS):
    cmd = [sys.executable, CONVERT, "--checkpoint", ckpt, "--sd15", sd15, "--spm", spm, "--dict", dct,
           "-o", out] + (["--dtype", dtype] if dtype else []) + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kg_convert_")
        cls.fp32_state = torch_state(os.path.join(TINY, "checkpoint_final_fp32.pt"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def save_ckpt(self, name, model, **top):
        obj = {"args": None, "cfg": torch.load(os.path.join(TINY, "checkpoint_final.pt"))["cfg"]}
        obj.update(top)
        if model is not None:
            obj["model"] = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in model.items())
        p = self.path(name)
        torch.save(obj, p)
        return p

    def check_model(self, path, ckpt_state, dtype):
        """Every tensor equals its source exactly, the set is exactly what the engine needs, the
        header is well formed and the metadata is complete."""
        meta, out, hdr, start = read_st(path)
        exp = expected_values(ckpt_state)
        floats = [k for k in out if not k.startswith("tokenizer.")]
        self.assertEqual(sorted(floats), sorted(exp), "tensor set")
        want = np.float16 if dtype == "fp16" else np.float32
        mismatched = [k for k in floats
                      if out[k].dtype != want or out[k].shape != exp[k].shape
                      or not np.array_equal(out[k].astype(np.float64), exp[k].astype(np.float64))]
        print("  %s: %d tensors compared exactly with their sources, %d differ"
              % (os.path.basename(path), len(floats), len(mismatched)))
        self.assertEqual(mismatched, [])
        with open(SPM, "rb") as f:
            self.assertEqual(out["tokenizer.sentencepiece"].tobytes(), f.read())
        with open(DICT, "rb") as f:
            self.assertEqual(out["tokenizer.dict"].tobytes(), f.read())
        # layout: 64-aligned data start, no holes, float tensors aligned to their element size
        self.assertEqual(start % 64, 0)
        end = 0
        for k, d in hdr.items():
            self.assertEqual(d["data_offsets"][0], end, k)
            end = d["data_offsets"][1]
            if d["dtype"] != "U8":
                self.assertEqual(d["data_offsets"][0] % np.dtype(ST_DTYPES[d["dtype"]]).itemsize, 0, k)
        self.assertEqual(os.path.getsize(path), start + end)
        self.assertEqual(meta["kg.format_version"], "1")
        self.assertEqual(meta["kg.dtype"], dtype)
        cfg = {k[len("kg.config."):]: json.loads(v) for k, v in meta.items() if k.startswith("kg.config.")}
        self.assertEqual(cfg["clip"], dict(golden_config("clip"), act="quick_gelu", ln_eps=1e-5))
        self.assertEqual(cfg["connector"], golden_config("connector"))
        self.assertEqual(cfg["mllm"], dict(golden_config("mllm"), vocab=64007, ln_eps=1e-5, max_positions=2048,
                                           pad=1))
        self.assertEqual(cfg["aligner"], dict(golden_config("aligner"), ln_eps=1e-5, **{"in": 40}))
        for comp, f in (("unet", "unet/config.json"), ("vae", "vae/config.json"),
                        ("scheduler", "scheduler/scheduler_config.json")):
            with open(os.path.join(SD15, f)) as fh:
                self.assertEqual(cfg[comp], json.load(fh), comp)
        sources = json.loads(meta["kg.sources"])
        for rec in sources["files"]:
            self.assertEqual((rec["size"], rec["sha256"]),
                             file_digest(rec["path"], os.path.getmtime(rec["path"])), rec["path"])
        self.assertEqual(sorted(r["role"] for r in sources["files"]),
                         sorted(["checkpoint", "dict", "sentencepiece", "sd15 scheduler config",
                                 "sd15 unet config", "sd15 unet weights", "sd15 vae config", "sd15 vae weights"]))
        return meta, out, sources


class Convert(Base):
    def test_matrix(self):
        """Both checkpoint copies (fp16 and fp32) to both output precisions."""
        for ck in ("checkpoint_final.pt", "checkpoint_final_fp32.pt"):
            state = torch_state(os.path.join(TINY, ck))
            for dtype in ("fp16", "fp32"):
                out = self.path("m_%s_%s.safetensors" % (ck, dtype))
                r = convert(out, ckpt=os.path.join(TINY, ck), dtype=dtype)
                self.assertEqual(r.returncode, 0, r.stderr)
                _, _, sources = self.check_model(out, state, dtype)
                for comp in ("clip", "connector", "mllm", "aligner", "unet", "vae"):
                    self.assertEqual(list(sources["components"][comp]["from"]), ["checkpoint"], comp)
                self.assertEqual(sources["components"]["mllm"]["params"], 2600600)
                self.assertEqual(sources["components"]["clip"]["params"], 154368)
                self.assertEqual(sources["components"]["unet"]["params"], 1086692)
                self.assertEqual(sorted(sources["unused_checkpoint_keys"])[:1], ["gpt_model.decoder.embed_positions._float_tensor"])
                self.assertEqual(len(sources["unused_checkpoint_keys"]), 107)
                self.assertEqual(sources["vae_legacy_attention_renamed"], 16)
                self.assertIn("checkpoint keys not used: 107", r.stdout)
                self.assertIn("unet            682      1,086,692  checkpoint (682)", r.stdout)

    def test_default_dtype_is_fp16(self):
        out = self.path("default.safetensors")
        r = convert(out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_model(out, self.fp32_state, "fp16")

    def test_build_time_model(self):
        path = os.environ.get("KG_TINY_MODEL")
        if not path:
            self.skipTest("KG_TINY_MODEL not set (run through meson test)")
        self.check_model(path, self.fp32_state, "fp32")

    def test_legacy_vae_names_from_sd15(self):
        """Without the checkpoint's VAE copy, the SD1.5 folder's legacy query/key/value/proj_attn
        tensors come out as to_q/to_k/to_v/to_out.0."""
        state = {k: v for k, v in self.fp32_state.items() if not k.startswith("vae.vae.")}
        out = self.path("legacy.safetensors")
        r = convert(out, ckpt=self.save_ckpt("novae.pt", state), dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, sd_vae, _, _ = read_st(os.path.join(SD15, "vae", "diffusion_pytorch_model.safetensors"))
        self.assertIn("decoder.mid_block.attentions.0.query.weight", sd_vae)
        _, out_t, sources = self.check_model(out, state, "fp32")
        for old, new in LEGACY.items():
            for wb in ("weight", "bias"):
                np.testing.assert_array_equal(
                    out_t["vae.vae.decoder.mid_block.attentions.0.%s.%s" % (new, wb)],
                    sd_vae["decoder.mid_block.attentions.0.%s.%s" % (old, wb)].astype(np.float32))
        self.assertEqual(sources["components"]["vae"]["from"], {"sd15/vae/diffusion_pytorch_model.safetensors": 136})
        self.assertIn("16 legacy attention tensors", r.stdout)

    def test_checkpoint_wins_and_sd15_fills_gaps(self):
        """The checkpoint overrides the SD1.5 folder; a U-Net tensor absent from it comes from SD1.5."""
        state = dict(self.fp32_state)
        state["diffusion_unet.unet.conv_in.bias"] = state["diffusion_unet.unet.conv_in.bias"] + 1
        del state["diffusion_unet.unet.conv_out.bias"]
        out = self.path("mix.safetensors")
        r = convert(out, ckpt=self.save_ckpt("mix.pt", state), dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, out_t, sources = self.check_model(out, state, "fp32")
        np.testing.assert_array_equal(out_t["diffusion_unet.unet.conv_in.bias"],
                                      state["diffusion_unet.unet.conv_in.bias"])
        self.assertEqual(sources["components"]["unet"]["from"],
                         {"checkpoint": 681, "sd15/unet/diffusion_pytorch_model.safetensors": 1})

    def test_clip_in_proj_split(self):
        """A checkpoint with open_clip's packed attn.in_proj_* instead of ts_attn gets split."""
        state = collections.OrderedDict()
        for k, v in self.fp32_state.items():
            if ".ts_attn." in k:
                continue
            state[k] = v
        for i in range(2):
            b = "img_model.visual.transformer.resblocks.%d." % i
            f = self.fp32_state
            state[b + "attn.in_proj_weight"] = np.concatenate([f[b + "ts_attn.%s_proj.weight" % n] for n in "qkv"])
            state[b + "attn.in_proj_bias"] = np.concatenate([f[b + "ts_attn.%s_proj.bias" % n] for n in "qkv"])
            state[b + "attn.out_proj.weight"] = f[b + "ts_attn.out_proj.weight"]
            state[b + "attn.out_proj.bias"] = f[b + "ts_attn.out_proj.bias"]
        out = self.path("split.safetensors")
        r = convert(out, ckpt=self.save_ckpt("split.pt", state), dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2 blocks had only attn.in_proj_*", r.stdout)
        self.check_model(out, self.fp32_state, "fp32")

    def test_bin_sd15_weights(self):
        """diffusers .bin weights (torch zip pickles) are read through the restricted unpickler."""
        sd = self.path("sd15_bin")
        for sub in ("unet", "vae", "scheduler"):
            os.makedirs(os.path.join(sd, sub))
            for f in os.listdir(os.path.join(SD15, sub)):
                if f.endswith(".json"):
                    shutil.copy(os.path.join(SD15, sub, f), os.path.join(sd, sub, f))
        for sub in ("unet", "vae"):
            _, t, _, _ = read_st(os.path.join(SD15, sub, "diffusion_pytorch_model.safetensors"))
            torch.save(collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in t.items()),
                       os.path.join(sd, sub, "diffusion_pytorch_model.bin"))
        state = {k: v for k, v in self.fp32_state.items() if not k.startswith(("vae.vae.", "diffusion_unet."))}
        out = self.path("bin.safetensors")
        r = convert(out, ckpt=self.save_ckpt("nosd.pt", state), sd15=sd, dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_model(out, state, "fp32")


class FakeNode:
    """Stands for omegaconf's DictConfig/AnyNode: pickled by module path, state in _content/_val."""

    def __init__(self, **state):
        self.__dict__.update(state)


class Config(Base):
    def convert_with_cfg(self, name, **top):
        out = self.path(name + ".safetensors")
        r = convert(out, ckpt=self.save_ckpt(name + ".pt", self.fp32_state, **top), dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        meta, _, _ = self.check_model(out, self.fp32_state, "fp32")
        return r, json.loads(meta["kg.sources"])

    def test_heads_from_omegaconf_cfg(self):
        """fairseq 1.0 pickles cfg as an omegaconf DictConfig: read through placeholders, never imported."""
        import types
        mods = {}
        sys.modules["omegaconf"] = types.ModuleType("omegaconf")
        for mod, cls in (("omegaconf.dictconfig", "DictConfig"), ("omegaconf.nodes", "AnyNode")):
            m = types.ModuleType(mod)
            c = type(cls, (FakeNode,), {"__module__": mod})
            setattr(m, cls, c)
            sys.modules[mod] = m
            mods[cls] = c
        try:
            D, N = mods["DictConfig"], mods["AnyNode"]
            cfg = D(_content={"model": D(_content={"decoder_attention_heads": N(_val=4, _parent=None),
                                                    "max_target_positions": N(_val=2048)}, _parent=None)},
                    _metadata=None)
            r, sources = self.convert_with_cfg("omegacfg", cfg=cfg)
        finally:
            for mod in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes"):
                del sys.modules[mod]
        self.assertIn("omegaconf.dictconfig.DictConfig", r.stdout)
        self.assertEqual(sources["mllm_heads_from"], "checkpoint cfg decoder_attention_heads")

    def test_heads_from_args_namespace(self):
        import argparse
        r, sources = self.convert_with_cfg("nsargs", cfg=None,
                                           args=argparse.Namespace(decoder_attention_heads=4, arch="kosmosg_xl"))
        self.assertIn("argparse.Namespace", r.stdout)
        self.assertEqual(sources["mllm_heads_from"], "checkpoint cfg decoder_attention_heads")

    def test_heads_wrong_without_cfg(self):
        """Without a cfg the kosmosg_xl default (32) applies, which does not divide the tiny d=40."""
        out = self.path("nocfg.safetensors")
        r = convert(out, ckpt=self.save_ckpt("nocfg.pt", self.fp32_state, cfg=None), dtype="fp32")
        self.assertEqual(r.returncode, 1)
        self.assertIn("MLLM: width 40 is not divisible by 32 heads (set --mllm-heads)", r.stderr)
        r = convert(out, ckpt=self.path("nocfg.pt"), dtype="fp32", extra=TINY_HEADS + ["--mllm-heads", "4"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_real_model_shapes(self):
        """The rules on the real dimensions: configs and parameter counts of kosmosg-reference.md 2.5."""
        from kosmosg_convert import layout
        shapes = {
            "img_model.visual.conv1.weight": (1024, 3, 14, 14), "img_model.visual.positional_embedding": (257, 1024),
            "img_model.visual.transformer.resblocks.0.mlp.c_fc.weight": (4096, 1024),
            "img_model.visual.transformer.resblocks.23.ln_1.weight": (1024,),
            "img_connector.dense.weight": (2048, 1024), "img_connector.latent_query": (64, 2048),
            "gpt_model.decoder.embed_tokens.weight": (64007, 2048), "gpt_model.decoder.layers.23.ffn.fc1.weight": (8192, 2048),
            "gpt_model.decoder.layers.0.ffn.fc1.weight": (8192, 2048),
            "aligner.encoder_query": (77, 768), "aligner.encoder_proj.embed_tokens.weight": (768, 2048),
            "aligner.encoder_proj.embed_positions.weight": (32768, 768),
            "aligner.encoder_proj.layers.0.ffn.fc1.weight": (3072, 768),
            "aligner.encoder_proj.layers.11.ffn.fc1.weight": (3072, 768), "aligner.encoder.layers.11.ffn.fc1.weight": (3072, 768),
        }
        keys = list(shapes)

        def params(exp):
            return sum(int(np.prod(s)) for _, s in exp)

        cfg, exp = layout.clip(shapes.get, keys, None)
        self.assertEqual((cfg["head_width"], cfg["layers"], cfg["image_size"], params(exp)), (64, 24, 224, 303179776))
        cfg, exp = layout.connector(shapes.get, keys, 32)
        self.assertEqual(params(exp), 19015680)
        cfg, exp = layout.mllm(shapes.get, keys, 32, 2048)
        self.assertEqual((cfg["layers"], cfg["vocab"], params(exp)), (24, 64007, 1340180480))
        cfg, exp = layout.aligner(shapes.get, keys, None)
        self.assertEqual((cfg["heads"], cfg["enc_layers"], cfg["dec_layers"], params(exp)), (12, 12, 12, 225461760))
        unet = {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
                "in_channels": 4, "out_channels": 4, "attention_head_dim": 8,
                "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
        exp = layout.unet(unet)
        self.assertEqual((len(exp), params(exp)), (686, 859520964))
        exp = layout.vae({"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
                          "out_channels": 3, "up_block_types": ["UpDecoderBlock2D"] * 4})
        self.assertEqual((len(exp), params(exp)), (140, 49490199))


class Broken(Base):
    def expect_error(self, message, name, **kw):
        out = self.path(name + ".safetensors")
        r = convert(out, **kw)
        print("  %s: %s" % (name, r.stderr.strip()))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(message, r.stderr)
        self.assertFalse(os.path.exists(out) or os.path.exists(out + ".tmp"), "output left behind")

    def test_missing_tensor(self):
        state = dict(self.fp32_state)
        del state["gpt_model.decoder.layers.1.ffn.fc2.weight"]
        self.expect_error("missing tensor 'gpt_model.decoder.layers.1.ffn.fc2.weight' (mllm, expected shape [40, 160])",
                          "missing", ckpt=self.save_ckpt("missing.pt", state))

    def test_wrong_shape(self):
        state = dict(self.fp32_state)
        state["img_connector.x_attn.k_proj.weight"] = np.zeros((40, 39), np.float32)
        self.expect_error("tensor 'img_connector.x_attn.k_proj.weight' from checkpoint has shape [40, 39], "
                          "expected [40, 40]", "shape", ckpt=self.save_ckpt("shape.pt", state))

    def test_wrong_unet_shape(self):
        state = dict(self.fp32_state)
        state["diffusion_unet.unet.conv_out.weight"] = np.zeros((4, 32, 3, 2), np.float32)
        self.expect_error("tensor 'diffusion_unet.unet.conv_out.weight' from checkpoint has shape [4, 32, 3, 2], "
                          "expected [4, 32, 3, 3] (unet)", "unetshape", ckpt=self.save_ckpt("unetshape.pt", state))

    def test_inconsistent_components(self):
        state = dict(self.fp32_state)
        state["img_connector.dense.weight"] = np.zeros((40, 63), np.float32)
        self.expect_error("inconsistent inputs: CLIP width is 64 but connector input is 63",
                          "inconsistent", ckpt=self.save_ckpt("inconsistent.pt", state))

    def test_truncated_checkpoint(self):
        src = os.path.join(TINY, "checkpoint_final.pt")
        p = self.path("truncated.pt")
        with open(src, "rb") as f, open(p, "wb") as g:
            g.write(f.read(os.path.getsize(src) * 6 // 10))
        self.expect_error("truncated or corrupt checkpoint", "truncated", ckpt=p)

    def test_not_a_checkpoint(self):
        p = self.path("garbage.pt")
        with open(p, "wb") as f:
            f.write(b"\x80\x02}q\x00." + os.urandom(100))
        self.expect_error("not a PyTorch zip checkpoint", "garbage", ckpt=p)

    def test_missing_checkpoint_file(self):
        self.expect_error("does not exist", "nofile", ckpt=self.path("nonexistent.pt"))

    def test_checkpoint_without_model(self):
        p = self.save_ckpt("nomodel.pt", None, weights={"a": torch.zeros(1)})
        self.expect_error("has no ['model'] entry", "nomodel", ckpt=p)

    def test_sd15_without_vae(self):
        sd = self.path("sd_novae")
        os.makedirs(sd)
        for sub in ("unet", "scheduler"):
            os.symlink(os.path.join(SD15, sub), os.path.join(sd, sub))
        self.expect_error("has no vae/ (expected the diffusers layout", "novae", sd15=sd)

    def test_truncated_sd15_weights(self):
        sd = self.path("sd_trunc")
        shutil.copytree(SD15, sd)
        w = os.path.join(sd, "unet", "diffusion_pytorch_model.safetensors")
        with open(w, "r+b") as f:
            f.truncate(os.path.getsize(w) - 100)
        self.expect_error("(truncated file?)", "sdtrunc", sd15=sd)

    def test_dict_does_not_match_vocabulary(self):
        p = self.path("short_dict.txt")
        with open(DICT, "rb") as f, open(p, "wb") as g:
            g.write(b"".join(f.readlines()[:-1]))
        self.expect_error("inconsistent inputs: dict.txt lines + 10", "dict", dct=p)

    def test_fp16_overflow(self):
        state = dict(self.fp32_state)
        state["aligner.encoder_query"] = state["aligner.encoder_query"] * 0 + 1e6
        self.expect_error("tensor 'aligner.encoder_query': 2464 values overflow float16", "overflow",
                          ckpt=self.save_ckpt("overflow.pt", state), dtype="fp16")

    def test_head_width_needed(self):
        self.expect_error("pass --clip-head-width", "heads", extra=["--aligner-heads", "4"])


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


class EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, ("open(%r, 'w').close()" % self.marker,))


class Malicious(Base):
    def test_restricted_unpickler(self):
        marker = self.path("pwned")
        for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
            for evil in (Evil(marker), EvalEvil(marker)):
                obj = ptload.restricted_loads(pickle.dumps({"x": [evil]}, protocol=proto))
                self.assertIsInstance(obj["x"][0], ptload.Placeholder)
                self.assertFalse(os.path.exists(marker), "pickled code ran (protocol %d)" % proto)
        # getattr/__import__ chains stay inert too
        payload = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V" +
                   ("touch " + marker).encode() + b"\ntR.")
        obj = ptload.restricted_loads(payload)
        self.assertIsInstance(obj, ptload.Placeholder)
        self.assertFalse(os.path.exists(marker))
        # plain data still round-trips, including protocol-2 bytes; bytes(<huge int>) is refused
        for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
            data = collections.OrderedDict(a=[1, 2.5, "x", b"", b"\x00\xff", (None, True)], b={1, 2})
            self.assertEqual(ptload.restricted_loads(pickle.dumps(data, protocol=proto)), data)
        with self.assertRaises(pickle.UnpicklingError):
            ptload.restricted_loads(b"cbuiltins\nbytes\n(J\x00\x00\x00\x7ftR.")
        print("  %d protocols x 2 payloads + getattr chain: placeholders, nothing executed"
              % (pickle.HIGHEST_PROTOCOL + 1))

    def test_malicious_checkpoint_is_inert(self):
        """A checkpoint whose pickle calls os.system converts: the call becomes a placeholder."""
        marker = self.path("pwned_ckpt")
        p = self.save_ckpt("evil.pt", self.fp32_state, extra_state=Evil(marker))
        out = self.path("evil.safetensors")
        r = convert(out, ckpt=p, dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(marker), "pickled os.system ran")
        self.assertIn("pickled classes kept inert (not imported): posix.system", r.stdout)
        self.check_model(out, self.fp32_state, "fp32")

    def test_malicious_tensor_is_refused(self):
        marker = self.path("pwned_tensor")
        state = dict(self.fp32_state)
        p = self.save_ckpt("evil2.pt", state)
        obj = torch.load(p)
        obj["model"]["img_connector.dense.bias"] = Evil(marker)
        torch.save(obj, p)
        out = self.path("evil2.safetensors")
        r = convert(out, ckpt=p, dtype="fp32")
        print("  evil tensor: %s" % r.stderr.strip())
        self.assertEqual(r.returncode, 1)
        self.assertIn("['model']['img_connector.dense.bias'] is not a tensor", r.stderr)
        self.assertFalse(os.path.exists(marker), "pickled os.system ran")


SD_GOLD = os.path.join(GOLDEN, "sd")
LDM_MAP = os.path.join(HERE, "golden-gen", "ldm_tiny4_map.json")


def save_file(tensors, path):
    """Minimal float32 safetensors writer (the venv's safetensors package is not on Debian's python)."""
    hdr, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = v.detach().to(torch.float32).numpy().astype("<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class SingleFile(Base):
    """SD1.5 as one file in the original LDM layout. The file is built from the golden diffusers weights
    of unet_tiny4 / vae_tiny4 (SD1.5 topology) with the key map diffusers 0.21.4's own converter gave
    (tests/golden-gen/gen_ldm_map.py), so the converter's ldm.py is checked against diffusers."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with open(LDM_MAP) as f:
            m = json.load(f)
        cls.umeta, cls.unet, _, _ = read_st(os.path.join(SD_GOLD, "unet_tiny4.weights.safetensors"))
        cls.vmeta, cls.vae, _, _ = read_st(os.path.join(SD_GOLD, "vae_tiny4.weights.safetensors"))
        ldm = collections.OrderedDict()
        for lk, dk in m["unet_tiny4"].items():
            ldm[lk] = torch.from_numpy(cls.unet[dk].copy())
        for lk, dk in m["vae_tiny4_decoder"].items():
            a = cls.vae[dk].copy()
            if lk.split(".")[-2] in ("q", "k", "v", "proj_out") and ".attn_1." in lk and a.ndim == 2:
                a = a.reshape(a.shape + (1, 1))  # LDM keeps them as 1x1 convs
            ldm[lk] = torch.from_numpy(a)
        # what else a single file carries: the VAE encoder, the CLIP text encoder, EMA copies
        ldm["first_stage_model.encoder.conv_in.weight"] = torch.zeros(32, 3, 3, 3)
        ldm["first_stage_model.quant_conv.weight"] = torch.zeros(8, 8, 1, 1)
        ldm["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.zeros(32)
        ldm["model_ema.decay"] = torch.tensor(0.9999)
        cls.ldm = ldm
        cls.ckpt_path = os.path.join(cls.tmp, "tiny4_ldm.ckpt")
        torch.save({"state_dict": ldm, "global_step": 1}, cls.ckpt_path)
        cls.st_path = os.path.join(cls.tmp, "tiny4_ldm.safetensors")
        save_file({k: v.contiguous() for k, v in ldm.items()}, cls.st_path)
        unet_only = {k: v for k, v in ldm.items() if k.startswith("model.diffusion_model.")}
        cls.unet_only = os.path.join(cls.tmp, "tiny4_unet_ldm.safetensors")
        save_file({k: v.contiguous() for k, v in unet_only.items()}, cls.unet_only)

    def check_sd(self, path, unet=True, vae=True):
        meta, out, _, _ = read_st(path)
        cmp = []
        if unet:
            cmp += [("diffusion_unet.unet." + k, v) for k, v in self.unet.items()]
        if vae:
            cmp += [("vae.vae." + k, v) for k, v in self.vae.items()]
        have = [k for k in out if k.startswith("diffusion_unet.unet.")] if unet else []
        self.assertEqual(sorted(have), sorted("diffusion_unet.unet." + k for k in self.unet) if unet else [])
        bad = [k for k, v in cmp if k not in out or out[k].shape != v.shape or not np.array_equal(out[k], v)]
        print("  %s: %d U-Net/VAE tensors compared exactly with the diffusers folder, %d differ"
              % (os.path.basename(path), len(cmp), len(bad)))
        self.assertEqual(bad, [])
        cfg = json.loads(meta["kg.config.unet"])
        gold = json.loads(self.umeta["config"])
        if unet:
            for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
                        "cross_attention_dim", "attention_head_dim", "in_channels", "out_channels"):
                self.assertEqual(cfg[key], gold[key], key)
        return meta, out

    def test_single_file_sd15(self):
        """--sd15 FILE (.ckpt with state_dict and .safetensors): U-Net and VAE decoder come out as exactly
        the diffusers folder's tensors (checkpoint without U-Net/VAE, as with a plain SD1.5 base)."""
        state = {k: v for k, v in self.fp32_state.items() if not k.startswith(("vae.vae.", "diffusion_unet."))}
        ck = self.save_ckpt("nosd_single.pt", state)
        for src in (self.ckpt_path, self.st_path):
            out = self.path("single_%s.safetensors" % os.path.basename(src).replace(".", "_"))
            r = convert(out, ckpt=ck, sd15=src, dtype="fp32")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("LDM U-Net, 684 tensors", r.stdout)
            meta, _ = self.check_sd(out)
            self.assertEqual(json.loads(meta["kg.config.vae"])["block_out_channels"], [32, 32, 64, 64])
            self.assertEqual(json.loads(meta["kg.config.scheduler"])["beta_schedule"], "scaled_linear")

    def test_unet_override(self):
        """--unet FILE replaces the U-Net the checkpoint brings (the checkpoint has one)."""
        out = self.path("override.safetensors")
        r = convert(out, dtype="fp32", extra=TINY_HEADS + ["--unet", self.unet_only])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_sd(out, vae=False)

    def test_swap_unet_in_model_file(self):
        """--model FILE --unet SRC: a new file renamed into place; a reader holding the old file open
        still sees the old bytes, every non-U-Net tensor and the tokenizer are unchanged."""
        base = self.path("swap.safetensors")
        r = convert(base, dtype="fp32")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, before, _, _ = read_st(base)
        held = open(base, "rb")
        ino = os.fstat(held.fileno()).st_ino
        old_bytes = os.path.getsize(base)
        r = subprocess.run([sys.executable, CONVERT, "--model", base, "--unet", self.unet_only],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotEqual(os.stat(base).st_ino, ino, "model file modified in place")
        self.assertEqual(os.fstat(held.fileno()).st_size, old_bytes)
        held.close()
        self.assertFalse(os.path.exists(base + ".tmp"))
        meta, after = self.check_sd(base, vae=False)
        same = [k for k in before if not k.startswith("diffusion_unet.")]
        self.assertEqual([k for k in same if not np.array_equal(before[k], after[k])], [])
        self.assertEqual(len(json.loads(meta["kg.sources"])["unet_swaps"]), 1)

    def vae_only_file(self):
        """An SD VAE fine-tune as shipped: LDM names without first_stage_model., plus loss.* entries."""
        vae = {k[len("first_stage_model."):]: v.contiguous() for k, v in self.ldm.items()
               if k.startswith("first_stage_model.")}
        vae["loss.logvar"] = torch.zeros(1)
        vae["model_ema.decay"] = torch.tensor(0.9999)
        p = self.path("vae_ft.safetensors")
        save_file(vae, p)
        return p

    def check_vae(self, path):
        _, out, _, _ = read_st(path)
        cmp = [("vae.vae." + k, v) for k, v in self.vae.items()]
        bad = [k for k, v in cmp if k not in out or out[k].shape != v.shape or not np.array_equal(out[k], v)]
        have = sorted(k for k in out if k.startswith("vae.vae."))
        print("  %s: %d VAE tensors compared exactly with the diffusers folder, %d differ"
              % (os.path.basename(path), len(cmp), len(bad)))
        self.assertEqual(bad, [])
        self.assertEqual(have, sorted(k for k, _ in cmp))

    def test_vae_override_and_swap(self):
        """--vae FILE (a VAE alone, LDM names) at conversion, and --model M --unet U --vae V swapping both
        in one new file; the MLLM and the rest unchanged."""
        vae = self.vae_only_file()
        out = self.path("vae_override.safetensors")
        r = convert(out, dtype="fp32", extra=TINY_HEADS + ["--vae", vae])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_vae(out)
        base = self.path("swap_both.safetensors")
        self.assertEqual(convert(base, dtype="fp32").returncode, 0)
        _, before, _, _ = read_st(base)
        r = subprocess.run([sys.executable, CONVERT, "--model", base, "--unet", self.unet_only, "--vae", vae],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        meta, after = self.check_sd(base, vae=False)
        self.check_vae(base)
        self.assertEqual(json.loads(meta["kg.config.vae"])["block_out_channels"], [32, 32, 64, 64])
        same = [k for k in before if not k.startswith(("diffusion_unet.", "vae.vae."))]
        self.assertEqual([k for k in same if not np.array_equal(before[k], after[k])], [])
        self.assertEqual(len(json.loads(meta["kg.sources"])["vae_swaps"]), 1)

    def test_swap_refuses_bad_unet(self):
        """A U-Net file with a stray key, or a U-Net of another width, names the culprit; the model file
        is untouched."""
        base = self.path("swap_bad.safetensors")
        self.assertEqual(convert(base, dtype="fp32").returncode, 0)
        st = os.stat(base)
        bad = {k: v.contiguous() for k, v in self.ldm.items() if k.startswith("model.diffusion_model.")}
        bad["model.diffusion_model.input_blocks.1.0.in_layers.7.weight"] = torch.zeros(3)
        p = self.path("stray.safetensors")
        save_file(bad, p)
        r = subprocess.run([sys.executable, CONVERT, "--model", base, "--unet", p],
                           capture_output=True, text=True, timeout=120)
        print("  stray key: %s" % r.stderr.strip())
        self.assertEqual(r.returncode, 1)
        self.assertIn("model.diffusion_model.input_blocks.1.0.in_layers.7.weight", r.stderr)
        wide = {k: v.contiguous() for k, v in self.ldm.items() if k.startswith("model.diffusion_model.")}
        for k in list(wide):
            if k.endswith("attn2.to_k.weight") or k.endswith("attn2.to_v.weight"):
                wide[k] = torch.zeros(wide[k].shape[0], 48)
        p = self.path("wide.safetensors")
        save_file(wide, p)
        r = subprocess.run([sys.executable, CONVERT, "--model", base, "--unet", p],
                           capture_output=True, text=True, timeout=120)
        print("  other cross width: %s" % r.stderr.strip())
        self.assertEqual(r.returncode, 1)
        self.assertIn("cross_attention_dim 48", r.stderr)
        self.assertEqual(os.stat(base).st_ino, st.st_ino)
        self.assertEqual(os.stat(base).st_mtime_ns, st.st_mtime_ns)


def run_convert(out, timeout=60, limits=(), **kw):
    """convert() with a shorter timeout and resource limits [(RLIMIT_x, bytes)] in the child."""
    import resource

    def preexec():
        for which, n in limits:
            resource.setrlimit(which, (n, n))
    ckpt = kw.pop("ckpt", os.path.join(TINY, "checkpoint_final.pt"))
    cmd = [sys.executable, CONVERT, "--checkpoint", ckpt, "--sd15", kw.pop("sd15", SD15), "--spm",
           kw.pop("spm", SPM), "--dict", kw.pop("dct", DICT), "-o", out, "--dtype", "fp32"] + TINY_HEADS
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


class Robustness(Base):
    """Issue 18: inputs that hung, exploded or wrote half a file. Each case failed before the fix."""

    def expect(self, r, message, out):
        print("  %s" % (r.stderr.strip().splitlines() or ["(no message)"])[-1][:300])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(message, r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertFalse(os.path.exists(out + ".tmp"), "temporary output left behind")

    def test_shared_reference_dag_in_config(self):
        """40 levels of [x, x] sharing one child: 2^40 paths as a tree, 40 objects as a DAG; plus a
        cycle. The config walk visits each object once."""
        import time
        node = {"leaf": 1}
        for _ in range(40):
            node = [node, node]
        loop = []
        loop.append(loop)
        cfg = torch.load(os.path.join(TINY, "checkpoint_final.pt"))["cfg"]
        cfg = dict(cfg) if isinstance(cfg, dict) else {"model": {}}
        model_cfg = dict(cfg.get("model") or {})
        model_cfg.update(junk_dag=node, junk_loop=loop)
        cfg["model"] = model_cfg
        p = self.save_ckpt("dag.pt", self.fp32_state, cfg=cfg)
        print("  checkpoint with the DAG: %d bytes" % os.path.getsize(p))
        out = self.path("dag.safetensors")
        t0 = time.time()
        r = run_convert(out, ckpt=p, timeout=100)
        print("  converted in %.1f s" % (time.time() - t0))
        self.assertEqual(r.returncode, 0, r.stderr)
        tree = ptload.plain({"a": node, "b": loop})
        self.assertIs(tree["a"][0], tree["a"][1], "shared objects stay shared")
        self.assertEqual(tree["b"], [None], "a cycle ends in None")

    def test_compression_bomb(self):
        """data.pkl declaring 1.5 GB (deflated zeros, 7 MB on disk) under a 1 GB address-space
        limit: a clear error, not a MemoryError traceback."""
        import resource
        import zipfile
        p = self.path("bomb.pt")
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            with z.open("archive/data.pkl", "w", force_zip64=True) as f:
                block = bytes(16 << 20)
                for _ in range(96):
                    f.write(block)
        print("  bomb: %d bytes on disk" % os.path.getsize(p))
        out = self.path("bomb.safetensors")
        r = run_convert(out, ckpt=p, limits=[(resource.RLIMIT_AS, 1 << 30)])
        self.expect(r, "compression bomb", out)

    def test_fifo_inputs(self):
        """A FIFO as any input is refused at once (open() would wait for a writer forever)."""
        fifo = self.path("fifo")
        os.mkfifo(fifo)
        sd = self.path("sd_fifo")
        shutil.copytree(SD15, sd)
        os.unlink(os.path.join(sd, "unet", "config.json"))
        os.mkfifo(os.path.join(sd, "unet", "config.json"))
        out = self.path("fifo.safetensors")
        for kw, what in (({"ckpt": fifo}, "checkpoint"), ({"spm": fifo}, "--spm"), ({"dct": fifo}, "--dict"),
                         ({"sd15": sd}, "config")):
            r = run_convert(out, timeout=30, **kw)
            self.expect(r, "not a regular file (a FIFO)", out)
            self.assertIn(what, r.stderr)

    def test_output_checked_first(self):
        for out, msg in ((self.path("missing/dir/o.safetensors"), "does not exist"),
                         (self.tmp, "exists and is not a regular file (a directory)")):
            r = run_convert(out, timeout=30, ckpt=self.path("not-read.pt"))
            self.expect(r, msg, out)

    def test_disk_full(self):
        """A file size limit (as a full disk): the errno in the message, no partial output, an
        existing output untouched."""
        import resource
        out = self.path("full.safetensors")
        with open(out, "wb") as f:
            f.write(b"precious")
        r = run_convert(out, limits=[(resource.RLIMIT_FSIZE, 1 << 20)])
        self.expect(r, "write failed: File too large", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"precious")

    def test_max_target_positions_bounds(self):
        import argparse
        for v in (-5, 0, 100000000, "2048"):
            p = self.save_ckpt("maxpos.pt", self.fp32_state, cfg=None,
                               args=argparse.Namespace(decoder_attention_heads=4, max_target_positions=v))
            out = self.path("maxpos.safetensors")
            self.expect(run_convert(out, ckpt=p), "max_target_positions %r: expected an integer in 1..65536" % v,
                        out)

    def test_damaged_zip_directory(self):
        """A name in the zip central directory that is not valid UTF-8 (found by convert-fuzz):
        a ConvertError, not a UnicodeDecodeError traceback from inside zipfile."""
        with open(os.path.join(TINY, "checkpoint_final.pt"), "rb") as f:
            data = bytearray(f.read())
        at = data.rfind(b"archive/data/")
        data[at] = 0xE1
        # the central directory entry's flags: bit 11 says the name is UTF-8
        hdr = data.rfind(b"PK\x01\x02", 0, at)
        data[hdr + 8:hdr + 10] = struct.pack("<H", struct.unpack("<H", data[hdr + 8:hdr + 10])[0] | 0x800)
        p = self.path("baddir.pt")
        with open(p, "wb") as f:
            f.write(data)
        out = self.path("baddir.safetensors")
        self.expect(run_convert(out, ckpt=p), "truncated or corrupt checkpoint", out)

    def test_empty_dict(self):
        p = self.path("empty_dict.txt")
        open(p, "wb").close()
        out = self.path("emptydict.safetensors")
        self.expect(run_convert(out, dct=p), "empty dictionary", out)


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed - len(result.skipped), failed))
    sys.exit(1 if failed else 0)
