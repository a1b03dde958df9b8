"""The nano model that ships with the library: its files, its offline default, and its quality on held-out sentences
(pocketsphinx word error rate; Resemblyzer's nearest training speaker is the speaker asked for)."""
import json, math, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gpt_sovits_nb.checkpoints import checkpoint_info, nano_weights, nano_dir, load_gpt, load_sovits
from gpt_sovits_nb.core import NANO
from gpt_sovits_nb import eval as E

WER_BAR = 0.35          # the quality bar the nano model aims for; the model card reports the measured value
SHIPPED = json.loads((nano_dir() / "quality.json").read_text()) if (nano_dir() / "quality.json").is_file() else {}
HELD = SHIPPED.get("heldout", {})
MEETS_WER = HELD.get("wer", 1.0) <= WER_BAR                      # intelligible enough, as measured when shipped
MEETS_VOICE = HELD.get("right_voice", 0.0) == 1.0                # every clone's nearest training speaker is the one asked for
MEETS_PERSON = HELD.get("right_person", 0.0) == 1.0              # ... or the same person through the other engine


def test_shipped_files():
    g, s = nano_weights()
    assert g.stat().st_size + s.stat().st_size <= 25e6
    gi, si = checkpoint_info(g), checkpoint_info(s)
    assert (gi.kind, gi.version, si.kind, si.version) == ("gpt", NANO, "sovits", NANO)
    assert gi.dtype == si.dtype == "float16"
    gpt, sov = load_gpt(g), load_sovits(s)
    assert gpt.config.EOS == sov.config.codebook_size and sov.config.sampling_rate == 22050
    for m in (gpt, sov): assert all(torch.isfinite(p).all() for p in m.state_dict().values() if p.is_floating_point())
    card = (nano_dir() / "MODEL_CARD.md").read_text()
    for words in ("word error rate", "Resemblyzer", "licen", "steps", "minutes"): assert words in card


@pytest.fixture(scope="module")
def nano():
    from gpt_sovits_nb.pipeline import VoiceCloner
    return VoiceCloner.from_pretrained("nano", device="cpu")


@pytest.fixture(scope="module")
def heldout(nano):
    "The corpus's six held-out sentences in each of its four training voices, as tools/train_nano.py --ship measures them."
    outs = E.speak_heldout(nano, E.heldout_requests(sentences=6))
    assert all(o["sr"] == 22050 and torch.isfinite(o["wav"]).all() for o in outs)
    rep = E.evaluate(outs, asr="pocketsphinx", prosody=False)
    return rep.summary(), [(i.speaker, i.nearest, i.text, i.heard) for i in rep.items]


@pytest.mark.xfail(not MEETS_WER, reason="the shipped nano model does not reach 35 % word error rate on held-out sentences yet "
                   "(MODEL_CARD.md has the measured numbers)", strict=False)
def test_heldout_word_error_rate(heldout):
    "Intelligible: pocketsphinx's word error rate on the 24 held-out clones is at most 35 %."
    s, detail = heldout
    assert s["wer"] <= WER_BAR, (s, detail)


@pytest.mark.xfail(not MEETS_VOICE, reason="the shipped nano model does not give every held-out clone the voice asked for "
                   "(MODEL_CARD.md has the measured rate)", strict=False)
def test_heldout_voice_is_the_one_asked_for(heldout):
    "In the voice asked for: every clone's nearest training speaker (Resemblyzer) is the one asked for."
    s, detail = heldout
    assert s["right_voice"] == 1.0, (s, detail)


@pytest.mark.xfail(not MEETS_PERSON, reason="the shipped nano model gives some clones another person's voice (MODEL_CARD.md)", strict=False)
def test_heldout_voice_is_the_person_asked_for(heldout):
    "The right person: every clone's nearest training speaker is the one asked for, or the same person through another engine."
    s, detail = heldout
    assert s["right_person"] == 1.0, (s, detail)


