#!/usr/bin/env python3
"""Build the small embedded English speech corpus of gpt_sovits_nb from Debian packages.

What it does (rerunnable; the same packages give the same audio):
  1. speaks the sentences of `sentences.tsv` with real-speaker voices of flite and festival
     (voices built from recordings of one person each) and a few clearly synthetic espeak-ng voices;
  2. adds the real recordings of Debian's pocketsphinx-testdata (with their transcripts);
  3. trims leading/trailing silence lightly, resamples to 16 kHz, normalises the peak,
     and writes mono 16-bit FLAC files under `audio/<speaker>/`;
  4. writes the manifest `corpus.list` (the official GPT-SoVITS list format `path|speaker|lang|text`,
     paths relative to this folder), `splits.json` (which clip belongs to which split, its duration)
     and `speakers.json` (voice, source package and version, licence, kind of each speaker);
  5. copies the Debian copyright files of the voices and recordings into `licenses/`.

Install the voices first (as root): `sh datasets/install_voices.sh`.
Run from anywhere with the project's Python (numpy, scipy, soundfile): `python datasets/build_corpus.py`.
CI never runs this: its outputs are committed.
"""
from __future__ import annotations

import argparse, json, shutil, subprocess, sys, tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

HERE = Path(__file__).resolve().parent
RATE = 16000                      # every clip is stored at 16 kHz (see README.md: why one rate)
PEAK = 0.89                       # -1 dBFS peak after normalisation
TRIM_DB = 40.0                    # a 10 ms frame is "sound" if within 40 dB of the loudest frame
PAD_S = 0.12                      # silence kept before the first and after the last sounding frame
PS_DATA = Path("/usr/share/pocketsphinx/test/data")
# Debian packages whose copyright files are copied verbatim into licenses/ (the voices' licences ask for it).
LICENSED_PACKAGES = ["libflite1", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts",
                     "espeak-ng-data", "pocketsphinx-testdata"]

# Sentences spoken by every synthetic voice and never by a training speaker in the training split.
HELDOUT_SENTENCES = ["s03", "s11", "s24", "s31", "s40", "s59"]
MIN_SECONDS = 60.0                # each real-speaker voice gets at least a minute (of train clips for training speakers)

# Licence keys (texts in LICENSE.md).
CMU_FLITE = "flite (CMU LTI free licence, BSD-like)"
EDINBURGH = "festival diphone voice (CSTR Edinburgh / CMU free licence, BSD-like)"
EST2003 = "festvox-us-slt-hts (EST-2003 / CMU ARCTIC free licence, BSD-like)"
ESPEAK = "espeak-ng GPL-3.0-or-later (program); the generated audio is not covered by the GPL"
PSDATA = "pocketsphinx-testdata: BSD-2-Clause (Carnegie Mellon University)"
LIBRIVOX = "public domain (LibriVox recording); shipped in pocketsphinx-testdata, BSD-2-Clause"

