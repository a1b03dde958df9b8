#!/usr/bin/env python3
"""Speak the nano model's training sentences with the four training voices of the corpus (chapter 11a).

    sh datasets/install_voices.sh          # once, as root: flite and festival with their voices
    python datasets/build_nano_data.py     # -> datasets/nano/audio/<speaker>/*.flac and datasets/nano/nano.list

Deterministic: the same seed and Debian packages give the same sentences and audio. The audio (about 90 minutes,
90 MB) is not committed; `tools/train_nano.py` builds it itself in its work folder, this script is for looking at it.
The sentences are our own (CC0), from the grammar in gpt_sovits_nb.nano; the corpus's held-out sentences are excluded.
"""
import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "nano"))
    ap.add_argument("--minutes-per-voice", type=float, default=22.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    from gpt_sovits_nb.nano import build_nano_corpus
    print(build_nano_corpus(a.out, a.minutes_per_voice, a.seed, workers=a.workers))