def test_offline_default_is_nano(tmp_path):
    "Offline, with an empty Hugging Face cache, `gsv-nb say` speaks with the nano model and says so in one line."
    out = tmp_path / "hello.wav"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    env.pop("HF_HUB_CACHE", None); env.pop("HUGGINGFACE_HUB_CACHE", None)
    r = subprocess.run([sys.executable, "-m", "gpt_sovits_nb.cli", "say", "Please close the window.", "--ref", "corpus:flite_slt",
                        "--out", str(out), "--seed", "1", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    notes = [l for l in r.stderr.splitlines() if l.startswith("note:")]
    assert len(notes) == 1 and "nano" in notes[0], r.stderr
    wav, sr = sf.read(out)
    assert sr == 22050 and 0.8 < len(wav) / sr < 5
    if MEETS_WER:
        heard = E.transcribe_speech(wav, sr, asr="pocketsphinx")
        assert E.word_errors("Please close the window.", heard)["errors"] <= 1, heard


def test_from_pretrained_falls_back_offline(tmp_path, monkeypatch, capsys):
    from gpt_sovits_nb.pipeline import VoiceCloner, pick_version
    monkeypatch.setenv("HF_HUB_OFFLINE", "1"); monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert pick_version(None)[0] == NANO and pick_version("v2Pro") == ("v2Pro", None)
    cloner = VoiceCloner.from_pretrained(device="cpu")
    assert cloner.version == NANO and "nano" in capsys.readouterr().out
    from gpt_sovits_nb.core import WeightsNotFoundError
    with pytest.raises(WeightsNotFoundError, match="nano"):        # a released version by name never falls back
        VoiceCloner.from_pretrained("v2", device="cpu")


def test_gpu_recipe_models_build_and_train(tmp_path):
    "The GPU recipe's bigger pair builds from a tokenizer and takes a training step of each stage (here on the CPU)."
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.nano import NANO_RECIPES, NANO_SIZES, NanoTrainConfig, nano_features, nano_models, MelSoVITSTrainer, NanoGPTTrainer
    items = [(str(c.path), c.speaker, c.text) for c in load_corpus(split="train", speakers=["flite_slt", "flite_awb"])][:12]
    data, tok = nano_features(items, n_units=64, fit_clips=12, progress=False)
    gpt, sov = nano_models(tok, "gpu")
    assert gpt.config.hidden_dim == NANO_SIZES["gpu"][0].hidden_dim and sov.config.hidden_channels == NANO_SIZES["gpu"][1].hidden_channels
    cfg = NanoTrainConfig(steps=1, batch_size=2, warmup_steps=1)
    for trainer in (MelSoVITSTrainer(sov, data, tmp_path / "s", cfg, device="cpu"), NanoGPTTrainer(gpt, data, tmp_path / "g", cfg, device="cpu")):
        trainer.fit(1)
        assert trainer.step == 1 and all(math.isfinite(v) for v in trainer.history[next(k for k in trainer.history if k.startswith("loss"))])
    assert NANO_RECIPES["gpu"]["size"] == "gpu" and NANO_RECIPES["cpu"]["size"] == "cpu"


def test_shipped_quality_has_not_regressed(nano):
    """Guards what the shipped files measured (quality.json, written by tools/train_nano.py --ship): the voice of each clone,
    and the decoder's resynthesis of held-out recordings from their own tokens, within a margin."""
    from gpt_sovits_nb.corpus import load_corpus
    clips = load_corpus(split="test_sentence")[::6]                      # one held-out sentence per training voice
    outs = E.resynthesize_heldout(nano, clips)
    assert all(o["sr"] == 22050 for o in outs)
    rep = E.evaluate(outs, asr="pocketsphinx", prosody=False)
    s = rep.summary()
    detail = [(i.speaker, i.nearest, i.text, i.heard) for i in rep.items]
    assert s["right_voice"] >= SHIPPED["resynthesis"]["right_voice"] - 0.2, (s, detail)
    assert s["wer"] <= SHIPPED["resynthesis"]["wer"] + 0.15, (s, detail)
    reqs = E.heldout_requests(sentences=["s24"])
    voices = E.evaluate(E.speak_heldout(nano, reqs), asr="pocketsphinx", prosody=False).summary()
    assert voices["right_voice"] >= SHIPPED["heldout"]["right_voice"] - 0.25, voices


def test_nano_is_held_to_the_text_by_a_reading_guide(nano):
    "The shipped GPT names its aligned heads; synthesize uses a ReadingGuide unless guided=False, and takes it off after."
    from gpt_sovits_nb.corpus import reference_clip
    assert nano.gpt.aligned_heads == ((1, 0), (2, 0), (3, 0))
    ref = reference_clip("flite_slt", split="train")
    say = lambda **kw: nano.synthesize("What time is it?", "en", ref=ref.path, ref_text=ref.text, seed=1, progress=False, **kw)
    guided, free = say(), say(guided=False)
    assert all(layer.self_attn.steer is None for layer in nano.gpt.h.layers)
    assert not torch.equal(guided.pieces[0]["tokens"], free.pieces[0]["tokens"])
    assert torch.equal(say().pieces[0]["tokens"], guided.pieces[0]["tokens"])        # same seed, same tokens
    streamed = torch.cat(list(nano.stream("What time is it?", "en", ref=ref.path, ref_text=ref.text, seed=1)), 1)
    assert streamed.shape[-1] == guided.wav.shape[-1]                                  # the stream is guided the same way


def test_nano_recommends_its_own_sampling(nano):
    "The file recommends no repetition penalty (config['sampling']); knobs left at None take it, given knobs win."
    from gpt_sovits_nb.core import SAMPLING
    from gpt_sovits_nb.corpus import reference_clip
    assert nano.gpt.sampling.repetition_penalty == 1.0 and nano.gpt.sampling.top_k == SAMPLING.top_k
    ref = reference_clip("flite_awb", split="train")
    toks = lambda **kw: nano.synthesize("Please close the window.", "en", ref=ref.path, ref_text=ref.text, seed=2,
                                        progress=False, **kw).pieces[0]["tokens"]
    default = toks()
    assert torch.equal(default, toks(repetition_penalty=1.0))
    assert not torch.equal(default, toks(repetition_penalty=SAMPLING.repetition_penalty))


def test_phone_encoder_recipe_builds_a_model_that_carries_it(tmp_path):
    "Force-aligned clips train the phone encoder; its units become the SoVITS's codebook and the file carries the encoder."
    import torch
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.audio import load_audio
    from gpt_sovits_nb.nano import nano_phone_encoder, nano_features, nano_models, export_nano
    from gpt_sovits_nb.pipeline import ModelPaths, VoiceCloner
    items = [(str(c.path), c.speaker, c.text) for c in load_corpus(split="train", speakers=["flite_slt", "fest_kal"])][:8]
    enc = nano_phone_encoder(items, tmp_path / "pe.pt", steps=5, workers=1)
    saved = torch.load(tmp_path / "pe.pt", weights_only=True)
    assert saved["of"] == 8 and 1 <= saved["aligned"] <= 8 and len(saved["loss"]) == 5
    again = nano_phone_encoder(items, tmp_path / "pe.pt", steps=5, workers=1)          # read back, not retrained
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values()))
    assert nano_phone_encoder(items[:4], None, steps=2, workers=2).n_phones == 40       # two worker processes align
    data, tok = nano_features(items, n_units=16, fit_clips=8, progress=False, encoder=enc)
    gpt, sov = nano_models(tok, "cpu")
    assert (sov.config.phone_classes, sov.config.ssl_dim, sov.config.codebook_size) == (40, 40, 16)
    g, s = export_nano(gpt, sov, tmp_path / "export")
    cloner = VoiceCloner.from_paths(ModelPaths(gpt=g, sovits=s, hubert=None), device="cpu")
    assert cloner.ssl is cloner.sovits.ssl_encoder
    wav = load_audio(items[0][0], 16000)
    assert torch.equal(cloner.sovits.extract_latent(cloner.ssl.features(wav)), tok.encode(wav))


