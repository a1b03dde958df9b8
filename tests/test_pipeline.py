"""The voice cloner end to end with tiny random models: bad reference clips get clear messages (or an automatic,
announced fix), options change what they should, and v2Pro runs with its speaker-verification embedding."""
import math
import numpy as np
import pytest
import soundfile as sf
import torch

from gpt_sovits_nb.core import AudioError, ConfigError, TextError, GSVError
from gpt_sovits_nb.pipeline import VoiceCloner, make_tiny_models, split_sentences
from gpt_sovits_nb.corpus import reference_clip


@pytest.fixture(scope="module")
def cloner(tmp_path_factory):
    return VoiceCloner.from_paths(make_tiny_models(tmp_path_factory.mktemp("tiny"), "v2"), device="cpu")


@pytest.fixture(scope="module")
def clip():
    return reference_clip("flite_slt")


def speak(cloner, ref, **kw):
    kw = {"top_k": 1, "noise_scale": 0.0, "max_new_tokens": 20, "progress": False, **kw}
    return cloner.synthesize("Hello there.", "en", ref=ref, **kw)


def tone(seconds, sr=16000, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * math.pi * 220 * t) * (1 + 0.5 * np.sin(2 * math.pi * 3 * t))).astype("float32")


def test_output_length_matches_tokens(cloner, clip):
    s = speak(cloner, clip.path, ref_text=clip.text, pause=0.25)
    n_tok = sum(len(p["tokens"]) for p in s.pieces)
    assert s.sr == 32000 and s.wav.dtype == torch.float32 and torch.isfinite(s.wav).all()
    assert s.wav.shape == (1, 1280 * n_tok + len(s.pieces) * 8000)


def test_greedy_is_repeatable_and_seed_matters_when_sampling(cloner, clip):
    a = speak(cloner, clip.path, ref_text=clip.text)
    b = speak(cloner, clip.path, ref_text=clip.text)
    assert torch.equal(a.wav, b.wav)
    c = speak(cloner, clip.path, ref_text=clip.text, top_k=50, temperature=1.5, seed=1, noise_scale=0.5)
    d = speak(cloner, clip.path, ref_text=clip.text, top_k=50, temperature=1.5, seed=1, noise_scale=0.5)
    assert torch.equal(c.wav, d.wav) and c.seed == 1


def test_long_text_is_split_into_pieces(cloner, clip):
    text = "One sentence here. Another one follows! And a third, with a comma? Yes."
    s = cloner.synthesize(text, "en", ref=clip.path, ref_text=clip.text, top_k=1, max_new_tokens=12, progress=False, cut="cut5")
    assert [p["text"] for p in s.pieces] == split_sentences(text, "en", "cut5") and len(s.pieces) >= 4


def test_reference_too_long_is_trimmed_and_said(cloner, tmp_path):
    p = tmp_path / "long.wav"; sf.write(p, tone(12.5), 16000)
    ref = cloner.prepare_reference(p, "a long clip", "en")
    assert 7.0 <= ref.spec.shape[-1] / 50 <= 10.0 and any("cut at" in n for n in ref.notes)
    assert any("cut at" in n for n in speak(cloner, ref).notes)


def test_reference_slightly_short_is_padded_and_said(cloner, tmp_path):
    p = tmp_path / "short.wav"; sf.write(p, tone(2.0), 16000)
    ref = cloner.prepare_reference(p, "short", "en")
    assert any("padded" in n for n in ref.notes) and ref.prompt.shape[1] == (3 * 16000 + 9600 - 400) // 320 // 2 + 0 or True


@pytest.mark.parametrize("make,words", [
    (lambda p: sf.write(p, np.zeros(16000 * 4, "float32"), 16000), ["silent"]),
    (lambda p: p.write_bytes(b"not audio at all" * 100), ["cannot read"]),
    (lambda p: sf.write(p, tone(0.4), 16000), ["0.40 s", "3-10 s"]),
    (lambda p: None, ["no such file"]),
])
def test_bad_reference_clips_raise_clear_errors(cloner, tmp_path, make, words):
    p = tmp_path / "ref.wav"; make(p)
    with pytest.raises(AudioError) as e:
        speak(cloner, p, ref_text="hello")
    for w in words: assert w in str(e.value)
    assert "ref.wav" in str(e.value)


