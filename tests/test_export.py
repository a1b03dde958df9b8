"""ONNX export (gpt_sovits_nb.export, chapter 16) with tiny random models: onnxruntime's greedy tokens equal torch's,
logits and waveforms within the stated tolerances (v2 and v2ProPlus), files written atomically, and clear errors for
missing packages, missing or damaged files and what the graphs do not do."""
import dataclasses, sys

import pytest
import torch

pytest.importorskip("onnx"); pytest.importorskip("onnxruntime")

from gpt_sovits_nb.core import CheckpointError, ConfigError, SoVITSConfig
from gpt_sovits_nb.checkpoints import load_gpt, load_sovits
from gpt_sovits_nb.pipeline import make_tiny_models
from gpt_sovits_nb.sovits import SoVITS
from gpt_sovits_nb import export as E
from gpt_sovits_nb.export import (LOGIT_ATOL, WAV_ATOL, OnnxGPT, OnnxSoVITS, export_gpt_onnx, export_sovits_onnx,
                                  require_onnx)


def randomize_flow(sov):
    "The flow's last layers start at zero (the identity): random weights there, so the comparison covers the flow."
    with torch.no_grad():
        for f in sov.flow.flows[::2]: f.post.weight.normal_(0, 0.02); f.post.bias.normal_(0, 0.02)
    return sov


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return make_tiny_models(tmp_path_factory.mktemp("tiny"), "v2")


@pytest.fixture(scope="module")
def gpt(tiny):
    return load_gpt(tiny.gpt)


@pytest.fixture(scope="module")
def onnx_gpt(gpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx-gpt")
    export_gpt_onnx(gpt, folder)
    return OnnxGPT(folder, threads=1)


@pytest.fixture(scope="module")
def sovits_pair(tiny, tmp_path_factory):
    "{version: (torch SoVITS, OnnxSoVITS)} for v2 (the tiny set's) and a v2ProPlus of the same size."
    v2 = randomize_flow(load_sovits(tiny.sovits))
    torch.manual_seed(1)
    pp = randomize_flow(SoVITS(SoVITSConfig(**{**dataclasses.asdict(v2.config), "version": "v2ProPlus"})).eval())
    out = {}
    for sov in (v2, pp):
        path = export_sovits_onnx(sov, tmp_path_factory.mktemp(f"onnx-{sov.version}"))
        out[sov.version] = (sov, OnnxSoVITS(path, threads=1))
    return out


def gpt_inputs(c, N, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, c.phoneme_vocab_size, (1, N), generator=g), torch.randn(1, c.bert_dim, N, generator=g),
            torch.randint(0, c.EOS, (1, P), generator=g))


def sovits_inputs(cfg, T, N, F, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, cfg.codebook_size, (1, 1, T), generator=g), torch.randint(0, cfg.n_symbols, (1, N), generator=g),
            torch.rand(1, cfg.spec_channels, F, generator=g), torch.randn(1, cfg.sv_dim, generator=g) if cfg.is_pro else None)


# ------------------------------------------------------------------------------------------ GPT
@pytest.mark.parametrize("N,P", [(9, 5), (23, 0), (1, 1), (50, 40)])
def test_gpt_greedy_tokens_equal_and_logits_close(gpt, onnx_gpt, N, P):
    phones, bert, prompt = gpt_inputs(gpt.config, N, P, seed=N)
    assert (onnx_gpt.prefill_logits(phones, bert, prompt) - gpt.prefill_logits(phones, bert, prompt)).abs().max() < LOGIT_ATOL
    ours = list(onnx_gpt.decode(phones, bert, prompt, top_k=1, max_new_tokens=64))
    want = list(gpt.decode(phones, bert, prompt, top_k=1, max_new_tokens=64))
    assert [int(s.token) for s in ours] == [int(s.token) for s in want]
    assert [s.eos for s in ours] == [s.eos for s in want]
    assert max((a.logits - b.logits).abs().max().item() for a, b in zip(ours, want)) < LOGIT_ATOL
    assert torch.equal(onnx_gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=64),
                       gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=64))


def test_gpt_runs_to_eos_like_torch(gpt, onnx_gpt):
    "Default limits: the number of tokens (where EOS stops decoding) must agree too."
    phones, bert, prompt = gpt_inputs(gpt.config, 12, 6, seed=5)
    a = onnx_gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=300, repetition_penalty=1.0)
    b = gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=300, repetition_penalty=1.0)
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape[0] == 1


def test_gpt_seeded_sampling_equal(gpt, onnx_gpt):
    phones, bert, prompt = gpt_inputs(gpt.config, 15, 8, seed=2)
    kw = dict(top_k=15, top_p=0.9, temperature=0.8, max_new_tokens=40)
    a = onnx_gpt.infer(phones, bert, prompt, generator=torch.Generator().manual_seed(4), **kw)
    b = gpt.infer(phones, bert, prompt, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a, b)


