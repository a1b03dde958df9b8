"""The speaker chapter (nbs/04_speaker.ipynb): the v2Pro SV network (ERes2NetV2) loads the released checkpoint's keys and
computes what sv.py computes; Resemblyzer's speaker similarity separates the embedded corpus' voices; the widget's
functions work on both ipywidgets value shapes."""
from __future__ import annotations
import base64, io, json, math, shutil, subprocess, wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gpt_sovits_nb.core import AudioError, CheckpointError, ConfigError, UnsafeCheckpointError, WeightsNotFoundError
from gpt_sovits_nb.widgets import default_pick, speaker_widget
from gpt_sovits_nb import speaker as S
from golden import manifest as golden_manifest

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the SV network (ERes2NetV2)

@pytest.fixture(scope="module")
def sv_net():
    torch.manual_seed(0)
    return S.ERes2NetV2().eval()


def test_state_dict_matches_the_golden_manifest(sv_net):
    man = golden_manifest("eres2netv2_sv", part=None)
    want = man["tensors"]
    got = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sv_net.state_dict().items()}
    assert sorted(set(want) - set(got)) == [], "missing keys"
    assert sorted(set(got) - set(want)) == [], "unexpected keys"
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not bad, list(bad.items())[:5]
    assert len(got) == man["num_tensors"] == 1001
    assert sum(v.numel() for v in sv_net.state_dict().values()) == man["num_params"]
    assert sv_net.state_dict()["bn1.num_batches_tracked"].dtype == torch.int64


def test_forward3_shape_and_batch(sv_net):
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 4800, generator=g)          # 0.3 s: 28 fbank frames
    enc = S.SVEncoder(sv_net)
    e = enc.embed(wav)
    assert e.shape == (2, S.SV_DIM) == (2, 20480) and e.dtype == torch.float32 and torch.isfinite(e).all()
    # each row is embedded on its own: a batch gives the rows' single embeddings
    assert torch.allclose(e[1:], enc.embed(wav[1:]), atol=1e-5, rtol=1e-5)
    feats = enc.features(wav)
    assert feats.shape == (2, 1 + (4800 - 400) // 160, 80) == (2, 28, 80)
    with torch.no_grad():
        assert sv_net.feature_map(feats).shape == (2, 2048, 10, 4)
        assert sv_net(feats).shape == (2, 192)


def test_embed_is_deterministic_and_survives_a_checkpoint_round_trip(sv_net, tmp_path):
    torch.save(sv_net.state_dict(), tmp_path / "sv.ckpt")
    a = S.SVEncoder.from_file(tmp_path / "sv.ckpt")
    assert not a.model.training and a.model is not sv_net
    wav = 0.2 * torch.sin(2 * math.pi * 180 * torch.arange(4800) / 16000)[None]
    e1, e2 = a.embed(wav), a.embed(wav)
    assert torch.equal(e1, e2)                                            # eval mode, no dither: bit for bit
    assert torch.equal(a.compute_embedding3(wav), e1) and torch.equal(a.forward3(a.features(wav)), e1)
    with torch.no_grad():
        assert torch.equal(e1, sv_net.forward3(S.sv_fbank(wav)[None]))      # same weights, same numbers


def test_half_checkpoint_loads_into_float32(sv_net, tmp_path):
    "The released file holds float16 tensors; like sv.py we copy them into the float32 network."
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sv_net.state_dict().items()}
    torch.save(half, tmp_path / "sv_half.ckpt")
    enc = S.SVEncoder.from_file(tmp_path / "sv_half.ckpt")
    got = enc.model.state_dict()
    assert enc.dtype == torch.float32 and got["bn1.num_batches_tracked"].dtype == torch.int64
    assert all(torch.equal(got[k], v.float() if v.is_floating_point() else v) for k, v in half.items())


