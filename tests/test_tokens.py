"""SSLEncoder (golden cases, loading of the released format), reference-clip preprocessing, k-means tokens and their tools."""
from __future__ import annotations
import math
import shutil

import numpy as np
import pytest
import torch

from golden import cases, case_args, load_case, materialize, check
from gpt_sovits_nb.core import AudioError, CheckpointError, ConfigError, TextError, WeightsNotFoundError
from gpt_sovits_nb.tokens import (REF_PAD, KMeansTokenizer, SSLEncoder, align_phones, code_usage, fit_kmeans, mfcc_frames,
                                  n_tokens, nearest_code, phone_labels, plot_tokens, pool_frames, reference_ssl_input,
                                  ssl_frames, tiny_random_hubert, token_audio, token_phone_stats, token_span, usage_perplexity)


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory):
    return materialize(load_case("ssl_features_00"), tmp_path_factory.mktemp("hubert_golden"))


@pytest.fixture(scope="module")
def golden_hubert(golden_dir):
    return SSLEncoder.from_pretrained(golden_dir)


@pytest.mark.parametrize("name", cases("ssl_features"))
def test_golden(name, golden_hubert):
    case = load_case(name)
    (wav,), _ = case_args(case)
    # the case's input already holds the reference preprocessing's 9600 zeros; features() adds nothing
    assert not wav[0, -REF_PAD:].any() and wav[0, :-REF_PAD].abs().max() > 0
    got = golden_hubert.features(wav)
    assert got.dtype == torch.float32 and got.shape[-1] == ssl_frames(wav.shape[-1])
    check(case, got)


def test_golden_cases_exist():
    assert len(cases("ssl_features")) >= 2


def test_released_format_loads_exactly(golden_dir, golden_hubert):
    "float16 pytorch_model.bin with old weight_g/weight_v keys: every tensor must equal the file's (not re-initialised)."
    file_sd = torch.load(golden_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert "encoder.pos_conv_embed.conv.weight_g" in file_sd and "encoder.pos_conv_embed.conv.weight_v" in file_sd
    model_sd = golden_hubert.model.state_dict()
    assert all(v.dtype == torch.float32 for v in model_sd.values() if v.is_floating_point())
    rename = {"encoder.pos_conv_embed.conv.weight_g": ["encoder.pos_conv_embed.conv.parametrizations.weight.original0",
                                                        "encoder.pos_conv_embed.conv.weight_g"],
              "encoder.pos_conv_embed.conv.weight_v": ["encoder.pos_conv_embed.conv.parametrizations.weight.original1",
                                                        "encoder.pos_conv_embed.conv.weight_v"]}
    for k, v in file_sd.items():
        names = [n for n in rename.get(k, [k]) if n in model_sd]
        assert names, f"{k} not in the model"
        assert torch.equal(model_sd[names[0]], v.float()), k
    # and the effective (weight-normed) conv weight is g * v / ||v|| computed from exactly those tensors
    g, v = file_sd["encoder.pos_conv_embed.conv.weight_g"].float(), file_sd["encoder.pos_conv_embed.conv.weight_v"].float()
    want = g * v / v.norm(dim=(0, 1), keepdim=True)
    got = golden_hubert.model.encoder.pos_conv_embed.conv.weight
    assert torch.allclose(got, want, atol=1e-6)


def test_missing_positional_conv_is_refused(tmp_path, golden_dir):
    d = tmp_path / "hubert-partial"
    shutil.copytree(golden_dir, d)
    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in sd.items() if "pos_conv" not in k}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="missing"):
        SSLEncoder.from_pretrained(d)