# role "train": speaks the held-out sentences (split test_sentence) and training sentences (split train), the
#   latter until its train clips last MIN_SECONDS. The training speakers are distinct people: a speaker encoder hears
#   two engines of one person as nearly one voice, so "the nearest training speaker" would be ill-defined otherwise.
# role "twin": a training person through another engine; speaks like a training speaker, but every clip is in split
#   "twin" (neither trained on nor held out): for comparing engines, and for fine-tuning on a voice the models never saw.
# role "heldout": the whole speaker is held out (split test_speaker); it speaks the held-out sentences and, when
#   `minute` is set, training sentences until all its clips last MIN_SECONDS.
ROLE_SPLITS = {"train": ("test_sentence", "train"), "twin": ("twin", "twin"), "heldout": ("test_speaker", "test_speaker")}
"The splits of a voice's (held-out sentences, training sentences), by its role."
TTS_VOICES = [
    dict(speaker="flite_awb", engine="flite", voice="awb", package="libflite1", person="awb",
         description="CMU ARCTIC speaker awb, Scottish English male (flite clustergen voice)",
         kind="tts", role="train", minute=True, licence=CMU_FLITE),
    dict(speaker="flite_rms", engine="flite", voice="rms", package="libflite1", person="rms",
         description="CMU ARCTIC speaker rms, US English male (flite clustergen voice)",
         kind="tts", role="train", minute=True, licence=CMU_FLITE),
    dict(speaker="flite_slt", engine="flite", voice="slt", package="libflite1", person="slt",
         description="CMU ARCTIC speaker slt, US English female (flite clustergen voice)",
         kind="tts", role="train", minute=True, licence=CMU_FLITE),
    dict(speaker="flite_kal16", engine="flite", voice="kal16", package="libflite1", person="kal",
         description="Kevin Lenzo's diphones, US English male (flite diphone voice, 16 kHz)",
         kind="tts", role="twin", minute=True, licence=CMU_FLITE),
    dict(speaker="fest_kal", engine="festival", voice="kal_diphone", package="festvox-kallpc16k", person="kal",
         description="Kevin Lenzo's diphones, US English male (festival residual-LPC diphone voice)",
         kind="tts", role="train", minute=True, licence=EDINBURGH),
    dict(speaker="fest_slt_hts", engine="festival", voice="cmu_us_slt_arctic_hts", package="festvox-us-slt-hts",
         person="slt", description="CMU ARCTIC speaker slt, US English female (festival HTS voice, 32 kHz native)",
         kind="tts", role="twin", minute=True, licence=EST2003),
    dict(speaker="fest_ked", engine="festival", voice="ked_diphone", package="festvox-kdlpc16k", person="ked",
         description="CSTR diphone speaker ked, US English male (festival residual-LPC diphone voice)",
         kind="tts", role="heldout", minute=True, licence=EDINBURGH),
    dict(speaker="espeak_us", engine="espeak-ng", voice="en-us", package="espeak-ng-data", person=None,
         description="espeak-ng en-us, formant synthesis (no human voice behind it)",
         kind="synthetic", role="heldout", minute=False, licence=ESPEAK),
    dict(speaker="espeak_us_f3", engine="espeak-ng", voice="en-us+f3", package="espeak-ng-data", person=None,
         description="espeak-ng en-us with the female variant f3, formant synthesis",
         kind="synthetic", role="heldout", minute=False, licence=ESPEAK),
    dict(speaker="espeak_gb_m3", engine="espeak-ng", voice="en-gb+m3", package="espeak-ng-data", person=None,
         description="espeak-ng en-gb with the male variant m3, formant synthesis",
         kind="synthetic", role="heldout", minute=False, licence=ESPEAK),
]

# Real recordings in pocketsphinx-testdata, grouped by speaker (grouping checked with Resemblyzer:
# same-group cosine similarity 0.71-0.93, across groups 0.35-0.72). Transcripts are the package's
# (cards/cards.transcription, librivox/transcription; the turtle and tidigits test expectations),
# cased and punctuated. numbers.raw is left out: its digits could not be confirmed.
RECORDINGS = {
    "ps_cards": dict(description="playing-card commands, US English male (CMU Sphinx test recordings)", person="cards",
                     licence=PSDATA,
                     clips=[("cards/001.wav", "Ten of clubs."),
                            ("cards/002.wav", "Four queen of clubs."),
                            ("cards/003.wav", "Seven of clubs."),
                            ("cards/004.wav", "Five five."),
                            ("cards/005.wav", "Eight of spades, four of clubs, seven of hearts.")]),
    "ps_librivox": dict(description="LibriVox reader of Sense and Sensibility, chapter 1, English male",
                        person="librivox", licence=LIBRIVOX,
                        clips=[("librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
                                "And Mister John Dashwood had then leisure to consider how much there might be "
                                "prudently in his power to do for them."),
                               ("librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
                                "He was not an ill disposed young man."),
                               ("librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
                                "Unless to be rather cold hearted and rather selfish is to be ill disposed."),
                               ("librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
                                "Had he married a more amiable woman, he might have been made still more "
                                "respectable than he was."),
                               ("librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
                                "He might even have been made amiable himself.")]),
    "ps_dhd": dict(description="short commands and digits, US English male (CMU Sphinx test recordings, speaker 'dhd')",
                   person="dhd", licence=PSDATA,
                   clips=[("goforward.raw", "Go forward ten meters."),
                          ("something.raw", "Go somewhere and do something."),
                          ("tidigits/dhd.2934z.raw", "Two nine three four zero.")]),
}

