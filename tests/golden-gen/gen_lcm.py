"""LCM scheduler reference (diffusers LCMScheduler, for LCM-LoRA on SD1.5).

Run: /work/venv-lcm/bin/python tests/golden-gen/gen_lcm.py
where /work/venv-lcm = `python3 -m venv --system-site-packages /work/venv-lcm &&
/work/venv-lcm/bin/pip install diffusers==0.22.3 huggingface_hub==0.17.3` (Debian's torch; LCMScheduler
appeared in diffusers 0.22, Kosmos-G pins 0.21.4 which has none; 0.22.3 is pinned here).

LCMScheduler.from_config(SD1.5's scheduler_config.json) as the LCM-LoRA model card does; for N = 2, 4, 8
steps: n<N>.timesteps, n<N>.x_init (N(0,1), [1, 4, 8, 8]), and per step i the model output the loop is
given (s<i>.eps, N(0,1) as in the sched/* goldens: a scheduler replays it), the fresh noise step() draws
(s<i>.noise, captured by replaying the generator), and step()'s outputs s<i>.prev_sample and s<i>.denoised.
The loop is diffusers' LatentConsistencyModelPipeline's: x = step(eps, t, x).prev_sample, and the image is
decoded from the last step's `denoised` (not its prev_sample, which has fresh noise added).
Everything is computed twice: with float32 latents (`*.f32`) and float64 latents (no suffix)."""
import json
import os

import torch
import diffusers
from diffusers import LCMScheduler
from safetensors.torch import save_file

assert diffusers.__version__ == "0.22.3", diffusers.__version__
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "data", "lcm", "lcm_sd15.safetensors")
SD15_SCHED = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
              "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None}


def run(n, dtype, seed):
    sched = LCMScheduler.from_config(SD15_SCHED)
    sched.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64).to(dtype)
    rec = {"n%d.timesteps" % n: sched.timesteps.clone(), "n%d.x_init" % n: x.clone()}
    sg = torch.Generator().manual_seed(seed + 1000)
    for i, t in enumerate(sched.timesteps):
        eps = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64).to(dtype)
        replay = torch.Generator()
        replay.set_state(sg.get_state())
        noise = torch.randn(1, 4, 8, 8, generator=replay)  # what randn_tensor draws (float32)
        x, denoised = sched.step(eps, t, x, generator=sg, return_dict=False)
        p = "n%d.s%03d." % (n, i)
        rec.update({p + "eps": eps.clone(), p + "noise": noise, p + "prev_sample": x.clone(),
                    p + "denoised": denoised.clone()})
    return rec


def main():
    res = {}
    for n in (2, 4, 8):
        r64 = run(n, torch.float64, n)
        r32 = run(n, torch.float32, n)
        res.update(r64)
        res.update({k + ".f32": v for k, v in r32.items() if k.endswith(("prev_sample", "denoised"))})
        err = max(float((r32[k].double() - r64[k]).abs().max()) for k in r64 if k.endswith("denoised"))
        print("N=%d timesteps %s, f32 vs f64 denoised max-abs %.3g" % (n, r64["n%d.timesteps" % n].tolist(), err))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file({k: v.contiguous() for k, v in res.items()}, OUT,
              metadata={"generator": "tests/golden-gen/gen_lcm.py", "diffusers": diffusers.__version__,
                        "torch": torch.__version__, "config": json.dumps(dict(LCMScheduler.from_config(SD15_SCHED).config))})


if __name__ == "__main__":
    main()