def test_missing_folders(tmp_path, golden_dir):
    with pytest.raises(WeightsNotFoundError, match="does not exist") as e:
        SSLEncoder.from_pretrained(tmp_path / "none")
    assert "pretrained_weights('hubert')" in str(e.value)
    for drop in ("config.json", "pytorch_model.bin"):
        d = tmp_path / f"no-{drop}"
        shutil.copytree(golden_dir, d)
        (d / drop).unlink()
        with pytest.raises(WeightsNotFoundError, match="incomplete"):
            SSLEncoder.from_pretrained(d)
    d = tmp_path / "damaged"
    shutil.copytree(golden_dir, d)
    (d / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        SSLEncoder.from_pretrained(d)


def test_features_input_shapes(golden_hubert):
    x = torch.randn(1, 16000) * 0.1
    f = golden_hubert.features(x)
    assert f.shape == (1, golden_hubert.hidden, 49)
    assert torch.allclose(golden_hubert.features(x[0]), f, atol=1e-5)         # [S] taken as [1, S]
    assert torch.allclose(golden_hubert.features(x[None]), f, atol=1e-5)      # [1, 1, S]
    with pytest.raises(AudioError, match="too short"):
        golden_hubert.features(torch.zeros(1, 399))
    bad = x.clone(); bad[0, 5] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        golden_hubert.features(bad)
    with pytest.raises(AudioError, match="shape"):
        golden_hubert.features(torch.zeros(2, 2, 2, 16000))


def test_tiny_random_hubert(tmp_path):
    enc = SSLEncoder.from_pretrained(tiny_random_hubert(tmp_path / "h", hidden_size=32))
    assert enc.hidden == 32 and enc.features(torch.randn(1, 8000)).shape == (1, 32, ssl_frames(8000))


def _tone(seconds, sr=16000, f=220.0):
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * math.pi * f * t))[None]


def test_reference_ssl_input(tmp_path):
    from gpt_sovits_nb.audio import save_wav
    for s in (3.0, 5.5, 10.0):
        x = reference_ssl_input(_tone(s), 16000)
        assert x.shape == (1, int(s * 16000) + 9600) and not x[0, -9600:].any()
    with pytest.raises(AudioError, match="2.99 s") as e:
        reference_ssl_input(_tone(2.99), 16000)
    assert "3-10 s" in str(e.value)
    with pytest.raises(AudioError, match="Trim"):
        reference_ssl_input(_tone(10.01), 16000)
    p = save_wav(tmp_path / "ref.wav", _tone(4.0, 32000), 32000)
    y = reference_ssl_input(p)
    assert y.shape == (1, 64000 + 9600)
    with pytest.raises(AudioError, match="ref_short.wav"):
        reference_ssl_input(save_wav(tmp_path / "ref_short.wav", _tone(1.0, 32000), 32000))
    stereo = torch.cat([_tone(4.0), 0.5 * _tone(4.0)])
    assert torch.allclose(reference_ssl_input(stereo, 16000)[:, :64000], 0.75 * _tone(4.0), atol=1e-6)
    with pytest.raises(ConfigError, match="sr="):
        reference_ssl_input(_tone(4.0))
    with pytest.raises(AudioError, match="missing.wav"):
        reference_ssl_input(tmp_path / "missing.wav")


def test_frames():
    assert ssl_frames(64000) == 199 and ssl_frames(74400) == 232 and ssl_frames(100) == 0
    assert n_tokens(64000) == 99 and n_tokens(64000, 50) == 199
    with pytest.raises(ConfigError):
        n_tokens(64000, 30)


def test_nearest_code():
    g = torch.Generator().manual_seed(0)
    x, cb = torch.randn(2, 8, 50, generator=g), torch.randn(30, 8, generator=g)
    got = nearest_code(x, cb, chunk=7)
    want = torch.stack([torch.cdist(x[b].T, cb).argmin(1) for b in range(2)])
    assert got.shape == (2, 50) and torch.equal(got, want)
    with pytest.raises(ConfigError):
        nearest_code(x, torch.randn(30, 9))


def test_fit_kmeans():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0., 0.], [5., 0.], [0., 5.], [5., 5.]])
    pts = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centres])
    cents, hist = fit_kmeans(pts, 4, iters=15, seed=0)
    assert torch.cdist(centres, cents).min(1).values.max() < 0.1
    assert all(b <= a + 1e-6 for a, b in zip(hist, hist[1:]))
    c2, _ = fit_kmeans(pts, 4, iters=15, seed=0)
    assert torch.equal(cents, c2)                                  # seeded: repeatable
    with pytest.raises(ConfigError, match="frames"):
        fit_kmeans(pts[:3], 4)


def test_mfcc_and_pool():
    x = _tone(1.0)
    m = mfcc_frames(x)
    assert m.shape == (1, 39, ssl_frames(16000)) and torch.isfinite(m).all()
    assert mfcc_frames(x, deltas=False).shape == (1, 13, 49)
    p = pool_frames(torch.arange(10.).reshape(1, 2, 5))
    assert p.shape == (1, 2, 2) and p[0, 0].tolist() == [0.5, 2.5]
    assert pool_frames(m, 50) is m