def test_from_pretrained_uses_local_dir_and_says_where_when_missing(sv_net, tmp_path, monkeypatch):
    pytest.importorskip("gpt_sovits_nb.checkpoints")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1"); monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFoundError, match="pretrained_eres2netv2w24s4ep4.ckpt"):
        S.SVEncoder.from_pretrained(local_dir=tmp_path)
    (tmp_path / "sv").mkdir()
    torch.save(sv_net.state_dict(), tmp_path / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt")
    enc = S.SVEncoder.from_pretrained(local_dir=tmp_path)
    assert torch.equal(enc.model.seg_1.weight, sv_net.seg_1.weight)


def test_from_file_errors(tmp_path, sv_net):
    with pytest.raises(WeightsNotFoundError, match="not found"):
        S.SVEncoder.from_file(tmp_path / "missing.ckpt")
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.ckpt")
    with pytest.raises(CheckpointError, match="missing keys"):
        S.SVEncoder.from_file(tmp_path / "wrong.ckpt")
    torch.save({"x": SimpleNamespace(a=1)}, tmp_path / "pickle.ckpt")      # an arbitrary Python object
    with pytest.raises(UnsafeCheckpointError):
        S.SVEncoder.from_file(tmp_path / "pickle.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        S.SVEncoder.from_file(tmp_path / "junk.ckpt")


def _kaldi(wav):
    import torchaudio.compliance.kaldi as kaldi
    return kaldi.fbank(wav, num_mel_bins=80, sample_frequency=16000, dither=0)   # sv.py compute_embedding3's call


@pytest.mark.parametrize("n", [400, 401, 559, 560, 4000, 16000, 23457])
def test_fbank_matches_torchaudio_kaldi(n):
    g = torch.Generator().manual_seed(n)
    t = torch.arange(n) / 16000
    speechy = 0.3 * torch.sin(2 * math.pi * 150 * t) * (1 + torch.sin(2 * math.pi * 3 * t)) + 0.01 * torch.randn(n, generator=g)
    for wav in (speechy[None], 0.5 * torch.randn(1, n, generator=g), 1e-6 * torch.randn(1, n, generator=g)):
        ours, ref = S.sv_fbank(wav), _kaldi(wav)
        assert ours.shape == ref.shape == (1 + (n - 400) // 160, 80)
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-6), float((ours - ref).abs().max())
    assert torch.equal(S.sv_fbank(speechy), S.sv_fbank(speechy[None]))


def test_fbank_mel_banks_and_window_match_torchaudio():
    import torchaudio.compliance.kaldi as kaldi
    banks, _ = kaldi.get_mel_banks(80, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    assert torch.equal(S.kaldi_mel_banks()[:, :256], banks) and (S.kaldi_mel_banks()[:, 256] == 0).all()
    assert torch.equal(S.povey_window(), torch.hann_window(400, periodic=False).pow(0.85))


def test_fbank_rejects_too_short_and_batches():
    with pytest.raises(AudioError, match="too short"):
        S.sv_fbank(torch.zeros(1, 399))
    with pytest.raises(AudioError, match="one waveform"):
        S.sv_fbank(torch.zeros(2, 1000))


def test_sv_waveform_follows_get_spepc():
    from gpt_sovits_nb.audio import resample
    t = torch.arange(22050) / 22050
    wav = 3.0 * torch.sin(2 * math.pi * 220 * t)[None]                    # peak 3 > 1: divided by min(2, peak) = 2
    w32 = resample(wav, 22050, 32000)
    want = resample(w32 / 2.0, 32000, 16000)
    got = S.sv_waveform(wav, 22050)
    assert got.shape == want.shape and torch.allclose(got, want)
    with pytest.raises(ConfigError, match="sr="):
        S.sv_waveform(wav)


# ---------------------------------------------------------------- Resemblyzer speaker similarity

def _synth_clips(tmp: Path) -> list[tuple[str, str]]:
    "Fallback voices when the corpus module is absent: CMU ARCTIC voices (real speakers) through flite."
    if not shutil.which("flite"): pytest.skip("neither gpt_sovits_nb.corpus nor flite is available")
    texts = ["Good morning, everyone.", "Where did you put the keys?", "Please close the window.", "That was a great idea!"]
    out = []
    for v in ("awb", "rms", "slt", "kal"):
        for i, t in enumerate(texts[:3]):
            p = tmp / f"{v}_{i}.wav"
            subprocess.run(["flite", "-voice", v, "-t", t, "-o", str(p)], check=True)
            out.append((str(p), v))
    return out


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    "(path, speaker) pairs: 3 clips each of 4 corpus speakers, one per real person (recorded and TTS voices in turn)."
    try:
        import gpt_sovits_nb.corpus  # noqa: F401
    except ImportError:
        return _synth_clips(tmp_path_factory.mktemp("voices"))
    picked = [(str(c.path), c.speaker) for c in S.pick_voices(4, 3)]
    assert len({s for _, s in picked}) >= 3, f"the corpus should have at least 3 real speakers with 3 clips: {picked}"
    return picked


@pytest.fixture(scope="module")
def voice_embeddings(voices):
    return S.embed_clips([p for p, _ in voices])


def test_resemblyzer_embedding(voices, voice_embeddings):
    e = voice_embeddings
    assert e.shape == (len(voices), 256) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    p = voices[0][0]
    one = S.speaker_embedding(p)
    assert one.shape == (256,) and np.allclose(one, e[0], atol=1e-6)
    assert S.voice_encoder() is S.voice_encoder()                 # cached


def test_similarity_accepts_paths_arrays_and_embeddings(voices, voice_embeddings):
    import soundfile as sf
    (p0, _), (p1, _) = voices[0], voices[1]
    s_path = S.speaker_similarity(p0, p1)
    x, sr = sf.read(p1, dtype="float32")
    assert abs(S.speaker_similarity(p0, (x, sr)) - s_path) < 0.02
    assert abs(S.speaker_similarity(voice_embeddings[0], x, sr=sr) - s_path) < 0.02
    assert abs(S.speaker_similarity(voice_embeddings[0], voice_embeddings[1]) - s_path) < 1e-5
    assert abs(S.speaker_similarity(p0, p0) - 1.0) < 1e-5
    with pytest.raises(ConfigError, match="sr="):
        S.speaker_similarity(p0, x)
    with pytest.raises(AudioError):
        S.speaker_embedding(np.zeros(16000, np.float32), 16000)          # silence


def test_same_speaker_lands_closer_than_different_speakers(voices, voice_embeddings):
    labels = [s for _, s in voices]
    sim = S.similarity_matrix(voice_embeddings)
    assert sim.shape == (len(voices),) * 2 and np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1, atol=1e-4)
    wb = S.within_between(sim, labels)
    report = {spk: (round(v["within"], 3), round(v["between"], 3)) for spk, v in wb.items()}
    print("within / between similarity per speaker:", report)
    assert len(wb) >= 3
    for spk, v in wb.items():
        assert v["within"] > v["between"], (spk, report)
    assert S.nearest_speaker_accuracy(sim, labels) >= 0.75


def test_matrix_of_clips_equals_matrix_of_embeddings(voices, voice_embeddings):
    paths = [p for p, _ in voices[:3]]
    assert np.allclose(S.similarity_matrix(paths), S.similarity_matrix(voice_embeddings[:3]), atol=1e-5)


# ---------------------------------------------------------------- small numeric helpers

def test_within_between_and_nearest_on_a_toy_matrix():
    sim = np.array([[1, .9, .1, .2], [.9, 1, .3, .2], [.1, .3, 1, .8], [.2, .2, .8, 1]])
    wb = S.within_between(sim, ["a", "a", "b", "b"])
    assert wb["a"]["within"] == pytest.approx(.9) and wb["a"]["between"] == pytest.approx((.1 + .2 + .3 + .2) / 4)
    assert wb["b"]["within"] == pytest.approx(.8)
    assert S.nearest_speaker_accuracy(sim, ["a", "a", "b", "b"]) == 1.0
    assert S.nearest_speaker_accuracy(sim, ["a", "b", "a", "b"]) == 0.0


def test_project_2d():
    rng = np.random.default_rng(0)
    x = 0.01 * rng.normal(size=(6, 256)); x[:, 0] = 10 * rng.normal(size=6); x[:, 1] = rng.normal(size=6)
    p = S.project_2d(x)
    assert p.shape == (6, 2) and np.allclose(p, S.project_2d(x)) and np.allclose(p.mean(0), 0)
    assert p[:, 0].var() >= p[:, 1].var()
    assert np.allclose(np.abs(p[:, 0]), np.abs(x[:, 0] - x[:, 0].mean()), rtol=0.1, atol=0.5)   # first axis follows the widest feature
    assert S.project_2d(x[:1]).shape == (1, 2) and S.project_2d(x[:2]).shape == (2, 2)
    with pytest.raises(ConfigError):
        S.project_2d(x[0])


def test_plots_return_figures():
    from matplotlib.figure import Figure
    sim = np.eye(3); pts = np.arange(6.0).reshape(3, 2)
    assert isinstance(S.plot_similarity_matrix(sim, ["a", "b", "c"]), Figure)
    assert isinstance(S.plot_projection(pts, ["a", "a", "b"]), Figure)
    fig = S.similarity_figure(sim, pts, ["x1", "x2", "y1"], ["x", "x", "y"])
    assert len(fig.axes) >= 2 and fig.axes[0].get_xticklabels()[0].get_text() == "x1"


# ---------------------------------------------------------------- widget functions

def _wav_bytes(seconds=1.0, sr=16000, f=220.0) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * f * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(sr); w.writeframes(x.tobytes())
    return buf.getvalue()


@pytest.mark.widgets
def test_decode_upload_both_ipywidgets_shapes():
    a, b = _wav_bytes(), _wav_bytes(f=330.0)
    v7 = {"a.wav": {"metadata": {"name": "a.wav", "type": "audio/wav", "size": len(a)}, "content": a},
          "b.wav": {"metadata": {"name": "b.wav"}, "content": b}}
    v8 = (SimpleNamespace(name="a.wav", type="audio/wav", size=len(a), content=memoryview(a)),
          SimpleNamespace(name="b.wav", type="audio/wav", size=len(b), content=memoryview(b)))
    v8_dicts = tuple({"name": e.name, "type": e.type, "size": e.size, "content": e.content} for e in v8)   # Bunch-like
    want = [("a.wav", a), ("b.wav", b)]
    assert S.decode_upload(v7) == S.decode_upload(v8) == S.decode_upload(v8_dicts) == want
    assert all(isinstance(d, bytes) for _, d in S.decode_upload(v8))
    assert S.decode_upload(()) == S.decode_upload({}) == S.decode_upload(None) == []


@pytest.mark.widgets
def test_decode_upload_real_widget_value():
    import ipywidgets as W
    u = W.FileUpload(accept="audio/*", multiple=True)
    assert S.decode_upload(u.value) == []


def test_clip_from_bytes():
    wav, sr = S.clip_from_bytes("a.wav", _wav_bytes(0.5, 22050))
    assert sr == 22050 and wav.shape == (11025,) and wav.dtype == np.float32 and abs(np.abs(wav).max() - 0.3) < 1e-3
    with pytest.raises(AudioError, match="notes.txt"):
        S.clip_from_bytes("notes.txt", b"hello")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(b"\x00\x00" * 16000)
    with pytest.raises(AudioError, match="silent"):
        S.clip_from_bytes("quiet.wav", buf.getvalue())


def test_compare_clips(voices):
    import soundfile as sf
    x, sr = sf.read(voices[0][0], dtype="float32")
    sim, pts, labels = S.compare_clips([(x, sr)] + [p for p, _ in voices[1:3]], ["mine", "b", "c"])
    assert sim.shape == (3, 3) and pts.shape == (3, 2) and labels == ["mine", "b", "c"]
    with pytest.raises(ConfigError, match="at least 2"):
        S.compare_clips([voices[0][0]])


def test_record_js_encodes_a_valid_wav():
    node = shutil.which("node")
    if not node: pytest.skip("node is not installed")
    js = S.RECORD_JS + "\nconst x = new Float32Array(800).map((_, i) => 0.5 * Math.sin(2 * Math.PI * 440 * i / 8000));\n" \
                       "process.stdout.write(gsvEncodeWav(x, 8000));\n"
    r = subprocess.run([node, "-e", js], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wav, sr = S.clip_from_bytes("rec.wav", base64.b64decode(r.stdout))
    want = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)
    assert sr == 8000 and wav.shape == (800,) and np.abs(wav - want).max() < 1e-4


def test_record_outside_colab_says_what_to_do():
    assert not S.in_colab()
    with pytest.raises(ConfigError, match="upload"):
        S.record_clip(1)


@pytest.mark.widgets
def test_widget_builds_hides_record_and_compares(voices):
    clips = [SimpleNamespace(path=p, speaker=s) for p, s in voices]
    ui = speaker_widget(clips)
    parts = ui._gsv
    assert "t-speaker" in ui._dom_classes and "t-speaker-compare" in parts["compare"]._dom_classes
    assert parts["record"].layout.display == "none" and "Colab" in parts["status"].value
    assert len(parts["pick"].options) == len(clips)
    parts["pick"].value = (0, 1, len(clips) - 1)
    parts["on_compare"](None)
    assert "3 clips compared" in parts["status"].value, parts["status"].value
    parts["pick"].value = (0,)
    parts["on_compare"](None)
    assert "at least 2" in parts["status"].value


def test_default_pick_spans_voices():
    clips = [SimpleNamespace(path=f"{s}{k}.wav", speaker=s) for s in "abcd" for k in range(4)]
    assert default_pick(clips) == (0, 1, 4, 5, 8, 9)
    assert default_pick(clips, per_speaker=1, speakers=2) == (0, 4)
    assert default_pick(clips[:3]) == (0, 1)                     # one voice: its first two clips
