#!/usr/bin/env python3
"""kosmosg-convert --controlnet on the tiny diffusers ControlNets of tests/golden-gen/controlnet.

Expected values are read with an independent safetensors parser (and torch.load for a .bin copy):
every output tensor equals its source exactly (fp32, and fp16 from fp16), the key set is exactly the
ControlNetModel's, the metadata names the kind and the config; SDXL and SD2 ControlNets are refused by
name; a missing or mis-shaped tensor is named; an original single file (control_model.*) gives the
folder's tensors exactly; diffusers-named weights without config.json are refused."""

import json
import os
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
CNET = os.environ.get("KG_CONTROLNET_GOLDEN", os.path.join(HERE, "golden-gen", "controlnet"))
ST_DTYPES = {"F16": "<f2", "F32": "<f4"}


def read_st(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    hdr = json.loads(blob[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    data = blob[8 + n:]
    out = {}
    for k, d in hdr.items():
        b, e = d["data_offsets"]
        out[k] = np.frombuffer(data[b:e], ST_DTYPES[d["dtype"]]).reshape(d["shape"])
    return meta, out


def convert(src, out, *extra):
    cmd = [sys.executable, CONVERT, "--controlnet", src, "-o", out] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class ControlNet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kg_convert_cnet_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def copy_folder(self, tag, name):
        dst = self.path(name)
        shutil.copytree(os.path.join(CNET, tag), dst)
        return dst

    def edit_config(self, folder, **changes):
        p = os.path.join(folder, "config.json")
        with open(p) as f:
            cfg = json.load(f)
        cfg.update(changes)
        with open(p, "w") as f:
            json.dump(cfg, f)

    def check(self, out, src_folder, dtype):
        meta, got = read_st(out)
        _, src = read_st(os.path.join(src_folder, "diffusion_pytorch_model.safetensors"))
        self.assertEqual(meta["kg.kind"], "controlnet")
        self.assertEqual(meta["kg.dtype"], dtype)
        with open(os.path.join(src_folder, "config.json")) as f:
            cfg = json.load(f)
        conf = json.loads(meta["kg.config.controlnet"])
        self.assertEqual(conf["block_out_channels"], cfg["block_out_channels"])
        self.assertEqual(sorted(got), sorted("controlnet." + k for k in src), "tensor set")
        want = np.float16 if dtype == "fp16" else np.float32
        bad = [k for k, v in src.items()
               if got["controlnet." + k].dtype != want or got["controlnet." + k].shape != v.shape
               or not np.array_equal(got["controlnet." + k].astype(np.float64), v.astype(np.float64))]
        print("  %s: %d tensors compared exactly with their sources, %d differ"
              % (os.path.basename(out), len(src), len(bad)))
        self.assertEqual(bad, [])

    def test_folders_fp16_fp32(self):
        for tag in ("cnet_k", "cnet_tiny"):
            for dtype in ("fp16", "fp32"):
                out = self.path("%s_%s.safetensors" % (tag, dtype))
                r = convert(os.path.join(CNET, tag), out, "--dtype", dtype, "--quiet")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.check(out, os.path.join(CNET, tag), dtype)

    def test_bin_weights(self):
        folder = self.copy_folder("cnet_tiny", "bin")
        st = os.path.join(folder, "diffusion_pytorch_model.safetensors")
        _, src = read_st(st)
        torch.save({k: torch.from_numpy(v.copy()) for k, v in src.items()},
                   os.path.join(folder, "diffusion_pytorch_model.bin"))
        os.remove(st)
        out = self.path("bin.safetensors")
        r = convert(folder, out, "--dtype", "fp32", "--quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, got = read_st(out)
        self.assertTrue(all(np.array_equal(got["controlnet." + k], v.astype(np.float32))
                            for k, v in src.items()))

    def refused(self, folder, needle):
        r = convert(folder, self.path("x.safetensors"), "--quiet")
        self.assertEqual(r.returncode, 1)
        self.assertIn(needle, r.stderr)
        self.assertFalse(os.path.exists(self.path("x.safetensors")))
        print("  refused: %s" % r.stderr.strip())

    def test_sdxl_refused_by_name(self):
        folder = self.copy_folder("cnet_tiny", "sdxl")
        self.edit_config(folder, addition_embed_type="text_time", cross_attention_dim=2048)
        self.refused(folder, "for SDXL")

    def test_sd2_refused_by_name(self):
        folder = self.copy_folder("cnet_tiny", "sd2")
        self.edit_config(folder, cross_attention_dim=1024, use_linear_projection=True)
        self.refused(folder, "for SD2")

    def test_missing_tensor_named(self):
        folder = self.copy_folder("cnet_tiny", "missing")
        st = os.path.join(folder, "diffusion_pytorch_model.safetensors")
        _, src = read_st(st)
        del src["controlnet_mid_block.bias"]
        torch.save({k: torch.from_numpy(v.copy()) for k, v in src.items()},
                   os.path.join(folder, "diffusion_pytorch_model.bin"))
        os.remove(st)
        self.refused(folder, "missing tensor 'controlnet_mid_block.bias'")

    def test_wrong_config_shape_named(self):
        folder = self.copy_folder("cnet_tiny", "shape")
        self.edit_config(folder, conditioning_embedding_out_channels=[8, 16, 24, 48])
        self.refused(folder, "controlnet_cond_embedding.blocks.5.weight")

    def test_not_a_controlnet(self):
        folder = self.copy_folder("cnet_tiny", "unet")
        self.edit_config(folder, _class_name="UNet2DConditionModel")
        self.refused(folder, "not a ControlNetModel")

    def test_single_file_original_layout(self):
        """cnet_k_ldm.safetensors (cnet_k in the control_model.* layout, checked against diffusers' own
        converter by the generator) gives exactly the tensors of the folder, and an equivalent config."""
        a, b = self.path("ldm.safetensors"), self.path("dir.safetensors")
        for src, out in ((os.path.join(CNET, "cnet_k_ldm.safetensors"), a), (os.path.join(CNET, "cnet_k"), b)):
            r = convert(src, out, "--dtype", "fp32", "--quiet")
            self.assertEqual(r.returncode, 0, r.stderr)
        ma, ta = read_st(a)
        mb, tb = read_st(b)
        self.assertEqual(sorted(ta), sorted(tb))
        same = [k for k in ta if np.array_equal(ta[k], tb[k])]
        print("  single file vs folder: %d of %d tensors identical" % (len(same), len(ta)))
        self.assertEqual(len(same), len(ta))
        ca, cb = json.loads(ma["kg.config.controlnet"]), json.loads(mb["kg.config.controlnet"])
        for k in ("block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim",
                  "conditioning_embedding_out_channels", "conditioning_channels", "in_channels",
                  "attention_head_dim", "use_linear_projection"):
            self.assertEqual(ca[k], cb[k], k)

    def test_single_file_unknown_key_named(self):
        _, src = read_st(os.path.join(CNET, "cnet_k_ldm.safetensors"))
        src = {k: torch.from_numpy(v.copy()) for k, v in src.items()}
        src["control_model.zero_convs.0.1.weight"] = src["control_model.zero_convs.0.0.weight"]
        p = self.path("extra.pth")
        torch.save(src, p)
        self.refused(p, "'control_model.zero_convs.0.1.weight' has no place in a ControlNet")

    def test_single_file_diffusers_names_need_the_folder(self):
        self.refused(os.path.join(CNET, "cnet_tiny", "diffusion_pytorch_model.safetensors"),
                     "without their config.json")


if __name__ == "__main__":
    unittest.main(verbosity=2)
