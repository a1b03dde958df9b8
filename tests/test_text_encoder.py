"""BertFeaturizer and the per-phone BERT helpers: golden cases, loading checks, bad input."""
from __future__ import annotations
import json
import shutil

import pytest
import torch

from golden import cases, load_case, materialize, check
from gpt_sovits_nb.core import CheckpointError, ConfigError, GSVError, TextError, WeightsNotFoundError
from gpt_sovits_nb.text_encoder import (BertFeaturizer, bert_for_phones, bert_for_segments, expand_to_phones,
                                        tiny_random_bert, zero_bert, char_labels)

TEXT = "我们一起去看一看,不要不高兴,好不好?"
WORD2PH = [2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 1, 2, 2, 2, 1]
PHONES = "w o3 m en5 y i4 q i3 q v4 k an4 y i5 k an4 , b u2 y ao4 b u4 g ao1 x ing4 , h ao3 b u5 h ao3 ?".split()


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    return materialize(load_case("bert_features_00"), tmp_path_factory.mktemp("bert_golden"))


@pytest.fixture(scope="module")
def golden_bert(golden_dir):
    return BertFeaturizer.from_pretrained(golden_dir)


@pytest.mark.parametrize("name", cases("bert_features"))
def test_golden(name, golden_bert):
    case = load_case(name)
    got = golden_bert.features(case["inputs"]["norm_text"], case["inputs"]["word2ph"])
    assert got.dtype == torch.float32
    check(case, got)


def test_golden_cases_exist():
    assert len(cases("bert_features")) >= 3


def test_float16_file_loads_as_float32_and_unchanged(golden_dir, golden_bert):
    "The float16 pytorch_model.bin must load into float32 with every tensor equal to the file's (nothing re-initialised)."
    assert golden_bert.hidden == json.loads((golden_dir / "config.json").read_text())["hidden_size"] == 128
    file_sd = torch.load(golden_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert {v.dtype for v in file_sd.values() if v.is_floating_point()} == {torch.float16}
    model_sd = golden_bert.model.state_dict()
    assert all(v.dtype == torch.float32 for v in model_sd.values() if v.is_floating_point())
    for k, v in file_sd.items():
        assert k in model_sd, k
        assert torch.equal(model_sd[k], v.to(model_sd[k].dtype)), k


def _raw_tiny_bert(path, hidden=48, layers=4, seed=3):
    "A tiny random BERT folder made directly with BertConfig + vocab.txt (independent of tiny_random_bert)."
    from transformers import BertConfig, BertForMaskedLM
    path.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(TEXT))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40)
    torch.manual_seed(seed)
    BertForMaskedLM(cfg).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    return _raw_tiny_bert(tmp_path_factory.mktemp("raw") / "bert")


def test_random_tiny_bert_matches_by_hand(raw_dir):
    bert = BertFeaturizer.from_pretrained(raw_dir)
    assert bert.hidden == 48                      # read from config.json
    got = bert.features(TEXT, WORD2PH)
    assert got.shape == (48, sum(WORD2PH)) == (48, 35)
    from transformers import BertForMaskedLM, BertTokenizer
    model = BertForMaskedLM.from_pretrained(str(raw_dir)).eval()
    tok = BertTokenizer.from_pretrained(str(raw_dir))
    with torch.no_grad():
        hs = model(**tok(TEXT, return_tensors="pt"), output_hidden_states=True).hidden_states
    assert len(hs) == 5
    rows = hs[-3][0, 1:-1]                        # output of layer 2 of 4, [CLS]/[SEP] dropped
    want = torch.cat([rows[i].repeat(n, 1) for i, n in enumerate(WORD2PH)]).T
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, torch.cat([hs[-1][0, 1:-1][i].repeat(n, 1) for i, n in enumerate(WORD2PH)]).T)


def test_tiny_random_bert(tmp_path):
    d = tiny_random_bert(tmp_path / "b", TEXT, hidden_size=32, num_layers=3, num_heads=4)
    bert = BertFeaturizer.from_pretrained(d)
    assert bert.hidden == 32
    f = bert.features(TEXT, WORD2PH)
    assert f.shape == (32, 35) and torch.isfinite(f).all()
    assert torch.equal(f[:, 0], f[:, 1])


def test_expand_to_phones():
    x = torch.arange(6.).reshape(3, 2)
    out = expand_to_phones(x, [2, 0, 1])
    assert out.shape == (2, 3) and torch.equal(out, torch.tensor([[0., 0., 4.], [1., 1., 5.]]))


