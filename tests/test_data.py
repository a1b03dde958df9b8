"""Tests of gpt_sovits_nb.data (nbs/10_data.ipynb): slicing, VAD, quality metrics and report, list files and
transcripts, speech recognition, and the cached, resumable feature extraction."""
from __future__ import annotations
import dataclasses, json, math, os, re, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gpt_sovits_nb.core import AudioError, ConfigError, GSVError, TextError, WeightsNotFoundError
from gpt_sovits_nb.corpus import CorpusError, ListItem, load_corpus
from gpt_sovits_nb import data as D

SR = 32000
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")   # Debian: pocketsphinx-testdata


def tone(sec, f=220.0, amp=0.5, sr=SR):
    return (amp * np.sin(2 * np.pi * f * np.arange(int(round(sec * sr))) / sr)).astype(np.float32)


def zeros(sec, sr=SR):
    return np.zeros(int(round(sec * sr)), np.float32)


def librivox():
    "[(wav16k float32, transcript, path)] of the five real LibriVox recordings in the embedded corpus (speaker ps_librivox)."
    out = []
    for c in load_corpus(speakers="ps_librivox"):
        x, sr = sf.read(c.path, dtype="float32")
        assert sr == 16000
        out.append((x, c.text, c.path))
    assert len(out) == 5
    return out


# ---------------------------------------------------------------- slicing

def test_frame_rms_centred_frames():
    x = np.full(1000, 0.5, np.float32)
    r = D.frame_rms(x, 100, 10)
    assert len(r) == 101
    assert np.isclose(r[0], 0.5 / math.sqrt(2)) and np.allclose(r[5:96], 0.5)
    assert len(D.frame_rms(x, 99, 10)) == 1 + (1000 - 1) // 10


@pytest.mark.parametrize("gap, expected", [
    # 400 ms pause (37 frames <= max_sil_kept 50): one cut at its first (quietest) frame 502, nothing removed
    (0.4, lambda n: [(0, 160640), (160640, n)]),
    # 1 s pause (97 frames, between 1x and 2x max_sil_kept): frames 502..549 removed
    (1.0, lambda n: [(0, 160640), (175680, n)]),
    # 3 s pause (frames 502..798, the second tone starts at 256000 = 320 * 800): frames 502..749 removed,
    # the quietest of the last 50 silent frames, so ~500 ms are kept before the second tone
    (3.0, lambda n: [(0, 160640), (239680, n)]),
])
def test_slicer_exact_cut_points(gap, expected):
    # frame i (hop 320, window 1280) covers samples [320 i - 640, 320 i + 640): the first frame entirely in the
    # silence starting at 160000 is 502; argmin over all-zero frames takes the first one
    sig = np.concatenate([tone(5), zeros(gap), tone(5)])
    assert D.slice_on_silence(sig, SR) == expected(len(sig))


def test_slicer_leading_and_trailing_silence():
    sig = np.concatenate([zeros(2), tone(5), zeros(2)])
    # leading run: frames 0..198 are silent (frame 199 reaches the tone at 64000), longer than 2 x 50 frames:
    # cut at the quietest of its last 50 frames (149); trailing run from frame 702: cut at its quietest first frame
    assert D.slice_on_silence(sig, SR) == [(149 * 320, 702 * 320)]
    # a short leading silence (<= 500 ms) is kept
    sig = np.concatenate([zeros(0.3), tone(5)])
    assert D.slice_on_silence(sig, SR) == [(0, len(sig))]


def test_slicer_min_interval_and_min_length():
    sig = np.concatenate([tone(5), zeros(0.2), tone(5)])            # 200 ms < 300 ms: no cut
    assert D.slice_on_silence(sig, SR) == [(0, len(sig))]
    sig = np.concatenate([tone(2), zeros(1), tone(2), zeros(1), tone(5)])
    segs = D.slice_on_silence(sig, SR)                                # 2 s clips join until >= 4 s
    assert len(segs) == 2 and segs[0][0] == 0
    assert 5 * SR <= segs[0][1] <= 5 * SR + 1000 and segs[1][1] == len(sig)
    # quieter than -34 dBFS counts as silence: a tone at -40 dBFS between loud tones is a pause
    sig = np.concatenate([tone(5), tone(1, amp=0.01), tone(5)])
    assert len(D.slice_on_silence(sig, SR)) == 2
    # other rates work (hop = round(sr * 10 ms))
    sig44 = np.concatenate([tone(5, sr=44100), zeros(1, 44100), tone(5, sr=44100)])
    segs = D.slice_on_silence(sig44, 44100)
    assert len(segs) == 2 and abs(segs[0][1] - 5 * 44100) <= 441 * 3


def test_slicer_bad_parameters_and_edge_cases():
    with pytest.raises(ConfigError, match="min_length_ms"):
        D.slice_on_silence(tone(1), SR, min_length_ms=100)
    with pytest.raises(ConfigError, match="max_sil_kept_ms"):
        D.slice_on_silence(tone(1), SR, max_sil_kept_ms=5)
    assert D.slice_on_silence(np.zeros(0, np.float32), SR) == []
    assert D.slice_on_silence(tone(0.01), SR) == [(0, 320)]
    assert D.slice_on_silence(torch.from_numpy(tone(1))[None], SR) == [(0, SR)]   # [1, S] tensors too