def test_gpt_export_files(gpt, tmp_path):
    stale = tmp_path / ".gpt_step.onnx.999999999.x.tmp"; stale.write_bytes(b"left by a killed export")
    gpt.train()
    try: files = export_gpt_onnx(gpt, tmp_path)
    finally: was_training = gpt.training; gpt.eval()
    assert was_training                                                  # the model's mode is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt_prefill.onnx", "gpt_step.onnx"]   # no temporary files
    assert files.prefill == tmp_path / E.GPT_PREFILL_FILE and files.step == tmp_path / E.GPT_STEP_FILE
    onnx = require_onnx("onnx")
    m = onnx.load(files.step)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["gsv_graph"] == "gpt_step" and meta["gsv_version"] == "v2"
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    c = gpt.config
    assert dims["past_keys"] == [c.n_layer, 1, c.head, "S", c.hidden_dim // c.head] and dims["token"] == [1, 1]
    o = OnnxGPT(tmp_path, threads=1)
    assert o.config == c and o.version == "v2"


def test_gpt_export_from_other_dtype(gpt, tmp_path):
    "A bfloat16 model is exported from a float32 copy; the model itself keeps its dtype."
    m = type(gpt)(gpt.config); m.load_state_dict(gpt.state_dict()); m = m.eval().to(torch.bfloat16)
    export_gpt_onnx(m, tmp_path)
    assert m.dtype == torch.bfloat16
    phones, bert, prompt = gpt_inputs(gpt.config, 7, 3)
    want = m.float().prefill_logits(phones, bert, prompt)
    assert (OnnxGPT(tmp_path, threads=1).prefill_logits(phones, bert, prompt) - want).abs().max() < LOGIT_ATOL


def test_gpt_errors(gpt, onnx_gpt, tmp_path):
    with pytest.raises(CheckpointError, match="no such ONNX file.*export_gpt_onnx"): OnnxGPT(tmp_path / "none")
    broken = tmp_path / "broken"; broken.mkdir()
    for name in (E.GPT_PREFILL_FILE, E.GPT_STEP_FILE):
        (broken / name).write_bytes((onnx_gpt.folder / name).read_bytes())
    (broken / E.GPT_STEP_FILE).write_bytes((onnx_gpt.folder / E.GPT_STEP_FILE).read_bytes()[:3000])   # truncated
    with pytest.raises(CheckpointError, match="gpt_step.onnx' is not a usable ONNX model.*damaged"): OnnxGPT(broken)
    (broken / E.GPT_STEP_FILE).write_bytes(b"not onnx at all")
    with pytest.raises(CheckpointError, match="not a usable ONNX model"): OnnxGPT(broken)
    (broken / E.GPT_STEP_FILE).write_bytes((onnx_gpt.folder / E.GPT_PREFILL_FILE).read_bytes())   # the wrong graph
    with pytest.raises(CheckpointError, match="holds the gpt_prefill graph, not the gpt_step graph"): OnnxGPT(broken)
    other = type(gpt)(dataclasses.replace(gpt.config, n_layer=1)).eval()       # a step graph of another GPT
    export_gpt_onnx(other, tmp_path / "other")
    (broken / E.GPT_STEP_FILE).write_bytes((tmp_path / "other" / E.GPT_STEP_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="different GPTs"): OnnxGPT(broken)
    phones, bert, prompt = gpt_inputs(gpt.config, 5, 2)
    with pytest.raises(ConfigError, match="transposed"): onnx_gpt.infer(phones, bert.transpose(1, 2), prompt)
    with pytest.raises(ConfigError, match="max_new_tokens"): onnx_gpt.infer(phones, bert, prompt, max_new_tokens=0)
    with pytest.raises(ConfigError, match="top_p"): onnx_gpt.infer(phones, bert, prompt, top_p=-1)
    with pytest.raises(ConfigError, match="Text2SemanticGPT"): export_gpt_onnx("gpt.ckpt", tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"): export_gpt_onnx(gpt, tmp_path / "afile")


def test_missing_packages_name_the_extra(gpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r'onnxruntime is not installed.*pip install -e "\.\[export\]"'): OnnxGPT(tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"onnx is not installed.*\[export\]"): export_gpt_onnx(gpt, tmp_path)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ SoVITS
@pytest.mark.parametrize("version", ["v2", "v2ProPlus"])
@pytest.mark.parametrize("T,N,F", [(12, 7, 30), (3, 1, 5)])
def test_sovits_matches_torch(sovits_pair, version, T, N, F):
    sov, osov = sovits_pair[version]
    codes, phones, spec, sv = sovits_inputs(sov.config, T, N, F, seed=T)
    quiet = osov.decode(codes, phones, spec, sv_emb=sv)
    assert quiet.shape == (1, 1, 1280 * T) and quiet.dtype == torch.float32
    assert (quiet - sov.decode(codes, phones, spec, sv_emb=sv)).abs().max() < WAV_ATOL
    a = osov.decode(codes, phones, spec, noise_scale=0.5, sv_emb=sv, generator=torch.Generator().manual_seed(9))
    b = sov.decode(codes, phones, spec, noise_scale=0.5, sv_emb=sv, generator=torch.Generator().manual_seed(9))
    assert (a - b).abs().max() < WAV_ATOL and (a - quiet).abs().max() > 1e-7          # the noise matters, and matches
    noise = torch.randn(1, sov.config.inter_channels, 2 * T, generator=torch.Generator().manual_seed(9))
    assert torch.equal(osov.decode(codes, phones, [spec], noise_scale=0.5, sv_emb=sv, noise=noise), a)


def test_sovits_errors(sovits_pair, tmp_path):
    sov, osov = sovits_pair["v2ProPlus"]
    codes, phones, spec, sv = sovits_inputs(sov.config, 6, 4, 10)
    with pytest.raises(ConfigError, match="sv_emb"): osov.decode(codes, phones, spec)
    with pytest.raises(ConfigError, match="speed 1 only"): osov.decode(codes, phones, spec, sv_emb=sv, speed=1.25)
    with pytest.raises(ConfigError, match="takes one"): osov.decode(codes, phones, [spec, spec], sv_emb=sv)
    with pytest.raises(ConfigError, match="noise_scale"): osov.decode(codes, phones, spec, sv_emb=sv, noise_scale=-1)
    with pytest.raises(ConfigError, match="noise has shape"): osov.decode(codes, phones, spec, sv_emb=sv, noise=torch.zeros(1, 2, 3))
    with pytest.raises(ConfigError, match="frequency bins"): osov.decode(codes, phones, spec[:, :80], sv_emb=sv)
    with pytest.raises(ConfigError, match="EOS"): osov.decode(codes * 0 + 1024, phones, spec, sv_emb=sv)
    with pytest.raises(CheckpointError, match="no such ONNX file.*export_sovits_onnx"): OnnxSoVITS(tmp_path / "none.onnx")
    bad = tmp_path / E.SOVITS_FILE; bad.write_bytes(osov.path.read_bytes()[:10000])
    with pytest.raises(CheckpointError, match="not a usable ONNX model"): OnnxSoVITS(tmp_path)
    with pytest.raises(ConfigError, match="SoVITS"): export_sovits_onnx(torch.nn.Linear(2, 2), tmp_path)


def test_released_sizes_give_the_same_greedy_tokens_and_audio(tmp_path):
    "Full size (the released v2 GPT and v2ProPlus SoVITS configs, random weights): greedy tokens equal, within tolerance."
    from gpt_sovits_nb.core import GPT_CONFIGS, SOVITS_CONFIGS
    from gpt_sovits_nb.gpt import Text2SemanticGPT
    torch.manual_seed(0)
    gpt = Text2SemanticGPT(GPT_CONFIGS["v2"]).eval()
    export_gpt_onnx(gpt, tmp_path / "gpt")
    ogpt = OnnxGPT(tmp_path / "gpt", threads=1)
    phones, bert, prompt = gpt_inputs(gpt.config, 40, 30)
    kw = dict(top_k=1, max_new_tokens=30, min_new_tokens=30)
    steps_t = list(gpt.decode(phones, bert, prompt, **kw))
    steps_o = list(ogpt.decode(phones, bert, prompt, **kw))
    assert [s.token.item() for s in steps_t] == [s.token.item() for s in steps_o]
    assert max((a.logits - b.logits).abs().max().item() for a, b in zip(steps_t, steps_o)) < LOGIT_ATOL
    del ogpt, gpt
    sov = randomize_flow(SoVITS(SOVITS_CONFIGS["v2ProPlus"]).eval())
    osov = OnnxSoVITS(export_sovits_onnx(sov, tmp_path / "sovits"), threads=1)
    g = torch.Generator().manual_seed(2)
    codes, text = torch.randint(0, 1024, (1, 1, 20), generator=g), torch.randint(0, 732, (1, 12), generator=g)
    spec, sv = torch.rand(1, 1025, 60, generator=g), torch.randn(1, 20480, generator=g)
    with torch.no_grad():
        want = sov.decode(codes, text, spec, noise_scale=0.5, sv_emb=sv, generator=torch.Generator().manual_seed(5))
    got = osov.decode(codes, text, spec, noise_scale=0.5, sv_emb=sv, generator=torch.Generator().manual_seed(5))
    assert want.shape == got.shape == (1, 1, 20 * 1280) and (want - got).abs().max().item() < WAV_ATOL
