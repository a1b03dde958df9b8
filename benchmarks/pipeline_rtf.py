#!/usr/bin/env python
"""End-to-end speed of a voice-cloning call with full-size models (random weights), stage by stage: chapter 09's latency lab.

Builds a full-size v2 model set with random weights in a temporary folder (GPT 24 x 512, SoVITS v2, a HuBERT of the released
width and depth), then times one English text of about 20 seconds of speech: the reference clip (first call only; later
calls find it in the cache), the text front end, the GPT (tokens per second), SoVITS, the real-time factor (compute seconds
per second of speech) and the time to first audio of sentence streaming. Random weights never say EOS, so every piece decodes
exactly --tokens-per-piece tokens (4 pieces x 125 = 500 tokens = 20 s by default). Beside the plain float32 path: the GPT in
int8 (`quantize_int8`), with the share of pieces whose tokens equal the plain path's.

    python benchmarks/pipeline_rtf.py                     # CPU
    python benchmarks/pipeline_rtf.py --threads 2 --tokens-per-piece 60

The numbers depend on the machine and its load: compare rows of one run, not runs of different machines.
"""
from __future__ import annotations
import argparse, os, platform, tempfile, time
from pathlib import Path

import torch

TEXT = ("The little boat drifted slowly along the quiet river past the old mill and the sleeping town. "
        "Nobody on the bank noticed it except a small grey cat that watched it from the garden wall. "
        "When the sun came up the boat had reached the open sea and the wind carried it away. "
        "Years later the children of the town still told the story of the boat that sailed on its own.")
"Four sentences with no commas: four pieces (cut5), each about five seconds of speech."


def full_size_models(out: Path):
    "A v2 model set at the released sizes with random weights (official formats), and a full-width random HuBERT."
    from gpt_sovits_nb.core import GPT_CONFIGS, SOVITS_CONFIGS
    from gpt_sovits_nb.gpt import Text2SemanticGPT
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb.checkpoints import save_gpt, save_sovits
    from gpt_sovits_nb.tokens import tiny_random_hubert
    from gpt_sovits_nb.pipeline import ModelPaths
    torch.manual_seed(0)
    gpt, sov = Text2SemanticGPT(GPT_CONFIGS["v2"]).eval(), SoVITS(SOVITS_CONFIGS["v2"]).eval()
    paths = ModelPaths(gpt=out / "gpt.ckpt", sovits=out / "sovits.pth", hubert=out / "hubert")
    save_gpt(gpt.to_checkpoint_dict(), paths.gpt)
    save_sovits(sov, paths.sovits, version="v2")
    tiny_random_hubert(paths.hubert, hidden_size=768, num_layers=12, num_heads=12, conv_dim=512)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--tokens-per-piece", type=int, default=125, help="GPT tokens per piece (25 = 1 s of speech)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 GPT")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    from gpt_sovits_nb.pipeline import VoiceCloner, latency_lab
    from gpt_sovits_nb.corpus import reference_clip
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cloner = VoiceCloner.from_paths(full_size_models(Path(tmp)), device="cpu")
        print(f"built and loaded the full-size random v2 set in {time.perf_counter() - t0:.1f} s")
        clip = reference_clip("flite_slt", split="train")
        rows = latency_lab(cloner, TEXT, clip.path, clip.text, speedups=() if args.no_int8 else ("int8",),
                           max_new_tokens=args.tokens_per_piece)                  # random weights never say EOS
    plain = next(r for r in rows if r["path"] == "plain")["times"]
    print(f"plain float32: {plain.speech:.1f} s of speech, RTF {plain.rtf:.2f} (GPT {plain.gpt / plain.total:.0%} of the time)")


if __name__ == "__main__":
    main()
