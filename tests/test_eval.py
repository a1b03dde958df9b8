"""Chapter 12's measures on inputs whose answers are known: word alignment and error counts, skipped/repeated words,
token loops, pitch of a synthetic vowel with a known glide, speaker identity of corpus voices, the report and the
blind A/B test's files."""
import json, math

import numpy as np
import pytest
import torch

from gpt_sovits_nb.core import ConfigError
from gpt_sovits_nb.audio import synthetic_vowel, load_audio
from gpt_sovits_nb.corpus import load_corpus, corpus_dir
from gpt_sovits_nb import eval as E


def test_asr_words_and_word_errors():
    assert E.asr_words("It's 42 degrees -- well-known!") == ["it's", "forty", "two", "degrees", "well", "known"]
    e = E.word_errors("the cat sat on the mat", "the bat sat on on the mat")
    assert (e["words"], e["sub"], e["del"], e["ins"], e["errors"]) == (6, 1, 0, 1, 2)
    assert sorted(o[0] for o in e["ops"]) == sorted(["ok", "sub", "ok", "ok", "ins", "ok", "ok"])
    assert ("ins", None, "on") in e["ops"] and ("sub", "cat", "bat") in e["ops"]
    assert E.word_errors("", "")["wer"] == 0.0 and E.word_errors("", "hello")["wer"] == 1.0
    assert E.word_error_rate(["one two", "three four five six"], ["one two", ""]) == pytest.approx(4 / 6)
    with pytest.raises(ConfigError): E.word_error_rate(["a"], [])
    with pytest.raises(ConfigError): E.word_error_rate([""], [""])


def test_skips_repeats_and_loops():
    r = E.skips_and_repeats("go forward ten meters now", "go ten meters meters now")
    assert r == {"skipped": ["forward"], "repeated": ["meters"]}
    # words missing at the very start or end are not "skipped between heard words"
    assert E.skips_and_repeats("please close the window", "close the")["skipped"] == []
    assert E.token_loops([1, 2] * 5) == [(0, 2, 5)]
    assert E.token_loops([3] * 30) == []                      # a held sound (one token repeated) is not a loop
    assert E.token_loops(torch.tensor([[9, 8, 7, 6, 5, 4]])) == []