def test_guided_attention_penalty_and_training_step(tmp_path):
    "The DC-TTS penalty is near 0 for attention on the diagonal and large off it; the GPT trainer adds it when asked."
    import torch
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.nano import guided_attention_penalty, nano_features, nano_models, NanoGPTTrainer, NanoTrainConfig
    T, N = 20, 10
    diag = torch.zeros(1, 2, T, N)
    for t in range(T): diag[0, :, t, t * N // T] = 1
    lengths = torch.tensor([N]), torch.tensor([T])
    assert guided_attention_penalty(diag, *lengths).item() < 0.02
    assert guided_attention_penalty(diag.flip(-1), *lengths).item() > 0.7
    padded = torch.cat([diag, torch.full((1, 2, 5, N), 0.1)], 2)                  # rows past the real tokens are not scored
    assert abs(guided_attention_penalty(padded, *lengths).item() - guided_attention_penalty(diag, *lengths).item()) < 1e-6
    items = [(str(c.path), c.speaker, c.text) for c in load_corpus(split="train", speakers=["flite_slt"])][:6]
    data, tok = nano_features(items, n_units=16, fit_clips=6, progress=False)
    gpt, _ = nano_models(tok, "cpu")
    tr = NanoGPTTrainer(gpt, data, tmp_path / "g", NanoTrainConfig(steps=2, batch_size=2, warmup_steps=1, guided_attention=1.0), device="cpu")
    tr.fit(2)
    assert len(tr.history["loss/guided"]) == 2 and all(0 < v < 1 for v in tr.history["loss/guided"])
    assert all(not h for h in (l.self_attn._forward_hooks for l in gpt.h.layers))   # the hooks are removed after each step


def test_viterbi_alignment_is_monotonic_and_follows_the_probabilities():
    from gpt_sovits_nb.nano import viterbi_alignment, token_alignment, phone_classes
    from gpt_sovits_nb.text import symbol_ids
    probs = torch.full((40, 10), 0.01)
    for f, c in enumerate([0, 0, 7, 7, 3, 3, 3, 0, 9, 9]): probs[c, f] = 0.9      # silence, B, AH, pause, D
    classes, optional = np.array([7, 3, 0, 9]), np.array([False, False, True, False])
    assert viterbi_alignment(probs.log(), classes, optional).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 3, 3]
    flat = torch.full((40, 6), 1 / 40).log()                                          # no evidence: still every phone, in order
    path = viterbi_alignment(flat, classes, optional)
    assert set(path.tolist()) >= {0, 1, 3} and (path[1:] >= path[:-1]).all()
    assert token_alignment(torch.tensor([0, 0, 1, 1, 2, 3]), 3).tolist() == [0, 1, 3]
    assert token_alignment(torch.tensor([0, 1, 2]), 3).tolist() == [1, 2, 2]           # a clip one frame short: clamped
    ids = symbol_ids("v2")
    cls, opt = phone_classes(torch.tensor([ids["HH"], ids["AH0"], ids[","], ids["L"], ids["OW1"], ids["."]]))
    from gpt_sovits_nb.tokens import PHONES_EN
    assert [PHONES_EN[c] for c in cls] == ["HH", "AH", "SIL", "L", "OW", "SIL"] and opt.tolist() == [0, 0, 1, 0, 0, 1]
    with pytest.raises(Exception, match="at least one frame"): viterbi_alignment(torch.zeros(40, 0), classes, optional)