def test_slice_recordings_writes_peak_mixed_clips(tmp_path):
    rec = tmp_path / "long take.wav"
    sig = np.concatenate([tone(5, amp=0.4), zeros(1), tone(5, amp=0.4)])
    sig44 = np.concatenate([tone(5, amp=0.4, sr=44100), zeros(1, 44100), tone(5, amp=0.4, sr=44100)])
    sf.write(rec, np.stack([sig44, sig44], 1), 44100)                # stereo 44.1 kHz
    out = D.slice_recordings(rec, tmp_path / "clips")
    assert len(out) == 2 and all(p.exists() for p in out)
    assert re.fullmatch(r"long take_\d{10}_\d{10}\.wav", out[0].name)
    x, sr = sf.read(out[0], dtype="float32")
    assert sr == 32000 and x.ndim == 1
    assert abs(np.abs(x).max() - (0.9 * 0.25 + 0.75 * 0.4)) < 2e-3   # the reference's peak mix
    assert rec.exists()                                               # the source is never touched
    bad = tmp_path / "broken.wav"; bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioError, match="broken.wav"):
        D.slice_recordings(bad, tmp_path / "clips2")
    with pytest.raises(AudioError, match="missing.wav"):
        D.slice_recordings(tmp_path / "missing.wav", tmp_path / "clips2")


# ---------------------------------------------------------------- levels

def test_peak_mix_and_loudness():
    x = tone(1, amp=0.5)
    assert np.isclose(np.abs(D.normalize_peak(x)).max(), 0.6, atol=1e-6)
    assert np.isclose(np.abs(D.normalize_peak(x, 0.95, 0.5)).max(), 0.95 * 0.5 + 0.25, atol=1e-6)
    assert np.isclose(np.abs(D.normalize_peak(3 * x)).max(), 0.975, atol=1e-6)
    assert np.all(D.normalize_peak(zeros(1)) == 0)
    assert np.isclose(D.loudness_db(x, SR), 20 * math.log10(0.5 / math.sqrt(2)), atol=0.01)
    assert abs(D.loudness_db(np.concatenate([tone(5), zeros(5)]), SR) - D.loudness_db(x, SR)) < 0.2
    y = D.normalize_loudness(x * 0.01, SR, target_db=-20)
    assert np.isclose(D.loudness_db(y, SR), -20, atol=0.01)
    assert np.abs(D.normalize_loudness(x, SR, target_db=0)).max() <= 0.99 + 1e-6
    assert D.loudness_db(zeros(1), SR) == -200


# ---------------------------------------------------------------- VAD

