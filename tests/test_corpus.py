"""Checks of the embedded speech corpus in datasets/ and of the loader gpt_sovits_nb.corpus."""
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gpt_sovits_nb.core import GSVError
from gpt_sovits_nb.corpus import (SPLITS, KINDS, Clip, CorpusError, ListItem, clips_by_speaker, corpus_dir, finetune_clips,
                                  load_corpus, read_list, reference_clip, speaker_info, speaker_table, speakers,
                                  write_list)

ROOT = Path(__file__).resolve().parent.parent / "datasets"
MAX_MB = 15.0
MIN_S, MAX_S = 0.5, 10.0


@pytest.fixture(scope="module")
def items():
    return read_list(ROOT / "corpus.list")


@pytest.fixture(scope="module")
def meta():
    return json.loads((ROOT / "splits.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def spk():
    return json.loads((ROOT / "speakers.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the files in datasets/

def test_manifest_well_formed(items, spk):
    lines = (ROOT / "corpus.list").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(items) > 150
    for line in lines:
        assert line.count("|") == 3 and line == line.strip()
    for it in items:
        assert not Path(it.path).is_absolute() and it.path.startswith("audio/") and it.path.endswith(".flac")
        assert it.speaker in spk and it.lang == "en" and it.text.strip()
        assert it.path == f"audio/{it.speaker}/{Path(it.path).name}"
    names = [Path(it.path).name for it in items]
    assert len(set(names)) == len(names), "GPT-SoVITS keys clips by base name: they must be unique"


def test_every_file_exists_and_decodes(items, meta):
    dur = {c["path"]: c["duration"] for c in meta["clips"]}
    for it in items:
        p = ROOT / it.path
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16"), p
        x, sr = sf.read(str(p), dtype="float32")
        assert np.isfinite(x).all() and len(x) == info.frames
        assert 0.8 < np.abs(x).max() < 0.95, f"{p}: peak not normalised"
        assert abs(len(x) / sr - dur[it.path]) < 2e-3
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "audio").rglob("*") if p.is_file()}
    assert on_disk == {it.path for it in items}, "audio/ holds files the manifest does not list (or the reverse)"


def test_durations_in_range(meta):
    d = [c["duration"] for c in meta["clips"]]
    assert MIN_S <= min(d) and max(d) <= MAX_S


def test_splits_disjoint_as_documented(items, meta, spk):
    assert [c["path"] for c in meta["clips"]] == [it.path for it in items]
    assert {c["split"] for c in meta["clips"]} == set(SPLITS)
    text = {it.path: it.text for it in items}
    by_split = defaultdict(list)
    for c in meta["clips"]: by_split[c["split"]].append(c)
    train_spk = {c["speaker"] for c in by_split["train"]}
    test_spk = {c["speaker"] for c in by_split["test_speaker"]}
    assert train_spk == set(meta["train_speakers"]) and test_spk == set(meta["heldout_speakers"])
    assert not train_spk & test_spk
    assert not {spk[s]["person"] for s in train_spk} & {spk[s]["person"] for s in test_spk}
    assert {c["speaker"] for c in by_split["test_sentence"]} == train_spk
    # held-out sentences: never in train, by id or by text
    assert {c["sentence"] for c in by_split["test_sentence"]} == set(meta["heldout_sentences"])
    assert not {c["sentence"] for c in by_split["train"]} & set(meta["heldout_sentences"])
    assert not {text[c["path"]] for c in by_split["train"]} & {text[c["path"]] for c in by_split["test_sentence"]}
    # the fine-tuning chapter wants a minute per training speaker; every real-speaker tts voice has a minute
    for s in train_spk:
        assert sum(c["duration"] for c in by_split["train"] if c["speaker"] == s) >= 60, s
    # one training speaker per person; the twins are a training person through another engine, and in no other split
    assert len({spk[s]["person"] for s in train_spk}) == len(train_spk)
    twins = {c["speaker"] for c in by_split["twin"]}
    assert twins == set(meta["twin_speakers"]) == {s for s, v in spk.items() if v["role"] == "twin"} == {"fest_slt_hts", "flite_kal16"}
    assert {spk[s]["person"] for s in twins} <= {spk[s]["person"] for s in train_spk} and not twins & (train_spk | test_spk)
    assert {s for s, v in spk.items() if v["role"] == "train"} == train_spk
    for s, v in spk.items():
        if v["kind"] == "tts": assert sum(c["duration"] for c in meta["clips"] if c["speaker"] == s) >= 60, s


def test_speakers_and_licences(spk):
    assert {v["kind"] for v in spk.values()} == set(KINDS)
    for s, v in spk.items():
        assert v["licence"] and v["package"] and v["description"], s
    lic = ROOT / "LICENSE.md"
    assert lic.is_file() and "CC0" in lic.read_text() and "GPL" in lic.read_text()
    for pkg in ("libflite1", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "espeak-ng-data",
                "pocketsphinx-testdata"):
        assert (ROOT / "licenses" / f"{pkg}.copyright").is_file(), pkg
    assert (ROOT / "build_corpus.py").is_file() and (ROOT / "install_voices.sh").is_file()


def test_size_under_budget():
    generated = ROOT / "nano"                # the nano model's speech, built locally by build_nano_data.py, never committed
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and generated not in p.parents)
    assert total / 1e6 < MAX_MB, f"datasets/ is {total / 1e6:.1f} MB, over the {MAX_MB} MB budget"


# ---------------------------------------------------------------- the loader

def test_loader_matches_files(items):
    assert corpus_dir() == ROOT
    clips = load_corpus()
    assert [c.path for c in clips] == [ROOT / it.path for it in items]
    assert all(isinstance(c, Clip) and c.split in SPLITS for c in clips)
    assert sum(len(v) for v in clips_by_speaker().values()) == len(clips)
    assert list(clips_by_speaker()) == speakers()
    assert set(speakers("real")) == set(speakers("recorded")) | set(speakers("tts"))
    assert sorted(speakers("real") + speakers("synthetic")) == sorted(speakers())
    assert {c.speaker for c in load_corpus(kind="synthetic")} == set(speakers("synthetic"))
    assert all(c.split == "test_speaker" for c in load_corpus(speakers="ps_librivox"))
    assert {r["speaker"] for r in speaker_table()} == set(speaker_info())
    r = reference_clip("fest_kal", split="train")
    assert 3 <= r.duration <= 10 and r.split == "train"


def test_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match="split"): load_corpus(split="dev")
    with pytest.raises(CorpusError, match="nobody"): load_corpus(speakers=["nobody"])
    with pytest.raises(CorpusError, match="kind"): speakers("human")
    with pytest.raises(CorpusError, match="3-10 s"): reference_clip("ps_dhd")
    monkeypatch.setenv("GSV_DATASETS", str(tmp_path))
    with pytest.raises(GSVError, match="GSV_DATASETS"): corpus_dir()
    # a copy without its audio: the loader says which file is missing
    for f in ("corpus.list", "splits.json", "speakers.json"): shutil.copy(ROOT / f, tmp_path / f)
    assert corpus_dir() == tmp_path.resolve()
    with pytest.raises(CorpusError, match="missing"): load_corpus()


