#!/usr/bin/env python
"""Peak GPU memory and time of one training step of SoVITS and of the GPT (gpt_sovits_nb.train), full-size models.

Does fine-tuning fit a 16 GB T4 (Colab's free GPU) at the batch sizes the tutorial uses? This builds the full-size
models of --version with random weights (memory does not depend on the values), a batch of synthetic clips of
--seconds each (HuBERT-sized 768-channel features, 1025-bin spectrograms, 32 kHz audio, phones at ~11 per second,
semantic tokens at 25 Hz, and the 20480-wide SV embedding for v2Pro/v2ProPlus), and runs --steps training steps of each
trainer with fp16 autocast + GradScaler, as the reference does on a GPU. It reports torch.cuda.max_memory_allocated over
those steps and a PASS/FAIL line against --budget-gb (14 GB: a T4 has 15.x GB usable; the rest is the CUDA context,
cuDNN workspaces and fragmentation, which max_memory_allocated does not count).

    python benchmarks/train_memory.py                                   # v2ProPlus, SoVITS batch 8, GPT batch 8, 10 s clips
    python benchmarks/train_memory.py --version v2 --seconds 15 --sovits-batch 6
    python benchmarks/train_memory.py --smoke                           # tiny models on the CPU: checks the script, no numbers

Without CUDA it says so, prints what the weights, gradients and optimizer moments alone take (a lower bound), and exits.
"""
from __future__ import annotations
import argparse, json, platform, sys, tempfile, time
from pathlib import Path

import torch

from gpt_sovits_nb.core import GPT_CONFIGS, SOVITS_CONFIGS, VERSIONS
from gpt_sovits_nb.gpt import Text2SemanticGPT
from gpt_sovits_nb.sovits import SoVITS
from gpt_sovits_nb import train as T

GB = 2 ** 30


def parameter_estimate(version: str) -> dict:
    "Bytes for weights + gradients + two AdamW moments (16 bytes per float32 weight), from parameter counts (meta device)."
    with torch.device("meta"):
        sov = sum(p.numel() for p in SoVITS(SOVITS_CONFIGS[version], posterior=True).parameters())
        disc = sum(p.numel() for p in T.MultiPeriodDiscriminator(version).parameters())
        gpt = sum(p.numel() for p in Text2SemanticGPT(GPT_CONFIGS["v1" if version == "v1" else "v2"]).parameters())
    return {"sovits_params_M": sov / 1e6, "discriminator_params_M": disc / 1e6, "gpt_params_M": gpt / 1e6,
            "sovits_static_gb": 16 * (sov + disc) / GB, "gpt_static_gb": 16 * gpt / GB}


def measure(trainer, device, steps: int) -> dict:
    "Peak allocated memory and mean time of `steps` train_step calls (the first one, which warms up kernels, is not timed)."
    if device.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        losses = trainer.train_step()
        if device.type == "cuda": torch.cuda.synchronize()
        if i: times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
    return {"peak_gb": peak, "seconds_per_step": sum(times) / len(times), "last_losses": {k: round(float(v), 4) for k, v in losses.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default="v2ProPlus", choices=VERSIONS)
    ap.add_argument("--sovits-batch", type=int, default=8)
    ap.add_argument("--gpt-batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of every clip in the batch (the longest clips set the peak)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--budget-gb", type=float, default=14.0)
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU: exercise the script, measure nothing")
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()

    est = parameter_estimate(a.version)
    print(f"{a.version}: SoVITS {est['sovits_params_M']:.1f} M + discriminator {est['discriminator_params_M']:.1f} M weights "
          f"-> {est['sovits_static_gb']:.2f} GB for weights, gradients and AdamW moments; GPT {est['gpt_params_M']:.1f} M -> "
          f"{est['gpt_static_gb']:.2f} GB. Activations come on top.")
    if not torch.cuda.is_available() and not a.smoke:
        print("This benchmark needs a CUDA GPU (torch.cuda.is_available() is False): no memory was measured. The numbers above "
              "are a lower bound; run it on a T4 (Colab) or another GPU for the real peak.")
        return 0

    device = torch.device("cuda" if not a.smoke else "cpu")
    torch.manual_seed(0)
    pro = a.version in ("v2Pro", "v2ProPlus")
    seconds = (a.seconds, a.seconds + 1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ssl_dim = 32 if a.smoke else 768
        feats = T.synthetic_feature_set(tmp / "features", max(a.sovits_batch, a.gpt_batch), seconds, ssl_dim=ssl_dim, sv=pro,
                                        n_symbols=322 if a.version == "v1" else 732)
        results = {"version": a.version, "seconds": a.seconds, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
                   "torch": torch.__version__, "python": platform.python_version(), "budget_gb": a.budget_gb, "estimate": est}

        cfg = T.tiny_sovits_config(a.version, ssl_dim) if a.smoke else SOVITS_CONFIGS[a.version]
        model = SoVITS(cfg, posterior=True)
        disc = T.MultiPeriodDiscriminator(a.version, **(T.TINY_DISCRIMINATOR if a.smoke else {}))
        clips = T.training_clips(feats, T.SOVITS_NEEDS + (("sv",) if pro else ()))[0]
        st = T.SoVITSTrainer(model, clips, tmp / "run", T.SoVITSTrainConfig(batch_size=a.sovits_batch, save_every=0), device=device,
                             discriminator=disc)
        results["sovits"] = {"batch_size": a.sovits_batch, "segment_size": cfg.segment_size, **measure(st, device, a.steps)}
        del st, model, disc
        if device.type == "cuda": torch.cuda.empty_cache()

        gcfg = T.tiny_gpt_config() if a.smoke else GPT_CONFIGS["v1" if a.version == "v1" else "v2"]
        gclips = T.training_clips(feats, T.GPT_NEEDS)[0]
        gt = T.GPTTrainer(Text2SemanticGPT(gcfg), gclips, tmp / "run", T.GPTTrainConfig(batch_size=a.gpt_batch, save_every=0,
                          max_ps_ratio=1e9, min_ps_ratio=0), device=device)
        results["gpt"] = {"batch_size": a.gpt_batch, "accumulate": gt.config.accumulate, **measure(gt, device, a.steps)}

    print(f"\n{'model':8s} {'batch':>5s} {'clip s':>6s} {'peak GB':>8s} {'s/step':>7s}  verdict (budget {a.budget_gb:g} GB)")
    ok = True
    for name in ("sovits", "gpt"):
        r = results[name]
        if r["peak_gb"] is None:
            print(f"{name:8s} {r['batch_size']:5d} {a.seconds:6.1f} {'-':>8s} {r['seconds_per_step']:7.2f}  smoke run: not measured")
            continue
        passed = r["peak_gb"] <= a.budget_gb
        ok &= passed
        print(f"{name:8s} {r['batch_size']:5d} {a.seconds:6.1f} {r['peak_gb']:8.2f} {r['seconds_per_step']:7.2f}  "
              f"{'PASS' if passed else 'FAIL'}: {'fits' if passed else 'does not fit'} in {a.budget_gb:g} GB")
    if a.json: Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
