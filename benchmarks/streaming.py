#!/usr/bin/env python
"""Time to first audio and total time of `VoiceCloner.stream` in each mode, against `synthesize` (mode 0), and how close
the joined chunks are to `synthesize`'s output with the same seed.

Modes: 0 = synthesize (no streaming), sentence = one chunk per piece (the reference's streaming_mode 1), tokens = chunks
cut between silent-looking tokens (mode 2), fixed = chunks of exactly --chunk-tokens tokens (mode 3). Every row uses the
same text, reference (prepared once, outside the timings), seed and sampling knobs, so the tokens are the same in all.

Closeness: for 32 kHz models the joined stream is sample-aligned with synthesize, and the waveform SNR (dB) says how
close it is. The nano model's vocoder rounds each call to whole mel frames, so its stream is not sample-aligned; the
log-spectral distance (LSD, dB, lower is closer; 0 = identical) compares magnitude spectra instead, for every model.
A reference row compares synthesize with itself at another seed (other tokens: what "different speech" scores).

    python benchmarks/streaming.py                     # tiny random models (noise, not speech): fast, offline
    python benchmarks/streaming.py --nano              # the nano model that ships with the library
    python benchmarks/streaming.py --nano --chunk-tokens 8 --overlap-tokens 4 --noise-scale 0
"""
from __future__ import annotations
import argparse, platform, tempfile, time

import torch

from gpt_sovits_nb.pipeline import VoiceCloner, make_tiny_models
from gpt_sovits_nb.corpus import reference_clip

TEXT = ("Where is the red box? The dog ran home, and the cat sat on the mat. "
        "Please open the door, it is cold outside today.")


def snr_db(x, ref):
    n = min(x.shape[-1], ref.shape[-1])
    x, ref = x[..., :n], ref[..., :n]
    err = (x - ref).pow(2).sum()
    return float("inf") if err == 0 else float(10 * torch.log10(ref.pow(2).sum() / err))


def lsd_db(x, ref, n_fft=1024):
    "Log-spectral distance: RMS over frequencies of the difference of the dB magnitude spectra, averaged over frames."
    n = min(x.shape[-1], ref.shape[-1])
    w = torch.hann_window(n_fft)
    spec = lambda s: 10 * torch.log10(torch.stft(s[0, :n], n_fft, n_fft // 4, window=w, return_complex=True).abs().pow(2) + 1e-10)
    a, b = spec(x), spec(ref)
    return float((a - b).pow(2).mean(0).sqrt().mean())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nano", action="store_true", help="the shipped nano model instead of tiny random models")
    p.add_argument("--text", default=TEXT)
    p.add_argument("--chunk-tokens", type=int, default=16)
    p.add_argument("--overlap-tokens", type=int, default=2)
    p.add_argument("--top-k", type=int, default=15)
    p.add_argument("--noise-scale", type=float, default=0.0, help="0: SoVITS deterministic, so the SNR shows the seams only")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 60 for tiny models (random: they rarely stop), 1500 for nano")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="runs per row; the fastest is shown")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    if a.nano:
        cloner, name = VoiceCloner.from_pretrained("nano", device=a.device), "nano"
        clip = reference_clip("flite_slt", split="train")
    else:
        cloner, name = VoiceCloner.from_paths(make_tiny_models(tempfile.mkdtemp(), "v2"), device=a.device), "tiny v2 (random)"
        clip = reference_clip("flite_slt")
    ref = cloner.prepare_reference(clip.path, clip.text, "en")
    mnt = a.max_new_tokens or (1500 if a.nano else 60)
    kw = dict(top_k=a.top_k, noise_scale=a.noise_scale, seed=a.seed, max_new_tokens=mnt)
    sr = cloner.sovits.config.sampling_rate
    cloner.synthesize("Warm up.", "en", ref=ref, progress=False, **kw)     # first-call costs (allocations, silence token)
    list(cloner.stream("Warm up.", "en", ref=ref, mode="tokens", **kw))

    def timed(make):
        best = None
        for _ in range(a.repeats):
            t0 = time.perf_counter(); it = make(); first = next(it); t1 = time.perf_counter()
            chunks = [first] + list(it); t2 = time.perf_counter()
            if best is None or t2 - t0 < best[1]: best = (t1 - t0, t2 - t0, chunks)
        return best

    full_first, full_total, full = timed(lambda: iter([cloner.synthesize(a.text, "en", ref=ref, progress=False, **kw).wav]))
    full = full[0]
    other = cloner.synthesize(a.text, "en", ref=ref, progress=False, **{**kw, "seed": a.seed + 1}).wav
    print(f"model: {name}, device {a.device}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads {torch.get_num_threads()}")
    print(f"text: {len(a.text)} characters -> {full.shape[-1] / sr:.2f} s of audio at {sr} Hz; top_k={a.top_k}, "
          f"noise_scale={a.noise_scale}, chunk_tokens={a.chunk_tokens}, overlap_tokens={a.overlap_tokens}, seed={a.seed}")
    print(f"{'mode':24s} {'first audio s':>13s} {'total s':>8s} {'chunks':>6s} {'samples':>8s} {'SNR dB':>7s} {'LSD dB':>7s}")
    print(f"{'0 synthesize':24s} {full_first:13.3f} {full_total:8.3f} {1:6d} {full.shape[-1]:8d} {'-':>7s} {0.0:7.2f}")
    for label, mode in (("1 sentence", "sentence"), ("2 tokens", "tokens"), ("3 fixed", "fixed")):
        first, total, chunks = timed(lambda: cloner.stream(a.text, "en", ref=ref, mode=mode, chunk_tokens=a.chunk_tokens,
                                                          overlap_tokens=a.overlap_tokens, **kw))
        j = torch.cat(chunks, 1)
        print(f"{label:24s} {first:13.3f} {total:8.3f} {len(chunks):6d} {j.shape[-1]:8d} {snr_db(j, full):7.1f} {lsd_db(j, full):7.2f}")
    print(f"{'(synthesize, seed + 1)':24s} {'':13s} {'':8s} {'':6s} {other.shape[-1]:8d} {snr_db(other, full):7.1f} {lsd_db(other, full):7.2f}")


if __name__ == "__main__":
    main()
