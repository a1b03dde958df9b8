"""SoVITS decoder (gpt_sovits_nb.sovits): key-for-key manifests of the released models, the golden fixtures,
shapes (speed, lists of references, noise), checkpoint round trips, the training pass and clear errors."""
from __future__ import annotations
import json

import pytest
import torch

from golden import GOLDEN, cases, load_case, materialize, case_args, check, manifest as golden_manifest
from gpt_sovits_nb.core import CheckpointError, ConfigError, SOVITS_CONFIGS, SoVITSConfig, VERSIONS
from gpt_sovits_nb.sovits import SoVITS
from gpt_sovits_nb.widgets import decode_widget

TINY = dict(inter_channels=16, hidden_channels=32, filter_channels=48, n_heads=2, n_layers=2, upsample_initial_channel=32,
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])


def tiny(version="v2", posterior=False, **kw):
    torch.manual_seed(0)
    gin = 24 if version in ("v2Pro", "v2ProPlus") else 512
    return SoVITS(SoVITSConfig(version=version, **{**TINY, "gin_channels": gin, **kw}), posterior=posterior).eval()


def inputs(T=12, N=7, F=30, n_symbols=732):
    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, 1024, (1, 1, T), generator=g), torch.randint(0, n_symbols, (1, N), generator=g),
            torch.rand(1, 1025, F, generator=g))


# ------------------------------------------------------------------------------------------ full-size manifests
@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_matches_released_model(version):
    man = golden_manifest(f"sovits_{version}", part=None)
    with torch.device("meta"):
        m = SoVITS(SOVITS_CONFIGS[version])
    sd = m.state_dict()
    got = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()}
    want = man["tensors"]
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert got == want
    assert list(got) == list(want)                       # same order as the official state dict
    assert m.n_params() == man["num_params"] and len(sd) == man["num_tensors"]
    assert m.version == version and not m.posterior


def test_posterior_adds_enc_q():
    with torch.device("meta"):
        m = SoVITS(SOVITS_CONFIGS["v2"], posterior=True)
    keys = [k for k in m.state_dict() if k.startswith("enc_q.")]
    assert "enc_q.pre.weight" in keys and "enc_q.enc.in_layers.15.weight_g" in keys and "enc_q.enc.cond_layer.weight_v" in keys
    assert m.state_dict()["enc_q.pre.weight"].shape == (192, 1025, 1) and m.state_dict()["enc_q.proj.weight"].shape == (384, 192, 1)


# ------------------------------------------------------------------------------------------ golden fixtures
_models: dict = {}


def _golden_model(case, tmp_path_factory):
    key = case["model"]["file"]
    if key not in _models:
        C = pytest.importorskip("gpt_sovits_nb.checkpoints")
        path = materialize(case, tmp_path_factory.getbasetemp() / "sovits_models")
        ckpt, _ = C.read_checkpoint(path)
        _models[key] = (SoVITS.from_checkpoint_dict(ckpt, case["model"]["version"]), ckpt)
    return _models[key]


@pytest.mark.parametrize("name", cases("sovits_"))
def test_golden(name, tmp_path_factory):
    case = load_case(name)
    model, _ = _golden_model(case, tmp_path_factory)
    args, kwargs = case_args(case)
    torch.manual_seed(case.get("seed") or 0)
    got = getattr(model, case["call"].split(".")[-1])(*args, **kwargs)
    check(case, got)


def test_golden_files_load_as_float32_eval(tmp_path_factory):
    for name in ("sovits_decode_sovA_v2Pro_02", "sovits_decode_sovA_v2_00"):
        case = load_case(name)
        model, ckpt = _golden_model(case, tmp_path_factory)
        assert not model.training and model.version == case["model"]["version"]
        assert all(v.dtype == torch.float32 for v in model.state_dict().values())
        for k, v in ckpt["weight"].items():                              # float16 files are upcast, values kept
            assert torch.equal(model.state_dict()[k], v.float()), k
        saved = model.to_checkpoint_dict()
        assert list(saved["weight"]) == list(ckpt["weight"])              # same keys, same order as the official saver
        assert all(v.dtype == torch.float16 for v in saved["weight"].values())
        assert isinstance(saved["config"], dict) and saved["config"]["model"]["version"] == model.version
        assert saved["info"] == ckpt["info"]
        assert type(saved["config"]["data"]) is dict and saved["config"]["train"]["segment_size"] == 20480


