#!/usr/bin/env python
"""onnxruntime against torch on this CPU, measured in the same process: GPT decoding (tokens/s) and SoVITS decoding (seconds).

The models are the released sizes (gpt_sovits_nb.core: the v2 GPT, 24 layers, 512 wide; the SoVITS of --version, default
v2ProPlus) with random weights, exported with gpt_sovits_nb.export (chapter 16) into a temporary folder. Runs are
interleaved (torch, onnxruntime, torch, ...) and the best of --repeats is reported for each, since a shared machine's load
comes and goes. The GPT decodes greedily (top_k=1) with EOS kept out, so both make exactly --new-tokens tokens, and the
tokens of every run are compared; the SoVITS decodes --seconds of audio with noise_scale 0.5 from the same seed, and the
largest waveform difference is printed. Both use --threads threads (torch.set_num_threads and onnxruntime's intra-op threads).

    python benchmarks/onnx_vs_torch.py                     # released sizes, 1 thread (a few minutes)
    python benchmarks/onnx_vs_torch.py --tiny              # the tiny test sizes: seconds
    python benchmarks/onnx_vs_torch.py --threads 2 --version v2
"""
from __future__ import annotations
import argparse, platform, tempfile, time
from pathlib import Path

import torch


def best_interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    "Call every function of `fns` once per round, `repeats` rounds: ({name: best seconds}, {name: [results]})."
    best, results = {k: float("inf") for k in fns}, {k: [] for k in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter(); out = f(); dt = time.perf_counter() - t0
            best[name] = min(best[name], dt); results[name].append(out)
    return best, results


def tiny_gpt_config():
    from gpt_sovits_nb.core import GPTConfig
    return GPTConfig(embedding_dim=64, hidden_dim=64, head=4, n_layer=2, bert_dim=32)   # make_tiny_models' GPT


def tiny_sovits_config(version):
    from gpt_sovits_nb.core import SoVITSConfig
    return SoVITSConfig(version=version, inter_channels=32, hidden_channels=64, filter_channels=128, n_heads=2, n_layers=2,
                        upsample_initial_channel=64, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                        ssl_dim=48, gin_channels=64)                                   # make_tiny_models' SoVITS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and onnxruntime (default 1)")
    ap.add_argument("--tiny", action="store_true", help="tiny models (the test sizes) for a quick run")
    ap.add_argument("--version", default="v2ProPlus", help="SoVITS version: v1, v2, v2Pro or v2ProPlus (default v2ProPlus)")
    ap.add_argument("--phones", type=int, default=100)
    ap.add_argument("--prompt", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=None, help="GPT tokens per run (default 150; 300 with --tiny)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds of audio per SoVITS decode (default 5; 10 with --tiny)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-gpt", action="store_true"); ap.add_argument("--skip-sovits", action="store_true")
    a = ap.parse_args(argv)

    from gpt_sovits_nb.core import GPT_CONFIGS, SOVITS_CONFIGS, check_version
    from gpt_sovits_nb.gpt import Text2SemanticGPT, count_parameters
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb.export import OnnxGPT, OnnxSoVITS, export_gpt_onnx, export_sovits_onnx, require_onnx
    onnx, ort = require_onnx()
    check_version(a.version)
    torch.set_num_threads(a.threads)
    n_new = a.new_tokens or (300 if a.tiny else 150)
    seconds = a.seconds or (10.0 if a.tiny else 5.0)
    folder = Path(tempfile.mkdtemp(prefix="gsv-onnx-bench-"))
    cpu = platform.processor() or platform.machine()
    print(f"{'tiny' if a.tiny else 'released-size'} models, random weights; {a.threads} thread(s) on {cpu}; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; best of {a.repeats} interleaved runs")

    if not a.skip_gpt:
        torch.manual_seed(0)
        gpt = Text2SemanticGPT(tiny_gpt_config() if a.tiny else GPT_CONFIGS["v2"]).eval()
        c = gpt.config
        t0 = time.perf_counter(); export_gpt_onnx(gpt, folder / "gpt"); t_export = time.perf_counter() - t0
        ogpt = OnnxGPT(folder / "gpt", threads=a.threads)
        g = torch.Generator().manual_seed(1)
        phones = torch.randint(0, c.phoneme_vocab_size, (1, a.phones), generator=g)
        bert = torch.randn(1, c.bert_dim, a.phones, generator=g)
        prompt = torch.randint(0, c.EOS, (1, a.prompt), generator=g)
        kw = dict(top_k=1, max_new_tokens=n_new, min_new_tokens=n_new)
        print(f"\nGPT: {count_parameters(gpt) / 1e6:.1f} M parameters, {c.n_layer} layers x {c.hidden_dim}; exported in {t_export:.1f} s. "
              f"{a.phones} phones + {a.prompt} prompt tokens -> {n_new} new tokens, greedy")
        ogpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=5); gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=5)  # warm-up
        best, res = best_interleaved({"torch": lambda: gpt.infer(phones, bert, prompt, **kw),
                                      "onnxruntime": lambda: ogpt.infer(phones, bert, prompt, **kw)}, a.repeats)
        same = all(torch.equal(x, res["torch"][0]) for x in res["torch"] + res["onnxruntime"])
        diff = (ogpt.prefill_logits(phones, bert, prompt) - gpt.prefill_logits(phones, bert, prompt)).abs().max().item()
        steps_o = list(ogpt.decode(phones, bert, prompt, top_k=1, max_new_tokens=20, min_new_tokens=20))
        steps_t = list(gpt.decode(phones, bert, prompt, top_k=1, max_new_tokens=20, min_new_tokens=20))
        diff = max([diff] + [(x.logits - y.logits).abs().max().item() for x, y in zip(steps_o, steps_t)])
        tps = {k: n_new / v for k, v in best.items()}
        print(f"  torch       : {tps['torch']:8.1f} tok/s")
        print(f"  onnxruntime : {tps['onnxruntime']:8.1f} tok/s   ({tps['onnxruntime'] / tps['torch']:.2f}x torch)")
        print(f"  greedy tokens identical in all {2 * a.repeats} runs: {same}; max |logit diff| (prefill + 20 steps): {diff:.1e}")
        del gpt, ogpt

    if not a.skip_sovits:
        torch.manual_seed(0)
        sov = SoVITS(tiny_sovits_config(a.version) if a.tiny else SOVITS_CONFIGS[a.version]).eval()
        with torch.no_grad():                 # the flow's last layers start at zero (the identity): give them weights
            for f in sov.flow.flows[::2]: f.post.weight.normal_(0, 0.02); f.post.bias.normal_(0, 0.02)
        cfg = sov.config
        t0 = time.perf_counter(); export_sovits_onnx(sov, folder / "sovits"); t_export = time.perf_counter() - t0
        osov = OnnxSoVITS(folder / "sovits", threads=a.threads)
        T = int(seconds * 25)
        g = torch.Generator().manual_seed(2)
        codes = torch.randint(0, cfg.codebook_size, (1, 1, T), generator=g)
        phones = torch.randint(0, cfg.n_symbols, (1, max(1, T // 3)), generator=g)
        spec = torch.rand(1, cfg.spec_channels, 250, generator=g)                     # a 5 s reference
        sv = torch.randn(1, cfg.sv_dim, generator=g) if cfg.is_pro else None
        run = lambda m: (lambda: m.decode(codes, phones, spec, noise_scale=0.5, sv_emb=sv, generator=torch.Generator().manual_seed(3)))
        print(f"\nSoVITS {a.version}: {sov.n_params() / 1e6:.1f} M numbers; exported in {t_export:.1f} s. "
              f"{T} tokens -> {seconds:.1f} s of 32 kHz audio, noise_scale 0.5")
        run(osov)(); run(sov)()                                                        # warm-up
        best, res = best_interleaved({"torch": run(sov), "onnxruntime": run(osov)}, a.repeats)
        diff = max((o - t).abs().max().item() for o, t in zip(res["onnxruntime"], res["torch"]))
        print(f"  torch       : {best['torch']:8.3f} s  ({seconds / best['torch']:.1f}x real time)")
        print(f"  onnxruntime : {best['onnxruntime']:8.3f} s  ({seconds / best['onnxruntime']:.1f}x real time; "
              f"{best['torch'] / best['onnxruntime']:.2f}x as fast as torch)")
        print(f"  max |waveform diff|: {diff:.1e}")


if __name__ == "__main__":
    main()
