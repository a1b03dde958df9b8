#!/usr/bin/env python
"""Decoding speed of the text-to-semantic GPT (gpt_sovits_nb.gpt.Text2SemanticGPT), KV cache vs no cache.

Full-size model (v2: 24 layers, 512 wide, 16 heads, 77.6 M parameters) with random weights, 150 phones, 150 prompt
tokens, 500 new tokens with the official sampling defaults (top_k=15, top_p=1, temperature=1, repetition penalty 1.35).
EOS is kept out of the choices for every step (min_new_tokens = new tokens), so every run makes exactly the tokens asked for.

The cached decoder is timed over all new tokens (prefill included, and without it), beside the same decoder with a
cache grown by torch.cat at every step (the reference's way, which copies the whole cache in every layer at every step). The no-cache baseline recomputes the
whole sequence at every step; at full length that takes many minutes on a CPU, so it is timed over the first
--baseline-tokens tokens only (its shortest, cheapest steps: the full-length average is slower still).

    python benchmarks/gpt_decode.py                                  # CPU, float32
    python benchmarks/gpt_decode.py --device cuda --dtype float16
    python benchmarks/gpt_decode.py --new-tokens 200 --baseline-tokens 10

On the CPU in float32, when onnx and onnxruntime are installed (the `export` extra), the same decoder also runs as the
two ONNX graphs of chapter 16 (gpt_sovits_nb.export.OnnxGPT: exported into a temporary folder, same sampling code and
seeds, so the same tokens), interleaved with the others; --no-onnx skips it. There, too, the int8-weight decoder of chapter
06 (`quantize_int8`: dynamic int8 linear layers, about 97 % greedy agreement with float32 on the trained nano GPT) runs
beside them; --no-int8 skips it. On CUDA, the fixed-shape step of chapter 06 section 11 (`decode(graph=True)`: one CUDA
graph per step, replayed) runs beside the plain cached loop; --no-graph skips it.
"""
from __future__ import annotations
import argparse, platform, time

import torch

from gpt_sovits_nb import gpt as G
from gpt_sovits_nb.core import GPT_CONFIGS, get_device
from gpt_sovits_nb.gpt import Text2SemanticGPT, count_parameters

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ConcatKVCache(G.KVCache):
    "A cache that grows by torch.cat at every step, as the reference's T2SBlock does (copies all stored keys each step)."
    def __init__(self, n_layer, *args, **kwargs):
        self.keys, self.values, self.length = [None] * n_layer, [None] * n_layer, 0

    def store(self, layer, k, v):
        if self.keys[layer] is not None:
            k, v = torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def timed_decode(model, inputs, n_tokens, use_cache, sampling, seed=0, **extra):
    "Decode n_tokens; returns (seconds in total, seconds of the first step = prefill, tokens made). `extra`: more decode options."
    torch.manual_seed(seed)
    device = model.device
    no_cache = {**extra, **({} if use_cache else {"use_cache": False})}   # OnnxGPT always decodes with its cache
    sync(device); t0 = time.perf_counter(); t_first = None; n = 0
    for step in model.decode(*inputs, max_new_tokens=n_tokens, min_new_tokens=n_tokens, **no_cache, **sampling):
        n += 1
        if t_first is None: sync(device); t_first = time.perf_counter() - t0
    sync(device)
    return time.perf_counter() - t0, t_first, n