def test_load_sovits_if_available(tmp_path_factory):
    C = pytest.importorskip("gpt_sovits_nb.checkpoints")
    case = load_case("sovits_style_embedding_sovA_v2ProPlus_02")
    m = C.load_sovits(materialize(case, tmp_path_factory.getbasetemp() / "sovits_models"))
    assert isinstance(m, SoVITS) and m.version == "v2ProPlus" and not m.training
    args, kw = case_args(case)
    check(case, m.style_embedding(*args, **kw))


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("version", VERSIONS)
def test_decode_shapes_tiny(version):
    m = tiny(version)
    codes, phones, spec = inputs(n_symbols=m.config.n_symbols)
    sv = torch.randn(1, 20480) if m.config.is_pro else None
    wav = m.decode(codes, phones, spec, sv_emb=sv)
    assert wav.shape == (1, 1, 1280 * 12) and wav.dtype == torch.float32 and wav.abs().max() <= 1
    assert m.style_embedding(spec).shape == (1, m.config.gin_channels, 1)
    assert m.ref_enc.spectral[0].fc.in_features == (1025 if version == "v1" else 704)


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.3, 2.0, 3])
def test_speed_changes_length(speed):
    m = tiny()
    codes, phones, spec = inputs(T=15)
    wav = m.decode(codes, phones, spec, speed=speed)
    assert wav.shape == (1, 1, 640 * (int(30 / speed) + 1))


def test_list_of_references_averages_ge():
    m = tiny()
    codes, phones, spec = inputs()
    other = torch.rand(1, 1025, 45)
    ge, ge_text = m.speaker_condition([spec, other])
    want = (m.style_embedding(spec) + m.style_embedding(other)) / 2
    assert torch.allclose(ge, want, atol=1e-6) and ge_text is ge
    assert m.decode(codes, phones, [spec, other]).shape == (1, 1, 1280 * 12)
    single = m.decode(codes, phones, [spec])
    assert torch.allclose(single, m.decode(codes, phones, spec), atol=1e-6)


def test_pro_condition_and_lists():
    m = tiny("v2Pro")
    codes, phones, spec = inputs()
    sv = torch.randn(1, 20480)
    ge, ge_text = m.speaker_condition(spec, sv)
    raw = m.style_embedding(spec)
    assert torch.allclose(ge, m.prelu(raw + m.sv_emb(sv).unsqueeze(-1)), atol=1e-6)
    assert ge.shape == (1, 24, 1) and ge_text.shape == (1, 512, 1)
    other, sv2 = torch.rand(1, 1025, 20), torch.randn(1, 20480)
    ge2, _ = m.speaker_condition([spec, other], [sv, sv2])
    assert torch.allclose(ge2, (ge + m.speaker_condition(other, sv2)[0]) / 2, atol=1e-6)
    shared = m.decode(codes, phones, [spec, other], sv_emb=sv)           # one sv_emb for every reference
    assert shared.shape == (1, 1, 1280 * 12)
    assert m.decode(codes, phones, spec, sv_emb=sv[0]).shape == shared.shape   # [20480] is accepted too


def test_noise_scale():
    m = tiny()
    codes, phones, spec = inputs()
    a, b = m.decode(codes, phones, spec), m.decode(codes, phones, spec)
    assert torch.equal(a, b)                                             # noise_scale 0: deterministic
    torch.manual_seed(3); n1 = m.decode(codes, phones, spec, noise_scale=0.8)
    torch.manual_seed(3); n2 = m.decode(codes, phones, spec, noise_scale=0.8)
    assert n1.shape == a.shape and torch.equal(n1, n2) and not torch.allclose(n1, a)


def test_extract_latent_shapes_and_roundtrip():
    m = tiny()
    codes = m.extract_latent(torch.randn(1, 768, 31))
    assert codes.shape == (1, 1, 15) and codes.dtype == torch.long and 0 <= int(codes.min()) and int(codes.max()) < 1024
    q = m.quantizer
    ids = torch.tensor([[[0, 512, 1023]]])
    assert torch.equal(q.encode(q.decode(ids)), ids)
    x = m.upsample_tokens(ids)
    assert x.shape == (1, 768, 6) and torch.equal(x[..., ::2], x[..., 1::2])