def test_vad_real_speech_vs_silence():
    x, _, _ = librivox()[1]                                           # "he was not an ill disposed young man", 3 s
    segs = D.speech_segments(x, 16000)
    assert segs, "no speech found in a real recording"
    speech = sum(b - a for a, b in segs) / len(x)
    assert 0.5 < speech <= 1.0
    # padded with 2 s of silence on each side, at 32 kHz: the speech is found in the middle
    y = np.concatenate([zeros(2, 16000), x, zeros(2, 16000)])
    y32 = D._mono(D.resample(torch.from_numpy(y)[None], 16000, 32000))
    segs = D.speech_segments(y32, 32000)
    assert segs[0][0] >= 1.9 * 32000 and segs[-1][1] <= (2.1 * 16000 + len(x)) * 2
    assert D.speech_segments(zeros(3), SR) == []
    noise = (0.05 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    assert D.speech_segments(noise, SR) == []
    assert D.speech_segments(zeros(0.01), SR) == []


# ---------------------------------------------------------------- metrics

def test_clipping_ratio_exact():
    t = np.arange(3 * SR) / SR
    hot = np.clip(2 * np.sin(2 * np.pi * 197.3 * t), -1, 1).astype(np.float32)
    assert abs(D.clipping_ratio(hot) - (1 - 2 / np.pi * np.arcsin(0.4995))) < 5e-4
    assert abs(D.clipping_ratio(0.5 * hot) - (1 - 2 / np.pi * np.arcsin(0.5))) < 5e-4   # clipped, then turned down
    assert D.clipping_ratio(np.sin(2 * np.pi * 197.3 * t).astype(np.float32) * 0.9) == 0.0
    assert D.clipping_ratio(zeros(1)) == 0.0 and D.clipping_ratio(np.zeros(0)) == 0.0


def test_snr_and_silence_on_synthetic_noise():
    rng = np.random.default_rng(1)
    t = np.arange(3 * SR) / SR
    for sigma in (0.01, 0.05):
        x = (np.where(t < 2, 0.5 * np.sin(2 * np.pi * 197.3 * t), 0) + sigma * rng.standard_normal(len(t))).astype(np.float32)
        m = D.measure_clip(x, SR, vad=False)
        assert abs(m["snr_db"] - 10 * math.log10(0.125 / sigma ** 2)) < 0.3, m
        assert m["snr_method"] == "pauses" and abs(m["silence"] - 1 / 3) < 0.02
    # no pauses: the percentile method (it errs low)
    x = (tone(3) + 0.01 * rng.standard_normal(3 * SR)).astype(np.float32)
    m = D.measure_clip(x, SR, vad=False)
    assert m["snr_method"] == "percentile" and m["silence"] == 0.0
    # digital silence between tones: the -100 dBFS floor caps the SNR
    m = D.measure_clip(np.concatenate([tone(2), zeros(1)]), SR, vad=False)
    assert 85 < m["snr_db"] <= 100


def test_measure_levels():
    m = D.measure_clip(tone(2, amp=0.25), SR, vad=False)
    assert abs(m["peak_db"] - 20 * math.log10(0.25)) < 0.01
    assert abs(m["rms_db"] - 20 * math.log10(0.25 / math.sqrt(2))) < 0.01
    assert abs(m["duration"] - 2.0) < 1e-9 and m["clipping"] == 0.0


def _write(path, x, sr=SR, **kw):
    sf.write(path, x, sr, **kw)
    return path


def test_check_clip_flags(tmp_path):
    rng = np.random.default_rng(3)
    base = np.concatenate([zeros(0.5), tone(4), zeros(0.5)]) + 0.001 * rng.standard_normal(5 * SR).astype(np.float32)
    ok = D.check_clip(_write(tmp_path / "ok.wav", base), vad=False)
    assert ok.usable and not [p for p in ok.problems if p.severity == "error"], ok.problems
    assert ok.sample_rate == SR and ok.channels == 1

    hot = D.check_clip(_write(tmp_path / "hot.wav", np.clip(base * 4, -1, 1)), vad=False)
    assert not hot.usable and "clipped" in hot.reasons("error") and "lower input gain" in hot.reasons()
    pct = float(re.search(r"clipped ([\d.]+)%", hot.reasons()).group(1))
    assert abs(pct - 100 * hot.clipping) < 0.1 * 100 * hot.clipping

    noisy = D.check_clip(_write(tmp_path / "noisy.wav", base + 0.1 * rng.standard_normal(len(base)).astype(np.float32)), vad=False)
    assert not noisy.usable and [p.code for p in noisy.problems if p.severity == "error"] == ["noisy"]

    silent = D.check_clip(_write(tmp_path / "silent.wav", zeros(3)), vad=False)
    assert not silent.usable and silent.problems[0].code == "silent"

    short = D.check_clip(_write(tmp_path / "short.wav", tone(0.4)), vad=False)
    assert not short.usable and "too_short" in [p.code for p in short.problems]
    longc = D.check_clip(_write(tmp_path / "long.wav", np.tile(base, 4)), vad=False)
    assert longc.usable and "long" in [p.code for p in longc.problems]

    stereo = D.check_clip(_write(tmp_path / "stereo.wav", np.stack([base, base], 1)), vad=False)
    assert stereo.channels == 2 and stereo.usable and "stereo" in [p.code for p in stereo.problems]

    x8 = D._mono(D.resample(torch.from_numpy(base)[None], SR, 8000))
    low = D.check_clip(_write(tmp_path / "phone.wav", x8, 8000), vad=False)
    assert low.sample_rate == 8000 and not low.usable and low.problems[0].code == "low_rate"
    x22 = D._mono(D.resample(torch.from_numpy(base)[None], SR, 22050))
    mid = D.check_clip(_write(tmp_path / "mid.wav", x22, 22050), vad=False)
    assert mid.usable and "low_rate" in [p.code for p in mid.problems]

    (tmp_path / "text.wav").write_text("not audio")
    bad = D.check_clip(tmp_path / "text.wav")
    assert not bad.usable and bad.problems[0].code == "unreadable" and "text.wav" in bad.reasons()
    missing = D.check_clip(tmp_path / "nope.wav")
    assert not missing.usable and "no such file" in missing.reasons()
    nan = base.copy(); nan[100] = np.nan
    damaged = D.check_clip(_write(tmp_path / "nan.wav", nan, subtype="FLOAT"))
    assert not damaged.usable and damaged.problems[0].code == "damaged"
    empty = D.check_clip(_write(tmp_path / "empty.wav", np.zeros(0, np.float32)))
    assert not empty.usable
    assert D.check_clip(_write(tmp_path / "t.wav", base), text="  ", vad=False).problems[-1].code == "no_text"
    # nothing was deleted
    assert len(list(tmp_path.iterdir())) == 13


def test_check_clip_vad_on_real_speech(tmp_path):
    x, text, path = librivox()[0]
    q = D.check_clip(path, text=text)
    assert q.usable, q.problems
    assert q.speech_detector == "vad" and 0 <= q.silence < 0.3 and 15 < q.snr_db < 60
    assert q.sample_rate == 16000 and "low_rate" in [p.code for p in q.problems]   # a warning: 16 kHz source
    muted = D.check_clip(_write(tmp_path / "hum.wav", tone(3, f=50, amp=0.01)))
    assert not muted.usable and "no_speech" in [p.code for p in muted.problems]


# ---------------------------------------------------------------- report

def _q(name, seconds, errors=(), warnings=()):
    q = D.ClipQuality(path=f"/data/{name}.wav", duration=seconds, sample_rate=SR, channels=1, text=f"text of {name}",
                      speaker="me", lang="en")
    q.problems = [D.Problem(c, "error", c, "fix") for c in errors] + [D.Problem(c, "warning", c, "fix") for c in warnings]
    return q


def test_report_totals_and_one_minute_check(tmp_path):
    clips = [_q("a", 20), _q("b", 25, warnings=["noisy"]), _q("c", 14), _q("d", 30, errors=["clipped"]), _q("e", 0.3, errors=["too_short"])]
    r = D.DatasetReport(clips)
    assert [c.name for c in r.usable] == ["a.wav", "b.wav", "c.wav"]
    assert math.isclose(r.usable_minutes, 59 / 60) and math.isclose(r.total_minutes, 89.3 / 60)
    assert not r.enough and "Not enough" in r.summary() and "3 of 5 clips usable" in r.summary()
    r2 = D.DatasetReport(clips + [_q("f", 1.0)])
    assert r2.enough and math.isclose(r2.usable_minutes, 1.0) and "Enough" in r2.summary()
    assert "clipped" in r.summary() and "too_short" in r.summary()
    html = r._repr_html_()
    assert html.count("<tr") == 6 and "excluded: clipped" in html
    # the training list holds the usable clips only
    lst = r.write_list(tmp_path / "train.list")
    entries = D.load_list(lst)
    assert [Path(e.path).name for e in entries] == ["a.wav", "b.wav", "c.wav"] and entries[0].text == "text of a"
    # CSV / JSON
    r.to_csv(tmp_path / "r.csv"); r.to_json(tmp_path / "r.json")
    j = json.loads((tmp_path / "r.json").read_text())
    assert len(j["clips"]) == 5 and j["enough"] is False and j["clips"][3]["errors"].startswith("clipped")
    assert (tmp_path / "r.csv").read_text().count("\n") == 6
    fig = r.plot()
    assert len(fig.axes) == 4 and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    # a usable clip without text cannot go to the training list
    with pytest.raises(TextError, match="no transcript"):
        D.DatasetReport([_q("g", 10)] + [D.ClipQuality(path="/x/h.wav", duration=5.0)]).write_list(tmp_path / "x.list")


def test_quality_report_from_files_and_list(tmp_path):
    rng = np.random.default_rng(5)
    good = lambda sec: (np.concatenate([zeros(0.3), tone(sec - 0.6), zeros(0.3)]) + 0.001 * rng.standard_normal(int(sec * SR))).astype(np.float32)
    paths = [_write(tmp_path / f"c{i}.wav", good(21)) for i in range(3)] + [_write(tmp_path / "bad.wav", zeros(2))]
    r = D.quality_report(paths, vad=False, progress=False)
    assert len(r.usable) == 3 and r.enough and abs(r.usable_minutes - 63 / 60) < 1e-3
    assert D.quality_report(tmp_path, vad=False, progress=False).usable_minutes == r.usable_minutes   # a folder
    D.save_list(tmp_path / "all.list", [ListItem(str(p), "me", "en", f"hello {i}") for i, p in enumerate(paths)])
    r2 = D.quality_report(tmp_path / "all.list", vad=False, progress=False)
    assert [c.text for c in r2.clips] == ["hello 0", "hello 1", "hello 2", "hello 3"] and r2.enough
    # clips given with an empty transcript are excluded (a list file cannot even hold one: its reader refuses the line)
    r3 = D.quality_report([ListItem(str(p), "me", "en", "hello" if i != 1 else "") for i, p in enumerate(paths)], vad=False, progress=False)
    codes = {c.name: [p.code for p in c.problems if p.severity == "error"] for c in r3.clips}
    assert codes["c1.wav"] == ["no_text"] and codes["bad.wav"] == ["silent"] and not codes["c0.wav"]
    assert not r3.enough                                           # 42 s usable with text
    (tmp_path / "holes.list").write_text(f"{paths[0]}|me|en|hi\n{paths[1]}|me|en|\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="line 2"):
        D.quality_report(tmp_path / "holes.list", vad=False, progress=False)
    r2 = r3
    assert len(D.load_list(r2.write_list(tmp_path / "train.list"))) == 2


# ---------------------------------------------------------------- list files and transcripts

def test_list_file_round_trip_and_bad_lines(tmp_path):
    (tmp_path / "wavs").mkdir()
    items = [ListItem(str(tmp_path / "wavs" / "a.wav"), "me", "en", "Hello, world!"),
             ListItem(str(tmp_path / "wavs" / "b.wav"), "me", "zh", "你好。"),
             ListItem(str(tmp_path / "wavs" / "c.wav"), "you", "ja", "こんにちは")]
    p = D.save_list(tmp_path / "x.list", items)
    assert D.load_list(p) == items and not list(tmp_path.glob(".*.tmp"))
    # relative paths are relative to the list file's folder; old language codes are mapped
    (tmp_path / "rel.list").write_text("wavs/a.wav|me|EN|one\n\nwavs/b.wav|me|JP|two\n", encoding="utf-8")
    rel = D.load_list(tmp_path / "rel.list")
    assert rel[0].path == str((tmp_path / "wavs" / "a.wav").resolve()) and rel[0].lang == "en" and rel[1].lang == "ja"
    (tmp_path / "bad.list").write_text("wavs/a.wav|me|en|ok\nwavs/b.wav|me|en\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 2.*4 fields"):
        D.load_list(tmp_path / "bad.list")
    (tmp_path / "lang.list").write_text("a.wav|me|fr|bonjour\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="unknown language 'fr'"):
        D.load_list(tmp_path / "lang.list")
    (tmp_path / "latin1.list").write_bytes("a.wav|me|en|caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="UTF-8"):
        D.load_list(tmp_path / "latin1.list")
    with pytest.raises(CorpusError, match="no such list file"):
        D.load_list(tmp_path / "none.list")
    # a failed write leaves the old list untouched
    with pytest.raises(CorpusError):
        D.save_list(p, [ListItem("a.wav", "me", "en", "bad | text")])
    assert D.load_list(p) == items


@pytest.mark.widgets
def test_save_transcripts_and_editor(tmp_path):
    paths = [_write(tmp_path / f"{n}.wav", np.concatenate([zeros(0.5), tone(2), zeros(0.5)])) for n in "abc"]
    lst = tmp_path / "me.list"
    items = D.clip_items(paths, "me", "en", lst)
    saved = D.save_transcripts(items, ["first one", "  ", "third\none | two"], lst)
    assert [Path(i.path).name for i in saved] == ["a.wav", "c.wav"]
    back = D.load_list(lst)
    assert back == saved and back[1].text == "third one , two"
    with pytest.raises(ConfigError):
        D.save_transcripts(items, ["x"], lst)
    # the widget: prefilled from the list file, Save writes it
    ui = D.transcript_editor(paths, lst, speaker="me")
    boxes = [w for row in ui.children[:-1] for w in row.children if type(w).__name__ == "Text"]
    assert [b.value for b in boxes] == ["first one", "", "third one , two"]
    boxes[1].value = "second one"
    save, status = ui.children[-1].children
    save.click()
    assert "saved 3 of 3" in status.value and len(D.load_list(lst)) == 3
    # texts= (e.g. from transcribe) fill the boxes; a report gives its usable clips
    ui2 = D.transcript_editor(paths, tmp_path / "new.list", texts=["x", "y", "z"])
    assert [w.value for row in ui2.children[:-1] for w in row.children if type(w).__name__ == "Text"] == ["x", "y", "z"]
    r = D.quality_report(paths, vad=False, progress=False)
    assert len(D.clip_items(r, "me", "en", lst)) == 3 and D.clip_items(r, list_path=lst)[1].text == "second one"


def test_word_error_rate():
    assert D.word_errors("a b c d", "a x c d e") == 2
    assert D.word_error_rate("Hello, World!", "hello world") == 0.0
    assert D.word_error_rate(["a b", "c d e"], ["a", "c d e"]) == 1 / 5
    with pytest.raises(ValueError):
        D.word_error_rate([""], ["a"])


def test_transcribe_engines_and_errors(tmp_path):
    p = _write(tmp_path / "a.wav", tone(1))
    seen = []
    fake = lambda x16: (seen.append(len(x16)), "hello")[1]
    assert D.transcribe(p, engine=fake) == "hello" and seen == [16000]
    assert D.transcribe([p, (tone(0.5, sr=8000), 8000)], engine=fake) == ["hello", "hello"] and seen[-1] == 8000
    with pytest.raises(ConfigError, match="US English"):
        D.transcribe(p, engine="pocketsphinx", lang="zh")
    with pytest.raises(ConfigError, match="unknown engine"):
        D.transcribe(p, engine="kaldi")
    with pytest.raises(AudioError, match="silent"):
        D.transcribe(_write(tmp_path / "s.wav", zeros(1)), engine=fake)


def test_pocketsphinx_wer_on_real_recordings():
    "The 13 real recordings of the corpus (LibriVox reader, playing cards, commands and digits)."
    clips = load_corpus(kind="recorded")
    assert len(clips) == 13
    hyps = D.transcribe([c.path for c in clips], engine="pocketsphinx")
    wer = D.word_error_rate([c.text for c in clips], hyps)
    print(f"pocketsphinx WER on the {len(clips)} recorded clips of the corpus: {100 * wer:.1f}%")
    assert wer < 0.35          # measured 19.0% (pocketsphinx 5.1.1, its en-us model)


def test_pocketsphinx_wer_on_debian_testdata():
    "The same LibriVox sentences as shipped (and transcribed) by Debian's pocketsphinx-testdata, when installed."
    tr = LIBRIVOX / "transcription"
    if not tr.exists():
        pytest.skip("apt-get install pocketsphinx-testdata")
    pairs = [re.match(r"<s> (.*) </s> \((.*)\)", l.strip()).groups() for l in tr.read_text().splitlines() if l.strip()]
    hyps = D.transcribe([LIBRIVOX / f"{name}.wav" for _, name in pairs])
    wer = D.word_error_rate([t for t, _ in pairs], hyps)
    print(f"pocketsphinx WER on pocketsphinx-testdata/librivox: {100 * wer:.1f}%")
    assert wer < 0.35          # measured 28.2%


def test_whisper_engine_plumbing(monkeypatch):
    "The transformers pipeline is built once per (model, device) and called with 16 kHz audio and the language."
    calls = []
    def fake_pipeline(model, device):
        calls.append(("asr", model, device))
        def run(audio, chunk_length_s, generate_kwargs):
            calls.append((audio["sampling_rate"], len(audio["raw"]), generate_kwargs))
            return {"text": " Hello there. "}
        return run
    monkeypatch.setattr(D, "_asr_pipeline", fake_pipeline)
    monkeypatch.setattr(D, "_whisper_pipes", {})
    out = D.transcribe([(tone(1, sr=8000), 8000), (tone(2), SR)], engine="whisper", model="my/whisper", lang="ja")
    assert out == ["Hello there.", "Hello there."]
    assert calls[0] == ("asr", "my/whisper", "cpu")
    assert calls[1] == (16000, 16000, {"language": "ja", "task": "transcribe"}) and calls[2][1] == 32000 and len(calls) == 3


def test_whisper_offline_error_message():
    code = ("from gpt_sovits_nb.data import transcribe\nfrom gpt_sovits_nb.core import WeightsNotFoundError\nimport numpy as np\n"
            "try:\n    transcribe((np.zeros(16000, np.float32) + 0.1, 16000), engine='whisper', model='openai/whisper-small')\n"
            "except WeightsNotFoundError as e:\n    print('MSG:', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    msg = out.stdout
    assert "MSG:" in msg, out.stderr[-2000:]
    assert "openai/whisper-small" in msg and "HF_HUB_OFFLINE=1" in msg and "pocketsphinx" in msg and "transcript_editor" in msg


# ---------------------------------------------------------------- feature extraction

def _dataset(tmp_path, n=3):
    wavs = tmp_path / "wavs"; wavs.mkdir(exist_ok=True)
    entries = []
    for i in range(n):
        p = _write(wavs / f"clip{i}.wav", tone(1 + 0.5 * i, f=200 + 50 * i, amp=0.3))
        entries.append(ListItem(str(p), "me", "en", f"sentence number {i}"))
    return D.save_list(tmp_path / "train.list", entries)


class Fakes:
    "Feature steps that count their calls: 'words' from the text, 'energy' from the audio, 'both' from the two."
    def __init__(self, fail_on=None):
        self.calls = {"words": [], "energy": [], "both": []}
        self.fail_on = fail_on

    def steps(self):
        def words(inp):
            self.calls["words"].append(inp["text"].text)
            if inp["text"].text == "":
                return None
            return {"n": len(inp["text"].text.split()), "words": inp["text"].text.split()}
        def energy(inp):
            self.calls["energy"].append(inp["audio"])
            if self.fail_on and self.fail_on in inp["audio"]:
                raise AudioError(f"'{inp['audio']}': cannot use it")
            x, sr = sf.read(inp["audio"], dtype="float32")
            return {"energy": np.array([float((x ** 2).mean())], np.float32), "x": torch.from_numpy(x[:100])}
        def both(inp):
            self.calls["both"].append(1)
            return {"prod": np.asarray(inp["energy"]["energy"] * inp["words"]["n"])}
        return [D.FeatureStep("words", ("text",), words, "w1", fmt="json"),
                D.FeatureStep("energy", ("audio",), energy, "e1"),
                D.FeatureStep("both", ("words", "energy"), both, "b1")]


def test_extract_features_caches_and_resumes(tmp_path):
    lst = _dataset(tmp_path)
    out = tmp_path / "feats"
    f = Fakes()
    run = D.extract_features(lst, out, steps=f.steps(), features=["both"], progress=False)
    assert run.count("done") == 9 and not run.failed
    assert sorted(p.name for p in (out / "energy").iterdir()) == ["clip0.safetensors", "clip1.safetensors", "clip2.safetensors"]
    assert run.load("clip1", "words") == {"n": 3, "words": ["sentence", "number", "1"]}
    e = run.load("clip2", "energy")
    assert e["energy"].dtype == np.float32 and e["x"].shape == (100,)
    assert np.isclose(run.load("clip0", "both")["prod"][0], 3 * e["energy"][0] * 0 + 3 * run.load("clip0", "energy")["energy"][0])
    man = json.loads((out / "manifest.json").read_text())
    assert [c["id"] for c in man["clips"]] == ["clip0", "clip1", "clip2"] and man["features"]["both"]["needs"] == ["words", "energy"]

    # a rerun computes nothing
    f2 = Fakes()
    again = D.extract_features(lst, out, steps=f2.steps(), features=["both"], progress=False)
    assert again.count("cached") == 9 and again.count("done") == 0 and f2.calls == {"words": [], "energy": [], "both": []}

    # a changed transcript: only its text features are recomputed (and 'both', which reads them)
    entries = D.load_list(lst); entries[1] = dataclasses.replace(entries[1], text="a new text"); D.save_list(lst, entries)
    f3 = Fakes()
    r3 = D.extract_features(lst, out, steps=f3.steps(), features=["both"], progress=False)
    assert f3.calls["words"] == ["a new text"] and f3.calls["energy"] == [] and len(f3.calls["both"]) == 1
    assert r3.load("clip1", "words")["n"] == 3

    # a changed audio file: its audio features are recomputed
    _write(Path(entries[0].path), tone(1, amp=0.1))
    f4 = Fakes()
    D.extract_features(lst, out, steps=f4.steps(), features=["both"], progress=False)
    assert f4.calls["words"] == [] and f4.calls["energy"] == [entries[0].path] and len(f4.calls["both"]) == 1

    # a new fingerprint (another model) recomputes that step and what depends on it
    f5 = Fakes(); steps = f5.steps(); steps[1].fingerprint = "e2"
    D.extract_features(lst, out, steps=steps, features=["both"], progress=False)
    assert len(f5.calls["energy"]) == 3 and len(f5.calls["both"]) == 3 and f5.calls["words"] == []


def test_extract_features_is_atomic_and_survives_failures(tmp_path, monkeypatch):
    lst = _dataset(tmp_path)
    out = tmp_path / "feats"
    import safetensors.numpy as stn
    real_save = stn.save_file
    def crash_midway(arrays, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")                     # a partial write, then the process "dies"
        raise KeyboardInterrupt
    monkeypatch.setattr(stn, "save_file", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        D.extract_features(lst, out, steps=Fakes().steps(), features=["energy"], progress=False)
    assert list((out / "energy").iterdir()) == []                        # no half-written feature, no temporary file
    monkeypatch.setattr(stn, "save_file", real_save)

    # a stale temporary file of a killed run, and a damaged feature file, are not taken for results
    (out / "energy" / ".clip0.safetensors.999.tmp").write_bytes(b"junk")
    (out / "energy" / "clip1.safetensors").write_bytes(b"junk")
    f = Fakes()
    run = D.extract_features(lst, out, steps=f.steps(), features=["energy"], progress=False)
    assert run.count("done") == 3 and len(f.calls["energy"]) == 3
    assert sorted(p.name for p in (out / "energy").iterdir()) == ["clip0.safetensors", "clip1.safetensors", "clip2.safetensors"]

    # one clip fails (and one is missing): the others go on, the reasons are reported, nothing is deleted
    entries = D.load_list(lst)
    entries.append(ListItem(str(tmp_path / "wavs" / "gone.wav"), "me", "en", "missing audio"))
    entries.append(ListItem(entries[0].path, "me", "en", ""))       # same audio, no text: 'words' is n/a
    f = Fakes(fail_on="clip2")
    run = D.extract_features(entries, tmp_path / "feats2", steps=f.steps(), features=["both"], progress=False)
    st = {c["id"]: c["status"] for c in run.clips}
    assert st["clip2"]["energy"].startswith("failed:") and "cannot use it" in st["clip2"]["energy"]
    assert st["clip2"]["both"].startswith("failed: needs energy") and st["clip2"]["words"] == "done"
    assert "not found" in st["gone"]["energy"]
    assert st["clip1"] == {"words": "done", "energy": "done", "both": "done"}
    dup = [k for k in st if k.startswith("clip0_")]
    assert len(dup) == 2 and any(st[k]["words"] == "n/a" and st[k]["both"] == "n/a" for k in dup)   # ids made unique
    assert len(run.failed) == 2 and "gone" in run.summary()
    assert all(Path(e.path).exists() for e in entries if "gone" not in e.path)


def test_extract_features_options(tmp_path):
    lst = _dataset(tmp_path, 1)
    with pytest.raises(ConfigError, match="no step for"):
        D.extract_features(lst, tmp_path / "f", features=["bert"], progress=False)
    with pytest.raises(ConfigError, match="ssl="):
        D.extract_features(lst, tmp_path / "f", sovits=object(), progress=False)
    loop = [D.FeatureStep("a", ("b",), lambda i: {}, ""), D.FeatureStep("b", ("a",), lambda i: {}, "")]
    with pytest.raises(ConfigError, match="circle"):
        D.extract_features(lst, tmp_path / "f", steps=loop, features=["a"], progress=False)


def test_default_audio_features(tmp_path):
    "wav32k and spec need no model: the 32 kHz training audio (peak mix 0.95/0.5) and its linear spectrogram."
    lst = _dataset(tmp_path, 2)
    run = D.extract_features(lst, tmp_path / "f", features=["spec"], progress=False)
    assert run.count("done") == 4, run.summary()
    w = run.load("clip1", "wav32k")["wav"]
    assert w.dtype == np.int16 and len(w) == int(1.5 * SR)
    assert abs(np.abs(w).max() / 32767 - (0.95 * 0.5 + 0.5 * 0.3)) < 1e-3
    spec = run.load("clip1", "spec")["spec"]
    assert spec.shape == (1025, (len(w) - 640) // 640 + 1) and spec.dtype == np.float32
    again = D.extract_features(lst, tmp_path / "f", features=["spec"], progress=False)
    assert again.count("cached") == 4


def test_model_fingerprint():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    assert D.model_fingerprint(a) == D.model_fingerprint(a) != D.model_fingerprint(b)
    class Wrapper:                                                       # e.g. an encoder holding .model
        def __init__(self, m): self.model = m
    assert D.model_fingerprint(Wrapper(a)) != D.model_fingerprint(Wrapper(b))
    assert len(D.model_fingerprint(object())) == 16


def test_bert_features_with_a_tiny_bert(tmp_path):
    "Chinese clips get BERT features [hidden, n_phones]; other languages none (training uses zeros)."
    from gpt_sovits_nb.text_encoder import BertFeaturizer, tiny_random_bert
    bert = BertFeaturizer.from_pretrained(tiny_random_bert(tmp_path / "bert", "你好世界", hidden_size=32, num_layers=3, num_heads=2))
    wav = _write(tmp_path / "a.wav", tone(1))
    items = [ListItem(str(wav), "me", "zh", "你好世界"), ListItem(str(_write(tmp_path / "b.wav", tone(1))), "me", "en", "hello")]
    def phones(inp):          # stands in for clean_text: 2 phones per Chinese character
        it = inp["text"]
        if it.lang == "zh":
            return {"phones": ["n", "i3", "h", "ao3", "sh", "ir4", "j", "ie4"], "word2ph": [2, 2, 2, 2], "norm_text": it.text, "lang": "zh"}
        return {"phones": ["HH", "AH0", "L", "OW1"], "word2ph": None, "norm_text": it.text, "lang": it.lang}
    steps = [D.FeatureStep("phones", ("text",), phones, "fake", fmt="json")]
    run = D.extract_features(items, tmp_path / "f", bert=bert, steps=steps, features=["bert"], progress=False)
    st = {c["id"]: c["status"] for c in run.clips}
    assert st == {"a": {"phones": "done", "bert": "done"}, "b": {"phones": "done", "bert": "n/a"}}, st
    f = run.load("a", "bert")["bert"]
    assert f.shape == (32, 8) and f.dtype == np.float32 and np.allclose(f[:, 0], f[:, 1])   # one vector per character
    again = D.extract_features(items, tmp_path / "f", bert=bert, steps=steps, features=["bert"], progress=False)
    assert again.count("cached") == 3 and again.count("done") == 0


def test_ssl_and_semantic_with_tiny_models(tmp_path):
    "HuBERT features [hidden, F] at 50 Hz of the 16 kHz audio, and semantic tokens [F // 2]; a new SoVITS redoes only the tokens."
    from gpt_sovits_nb.core import SoVITSConfig
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb.tokens import SSLEncoder, tiny_random_hubert
    ssl = SSLEncoder.from_pretrained(tiny_random_hubert(tmp_path / "hubert", hidden_size=32))
    cfg = SoVITSConfig(version="v2", hidden_channels=32, inter_channels=32, filter_channels=64, n_layers=1, ssl_dim=32,
                       upsample_initial_channel=32)
    torch.manual_seed(0)
    sov = SoVITS(cfg).eval()
    lst = _dataset(tmp_path, 2)
    run = D.extract_features(lst, tmp_path / "f", ssl=ssl, sovits=sov, features=["semantic"], progress=False)
    assert run.count("done") == 6 and not run.failed, run.summary()
    s16 = int(1.5 * 16000)                                              # clip1 lasts 1.5 s
    feats = run.load("clip1", "ssl")["ssl"]
    assert feats.shape == (32, (s16 - 400) // 320 + 1) and feats.dtype == np.float32
    codes = run.load("clip1", "semantic")["semantic"]
    assert codes.shape == (feats.shape[1] // 2,) and codes.dtype == np.int32 and codes.min() >= 0 and codes.max() < 1024
    # the tokens are those of the model on the stored features
    want = sov.extract_latent(torch.from_numpy(feats)[None])[0, 0].numpy()
    assert np.array_equal(codes, want)
    torch.manual_seed(1)
    other = SoVITS(cfg).eval()
    again = D.extract_features(lst, tmp_path / "f", ssl=ssl, sovits=other, features=["semantic"], progress=False)
    st = again.clips[0]["status"]
    assert st == {"wav32k": "cached", "ssl": "cached", "semantic": "done"}, st


def test_sv_embedding_step_with_a_small_eres2net(tmp_path):
    "v2Pro's speaker-verification embedding of the 32 kHz training audio at 16 kHz (2-get-sv.py), one vector per clip."
    from gpt_sovits_nb.speaker import ERes2NetV2, SVEncoder
    torch.manual_seed(0)
    sv = SVEncoder(ERes2NetV2(m_channels=4, num_blocks=(1, 1, 1, 1)))
    lst = _dataset(tmp_path, 2)
    run = D.extract_features(lst, tmp_path / "f", sv=sv, features=["sv"], progress=False)
    assert run.count("done") == 4 and not run.failed, run.summary()
    emb = run.load("clip0", "sv")["sv"]
    wav16 = D.resample(torch.from_numpy(run.load("clip0", "wav32k")["wav"].astype(np.float32) / 32768)[None], 32000, 16000)
    assert emb.shape == (4 * 8 * 4 * 10,) and np.allclose(emb, sv.embed(wav16)[0].numpy(), atol=1e-6)


def test_phones_and_bert_with_the_real_front_end(tmp_path):
    "phones from clean_text (en, zh; v1 and v2 symbol tables) and BERT features for the Chinese clip only."
    from gpt_sovits_nb.text import clean_text, phones_to_ids
    from gpt_sovits_nb.text_encoder import BertFeaturizer, tiny_random_bert
    zh = "你好，世界。"
    norm_zh = clean_text(zh, "zh")[2]
    bert = BertFeaturizer.from_pretrained(tiny_random_bert(tmp_path / "bert", norm_zh, hidden_size=32, num_layers=3, num_heads=2))
    items = [ListItem(str(_write(tmp_path / "zh.wav", tone(1))), "me", "zh", zh),
             ListItem(str(_write(tmp_path / "en.wav", tone(1))), "me", "en", "He was not an ill disposed young man.")]
    run = D.extract_features(items, tmp_path / "f", bert=bert, features=["bert"], progress=False)
    st = {c["id"]: c["status"] for c in run.clips}
    assert st == {"zh": {"phones": "done", "bert": "done"}, "en": {"phones": "done", "bert": "n/a"}}, st
    p = run.load("zh", "phones")
    phones, word2ph, norm = clean_text(zh, "zh")
    assert p["phones"] == phones and p["word2ph"] == word2ph and p["norm_text"] == norm and p["ids"] == phones_to_ids(phones, "v2")
    assert run.load("zh", "bert")["bert"].shape == (32, len(phones))
    assert run.load("en", "phones")["word2ph"] is None
    v1 = D.extract_features(items, tmp_path / "f1", version="v1", features=["phones"], progress=False)
    assert v1.load("en", "phones")["ids"] == phones_to_ids(clean_text(items[1].text, "en", "v1")[0], "v1")
    # a transcript the front end refuses fails that clip with the reason, not the run
    bad = [ListItem(items[1].path, "me", "en", "...")]
    r = D.extract_features(bad, tmp_path / "f2", features=["phones"], progress=False)
    assert r.clips[0]["status"]["phones"].startswith("failed:"), r.clips[0]["status"]