def onnx_gpt(model, device, dtype):
    "The model as gpt_sovits_nb.export.OnnxGPT (exported to a temporary folder), or None off the CPU/float32 or without onnxruntime."
    if device.type != "cpu" or dtype != torch.float32: return None
    try:
        from gpt_sovits_nb.export import OnnxGPT, export_gpt_onnx, require_onnx
        require_onnx()
    except Exception as e:
        print(f"onnxruntime skipped: {e}")
        return None
    import tempfile
    folder = tempfile.mkdtemp(prefix="gsv-gpt-onnx-")
    t0 = time.perf_counter(); export_gpt_onnx(model, folder)
    print(f"exported the ONNX graphs in {time.perf_counter() - t0:.1f} s")
    return OnnxGPT(folder, threads=torch.get_num_threads())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--version", default="v2", choices=list(GPT_CONFIGS))
    ap.add_argument("--phones", type=int, default=150)
    ap.add_argument("--prompt", type=int, default=150)
    ap.add_argument("--new-tokens", type=int, default=500)
    ap.add_argument("--baseline-tokens", type=int, default=20, help="tokens for the no-cache baseline (0: skip it)")
    ap.add_argument("--warmup", type=int, default=20, help="cached tokens decoded once before timing")
    ap.add_argument("--repeats", type=int, default=3, help="timed cached runs of each variant, interleaved (the best is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--top-k", type=int, default=15)
    ap.add_argument("--no-concat", action="store_true", help="skip the torch.cat-cache comparison")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8-weight decoder (quantize_int8; CPU, float32 only)")
    ap.add_argument("--no-onnx", action="store_true", help="skip onnxruntime (otherwise run on the CPU in float32 when installed)")
    ap.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph step (decode(graph=True); CUDA only)")
    args = ap.parse_args(argv)

    if args.threads: torch.set_num_threads(args.threads)
    device, dtype = get_device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    model = Text2SemanticGPT(GPT_CONFIGS[args.version]).to(device=device, dtype=dtype).eval()
    c = model.config
    phones = torch.randint(0, c.phoneme_vocab_size, (1, args.phones), device=device)
    bert = torch.randn(1, c.bert_dim, args.phones, device=device, dtype=dtype)
    prompt = torch.randint(0, c.EOS, (1, args.prompt), device=device)
    inputs = (phones, bert, prompt)
    sampling = dict(top_k=args.top_k, top_p=1.0, temperature=1.0, repetition_penalty=1.35)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"GPT {args.version}: {count_parameters(model) / 1e6:.1f} M parameters, {args.dtype} on {device} ({name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.phones} phones + {args.prompt} prompt tokens -> {args.new_tokens} new tokens, top_k={args.top_k}")

    variants = {"KV cache": (model, G.KVCache, {})}          # label: (model, the cache class decode builds, decode options)
    if not args.no_concat: variants["torch.cat cache"] = (model, ConcatKVCache, {})
    onnx_model = None if args.no_onnx else onnx_gpt(model, device, dtype)
    if onnx_model is not None: variants["onnxruntime"] = (onnx_model, G.KVCache, {})
    if device.type == "cpu" and dtype == torch.float32 and not args.no_int8:
        variants["int8 weights"] = (G.quantize_int8(model), G.KVCache, {})   # chapter 06: dynamic int8 linear layers
    if device.type == "cuda" and not args.no_graph:
        variants["CUDA graph"] = (model, G.KVCache, {"graph": True})      # chapter 06 section 11: one replayed graph per step
    ours, best = G.KVCache, {}
    try:
        for r in range(args.repeats):            # interleaved, best of each: a shared machine's load comes and goes
            for label, (runner, cache_class, extra) in variants.items():
                G.KVCache = cache_class          # decode() builds its cache from the module's KVCache
                if r == 0: timed_decode(runner, inputs, args.warmup, True, sampling, **extra)      # warm-up
                total, first, n = timed_decode(runner, inputs, args.new_tokens, True, sampling, seed=r, **extra)
                assert n == args.new_tokens, n
                if label not in best or total < best[label][0]: best[label] = (total, first, n)
    finally:
        G.KVCache = ours
    total, first, n = best["KV cache"]
    cached = n / total
    print(f"KV cache         : {cached:7.1f} tok/s  ({n} tokens in {total:.2f} s; prefill {first * 1e3:.0f} ms, "
          f"then {(n - 1) / (total - first):.1f} tok/s)")
    if "torch.cat cache" in best:
        total_c, first_c, n_c = best["torch.cat cache"]
        print(f"torch.cat cache  : {n_c / total_c:7.1f} tok/s  ({n_c} tokens in {total_c:.2f} s; the same decoder, the cache grown "
              f"as the reference grows it)")
    if "onnxruntime" in best:
        total_o, first_o, n_o = best["onnxruntime"]
        print(f"onnxruntime      : {n_o / total_o:7.1f} tok/s  ({n_o} tokens in {total_o:.2f} s; prefill {first_o * 1e3:.0f} ms; "
              f"the ONNX graphs of gpt_sovits_nb.export: {(n_o / total_o) / cached:.2f}x the torch KV cache's speed)")

    if "int8 weights" in best:
        total_q, first_q, n_q = best["int8 weights"]
        print(f"int8 weights     : {n_q / total_q:7.1f} tok/s  ({n_q} tokens in {total_q:.2f} s; prefill {first_q * 1e3:.0f} ms; "
              f"quantize_int8: {(n_q / total_q) / cached:.2f}x the float32 KV cache's speed"
              + (f", {(n_q / total_q) / (best['torch.cat cache'][2] / best['torch.cat cache'][0]):.2f}x the reference-style loop's" if "torch.cat cache" in best else "") + ")")

    if "CUDA graph" in best:
        total_g, first_g, n_g = best["CUDA graph"]
        print(f"CUDA graph       : {n_g / total_g:7.1f} tok/s  ({n_g} tokens in {total_g:.2f} s; prefill and capture {first_g * 1e3:.0f} ms, "
              f"then {(n_g - 1) / (total_g - first_g):.1f} tok/s; {(n_g / total_g) / cached:.2f}x the plain KV cache's speed"
              + (f", {(n_g / total_g) / (best['torch.cat cache'][2] / best['torch.cat cache'][0]):.2f}x the reference-style loop's" if "torch.cat cache" in best else "") + ")")
        torch.manual_seed(0); plain = [s.token.item() for s in model.decode(*inputs, top_k=1, max_new_tokens=100, min_new_tokens=100)]
        torch.manual_seed(0); graph = [s.token.item() for s in model.decode(*inputs, top_k=1, max_new_tokens=100, min_new_tokens=100, graph=True)]
        print(f"CUDA graph greedy tokens equal to the plain loop's: {sum(a == b for a, b in zip(plain, graph))}/100")

    if args.baseline_tokens > 0:
        timed_decode(model, inputs, 2, False, sampling)                          # warm-up
        total_b, first_b, n_b = timed_decode(model, inputs, args.baseline_tokens, False, sampling)
        base = n_b / total_b
        L0, N = args.phones + args.prompt, args.new_tokens
        full = N / (total_b / n_b * N * (L0 + N / 2) / (L0 + n_b / 2))   # a step's cost grows with the sequence length
        print(f"no cache         : {base:7.1f} tok/s  ({n_b} tokens in {total_b:.2f} s: its shortest steps; "
              f"over all {N} tokens ~{full:.1f} tok/s, extrapolated linearly in length)")
        print(f"speed-up vs no cache: {cached / base:.1f}x")


if __name__ == "__main__":
    main()