def test_stages_equal_decode():
    m = tiny()
    codes, phones, spec = inputs()
    with torch.no_grad():
        ge, ge_text = m.speaker_condition(spec)
        x = m.upsample_tokens(codes)
        _, mean, _, mask = m.enc_p(x, torch.tensor([24]), phones, torch.tensor([7]), ge_text)
        wav = m.dec(m.flow(mean, mask, g=ge, reverse=True) * mask, g=ge)
    assert torch.allclose(wav, m.decode(codes, phones, spec), atol=1e-6)


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_tiny():
    m = tiny("v2ProPlus")
    codes, phones, spec = inputs()
    sv = torch.randn(1, 20480)
    full = m.to_checkpoint_dict(half=False)
    m2 = SoVITS.from_checkpoint_dict(full, "v2ProPlus")
    assert m2.config == m.config and m2.version == "v2ProPlus"
    assert torch.equal(m2.decode(codes, phones, spec, sv_emb=sv), m.decode(codes, phones, spec, sv_emb=sv))
    half = m.to_checkpoint_dict()
    assert all(v.dtype == torch.float16 for v in half["weight"].values()) and half["info"] == "0epoch_0iteration"
    m3 = SoVITS.from_checkpoint_dict(half, "v2ProPlus")
    for k, v in m3.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, m.state_dict()[k].half().float()), k


def test_checkpoint_enc_q_handling():
    m = tiny(posterior=True)
    ckpt = m.to_checkpoint_dict(half=False)
    assert not any(k.startswith("enc_q.") for k in ckpt["weight"])
    with_q = {**ckpt, "weight": {**ckpt["weight"], **{k: v for k, v in m.state_dict().items() if k.startswith("enc_q.")}}}
    plain = SoVITS.from_checkpoint_dict(with_q, "v2")                    # the pretrained s2G files carry enc_q: dropped
    assert not plain.posterior
    loaded = SoVITS.from_checkpoint_dict(with_q, "v2", posterior=True)  # ... or kept for training
    assert torch.equal(loaded.enc_q.pre.weight, m.enc_q.pre.weight)
    fresh = SoVITS.from_checkpoint_dict(ckpt, "v2", posterior=True)     # an inference file: enc_q freshly initialised
    assert fresh.posterior and torch.isfinite(fresh.enc_q.pre.weight).all()
    partial = {**with_q, "weight": {k: v for k, v in with_q["weight"].items() if k != "enc_q.pre.weight"}}
    with pytest.raises(CheckpointError, match="enc_q.pre.weight"):
        SoVITS.from_checkpoint_dict(partial, "v2", posterior=True)


def test_checkpoint_strict_errors():
    m = tiny()
    ckpt = m.to_checkpoint_dict()
    w = dict(ckpt["weight"])
    missing = {**ckpt, "weight": {k: v for k, v in w.items() if k != "dec.conv_post.weight"}}
    with pytest.raises(CheckpointError, match="missing keys: dec.conv_post.weight"):
        SoVITS.from_checkpoint_dict(missing, "v2")
    extra = {**ckpt, "weight": {**w, "sv_emb.weight": torch.zeros(512, 20480)}}
    with pytest.raises(CheckpointError, match="unexpected keys: sv_emb.weight"):
        SoVITS.from_checkpoint_dict(extra, "v2")
    reshaped = {**ckpt, "weight": {**w, "enc_p.text_embedding.weight": torch.zeros(322, 32)}}
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: enc_p.text_embedding.weight \[322, 32\]"):
        SoVITS.from_checkpoint_dict(reshaped, "v2")
    with pytest.raises(CheckpointError):
        SoVITS.from_checkpoint_dict({"config": {}}, "v2")
    with pytest.raises(ConfigError):
        SoVITS.from_checkpoint_dict(ckpt, "v3")


def test_config_from_hparams_like_object():
    m = tiny()
    cfg = m.to_checkpoint_dict()["config"]

    class Attr(dict):                                                    # HParams-like: sections as attributes
        __getattr__ = dict.__getitem__
    hp = Attr({k: Attr(v) if isinstance(v, dict) else v for k, v in cfg.items()})
    m2 = SoVITS.from_checkpoint_dict({"weight": m.to_checkpoint_dict()["weight"], "config": hp, "info": "x"}, "v2")
    assert m2.config.hidden_channels == 32 and m2.info == "x" and type(m2.to_checkpoint_dict()["config"]["model"]) is dict


