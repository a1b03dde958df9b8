#!/usr/bin/env python
"""Seconds per training step of the two decoders a CPU could train from scratch, measured in the same run:

- the released design (chapter 07/11): SoVITS with its flow, posterior encoder and HiFi-GAN generator, trained by
  `SoVITSTrainer` against the multi-period discriminator (mel + KL + adversarial losses), at a small size the reference's
  classes can build (HiFi-GAN 128 channels, ResBlock1 with 3 dilations; text encoder 128 wide, 4 layers);
- the nano design (chapter 07a/11a): `MelSoVITS` at its shipped size, trained by `MelSoVITSTrainer` (L1 on the mel).

Both get batches of 8 clips of --seconds each (synthetic: the numbers do not depend on the values). It prints seconds per
step of each and their ratio, and how many steps of each fit in --budget-min minutes.

    python benchmarks/decoder_step.py                 # 3 s clips, 5 timed steps after 1 warm-up, 2 threads
"""
from __future__ import annotations
import argparse, tempfile, time
from pathlib import Path

import torch


def time_steps(trainer, steps: int) -> float:
    trainer.train_step()                                     # warm-up
    t0 = time.perf_counter()
    for _ in range(steps): trainer.train_step()
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-min", type=float, default=60.0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from gpt_sovits_nb.core import SoVITSConfig, SOVITS_CONFIGS, NANO
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb import train as T
    from gpt_sovits_nb.nano import NanoData, MelSoVITSTrainer, NanoTrainConfig
    from gpt_sovits_nb.mel_sovits import MelSoVITS
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    cfg = SoVITSConfig(version="v2", inter_channels=96, hidden_channels=128, filter_channels=384, n_layers=4,
                       upsample_initial_channel=128, gin_channels=128, ssl_dim=768)
    released = SoVITS(cfg, posterior=True)
    feats = T.synthetic_feature_set(tmp / "feats", n_clips=8, seconds=(a.seconds, a.seconds), sovits=released)
    clips, _ = T.training_clips(feats)
    official = T.SoVITSTrainer(released, clips, tmp / "run1", T.SoVITSTrainConfig(batch_size=8, save_every=0), device="cpu")
    t_off = time_steps(official, a.steps)
    n, units = 8, 128
    T_tok = int(a.seconds * 25)
    data = NanoData(["s"] * n, ["x"] * n, [torch.randint(1, 700, (int(a.seconds * 12),), dtype=torch.int16) for _ in range(n)],
                    [torch.randint(0, units, (T_tok,), dtype=torch.int16) for _ in range(n)],
                    [torch.randn(80, int(a.seconds * 86.13)).half() - 6 for _ in range(n)], units)
    mel = MelSoVITSTrainer(MelSoVITS(SOVITS_CONFIGS[NANO]), data, tmp / "run2", NanoTrainConfig(batch_size=8, ref_frames=200), device="cpu")
    t_mel = time_steps(mel, a.steps)
    budget = a.budget_min * 60
    print(f"released design (flow + HiFi-GAN + discriminator): {t_off:.2f} s/step -> {budget / t_off:.0f} steps in {a.budget_min:g} min")
    print(f"nano design (mel decoder, L1):                     {t_mel:.2f} s/step -> {budget / t_mel:.0f} steps in {a.budget_min:g} min")
    print(f"ratio: the released design costs {t_off / t_mel:.1f}x the nano design per step "
          f"(batches of 8 clips of {a.seconds:g} s, {a.threads} threads)")


if __name__ == "__main__":
    main()
