"""Streaming and batched synthesis (chapter 09) on tiny random models: "sentence" chunks join to exactly `synthesize`,
token chunks join to within 40 dB SNR of it with the same tokens, bad arguments raise at call time, a closed stream
frees the cloner, and batched GPT decoding gives one-at-a-time tokens when greedy."""
import threading
import pytest
import torch
from fastcore.test import test_eq as _eq, test_fail as _fail

from gpt_sovits_nb.core import ConfigError, TextError
from gpt_sovits_nb.pipeline import VoiceCloner, make_tiny_models, stream_chunks, next_cut, crossfade
from gpt_sovits_nb.corpus import reference_clip

TEXT = "Hello there. This is a cloned voice, speaking in chunks."


@pytest.fixture(scope="module")
def cloner(tmp_path_factory):
    return VoiceCloner.from_paths(make_tiny_models(tmp_path_factory.mktemp("tiny"), "v2"), device="cpu")


@pytest.fixture(scope="module")
def ref(cloner):
    clip = reference_clip("flite_slt")
    return cloner.prepare_reference(clip.path, clip.text, "en")


def snr_db(x, ref):
    return float(10 * torch.log10(ref.pow(2).sum() / (x - ref).pow(2).sum().clamp_min(1e-30)))


@pytest.mark.parametrize("kw", [dict(top_k=1, noise_scale=0.0), dict(top_k=15, noise_scale=0.5, temperature=1.2)])
def test_sentence_mode_joins_to_synthesize_exactly(cloner, ref, kw):
    full = cloner.synthesize(TEXT, "en", ref=ref, seed=7, max_new_tokens=40, progress=False, **kw)
    chunks = list(cloner.stream(TEXT, "en", ref=ref, seed=7, max_new_tokens=40, **kw))
    _eq(len(chunks), len(full.pieces))
    assert all(c.dtype == torch.float32 and c.dim() == 2 and c.shape[0] == 1 for c in chunks)
    assert torch.equal(torch.cat(chunks, 1), full.wav)


@pytest.mark.parametrize("mode", ["tokens", "fixed"])
@pytest.mark.parametrize("top_k", [1, 15])
def test_token_streaming_is_within_tolerance(cloner, ref, mode, top_k):
    kw = dict(top_k=top_k, noise_scale=0.0, seed=3, max_new_tokens=60)
    full = cloner.synthesize(TEXT, "en", ref=ref, progress=False, **kw).wav
    chunks = list(cloner.stream(TEXT, "en", ref=ref, mode=mode, chunk_tokens=8, overlap_tokens=2, **kw))
    joined = torch.cat(chunks, 1)
    assert len(chunks) > 3 and joined.shape == full.shape               # 1280 samples per token: the same length exactly
    assert snr_db(joined, full) > 40, snr_db(joined, full)


def test_token_streaming_keeps_the_tokens_with_sampling_and_noise(cloner, ref):
    kw = dict(top_k=15, temperature=1.1, noise_scale=0.5, speed=1.0, max_new_tokens=50)
    full = cloner.synthesize(TEXT, "en", ref=ref, seed=11, progress=False, **kw)
    pieces = cloner._check(TEXT, "en", ref, None, 15, 1.0, 1.1, 1.35, 1.0, 0.5, 11, "cut5", 0.3, 50)
    call = cloner._prepare(pieces, "en", ref, None, None, (), 11, 0.3, {**kw, "repetition_penalty": 1.35, "top_p": 1.0})
    joined = torch.cat(list(stream_chunks(cloner, call, "fixed", 8, 2)), 1)
    for a, b in zip(call.info, full.pieces): assert torch.equal(a["tokens"], b["tokens"])
    _eq(joined.shape, full.wav.shape)
    assert snr_db(joined, full.wav) > 20                                 # the chunks draw other SoVITS noise


def test_bad_arguments_raise_at_call_time(cloner, ref):
    for kw, words in [(dict(mode="words"), "streaming mode"), (dict(chunk_tokens=0), "chunk_tokens"),
                      (dict(overlap_tokens=-1), "overlap_tokens"), (dict(top_k=1.5), "top_k"), (dict(speed=0), "speed"),
                      (dict(cut="cut9"), "cut method"), (dict(lang="xx"), "lang")]:
        with pytest.raises(ConfigError, match=words): cloner.stream(TEXT, **{"lang": "en", "ref": ref, **kw})
    with pytest.raises(TextError): cloner.stream("   ", "en", ref=ref)
    with pytest.raises(ConfigError, match="batch_size"): cloner.synthesize(TEXT, "en", ref=ref, batch_size=0)