# ------------------------------------------------------------------------------------------ training pass
def test_training_forward():
    m = tiny("v2Pro", posterior=True).train()
    B = 2
    out = m(torch.randn(B, 768, 36), torch.rand(B, 1025, 36), torch.tensor([36, 30]), torch.randint(0, 732, (B, 5)),
            torch.tensor([5, 3]), sv_emb=torch.randn(B, 20480))
    assert out["wav"].shape == (B, 1, 20480) and out["z"].shape == out["m_p"].shape == (B, 16, 36)
    assert out["codes"].shape == (1, B, 18)
    out["wav"].pow(2).mean().backward()
    assert m.enc_q.pre.weight.grad is not None and m.sv_emb.weight.grad is not None and m.ssl_proj.weight.grad is None
    with pytest.raises(ConfigError, match="posterior=True"):
        tiny()(torch.randn(1, 768, 36), torch.rand(1, 1025, 36), torch.tensor([36]), torch.zeros(1, 3).long(), torch.tensor([3]))
    with pytest.raises(ConfigError, match="sv_emb"):
        m(torch.randn(1, 768, 36), torch.rand(1, 1025, 36), torch.tensor([36]), torch.zeros(1, 3).long(), torch.tensor([3]))


# ------------------------------------------------------------------------------------------ bad input
def test_errors_bad_inputs():
    m = tiny()
    codes, phones, spec = inputs()
    bad = [
        (dict(refer_spec=torch.rand(1, 128, 30)), "1025-bin linear spectrogram"),
        (dict(refer_spec=torch.rand(1, 704, 30)), "704 frequency bins"),
        (dict(refer_spec=torch.rand(1, 1025, 0)), "no frames"),
        (dict(refer_spec=torch.full((1, 1025, 5), float("nan"))), "NaN"),
        (dict(refer_spec=[]), "empty list"),
        (dict(codes=torch.tensor([[[3, 1024]]])), r"\[0, 1023\].*EOS"),
        (dict(codes=torch.tensor([[[-1, 3]]])), r"\[0, 1023\]"),
        (dict(codes=[1, 2, 3]), "torch tensor"),
        (dict(codes=torch.zeros(1, 1, 0, dtype=torch.long)), "empty"),
        (dict(codes=torch.zeros(2, 1, 4, dtype=torch.long)), "one quantiser level"),
        (dict(phones=torch.tensor([[5, 732]])), r"phone ids must be in \[0, 731\].*phones_to_ids"),
        (dict(phones=torch.zeros(2, 3, dtype=torch.long)), "batch size"),
        (dict(speed=0), "speed"),
        (dict(speed=-1.0), "speed"),
        (dict(noise_scale=-0.1), "noise_scale"),
    ]
    for change, msg in bad:
        args = dict(codes=codes, phones=phones, refer_spec=spec) | change
        with pytest.raises(ConfigError, match=msg):
            m.decode(**args)
    assert m.decode(codes[0], phones[0], spec[0]).shape == (1, 1, 1280 * 12)    # [B, T], [N], [1025, F] are accepted
    with pytest.raises(ConfigError, match="768"):
        m.extract_latent(torch.randn(1, 1024, 20))
    with pytest.raises(ConfigError, match="2 frames"):
        m.extract_latent(torch.randn(1, 768, 1))
    with pytest.raises(ConfigError, match="1025"):
        m.style_embedding(torch.rand(1, 80, 20))


def test_errors_v1_phones():
    m = tiny("v1")
    codes, phones, spec = inputs(n_symbols=322)
    assert m.decode(codes, phones, spec).shape == (1, 1, 1280 * 12)
    with pytest.raises(ConfigError, match=r"\[0, 321\].*version='v1'"):
        m.decode(codes, torch.tensor([[400]]), spec)


def test_errors_pro_needs_sv_emb():
    m = tiny("v2ProPlus")
    codes, phones, spec = inputs()
    with pytest.raises(ConfigError, match=r"sv_emb.*gpt_sovits_nb\.speaker"):
        m.decode(codes, phones, spec)
    with pytest.raises(ConfigError, match="20480"):
        m.decode(codes, phones, spec, sv_emb=torch.randn(1, 512))
    with pytest.raises(ConfigError, match="one per reference"):
        m.decode(codes, phones, [spec, spec], sv_emb=[torch.randn(1, 20480)] * 3)
    assert tiny("v2").decode(codes, phones, spec, sv_emb=torch.randn(1, 20480)).shape == (1, 1, 1280 * 12)  # ignored by v2


