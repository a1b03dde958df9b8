#!/usr/bin/env python3
"""Train the nano GPT-SoVITS from scratch (chapter 11a): speech, phone encoder, features, SoVITS, GPT, export, resumable.

    python tools/train_nano.py WORK_DIR [--recipe cpu|gpu] [--device auto|cpu|cuda] [--ship]

Run it in the background and watch the log; rerun the same command after an interruption and it goes on from its last
checkpoint. The exported files land in WORK_DIR/export (nano_gpt.ckpt, nano_sovits.pth). `--ship` then measures them on
the corpus's held-out sentences (chapter 12), writes MODEL_CARD.md and copies all three into gpt_sovits_nb/assets/nano,
where the library's offline default is read from.
"""
import argparse, json, shutil, sys, time
from pathlib import Path


def ship(work: Path, recipe: str, log):
    "Measure the exported pair, write the model card and copy everything into the package's assets."
    from gpt_sovits_nb.checkpoints import nano_dir
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.audio import load_audio
    from gpt_sovits_nb.nano import NanoData, nano_model_card
    from gpt_sovits_nb.pipeline import VoiceCloner, ModelPaths
    from gpt_sovits_nb import eval as E
    g, s = work / "export" / "nano_gpt.ckpt", work / "export" / "nano_sovits.pth"
    cloner = VoiceCloner.from_paths(ModelPaths(gpt=g, sovits=s, hubert=None), device="cpu")
    centroids = E.speaker_centroids()
    report = E.evaluate(E.speak_heldout(cloner, E.heldout_requests(sentences=6)), asr="pocketsphinx", centroids=centroids,
                        prosody=False)
    held = load_corpus(split="test_sentence")
    real = [{"wav": load_audio(c.path, 16000), "sr": 16000, "text": c.text, "speaker": c.speaker} for c in held]
    floor = E.evaluate(real, asr="pocketsphinx", centroids=centroids, prosody=False)
    resynth = E.evaluate(E.resynthesize_heldout(cloner, held), asr="pocketsphinx", centroids=centroids, prosody=False)
    for name, rep in (("heldout_report", report), ("heldout_floor", floor), ("heldout_resynthesis", resynth)): rep.to_json(work / f"{name}.json")
    summary = json.loads((work / "summary.json").read_text())
    held_s, floor_s, resynth_s = report.summary(), floor.summary(), resynth.summary()
    card = nano_model_card(g, s, NanoData.load(work / "features.pt"), recipe, held_s, floor_s,
                           summary["minutes"], summary["steps"], resynth_s)
    dest = nano_dir(); dest.mkdir(parents=True, exist_ok=True)
    for p in (g, s): shutil.copyfile(p, dest / p.name)
    (dest / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    quality = {"heldout": held_s, "floor": floor_s, "resynthesis": resynth_s,
               "measured_with": f"tools/train_nano.py --ship: the corpus's held-out sentences in each training voice "
                                    f"({held_s['outputs']} clones), pocketsphinx, Resemblyzer"}
    (dest / "quality.json").write_text(json.dumps(quality, indent=1), encoding="utf-8")
    log(f"held-out: {held_s}; resynthesis: {resynth_s}; real voices: {floor_s}")
    log(f"copied the files and MODEL_CARD.md into {dest}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", help="folder for the speech, features, checkpoints and exported files")
    ap.add_argument("--recipe", default="cpu", choices=("cpu", "gpu"), help="cpu: the shipped files; gpu: bigger models")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sovits-steps", type=int, default=None, help="override the recipe's SoVITS steps")
    ap.add_argument("--gpt-steps", type=int, default=None, help="override the recipe's GPT steps")
    ap.add_argument("--phone-steps", type=int, default=None, help="override the recipe's phone-encoder steps (0: MFCC tokens)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--ship", action="store_true", help="measure, write MODEL_CARD.md, copy into gpt_sovits_nb/assets/nano")
    args = ap.parse_args(argv)
    import torch
    if args.threads: torch.set_num_threads(args.threads)
    from gpt_sovits_nb.nano import train_nano
    log = lambda msg: print(time.strftime("%H:%M:%S"), msg, flush=True)
    train_nano(args.work_dir, args.recipe, args.device, args.sovits_steps, args.gpt_steps, log=log, phone_steps=args.phone_steps)
    if args.ship: ship(Path(args.work_dir), args.recipe, log)


if __name__ == "__main__":
    sys.exit(main())