def test_pitch_of_a_known_glide():
    wav = synthetic_vowel(2.0, 16000, f0=(200.0, 100.0))
    t, f0 = E.f0_contour(wav, 16000)
    v = np.isfinite(f0)
    assert v.mean() > 0.8 and len(t) == len(f0)
    mid = f0[len(f0) // 2 - 5: len(f0) // 2 + 5]
    assert np.nanmedian(mid) == pytest.approx(150, rel=0.08)     # halfway down the glide
    st = E.f0_stats(f0)
    assert 120 < st["median_hz"] < 180 and st["spread_st"] > 2
    assert E.f0_correlation(f0, f0) == pytest.approx(1.0) and E.f0_correlation(f0, f0[::-1]) < -0.9
    assert math.isnan(E.f0_correlation(np.full(50, np.nan), f0))


def test_nearest_speaker_and_report():
    cents = E.speaker_centroids(["flite_awb", "flite_slt"], per_speaker=3)
    clips = load_corpus(split="test_sentence", speakers=["flite_awb", "flite_slt"])[:4:3]
    outs = [{"wav": load_audio(c.path, 16000), "sr": 16000, "text": c.text, "speaker": c.speaker,
             "ref_wav": load_audio(c.path, 16000), "ref_sr": 16000, "ref_text": c.text, "tokens": torch.arange(20)} for c in clips]
    rep = E.evaluate(outs, asr="pocketsphinx", centroids=cents)
    s = rep.summary()
    assert s["outputs"] == 2 and s["right_voice"] == 1.0 and s["similarity"] > 0.99 and s["f0_corr"] > 0.99 and s["loops"] == 0
    assert s["wer"] <= 0.25 and "pocketsphinx" in rep.asr and "<table>" in rep._repr_html_()
    assert rep.plot() is not None


def test_right_person_is_the_voice_up_to_the_engine():
    "Two engines of one person (speakers.json's person) count as the right person, not as the right voice; other names stand alone."
    assert E.person_of("flite_kal16") == E.person_of("fest_kal") == "kal" and E.person_of("flite_slt") == E.person_of("fest_slt_hts")
    assert E.person_of("flite_awb") != E.person_of("flite_rms") and E.person_of("my_voice") == "my_voice"
    item = lambda asked, nearest: E.EvalItem("hi", asked, "hi", 1, 0, nearest=nearest)
    cases = [item("flite_kal16", "fest_kal"), item("flite_slt", "flite_slt"), item("flite_awb", "flite_rms"), item(None, "flite_rms")]
    assert [(i.right_voice, i.right_person) for i in cases] == [(False, True), (True, True), (False, False), (None, None)]
    s = E.EvalReport(cases, "x").summary()
    assert (s["right_voice"], s["right_person"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_voice_margins_of_real_recordings():
    """Among the training speakers (one engine per person) every held-out recording stands clear of the others; with a twin
    among the speakers, Kevin Lenzo's two engines sit about as close as one voice."""
    cents = E.speaker_centroids(["flite_awb", "fest_kal"], per_speaker=4)
    clips = load_corpus(split="test_sentence", speakers=["flite_awb", "fest_kal"])[::3]
    assert min(m for _, m in E.voice_margins(clips, cents)) > 0.1
    with_twin = {**cents, **E.speaker_centroids(["flite_kal16"], per_speaker=4, split="twin")}
    m = dict(E.voice_margins(clips, with_twin))
    assert m["flite_awb"] > 0.1 and abs(m["fest_kal"]) < 0.06


def test_training_speakers_are_distinct_people():
    "The default centroids and held-out requests are the corpus's training speakers: one engine per person, twins left out."
    speakers = json.loads((corpus_dir() / "splits.json").read_text())["train_speakers"]
    assert {r["speaker"] for r in E.heldout_requests(sentences=1)} == set(speakers) == {"flite_awb", "flite_rms", "flite_slt", "fest_kal"}
    assert len({E.person_of(s) for s in speakers}) == len(speakers)


def test_checkpoint_picker():
    rows = [{"step": 100, "wer": 0.5, "right_voice": 1.0}, {"step": 200, "wer": 0.3, "right_voice": 0.8},
            {"step": 300, "wer": 0.3, "right_voice": 1.0}]
    assert E.best_checkpoint(rows)["step"] == 300
    assert E.plot_checkpoint_scores(rows) is not None
    with pytest.raises(ConfigError): E.best_checkpoint([])


def test_heldout_requests_use_training_references():
    reqs = E.heldout_requests(sentences=2)
    train_speakers = json.loads((corpus_dir() / "splits.json").read_text())["train_speakers"]
    assert len(reqs) == 2 * len(train_speakers) == 8 and {r["speaker"] for r in reqs} == set(train_speakers)
    assert all(r["ref"].split == "train" and 3 <= r["ref"].duration <= 10 for r in reqs)
    train_texts = {c.text for c in load_corpus(split="train")}
    assert not {r["text"] for r in reqs} & train_texts


def test_ab_files(tmp_path):
    a = [{"text": f"t{k}", "wav": np.zeros(10), "sr": 16000} for k in range(6)]
    b = [dict(x) for x in a]
    trials = E.ab_trials(a, b, names=("new", "old"), seed=1)
    assert [t["trial"] for t in trials] == list(range(6)) and {t["first_system"] for t in trials} == {"new", "old"}
    path = tmp_path / "votes.jsonl"
    for t in trials: E.save_rating(path, t, "first" if t["first_system"] == "new" else "second")   # always prefer "new"
    s = E.ab_summary(path)
    assert s == {"trials": 6, "wins": {"new": 6}, "ties": 0, "p_value": pytest.approx(2 / 64)}
    E.save_rating(path, trials[0], "same")                     # a changed vote: the last one counts
    assert E.ab_summary(path)["ties"] == 1 and E.ab_summary(path)["wins"] == {"new": 5}
    assert all(json.loads(l)["choice"] in ("first", "second", "same") for l in path.read_text().splitlines())
    with pytest.raises(ConfigError): E.save_rating(path, trials[0], "A")
    with pytest.raises(ConfigError): E.ab_trials(a, b[:2])