def test_bad_text(raw_dir):
    bert = BertFeaturizer.from_pretrained(raw_dir)
    with pytest.raises(TextError, match="18 entries"):
        bert.features(TEXT, WORD2PH[:-1])
    with pytest.raises(TextError, match="one token per character"):
        bert.features("我们 去", [2, 2, 0, 2])
    with pytest.raises(TextError, match="one token per character"):
        bert.features("我们ab", [2, 2, 1, 1])
    with pytest.raises(TextError, match="empty"):
        bert.features("", [])
    with pytest.raises(TextError, match="None"):
        bert.features(TEXT, None)
    with pytest.raises(TextError, match="negative"):
        bert.features("我们", [2, -1])
    with pytest.raises(TextError, match="at most 38"):
        bert.features("我" * 39, [2] * 39)


def test_missing_and_damaged_folders(tmp_path, raw_dir):
    with pytest.raises(WeightsNotFoundError, match="does not exist") as e:
        BertFeaturizer.from_pretrained(tmp_path / "nothing")
    assert "pretrained_weights('bert')" in str(e.value) and "huggingface.co/lj1995/GPT-SoVITS" in str(e.value)
    for drop, msg in [("config.json", "config.json"), ("model.safetensors", "model.safetensors, pytorch_model.bin"),
                      ("vocab.txt", "tokenizer.json, vocab.txt")]:
        d = tmp_path / f"no-{drop}"
        shutil.copytree(raw_dir, d)
        (d / drop).unlink()
        with pytest.raises(WeightsNotFoundError, match="incomplete") as e:
            BertFeaturizer.from_pretrained(d)
        assert msg in str(e.value)
    d = tmp_path / "damaged"
    shutil.copytree(raw_dir, d)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        BertFeaturizer.from_pretrained(d)


def test_missing_weights_are_refused(tmp_path, raw_dir):
    "A file that lacks encoder weights would give randomly initialised layers: refused, not silently used."
    from safetensors.torch import load_file, save_file
    d = tmp_path / "partial"
    shutil.copytree(raw_dir, d)
    sd = load_file(str(d / "model.safetensors"))
    victim = next(k for k in sd if "encoder.layer.0.attention.self.query.weight" in k)
    del sd[victim]
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing"):
        BertFeaturizer.from_pretrained(d)


def test_bert_for_phones(raw_dir):
    bert = BertFeaturizer.from_pretrained(raw_dir)
    zh = bert_for_phones(PHONES, WORD2PH, TEXT, "zh", bert, width=48)
    assert torch.equal(zh, bert.features(TEXT, WORD2PH))
    assert torch.equal(bert_for_phones(PHONES, WORD2PH, TEXT, "all_zh", bert, width=48), zh)
    for lang in ("en", "ja", "all_ja", "yue"):
        z = bert_for_phones(["a"] * 7, None, "xxxxxxx", lang, None)
        assert z.shape == (1024, 7) and z.dtype == torch.float32 and not z.any()
    assert bert_for_phones(["a"] * 3, None, "abc", "en", bert, width=48).shape == (48, 3)
    with pytest.raises(ConfigError, match="48-wide"):
        bert_for_phones(PHONES, WORD2PH, TEXT, "zh", bert, width=1024)
    with pytest.raises(ConfigError, match="BertFeaturizer"):
        bert_for_phones(PHONES, WORD2PH, TEXT, "zh", None)
    with pytest.raises(TextError, match="34 phones"):
        bert_for_phones(PHONES[:-1], WORD2PH, TEXT, "zh", bert, width=48)
    with pytest.raises(TextError):
        bert_for_phones(PHONES, None, TEXT, "zh", bert, width=48)
    segs = [(PHONES, WORD2PH, TEXT, "zh"), (["HH", "AY1", "."], None, "hi.", "en")]
    joined = bert_for_segments(segs, bert, width=48)
    assert joined.shape == (48, 38) and torch.equal(joined[:, :35], zh) and not joined[:, 35:].any()
    assert bert_for_segments([], None).shape == (1024, 0)
    assert zero_bert(5, 16).shape == (16, 5)


def test_errors_are_gsv_errors():
    assert issubclass(WeightsNotFoundError, GSVError) and issubclass(TextError, GSVError)


def test_char_labels():
    labels, font = char_labels("好?")
    assert len(labels) == 2 and labels[1] == "?"
    assert font is not None or labels[0] == "hao3"