@pytest.fixture(scope="module")
def speech():
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.audio import load_audio
    clips = load_corpus("train")[:12]
    return clips, [load_audio(c.path, 16000) for c in clips]


@pytest.fixture(scope="module")
def fitted(speech):
    return KMeansTokenizer(n_units=16).fit(speech[1], iters=8)


def test_kmeans_tokenizer(speech, fitted, tmp_path):
    clips, wavs = speech
    codes = fitted.encode(wavs[0])
    assert codes.shape == (1, 1, n_tokens(wavs[0].shape[-1])) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    assert fitted.features(wavs[0]).shape == (1, 39, codes.shape[-1])
    assert fitted.samples_per_token == 640 and fitted.history[-1] <= fitted.history[0]
    # paths and corpus clips are accepted by fit, and give the same model as the waveforms
    by_path = KMeansTokenizer(n_units=16).fit([c.path for c in clips], iters=8)
    by_clip = KMeansTokenizer(n_units=16).fit(clips, iters=8)
    assert torch.allclose(by_path.centroids, fitted.centroids) and torch.allclose(by_clip.centroids, fitted.centroids)
    # save / load without pickles
    p = fitted.save(tmp_path / "tok.npz")
    with np.load(p, allow_pickle=False) as z:
        assert set(z.files) == {"centroids", "scale", "history", "config"}
    back = KMeansTokenizer.load(p)
    assert back.n_units == 16 and back.frame_rate == 25
    assert torch.equal(back.encode(wavs[1]), fitted.encode(wavs[1]))
    # 50 Hz tokens: one per HuBERT frame
    t50 = KMeansTokenizer(n_units=8, frame_rate=50).fit(wavs[:3], iters=3)
    assert t50.encode(wavs[0]).shape == (1, 1, ssl_frames(wavs[0].shape[-1]))


def test_kmeans_tokenizer_errors(fitted, tmp_path):
    with pytest.raises(ConfigError, match="n_units"):
        KMeansTokenizer(n_units=2000)
    with pytest.raises(ConfigError, match="frame_rate"):
        KMeansTokenizer(frame_rate=100)
    with pytest.raises(ConfigError, match="not been fitted"):
        KMeansTokenizer().encode(_tone(1.0))
    with pytest.raises(ConfigError, match="not been fitted"):
        KMeansTokenizer().save(tmp_path / "x.npz")
    with pytest.raises(ConfigError, match="no audio"):
        KMeansTokenizer().fit([])
    with pytest.raises(AudioError, match="too short"):
        fitted.encode(torch.randn(1, 500))
    with pytest.raises(WeightsNotFoundError):
        KMeansTokenizer.load(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        KMeansTokenizer.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", centroids=np.zeros((3, 3)), scale=np.ones(3), history=np.zeros(1),
             config=np.asarray('{"kind": "something else", "n_units": 3, "n_mfcc": 1}'))
    with pytest.raises(CheckpointError, match="not a KMeansTokenizer"):
        KMeansTokenizer.load(tmp_path / "other.npz")


def test_token_span_and_audio():
    wav = torch.arange(16000, dtype=torch.float32)[None] / 16000
    assert token_span(0) == (0, 640) and token_span(3) == (1920, 2560) and token_span(3, 50) == (960, 1280)
    seg, a, b = token_audio(wav, 5, context=0.1, fade=0.0)
    assert (a, b) == ((3200 - 1600) / 16000, (3840 + 1600) / 16000) and torch.equal(seg, wav[:, 1600:5440])
    seg, a, b = token_audio(wav, 0, context=0.1)                   # clipped at the start
    assert a == 0.0 and seg.shape[-1] == 640 + 1600 and seg[0, 0] == 0
    last = n_tokens(16000) - 1
    seg, a, b = token_audio(wav, last, context=0.1)                # clipped at the end
    assert b == 1.0 and seg[0, -1] == 0                            # faded out
    seg, _, _ = token_audio(wav, 5, context=0.0, fade=0.005)
    assert seg.shape[-1] == 640 and seg[0, 0] == 0 and seg[0, 300] == wav[0, 3200 + 300]
    with pytest.raises(ConfigError, match="outside"):
        token_audio(wav, last + 1)
    with pytest.raises(ConfigError, match="outside"):
        token_audio(wav, -1)