def test_a_closed_stream_frees_the_cloner(cloner, ref):
    s = cloner.stream(TEXT, "en", ref=ref, mode="fixed", chunk_tokens=4, seed=1, max_new_tokens=30)
    assert not cloner._lock.locked()                                     # nothing runs before the first next()
    next(s)
    assert cloner._lock.locked()
    done = []
    t = threading.Thread(target=lambda: done.append(next(s)))           # another thread may go on with the stream
    t.start(); t.join()
    assert done and cloner._lock.locked()
    s.close()                                                            # a client went away
    assert not cloner._lock.locked()
    assert cloner.synthesize("Hi there.", "en", ref=ref, top_k=1, max_new_tokens=5, progress=False).wav.numel()


def test_a_seed_gives_the_same_audio_alone_or_interleaved(cloner, ref):
    kw = dict(top_k=15, noise_scale=0.5, max_new_tokens=30, mode="sentence")
    alone = [torch.cat(list(cloner.stream(TEXT, "en", ref=ref, seed=s, **kw)), 1) for s in (1, 2)]
    a, b = cloner.stream(TEXT, "en", ref=ref, seed=1, **kw), cloner.stream(TEXT, "en", ref=ref, seed=2, **kw)
    a_chunks = list(a); b_chunks = list(b)                               # one after the other: the lock serialises them
    assert torch.equal(torch.cat(a_chunks, 1), alone[0]) and torch.equal(torch.cat(b_chunks, 1), alone[1])


def test_batched_synthesis_equals_one_piece_at_a_time_when_greedy(cloner, ref):
    text = "One. This piece is a good deal longer than the others. Three words here. Four!"
    kw = dict(top_k=1, noise_scale=0.0, max_new_tokens=40, progress=False)
    one = cloner.synthesize(text, "en", ref=ref, **kw)
    assert len(one.pieces) >= 4
    for bs in (2, 3, 8):
        many = cloner.synthesize(text, "en", ref=ref, batch_size=bs, **kw)
        for a, b in zip(one.pieces, many.pieces): assert torch.equal(a["tokens"], b["tokens"])
        assert torch.equal(one.wav, many.wav)
    sampled = cloner.synthesize(text, "en", ref=ref, batch_size=2, top_k=15, seed=4, max_new_tokens=40, progress=False)
    _eq(len(sampled.pieces), len(one.pieces))


def test_infer_batch_ends_rows_on_their_own_eos(cloner):
    gpt = cloner.gpt
    g = torch.Generator().manual_seed(0)
    lengths = [6, 15, 9]
    phones = [torch.randint(0, 732, (1, n), generator=g) for n in lengths]
    bert = [torch.randn(1, gpt.config.bert_dim, n, generator=g) for n in lengths]
    prompt = torch.randint(0, 1024, (1, 5), generator=g)
    alone = [gpt.infer(p, b, prompt, top_k=1, max_new_tokens=300) for p, b in zip(phones, bert)]
    batch = gpt.infer_batch(phones, bert, prompt, top_k=1, max_new_tokens=300)
    for a, b in zip(alone, batch): _eq(a, b)
    _fail(lambda: gpt.infer_batch(phones, bert[:1], prompt), contains="lists")


def test_cut_rules_and_crossfade():
    quiet, loud = 0.5, -0.5
    _eq(next_cut(torch.full((15,), loud), "fixed", 16), 0)
    _eq(next_cut(torch.full((16,), loud), "fixed", 16), 16)
    s = torch.full((20,), loud); s[17:19] = quiet                        # tokens 17 and 18 look silent: cut between them
    _eq(next_cut(s, "tokens", 16), 18)
    _eq(next_cut(torch.full((20,), loud), "tokens", 16), 0)          # nothing silent yet: wait ...
    _eq(next_cut(torch.full((32,), loud), "tokens", 16), 16)         # ... but not past 2 x chunk_tokens
    a, b = torch.ones(1, 100), torch.zeros(1, 100)
    f = crossfade(a, b)
    assert f[0, 0] > 0.99 and f[0, -1] < 0.01 and torch.all(f[0, 1:] <= f[0, :-1])
    assert torch.allclose(crossfade(a, a), a)                            # the weights sum to 1