SPLITS = {
    "train": "training speakers, training sentences",
    "test_sentence": "training speakers, held-out sentences (no training clip has these texts)",
    "test_speaker": "held-out speakers (no clip of theirs, nor of the same person, is in train)",
    "twin": "a training person through another engine (flite or festival): neither trained on nor held out",
}


def read_sentences(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"): continue
        sid, text = line.split("\t")
        out[sid] = text.strip()
    return out


def package_version(name: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
    if r.returncode: sys.exit(f"Debian package {name} is not installed: run `sh datasets/install_voices.sh` as root.")
    return r.stdout.strip()


def synthesize(engine: str, voice: str, text: str, wav: Path) -> None:
    "Speak `text` with one engine/voice into the WAV file `wav`."
    txt = wav.with_suffix(".txt")
    txt.write_text(text + "\n", encoding="utf-8")
    if engine == "flite": cmd = ["flite", "-voice", voice, "-f", str(txt), "-o", str(wav)]
    elif engine == "festival": cmd = ["text2wave", "-eval", f"(voice_{voice})", str(txt), "-o", str(wav)]
    elif engine == "espeak-ng": cmd = ["espeak-ng", "-v", voice, "-f", str(txt), "-w", str(wav)]
    else: raise ValueError(engine)
    subprocess.run(cmd, check=True, capture_output=True)


def read_any(path: Path) -> tuple[np.ndarray, int]:
    "Read a WAV/FLAC file or a headerless 16 kHz 16-bit little-endian .raw file as mono float64."
    if path.suffix == ".raw": return np.fromfile(path, "<i2").astype(np.float64) / 32768.0, 16000
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    return x.mean(axis=1), sr


def to_rate(x: np.ndarray, sr: int, rate: int = RATE) -> np.ndarray:
    "Polyphase resampling (deterministic) to `rate`."
    if sr == rate: return x
    g = np.gcd(sr, rate)
    return resample_poly(x, rate // g, sr // g)


def trim_and_normalise(x: np.ndarray, sr: int) -> np.ndarray:
    "Cut leading/trailing silence (keeping PAD_S of it), remove DC, scale the peak to PEAK."
    x = x - x.mean()
    hop = sr // 100
    n = len(x) // hop
    rms = np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -TRIM_DB)
    pad = int(PAD_S * sr)
    start = max(0, loud[0] * hop - pad)
    end = min(len(x), (loud[-1] + 1) * hop + pad)
    x = x[start:end]
    return x * (PEAK / np.abs(x).max())


def write_clip(x: np.ndarray, rel: str) -> float:
    path = HERE / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return round(len(x) / RATE, 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-old", action="store_true", help="do not delete audio/ before building")
    args = ap.parse_args(argv)
    sentences = read_sentences(HERE / "sentences.tsv")
    train_ids = [s for s in sentences if s not in HELDOUT_SENTENCES]
    for tool in ("flite", "text2wave", "espeak-ng"):
        if not shutil.which(tool): sys.exit(f"{tool} not found: run `sh datasets/install_voices.sh` as root.")
    if not PS_DATA.is_dir(): sys.exit(f"{PS_DATA} not found: run `sh datasets/install_voices.sh` as root.")
    if not args.keep_old and (HERE / "audio").exists(): shutil.rmtree(HERE / "audio")

    rows, clips, speakers = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, v in enumerate(TTS_VOICES):
            spk = v["speaker"]
            def speak(sid, split):
                wav = Path(tmp) / f"{spk}_{sid}.wav"
                synthesize(v["engine"], v["voice"], sentences[sid], wav)
                x, sr = read_any(wav)
                x = trim_and_normalise(to_rate(x, sr), RATE)
                rel = f"audio/{spk}/{spk}_{sid}.flac"
                rows.append((rel, spk, "en", sentences[sid]))
                clips.append(dict(path=rel, speaker=spk, split=split, sentence=sid, duration=write_clip(x, rel)))
                return clips[-1]["duration"], sr
            heldout_split, pool_split = ROLE_SPLITS[v["role"]]
            spoken = [speak(sid, heldout_split) for sid in HELDOUT_SENTENCES]
            native = spoken[0][1]
            held = sum(d for d, _ in spoken)
            needed = 0.0 if not v["minute"] else MIN_SECONDS - (0.0 if v["role"] != "heldout" else held)
            i, got = 0, 0.0
            while got < needed:  # a window over the training sentences that starts 9 sentences later per voice
                got += speak(train_ids[(9 * k + i) % len(train_ids)], pool_split)[0]
                i += 1
            speakers[spk] = dict(kind=v["kind"], role=v["role"], person=v["person"], description=v["description"],
                                 engine=v["engine"], voice=v["voice"], native_rate=native,
                                 package=f"{v['package']} {package_version(v['package'])}",
                                 engine_package=f"{v['engine']} {package_version(v['engine'])}",
                                 licence=v["licence"])
            print(f"{spk:14s} {held + got:6.1f} s ({got:.1f} s from the training sentences)", flush=True)

    psver = package_version("pocketsphinx-testdata")
    for spk, rec in RECORDINGS.items():
        for i, (src, text) in enumerate(rec["clips"], 1):
            x, sr = read_any(PS_DATA / src)
            x = trim_and_normalise(to_rate(x, sr), RATE)
            rel = f"audio/{spk}/{spk}_r{i:02d}.flac"
            rows.append((rel, spk, "en", text))
            clips.append(dict(path=rel, speaker=spk, split="test_speaker", sentence=None, duration=write_clip(x, rel),
                              source=f"/usr/share/pocketsphinx/test/data/{src}"))
        speakers[spk] = dict(kind="recorded", role="heldout", person=rec["person"], description=rec["description"],
                             engine=None, voice=None, native_rate=16000,
                             package=f"pocketsphinx-testdata {psver}", engine_package=None, licence=rec["licence"])
        print(f"{spk:14s} {sum(c['duration'] for c in clips if c['speaker'] == spk):6.1f} s", flush=True)

    order = {spk: i for i, spk in enumerate(speakers)}
    rows.sort(key=lambda r: (order[r[1]], r[0]))
    clips.sort(key=lambda c: (order[c["speaker"]], c["path"]))
    (HERE / "corpus.list").write_text("".join("|".join(r) + "\n" for r in rows), encoding="utf-8")
    train_people = {speakers[s]["person"] for s in speakers if speakers[s]["role"] == "train"}
    splits = dict(
        description="Which clip of corpus.list belongs to which split. Rules: " + "; ".join(f"{k}: {v}" for k, v in SPLITS.items()),
        splits=SPLITS,
        sample_rate=RATE,
        train_speakers=sorted(s for s in speakers if speakers[s]["role"] == "train"),
        heldout_speakers=sorted(s for s in speakers if speakers[s]["role"] == "heldout"),
        twin_speakers=sorted(s for s in speakers if speakers[s]["role"] == "twin"),
        heldout_sentences=HELDOUT_SENTENCES,
        clips=clips,
    )
    assert not any(speakers[s]["person"] in train_people for s in splits["heldout_speakers"])
    assert len(train_people) == len(splits["train_speakers"]), "one training speaker per person"
    assert all(speakers[s]["person"] in train_people for s in splits["twin_speakers"])
    (HERE / "splits.json").write_text(json.dumps(splits, indent=1) + "\n", encoding="utf-8")
    (HERE / "speakers.json").write_text(json.dumps(speakers, indent=1) + "\n", encoding="utf-8")
    (HERE / "licenses").mkdir(exist_ok=True)
    for pkg in LICENSED_PACKAGES:
        shutil.copyfile(f"/usr/share/doc/{pkg}/copyright", HERE / "licenses" / f"{pkg}.copyright")
    total = sum(p.stat().st_size for p in (HERE / "audio").rglob("*.flac"))
    print(f"{len(rows)} clips, {sum(c['duration'] for c in clips) / 60:.1f} min, audio {total / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