def test_aligned_attention_training_step(tmp_path):
    "The forced-alignment loss is small on the aligned phone and large elsewhere; the trainer refuses to run it without alignments."
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.core import ConfigError
    from gpt_sovits_nb.nano import (aligned_attention_loss, alignment_targets, nano_features, nano_models, NanoGPTTrainer,
                                    NanoTrainConfig)
    onehot = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 2]]), 3).float()[:, None]        # [1, 1, 4, 3]
    assert aligned_attention_loss(onehot, torch.tensor([[0, 1, 1, 2]])).item() < 1e-3
    assert aligned_attention_loss(onehot, torch.tensor([[2, 2, 0, 0]])).item() > 9
    assert aligned_attention_loss(onehot, torch.tensor([[0, -1, -1, -1]])).item() < 1e-3          # -1: not scored
    items = [(str(c.path), c.speaker, c.text) for c in load_corpus(split="train", speakers=["flite_slt"])][:6]
    data, tok = nano_features(items, n_units=16, fit_clips=6, progress=False)
    al = [torch.linspace(0, len(p) - 1, len(t)).round().to(torch.int16) for p, t in zip(data.phones, data.tokens)]
    targets = alignment_targets(al, data, [(0, 1)])
    assert targets.shape == (1, len(data.tokens[0]) + len(data.tokens[1]))
    assert targets[0, len(data.tokens[0])].item() >= len(data.phones[0])                # the second utterance's phones come after
    gpt, _ = nano_models(tok, "cpu")
    cfg = NanoTrainConfig(steps=2, batch_size=2, warmup_steps=1, aligned_attention=1.0)
    with pytest.raises(ConfigError, match="nano_alignments"): NanoGPTTrainer(gpt, data, tmp_path / "x", cfg, device="cpu")
    tr = NanoGPTTrainer(gpt, data, tmp_path / "g", cfg, device="cpu", alignments=al)
    tr.fit(2)
    assert len(tr.history["loss/aligned"]) == 2 and all(0 < v < 10 for v in tr.history["loss/aligned"])
    assert all(not h for h in (l.self_attn._forward_hooks for l in gpt.h.layers))


def test_recipe_alignments_off_without_the_loss_or_a_phone_encoder():
    from gpt_sovits_nb.nano import recipe_alignments, NanoTrainConfig
    said = []
    assert recipe_alignments(NanoTrainConfig(), [], None, None, log=said.append) is None and not said
    cfg = NanoTrainConfig(aligned_attention=1.0)
    assert recipe_alignments(cfg, [], None, None, log=said.append) is None
    assert cfg.aligned_attention == 0 and len(said) == 1 and "phone encoder" in said[0]