def test_errors_config():
    with pytest.raises(ConfigError, match="multiple of 4"):
        SoVITS(SoVITSConfig(version="v2", gin_channels=66))
    small = tiny("v2", gin_channels=64)                                  # a v1/v2 MRTE is as wide as ge
    assert small.enc_p.mrte.c_pre.out_channels == 64 and tiny("v2Pro").enc_p.mrte.c_pre.out_channels == 512
    codes, phones, spec = inputs()
    assert small.decode(codes, phones, spec).shape == (1, 1, 1280 * 12)
    with pytest.raises(ConfigError, match="Unknown model version"):
        SoVITS(SoVITSConfig(version="v3"))
    with pytest.raises(ConfigError, match="25hz"):
        SoVITS(SoVITSConfig(version="v2", semantic_frame_rate="50hz"))
    narrow = SoVITS(SoVITSConfig(version="v2", inter_channels=16, hidden_channels=16, filter_channels=32, n_layers=1,
                                 upsample_initial_channel=16)).eval()          # the speaker chapter's style-only model
    codes, phones, spec = inputs()
    assert narrow.style_embedding(spec).shape == (1, 512, 1)
    with pytest.raises(ConfigError, match="upsample_initial_channel >= 32"):
        narrow.decode(codes, phones, spec)


# ------------------------------------------------------------------------------------------ widget
@pytest.mark.widgets
def test_decode_widget():
    pytest.importorskip("ipywidgets")
    m = tiny()
    codes, phones, spec = inputs()
    ui = decode_widget(m, codes, phones, spec)
    w = ui._gsv
    assert w["status"].value.startswith(f"(1, 1, {1280 * 12})")
    w["speed"].value = 2.0
    assert w["status"].value.startswith(f"(1, 1, {640 * (int(24 / 2.0) + 1)})")
    assert "t-sovits" in ui._dom_classes and "t-sovits-noise" in w["noise"]._dom_classes
    bad = decode_widget(tiny("v2Pro"), codes, phones, spec)              # no sv_emb: the error is shown, not raised
    assert "ConfigError" in bad._gsv["status"].value


# ------------------------------------------------------------------------------------------ GPU (skipped without CUDA)
@pytest.mark.gpu
@pytest.mark.gpu
def test_decode_on_cuda_float32_and_half():
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU")
    m = tiny("v2Pro")
    codes, phones, spec = inputs()
    sv = torch.randn(1, 20480)
    ref = m.decode(codes, phones, spec, sv_emb=sv)
    m = m.to("cuda")
    got = m.decode(codes, phones, spec, sv_emb=sv)                      # CPU inputs move to the model's device
    assert got.device.type == "cuda" and torch.allclose(got.cpu(), ref, atol=1e-4)
    assert m.extract_latent(torch.randn(1, 768, 20)).device.type == "cuda"
    m = m.half()
    half = m.decode(codes, phones, [spec, spec], sv_emb=sv)
    assert half.dtype == torch.float16 and torch.isfinite(half).all() and half.shape == ref.shape
    assert (half.float().cpu() - ref).abs().max() < 0.05


def test_config_round_trip_non_default(tmp_path):
    cfg = SoVITSConfig(version="v2", **{**TINY, "gin_channels": 64, "ssl_dim": 96, "segment_size": 12800, "n_speakers": 5,
                                        "p_dropout": 0.2, "resblock": "2", "resblock_dilation_sizes": [[1, 2]]})
    m = SoVITS(cfg).eval()
    saved = m.to_checkpoint_dict()
    assert saved["config"]["model"]["ssl_dim"] == 96 and "codebook_size" not in saved["config"]["model"]
    m2 = SoVITS.from_checkpoint_dict(saved, "v2")
    assert m2.config == cfg
    assert "ssl_dim" not in tiny().to_checkpoint_dict()["config"]["model"]   # released-size configs stay official
    assert m2.extract_latent(torch.randn(1, 96, 10)).shape == (1, 1, 5)
    C = pytest.importorskip("gpt_sovits_nb.checkpoints")                # through the official file format
    m3 = C.load_sovits(C.save_sovits(m, tmp_path / "tiny.pth"))
    assert m3.config == cfg and m3.version == "v2"
