#!/usr/bin/env python3
"""Throughput and latency of `gsv-nb serve` under concurrent clients (chapter 15), measured as a client sees them.

    python benchmarks/serve_load.py [--nano | --tiny DIR] [--clients 8] [--requests 32] [--streaming-mode 0]

Starts the server in this process on a free loopback port, sends one request alone (the baseline), then `--requests`
requests from `--clients` threads at once (each its own seed), and prints per-request latency (median, 95th percentile),
time to the first byte, throughput (requests per second, seconds of audio per second of wall time) and the process's
memory before and after. Requests take turns on the one model set, so throughput is the single-request rate and latency
grows with the queue: the numbers show that, and that nothing fails under load.
"""
import argparse, os, statistics, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--nano", action="store_true", help="the shipped nano model (default)")
    g.add_argument("--tiny", metavar="DIR", help="tiny random models in DIR (built if missing): fast, noise not speech")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--streaming-mode", type=int, default=0, choices=(0, 1, 2, 3))
    ap.add_argument("--text", default="Please put the red cup on the kitchen table.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--bursts", type=int, default=1, help="repeat the burst (memory after each shows whether it is stable)")
    args = ap.parse_args()
    import torch, httpx
    if args.threads: torch.set_num_threads(args.threads)
    from gpt_sovits_nb.pipeline import VoiceCloner
    from gpt_sovits_nb.corpus import reference_clip
    from gpt_sovits_nb.serve import TTSService, Limits, start_server
    if args.tiny:
        from gpt_sovits_nb.cli import tiny_model_set
        paths = tiny_model_set(args.tiny); cloner = VoiceCloner.from_paths(paths, device="cpu"); what = "tiny random v2"
        limits = Limits(max_new_tokens=100, max_queue=max(16, args.requests))
    else:
        cloner = VoiceCloner.from_pretrained("nano", device="cpu"); paths = None; what = "nano"
        limits = Limits(max_queue=max(16, args.requests))
    clip = reference_clip("flite_slt", split="train")
    service = TTSService(cloner, paths, ref_dirs=[clip.path.parent], limits=limits)
    server = start_server(service)
    params = dict(text=args.text, text_lang="en", ref_audio_path=clip.path.name, prompt_lang="en", prompt_text=clip.text,
                  streaming_mode=args.streaming_mode, media_type="raw")
    sr = service.sample_rate

    def one(seed):
        t0 = time.perf_counter(); first = None; n = 0
        with httpx.stream("GET", server.url + "/tts", params={**params, "seed": seed}, timeout=600) as r:
            status = r.status_code
            for part in r.iter_raw():
                if first is None: first = time.perf_counter() - t0
                n += len(part)
        return status, first, time.perf_counter() - t0, n / 2 / sr

    one(0)                                                   # warm-up: the reference is prepared and cached
    base = [one(s) for s in (1, 2)]
    mems = [rss_mb()]
    for b in range(args.bursts):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool: results = list(pool.map(one, range(100, 100 + args.requests)))
        wall = time.perf_counter() - t0
        mems.append(rss_mb())
    server.stop()
    ok = [r for r in results if r[0] == 200]
    lat = sorted(r[2] for r in ok); ttfb = sorted(r[1] for r in ok); audio = sum(r[3] for r in ok)
    pct = lambda xs, q: xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]
    print(f"{what} models, streaming_mode {args.streaming_mode}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"alone:       latency {statistics.mean(b[2] for b in base):.2f} s, first byte {statistics.mean(b[1] for b in base):.2f} s, "
          f"{statistics.mean(b[3] for b in base):.2f} s of audio")
    print(f"{args.clients} clients, {args.requests} requests (the last of {args.bursts} bursts): {len(ok)} ok, {len(results) - len(ok)} failed, {wall:.1f} s wall")
    print(f"  latency     median {statistics.median(lat):.2f} s, p95 {pct(lat, 0.95):.2f} s, max {lat[-1]:.2f} s")
    print(f"  first byte  median {statistics.median(ttfb):.2f} s, p95 {pct(ttfb, 0.95):.2f} s")
    print(f"  throughput  {len(ok) / wall:.2f} requests/s, {audio / wall:.2f} s of audio per s (real-time factor {wall / audio:.2f})")
    print(f"  memory      {mems[0]:.0f} MB before, then after each burst: {', '.join(f'{m:.0f}' for m in mems[1:])} MB")


if __name__ == "__main__":
    main()