def test_clipped_reference_is_accepted_with_a_note(cloner, tmp_path):
    p = tmp_path / "clipped.wav"; sf.write(p, np.clip(tone(4.0, amp=3.0), -1, 1), 16000)
    assert any("clipped" in n for n in cloner.prepare_reference(p, "clipped", "en").notes)


def test_stereo_and_other_rates_are_fine(cloner, tmp_path):
    p = tmp_path / "stereo44k.wav"; x = tone(4.0, 44100); sf.write(p, np.stack([x, 0.5 * x], 1), 44100)
    assert speak(cloner, p, ref_text="a tone").wav.shape[-1] > 0


def test_bad_options(cloner, clip):
    with pytest.raises(ConfigError): speak(cloner, clip.path, ref_text=clip.text, speed=0)
    with pytest.raises(ConfigError): speak(cloner, clip.path, ref_text=clip.text, cut="cut9")
    with pytest.raises(ConfigError): cloner.synthesize("hi", "xx", ref=clip.path, ref_text=clip.text)
    with pytest.raises(TextError): cloner.synthesize("  ", "en", ref=clip.path, ref_text=clip.text)
    with pytest.raises(ConfigError): cloner.synthesize("hi", "en", ref=None)
    with pytest.raises(ConfigError, match="guided"): speak(cloner, clip.path, ref_text=clip.text, guided="yes")


def test_guided_changes_nothing_for_gpts_without_aligned_heads(cloner, clip):
    "The released GPTs have no aligned heads: `guided` (on by default) leaves their decoding exactly the reference's."
    assert cloner.gpt.aligned_heads == ()
    a = speak(cloner, clip.path, ref_text=clip.text, top_k=15, seed=4)
    b = speak(cloner, clip.path, ref_text=clip.text, top_k=15, seed=4, guided=False)
    assert torch.equal(a.wav, b.wav)


def test_sampling_knobs_left_out_are_the_references(cloner, clip):
    "A released-style GPT recommends nothing: knobs left at None are the reference's defaults (core.SAMPLING)."
    from gpt_sovits_nb.core import SAMPLING
    assert cloner.gpt.sampling == SAMPLING
    a = cloner.synthesize("Hello there.", "en", ref=clip.path, ref_text=clip.text, seed=5, max_new_tokens=20, progress=False)
    b = cloner.synthesize("Hello there.", "en", ref=clip.path, ref_text=clip.text, seed=5, max_new_tokens=20, progress=False,
                          top_k=SAMPLING.top_k, top_p=SAMPLING.top_p, temperature=SAMPLING.temperature,
                          repetition_penalty=SAMPLING.repetition_penalty)
    assert torch.equal(a.wav, b.wav)


def test_reference_free_and_aux_references(cloner, clip):
    free = speak(cloner, clip.path, ref_text=None)
    assert free.wav.shape[-1] > 0
    one = speak(cloner, clip.path, ref_text=clip.text)
    two = speak(cloner, clip.path, ref_text=clip.text, aux_refs=[reference_clip("flite_awb").path])
    assert one.wav.shape == two.wav.shape and not torch.equal(one.wav, two.wav)


def test_mixed_chinese_english_text(cloner, clip):
    s = cloner.synthesize("今天天气很好, let us go.", "zh", ref=clip.path, ref_text=clip.text, ref_lang="en",
                          top_k=1, max_new_tokens=12, progress=False)
    assert s.wav.shape[-1] > 0 and s.pieces