def test_usage():
    counts = code_usage(torch.tensor([[[0, 1, 1, 3]]]), 5)
    assert counts.tolist() == [1, 2, 0, 1, 0]
    assert code_usage([torch.tensor([0, 1]), torch.tensor([[1]])], 3).tolist() == [1, 2, 0]
    assert abs(usage_perplexity(torch.tensor([5, 5, 5, 5])) - 4) < 1e-9
    assert abs(usage_perplexity(torch.tensor([7, 0, 0])) - 1) < 1e-9


def test_phone_labels_and_stats():
    al = [("SIL", 0.0, 0.11), ("AA", 0.11, 0.31), ("B", 0.31, 0.35)]
    assert phone_labels(al, 10) == ["SIL", "SIL", "SIL", "AA", "AA", "AA", "AA", "AA", "B", "SIL"]
    assert phone_labels(al, 4, frame_rate=50) == ["SIL"] * 4
    perfect = token_phone_stats([1, 1, 2, 3, 3], ["a", "a", "b", "c", "c"])
    assert abs(perfect["pnmi"] - 1) < 1e-9 and abs(perfect["phone_purity"] - 1) < 1e-9
    blind = token_phone_stats([1, 1, 1, 1], ["a", "b", "a", "b"])
    assert abs(blind["pnmi"]) < 1e-9 and abs(blind["phone_purity"] - 0.5) < 1e-9
    two_units_per_phone = token_phone_stats([1, 2, 3, 4], ["a", "a", "b", "b"])
    assert two_units_per_phone["phone_purity"] == 1.0 and two_units_per_phone["cluster_purity"] == 0.5
    with pytest.raises(ConfigError):
        token_phone_stats([1, 2], ["a"])


@pytest.fixture(scope="module")
def librivox():
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.audio import load_audio
    clip = load_corpus(speakers="ps_librivox")[1]
    return clip, load_audio(clip.path, 16000)


def test_align_phones(librivox):
    clip, wav = librivox
    al = align_phones(wav, clip.text)
    assert len(al) > 10 and all(b > a for _, a, b in al)
    assert al[-1][2] <= wav.shape[-1] / 16000 + 0.02
    assert {"HH", "IY"} <= {p for p, _, _ in al}                    # "He was not an ill disposed young man."
    with pytest.raises(TextError, match="could not align"):
        align_phones(wav, "qxzqv zzkkq")
    with pytest.raises(TextError, match="no English words"):
        align_phones(wav, "!!!")


def test_align_spells_numbers():
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.audio import load_audio
    clip = next(c for c in load_corpus("test_sentence") if "42" in c.text)
    al = align_phones(load_audio(clip.path, 16000), clip.text)   # "forty two": in the dictionary, "42" is not
    assert {"F", "AO", "T", "UW"} <= {p for p, _, _ in al}