def test_list_round_trip(tmp_path, items):
    f = write_list(tmp_path / "copy.list", items)
    assert f.read_text(encoding="utf-8") == (ROOT / "corpus.list").read_text(encoding="utf-8")
    assert read_list(f) == items
    # Clips write with absolute paths, or relative to `root`
    clips = load_corpus(speakers="flite_slt")[:3]
    rel = read_list(write_list(tmp_path / "rel.list", clips, root=ROOT))
    assert [r.path for r in rel] == [c.path.relative_to(ROOT).as_posix() for c in clips]
    assert [Path(r.path) for r in read_list(write_list(tmp_path / "abs.list", clips))] == [c.path for c in clips]
    # old language codes, Windows line ends, a byte-order mark and blank lines are accepted
    (tmp_path / "win.list").write_bytes("\ufeffa.wav|x|EN|Hi.\r\n\r\nb.wav|y|ZH|你好。\r\n".encode("utf-8"))
    assert read_list(tmp_path / "win.list") == [ListItem("a.wav", "x", "en", "Hi."), ListItem("b.wav", "y", "zh", "你好。")]


@pytest.mark.parametrize("text, match", [
    ("a.wav|x|en|Hi.\nb.wav|y|en\n", r"line 2: expected 4 fields"),
    ("a.wav|x|en|Yes | no\n", r"line 1: .*'\|' inside the text"),
    ("a.wav|x|english|Hi.\n", r"line 1: unknown language 'english'"),
    ("\n\na.wav|x|en|   \n", r"line 3: the text field is empty"),
    ("|x|en|Hi.\n", r"line 1: the path field is empty"),
])
def test_read_list_errors(tmp_path, text, match):
    (tmp_path / "bad.list").write_text(text, encoding="utf-8")
    with pytest.raises(CorpusError, match=match) as e: read_list(tmp_path / "bad.list")
    assert "bad.list" in str(e.value)


def test_read_write_list_bad_input(tmp_path):
    with pytest.raises(CorpusError, match="no such list file"): read_list(tmp_path / "none.list")
    (tmp_path / "latin1.list").write_bytes("a.wav|x|en|caf\xe9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="UTF-8"): read_list(tmp_path / "latin1.list")
    with pytest.raises(CorpusError, match="item 1"): write_list(tmp_path / "x.list", [("a.wav", "x", "en", "a|b")])
    with pytest.raises(CorpusError, match="line break"): write_list(tmp_path / "x.list", [("a.wav", "x", "en", "a\nb")])
    with pytest.raises(CorpusError, match="item 2: expected"): write_list(tmp_path / "x.list", [("a", "x", "en", "t"), ("a", "b")])
    with pytest.raises(CorpusError, match="unknown language"): write_list(tmp_path / "x.list", [("a", "x", "fr", "t")])


def test_finetune_clips_of_training_speakers_and_twins():
    "Fine-tuning data of a training speaker or a twin: its training sentences, and held-out sentences to compare with."
    for s in ("flite_slt", "fest_slt_hts"):
        train, held = finetune_clips(s)
        assert train and held and {c.speaker for c in train + held} == {s}
        assert not {c.sentence for c in train} & {c.sentence for c in held} and sum(c.duration for c in train) >= 60
        assert {c.sentence for c in held} == {c.sentence for c in load_corpus("test_sentence")}
    for bad in ("ps_librivox", "nobody"):
        with pytest.raises(CorpusError, match="not a training speaker") as e: finetune_clips(bad)
        assert "corpus:flite_slt" in str(e.value) and "corpus:fest_slt_hts" in str(e.value) and "corpus:ps_librivox" not in str(e.value)