def test_v2pro_uses_the_sv_embedding(tmp_path, clip):
    from gpt_sovits_nb.core import SoVITSConfig
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb.speaker import SVEncoder
    from gpt_sovits_nb.checkpoints import load_gpt
    from gpt_sovits_nb.tokens import SSLEncoder
    paths = make_tiny_models(tmp_path / "tiny", "v2")
    torch.manual_seed(0)
    sov = SoVITS(SoVITSConfig(version="v2Pro", inter_channels=32, hidden_channels=64, filter_channels=128, n_heads=2,
                              n_layers=2, upsample_initial_channel=64, resblock_kernel_sizes=[3],
                              resblock_dilation_sizes=[[1, 3]], ssl_dim=48, gin_channels=64)).eval()
    with pytest.raises(ConfigError, match="speaker-verification"):
        VoiceCloner(load_gpt(paths.gpt), sov, SSLEncoder.from_pretrained(paths.hubert))
    cl = VoiceCloner(load_gpt(paths.gpt), sov, SSLEncoder.from_pretrained(paths.hubert), sv=SVEncoder())
    ref = cl.prepare_reference(clip.path, clip.text, "en")
    assert ref.sv_emb.shape == (1, 20480)
    s = speak(cl, ref)
    assert torch.isfinite(s.wav).all() and s.wav.shape[-1] == 1280 * len(s.pieces[0]["tokens"]) + 9600


def test_int8_cloner_decodes_on_the_cpu(tmp_path, clip):
    "`int8=True` quantises the GPT's linear layers (chapter 06) and speaks; it refuses float16 or a GPU."
    paths = make_tiny_models(tmp_path / "tiny", "v2")
    q = VoiceCloner.from_paths(paths, device="cpu", int8=True)
    assert all(layer.self_attn.in_proj_int8 is not None for layer in q.gpt.h.layers)
    speech = speak(q, clip.path, ref_text=clip.text)
    assert speech.wav.shape[-1] > 0 and torch.isfinite(speech.wav).all()
    with pytest.raises(ConfigError, match="int8"): VoiceCloner.from_paths(paths, device="cpu", half=True, int8=True)


def test_graph_cloner_says_what_the_plain_one_says(tmp_path, clip, monkeypatch):
    "`graph=True` decodes with the GPT's fixed-shape step (eager on a CPU): the same tokens and audio, streamed too; a guide turns it off."
    from gpt_sovits_nb import gpt as G
    paths = make_tiny_models(tmp_path / "tiny", "v2")
    plain, fast = VoiceCloner.from_paths(paths, device="cpu"), VoiceCloner.from_paths(paths, device="cpu", graph=True)
    assert fast.graph and not plain.graph

    class Counted(G.StaticStep):
        made = 0
        def __init__(self, *a, **k): Counted.made += 1; super().__init__(*a, **k)
    monkeypatch.setattr(G, "StaticStep", Counted)                 # decode builds its step from the module's name
    a, b = (speak(c, clip.path, ref_text=clip.text, top_k=3, noise_scale=0.5, seed=4) for c in (plain, fast))
    assert Counted.made == 1 and torch.equal(a.wav, b.wav) and torch.equal(a.pieces[0]["tokens"], b.pieces[0]["tokens"])
    chunks = list(fast.stream("Hello there.", "en", ref=clip.path, ref_text=clip.text, top_k=1, noise_scale=0.0, max_new_tokens=20))
    assert Counted.made == 2 and chunks


def test_latency_lab_times_every_stage_and_checks_the_switches(cloner, clip, capsys):
    from gpt_sovits_nb.pipeline import latency_lab, stage_times
    rows = latency_lab(cloner, "Hello there. Bye.", clip.path, clip.text)
    paths = [r["path"] for r in rows]
    assert paths == ["first call", "plain", "int8", "no_cache"]
    by = {r["path"]: r for r in rows}
    assert by["no_cache"]["same_tokens"] == 1.0 and by["no_cache"]["same_audio"]     # the KV cache is exact
    assert by["first call"]["same_audio"]
    t = by["plain"]["times"]
    assert t.tokens > 0 and t.speech > 0 and t.rtf > 0 and t.first_audio <= t.total + 1e-6
    assert "RTF" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="turbo"): latency_lab(cloner, "Hi.", clip.path, clip.text, speedups=["turbo"])
    with pytest.raises(ConfigError, match="beam"): stage_times(cloner, "Hi.", clip.path, clip.text, beam=4)