def test_plot_tokens(librivox, fitted):
    from matplotlib.figure import Figure
    clip, wav = librivox
    codes = fitted.encode(wav)
    fig = plot_tokens(wav, codes, phones=[("SIL", 0, 0.5), ("AA", 0.5, 1.0)], highlight=3, window=(0, 1.0), title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert fig.axes[-1].get_xlabel() == "time (s)"
    assert len(plot_tokens(wav, codes[0, 0]).axes) == 2


# ---------------------------------------------------------------- the phone encoder (the nano model's HuBERT stand-in)

from gpt_sovits_nb.tokens import PHONES_EN, PhoneEncoder, phone_targets, train_phone_encoder


def test_phone_targets_label_each_50hz_frame():
    al = [("SIL", 0.0, 0.05), ("HH", 0.05, 0.09), ("AH", 0.09, 0.15), ("+NSN+", 0.15, 0.19)]
    ids = phone_targets(al, 10)                       # frame centres at 10, 30, 50, ... ms
    want = ["SIL", "SIL", "HH", "HH", "AH", "AH", "AH", "SIL", "SIL", "SIL"]   # noise and the end as silence
    assert ids.tolist() == [PHONES_EN.index(p) for p in want] and ids.dtype == torch.long
    assert len(PHONES_EN) == 40 and PHONES_EN[0] == "SIL" and len(set(PHONES_EN)) == 40


def test_phone_encoder_shapes_and_probabilities():
    torch.manual_seed(0)
    enc = PhoneEncoder().eval()
    wav = torch.randn(1, 16000) * 0.1
    f = enc.features(wav)
    assert f.shape == (1, 40, ssl_frames(16000)) and enc.hidden == 40
    assert torch.allclose(f.sum(1), torch.ones(1, f.shape[-1]), atol=1e-5) and (f >= 0).all()
    assert "40 phones" in repr(enc) and enc.config() == dict(n_mfcc=13, channels=128, layers=4, kernel=5, n_phones=40)


def test_train_phone_encoder_learns_a_frame_labelling():
    "Frames whose first feature is high are phone 1, the others phone 0: a few hundred steps learn it from context."
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(16):
        t = (torch.rand(200, generator=g) > 0.5).long().repeat_interleave(3)[:200]
        m = torch.randn(39, 200, generator=g) * 0.3
        m[0] += 3.0 * t
        examples.append((m, t))
    enc, hist = train_phone_encoder(examples, steps=150, batch_size=8, crop=64, channels=16, layers=2, kernel=3)
    assert len(hist["loss"]) == 150 and hist["loss"][-1] < hist["loss"][0]
    assert sum(hist["accuracy"][-20:]) / 20 > 0.95
    m, t = examples[0]
    assert (enc(m[None]).argmax(1)[0] == t).float().mean() > 0.95
    with pytest.raises(ConfigError, match="no \\(mfcc, targets\\) pairs"):
        train_phone_encoder([(torch.zeros(39, 5), torch.zeros(4, dtype=torch.long))], steps=1)


def test_tokenizer_over_phone_probabilities_round_trip(speech, tmp_path):
    clips, wavs = speech
    torch.manual_seed(0)
    enc = PhoneEncoder(channels=16, layers=2).eval()
    tok = KMeansTokenizer(n_units=8, encoder=enc).fit(wavs[:4], iters=4)
    assert tok.dim == 40 and tok.centroids.shape == (8, 40) and "40 phone probabilities" in repr(tok)
    codes = tok.encode(wavs[0])
    assert codes.shape == (1, 1, n_tokens(wavs[0].shape[-1]))
    # the features are the encoder's probabilities pooled to 25 Hz (no clip mean removed), then scaled
    assert torch.allclose(tok.raw_features(wavs[0]), pool_frames(enc.features(wavs[0])))
    p = tok.save(tmp_path / "phones.npz")
    with np.load(p, allow_pickle=False) as z:
        assert {"centroids", "scale", "config"} <= set(z.files) and any(k.startswith("encoder.") for k in z.files)
    back = KMeansTokenizer.load(p)
    assert back.encoder.config() == enc.config() and torch.equal(back.encode(wavs[1]), tok.encode(wavs[1]))


def test_nano_sovits_carries_its_phone_encoder(speech, tmp_path):
    "install_tokenizer puts the phone encoder into the SoVITS; the saved file brings it back; extract_latent gives the tokens."
    from dataclasses import asdict
    from gpt_sovits_nb.core import SOVITS_CONFIGS, SoVITSConfig
    from gpt_sovits_nb.mel_sovits import MelSoVITS, install_tokenizer
    from gpt_sovits_nb.checkpoints import load_sovits, save_sovits
    clips, wavs = speech
    torch.manual_seed(0)
    enc = PhoneEncoder(channels=16).eval()
    tok = KMeansTokenizer(n_units=8, encoder=enc).fit(wavs[:4], iters=4)
    cfg = SoVITSConfig(**{**asdict(SOVITS_CONFIGS["nano"]), "ssl_dim": 40, "codebook_size": 8, "phone_classes": 40,
                          "phone_channels": 16})
    with pytest.raises(ConfigError, match="phone_classes"):
        install_tokenizer(MelSoVITS(SoVITSConfig(**{**asdict(cfg), "phone_classes": 0})), tok)
    with pytest.raises(ConfigError, match="phone_channels"):
        install_tokenizer(MelSoVITS(SoVITSConfig(**{**asdict(cfg), "phone_channels": 32})), tok)
    sov = install_tokenizer(MelSoVITS(cfg).eval(), tok)
    assert torch.equal(sov.extract_latent(sov.ssl_encoder.features(wavs[2])), tok.encode(wavs[2]))
    path = save_sovits(sov, tmp_path / "nano_phones.pth", webui_check=False)
    back = load_sovits(path)
    assert back.config.phone_classes == 40 and back.config.phone_channels == 16
    assert torch.equal(back.extract_latent(back.ssl_encoder.features(wavs[2])), tok.encode(wavs[2]))
