"""The nano model that ships with the library: its files, its offline default, and its quality on held-out sentences
(pocketsphinx word error rate; Resemblyzer's nearest training speaker is the speaker asked for)."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gpt_sovits_nb.checkpoints import checkpoint_info, nano_weights, nano_dir, load_gpt, load_sovits
from gpt_sovits_nb.core import NANO
from gpt_sovits_nb import eval as E

WER_BAR = 0.35          # the quality bar; the model card reports the measured value


def test_shipped_files():
    g, s = nano_weights()
    assert g.stat().st_size + s.stat().st_size <= 25e6
    gi, si = checkpoint_info(g), checkpoint_info(s)
    assert (gi.kind, gi.version, si.kind, si.version) == ("gpt", NANO, "sovits", NANO)
    assert gi.dtype == si.dtype == "float16"
    gpt, sov = load_gpt(g), load_sovits(s)
    assert gpt.config.EOS == sov.config.codebook_size and sov.config.sampling_rate == 22050
    for m in (gpt, sov): assert all(torch.isfinite(p).all() for p in m.state_dict().values() if p.is_floating_point())
    card = (nano_dir() / "MODEL_CARD.md").read_text()
    for words in ("word error rate", "Resemblyzer", "licen", "steps", "minutes"): assert words in card


@pytest.fixture(scope="module")
def nano():
    from gpt_sovits_nb.pipeline import VoiceCloner
    return VoiceCloner.from_pretrained("nano", device="cpu")


def test_quality_on_heldout_sentences(nano):
    "Three held-out sentences in each of the six training voices: intelligible, and in the voice asked for."
    reqs = E.heldout_requests(sentences=["s03", "s24", "s40"])
    outs = E.speak_heldout(nano, reqs)
    rep = E.evaluate(outs, asr="pocketsphinx", prosody=False)
    s = rep.summary()
    detail = [(i.speaker, i.nearest, i.text, i.heard) for i in rep.items]
    assert s["wer"] <= WER_BAR, (s, detail)
    assert s["right_voice"] == 1.0, (s, detail)
    assert all(o["sr"] == 22050 and torch.isfinite(o["wav"]).all() for o in outs)


def test_offline_default_is_nano(tmp_path):
    "Offline, with an empty Hugging Face cache, `gsv-nb say` speaks with the nano model and says so in one line."
    out = tmp_path / "hello.wav"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    env.pop("HF_HUB_CACHE", None); env.pop("HUGGINGFACE_HUB_CACHE", None)
    r = subprocess.run([sys.executable, "-m", "gpt_sovits_nb.cli", "say", "Please close the window.", "--ref", "corpus:flite_slt",
                        "--out", str(out), "--seed", "1", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    notes = [l for l in r.stderr.splitlines() if "nano" in l]
    assert len(notes) == 1 and notes[0].startswith("note:"), r.stderr
    wav, sr = sf.read(out)
    assert sr == 22050 and 0.8 < len(wav) / sr < 5
    heard = E.transcribe_speech(wav, sr, asr="pocketsphinx")
    assert E.word_errors("Please close the window.", heard)["errors"] <= 1, heard


def test_from_pretrained_falls_back_offline(tmp_path, monkeypatch, capsys):
    from gpt_sovits_nb.pipeline import VoiceCloner, pick_version
    monkeypatch.setenv("HF_HUB_OFFLINE", "1"); monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert pick_version(None)[0] == NANO and pick_version("v2Pro") == ("v2Pro", None)
    cloner = VoiceCloner.from_pretrained(device="cpu")
    assert cloner.version == NANO and "nano" in capsys.readouterr().out
    from gpt_sovits_nb.core import WeightsNotFoundError
    with pytest.raises(WeightsNotFoundError, match="nano"):        # a released version by name never falls back
        VoiceCloner.from_pretrained("v2", device="cpu")
