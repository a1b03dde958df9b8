"""The GPT chapter (nbs/06_gpt.ipynb): the model has the released checkpoints' keys, computes the reference's numbers
(golden cases), decodes with a KV cache exactly as without one, samples as the reference does (order of the knobs,
the exponential race, the EOS and length rules), and refuses bad input with messages that say what to fix."""
from __future__ import annotations
import io, json, math
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt_sovits_nb.core import CheckpointError, ConfigError, GPTConfig, GPT_CONFIGS
from gpt_sovits_nb import gpt as G
from gpt_sovits_nb.gpt import Text2SemanticGPT
from golden import cases, load_case, materialize, case_args, check, manifest as golden_manifest

ROOT = Path(__file__).resolve().parents[1]
TINY = GPTConfig(phoneme_vocab_size=732, embedding_dim=32, hidden_dim=32, head=4, n_layer=2)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Text2SemanticGPT(TINY).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    N, P = 10, 7
    return (torch.randint(0, 732, (1, N), generator=g), torch.randn(1, 1024, N, generator=g),
            torch.randint(0, 1024, (1, P), generator=g))


# ---------------------------------------------------------------- the released checkpoints' keys

@pytest.mark.parametrize("version,manifest", [("v1", "gpt_v1_s1longer.json"), ("v2", "gpt_v2_s1longer-v2.json")])
def test_state_dict_matches_the_released_checkpoint(version, manifest):
    man = golden_manifest(manifest.removesuffix(".json"), part=None)
    config = GPTConfig.from_dict(man["config_model"])
    assert config == GPT_CONFIGS[version]
    with torch.device("meta"): model = Text2SemanticGPT(config)
    got = {"model." + k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}
    want = man["tensors"]
    assert sorted(set(want) - set(got)) == [], "missing keys"
    assert sorted(set(got) - set(want)) == [], "unexpected keys"
    assert {k: got[k] for k in want if got[k] != want[k]} == {}
    assert len(got) == man["num_tensors"] and G.count_parameters(model) == man["num_params"]
    assert model.version == version


def test_version_follows_the_phone_table():
    with torch.device("meta"):
        assert Text2SemanticGPT(GPTConfig(phoneme_vocab_size=512)).version == "v1"
        assert Text2SemanticGPT(GPTConfig(phoneme_vocab_size=732)).version == "v2"
        assert Text2SemanticGPT(GPTConfig(phoneme_vocab_size=100, n_layer=1)).version is None


def test_bad_configs_are_refused():
    for bad, word in [(dict(EOS=5), "EOS"), (dict(embedding_dim=256), "embedding_dim"), (dict(head=7), "divisible")]:
        with pytest.raises(ConfigError, match=word):
            with torch.device("meta"): Text2SemanticGPT(GPTConfig(**bad))


# ---------------------------------------------------------------- golden cases (reference numbers)

_golden_models: dict = {}


def _golden_model(case, tmp_path_factory):
    key = case["model"]["file"]
    if key not in _golden_models:
        path = materialize(case, tmp_path_factory.getbasetemp() / "gpt_models")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)     # s1 files hold only dicts, tensors, strings
        _golden_models[key] = Text2SemanticGPT.from_checkpoint_dict(ckpt)
    return _golden_models[key]


@pytest.mark.parametrize("name", cases("gpt_"))
def test_golden(name, tmp_path_factory):
    case = load_case(name)
    model = _golden_model(case, tmp_path_factory)
    args, kwargs = case_args(case)
    torch.manual_seed(case.get("seed") or 0)
    got = getattr(model, case["call"].split(".")[-1])(*args, **kwargs)
    check(case, got)


def test_golden_greedy_cases_also_match_without_the_cache(tmp_path_factory):
    for name in ("gpt_greedy_gptA1_06", "gpt_greedy_gptA3_04"):
        case = load_case(name)
        args, kwargs = case_args(case)
        check(case, _golden_model(case, tmp_path_factory).infer(*args, use_cache=False, **kwargs))


def test_float16_files_become_float32_models(tmp_path_factory):
    case = load_case("gpt_prefill_gptA2_02")
    raw = torch.load(materialize(case, tmp_path_factory.getbasetemp() / "gpt_models"), map_location="cpu", weights_only=True)
    assert {v.dtype for v in raw["weight"].values()} == {torch.float16}
    model = _golden_model(case, tmp_path_factory)
    assert {p.dtype for p in model.parameters()} == {torch.float32} and not model.training
    assert model.info == "GPT-e15" and model.s1_config["data"]["max_sec"] == 54
    for k, v in raw["weight"].items():
        assert torch.equal(model.state_dict()[k[len("model."):]], v.float())


# ---------------------------------------------------------------- the KV cache

def test_cached_and_uncached_decoding_agree(tiny, inputs):
    kw = dict(top_k=5, top_p=0.9, temperature=0.8, repetition_penalty=1.35, max_new_tokens=40)
    torch.manual_seed(3); fast = list(tiny.decode(*inputs, **kw))
    torch.manual_seed(3); slow = list(tiny.decode(*inputs, use_cache=False, **kw))
    assert [s.token.item() for s in fast] == [s.token.item() for s in slow]
    worst = max((a.logits - b.logits).abs().max().item() for a, b in zip(fast, slow))
    assert worst < 1e-5, worst
    free = [tiny.infer(inputs[0], inputs[1], None, top_k=1, max_new_tokens=20, use_cache=u) for u in (True, False)]
    assert torch.equal(*free) and free[0].shape == (1, 20)


def test_prefill_equals_the_first_decoding_step(tiny, inputs):
    first = tiny.prefill_logits(*inputs)
    step = next(iter(tiny.decode(*inputs, top_k=1, repetition_penalty=1.0)))
    assert torch.allclose(step.logits, first[:, :-1]) and step.logits.shape == (1, 1024)


def test_the_cache_grows_when_full():
    cache = G.KVCache(n_layer=2, batch=1, heads=2, head_dim=3, capacity=4)
    ks = torch.randn(1, 2, 9, 3)
    k, v = cache.store(0, ks[:, :, :3], -ks[:, :, :3]); cache.store(1, ks[:, :, :3], ks[:, :, :3]); cache.length += 3
    for t in range(3, 9):
        k, v = cache.store(0, ks[:, :, t:t + 1], -ks[:, :, t:t + 1]); cache.store(1, ks[:, :, t:t + 1], ks[:, :, t:t + 1]); cache.length += 1
    assert cache.capacity >= 9 and torch.equal(k, ks) and torch.equal(v, -ks)


def test_long_decoding_past_the_first_allocation(tiny, inputs):
    out = tiny.infer(*inputs, top_k=1, max_new_tokens=300, min_new_tokens=300)
    assert out.shape == (1, 300)
    x = torch.cat([inputs[2], out[:, :-1]], 1)          # teacher-forced logits of the same tokens
    with torch.no_grad():
        logits = tiny(inputs[0], inputs[1], x)[:, inputs[2].shape[1] - 1:]
    # greedy with a repetition penalty: the chosen token is the argmax after penalising the history
    hist = torch.cat([inputs[2], out], 1)
    for t in (0, 150, 299):
        lg = G.apply_repetition_penalty(logits[:, t, :-1].clone(), hist[:, :inputs[2].shape[1] + t], 1.35)
        assert lg.argmax().item() == out[0, t].item()



# ---------------------------------------------------------------- the fixed-shape step (CUDA graphs)

def _steps(model, inputs, graph, **kw):
    steps = list(model.decode(*inputs, graph=graph, generator=torch.Generator(model.device).manual_seed(5), **kw))
    return torch.cat([s.token for s in steps], 1).cpu(), [s.logits.float().cpu() for s in steps]


@pytest.mark.parametrize("knobs", [dict(top_k=1), dict(top_k=5, top_p=0.9, temperature=0.8, repetition_penalty=1.35)])
def test_fixed_shape_step_gives_the_plain_tokens(tiny, inputs, knobs):
    "graph=True on a CPU runs the StaticStep eagerly: the same tokens as the plain cached loop, logits within float error."
    (a, la), (b, lb) = (_steps(tiny, inputs, g, max_new_tokens=60, min_new_tokens=60, **knobs) for g in (False, True))
    assert torch.equal(a, b) and a.shape == (1, 60)
    assert max((x - y).abs().max().item() for x, y in zip(la, lb)) < 1e-5
    for n in (1, 2, 12):                                   # the first token comes from the prefill, EOS rules unchanged
        assert torch.equal(tiny.infer(*inputs, top_k=1, max_new_tokens=n), tiny.infer(*inputs, top_k=1, max_new_tokens=n, graph=True))
    no_prompt = [tiny.infer(inputs[0], inputs[1], None, top_k=1, max_new_tokens=20, graph=g) for g in (False, True)]
    assert torch.equal(*no_prompt)


def test_fixed_shape_step_on_a_full_size_gpt():
    "The released size (random weights, 24 layers): greedy tokens of the fixed-shape step equal the plain loop's."
    torch.manual_seed(0)
    full = Text2SemanticGPT(GPT_CONFIGS["v2"]).eval()
    g = torch.Generator().manual_seed(2)
    ins = (torch.randint(0, 732, (1, 40), generator=g), torch.randn(1, 1024, 40, generator=g), torch.randint(0, 1024, (1, 30), generator=g))
    (a, la), (b, lb) = (_steps(full, ins, graph, top_k=1, max_new_tokens=25, min_new_tokens=25) for graph in (False, True))
    assert torch.equal(a, b)
    assert max((x - y).abs().max().item() for x, y in zip(la, lb)) < 1e-3


def test_static_cache_and_bad_graph_requests(tiny, inputs):
    cache = G.StaticKVCache(n_layer=1, batch=1, heads=2, head_dim=3, capacity=4)
    cache.store(0, torch.ones(1, 2, 2, 3), torch.ones(1, 2, 2, 3)); cache.length = 2
    cache.stepping = True; cache.pos.fill_(2)
    k, v = cache.store(0, torch.full((1, 2, 1, 3), 7.0), torch.full((1, 2, 1, 3), 8.0))
    assert k.shape == (1, 2, 4, 3) and k[0, 0, :, 0].tolist() == [1, 1, 7, 0] and v[0, 1, 2, 0] == 8
    with pytest.raises(ConfigError, match="fixed capacity of 4"):
        G.StaticKVCache(n_layer=1, batch=1, heads=2, head_dim=3, capacity=4).store(0, torch.ones(1, 2, 5, 3), torch.ones(1, 2, 5, 3))
    with pytest.raises(ConfigError, match="graph=True.*use_cache=True and no reading guide"):
        tiny.infer(*inputs, graph=True, use_cache=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_replays_the_plain_tokens(dtype, monkeypatch):
    "On CUDA the step is captured once and replayed: the same greedy tokens as the plain loop on the GPU (full size)."
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU")
    made = []

    class Recorded(G.StaticStep):
        def __init__(self, *a, **k): super().__init__(*a, **k); made.append(self)
    monkeypatch.setattr(G, "StaticStep", Recorded)                 # decode builds its step from the module's name
    torch.manual_seed(0)
    full = Text2SemanticGPT(GPT_CONFIGS["v2"]).to("cuda", dtype).eval()
    g = torch.Generator().manual_seed(2)
    ins = (torch.randint(0, 732, (1, 60), generator=g), torch.randn(1, 1024, 60, generator=g).to(dtype), torch.randint(0, 1024, (1, 40), generator=g))
    (a, la), (b, lb) = (_steps(full, ins, graph, top_k=1, max_new_tokens=200, min_new_tokens=200) for graph in (False, True))
    if dtype == torch.float32: assert torch.equal(a, b), (a != b).nonzero()[:5]
    else:                           # float16: other attention kernels round differently; a random GPT's near-ties may part late
        same = int((a != b).int().argmax()) if (a != b).any() else a.shape[1]
        assert same >= 40, (same, a[0, :50], b[0, :50])
    assert len(made) == 1 and made[0].graph is not None           # the graph really was captured (not the eager fallback)


# ---------------------------------------------------------------- sampling

def test_repetition_penalty_each_distinct_token_once_in_place():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -2.0]])
    out = G.apply_repetition_penalty(logits, torch.tensor([[0, 3, 0, 0]]), 2.0)
    assert out is logits and torch.equal(logits, torch.tensor([[1.0, 1.0, 0.0, -2.0, -2.0]]))
    same = torch.tensor([[2.0, -1.0]])
    assert torch.equal(G.apply_repetition_penalty(same, torch.tensor([[0]]), 1.0), torch.tensor([[2.0, -1.0]]))
    assert torch.equal(G.apply_repetition_penalty(same, torch.zeros(1, 0, dtype=torch.long), 2.0), torch.tensor([[2.0, -1.0]]))


def test_top_k_top_p_temperature_exact():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0])
    e = math.e
    assert torch.allclose(G.sampling_distribution(logits, top_k=2), torch.tensor([e / (1 + e), 1 / (1 + e), 0, 0, 0]))
    assert torch.equal(G.sampling_distribution(logits, top_k=1), torch.tensor([1.0, 0, 0, 0, 0]))
    assert torch.allclose(G.sampling_distribution(logits, top_k=0), torch.softmax(logits, -1))
    assert torch.allclose(G.sampling_distribution(logits, top_k=None), torch.softmax(logits, -1))
    ties = G.sampling_distribution(torch.tensor([1.0, 3.0, 3.0, 0.0]), top_k=1)
    assert torch.equal(ties, torch.tensor([0.0, 0.5, 0.5, 0.0]))          # ties with the k-th stay
    # softmax masses .636 .234 .086 ...: cumulative .636 .870 .956 .988 1
    assert torch.equal(G.sampling_distribution(logits, top_p=0.7), torch.tensor([1.0, 0, 0, 0, 0]))
    p9 = G.sampling_distribution(logits, top_p=0.9)
    assert torch.allclose(p9, torch.tensor([e / (1 + e), 1 / (1 + e), 0, 0, 0]))
    assert torch.equal(G.sampling_distribution(logits, top_p=0.0), torch.tensor([1.0, 0, 0, 0, 0]))  # the best always stays
    assert torch.allclose(G.sampling_distribution(logits, temperature=0.5), torch.softmax(2 * logits, -1))
    assert torch.allclose(G.sampling_distribution(logits, temperature=2.0), torch.softmax(logits / 2, -1))
    assert torch.equal(G.sampling_distribution(logits, temperature=0.0), torch.tensor([1.0, 0, 0, 0, 0]))  # clamped to 1e-5


def test_knobs_accept_numpy_numbers():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(G.sampling_distribution(x, top_k=np.int64(2), top_p=np.float32(0.9), temperature=np.float16(1)),
                       torch.tensor([0.0, 0.0, 1.0]))


def test_half_precision_models_decode(tiny, inputs):
    m = Text2SemanticGPT.from_checkpoint_dict(tiny.to_checkpoint_dict(half=False)).half()
    out = m.infer(*inputs, top_k=5, max_new_tokens=12)
    assert out.shape == (1, 12) and out.dtype == torch.long
    logits = m.prefill_logits(*inputs)
    assert logits.dtype == torch.float32 and torch.allclose(logits, tiny.prefill_logits(*inputs), atol=0.05)


def test_the_order_of_the_knobs_is_the_references():
    # penalty before top-k: token 0 is penalised below token 1, so greedy picks 1
    p = G.sampling_distribution(torch.tensor([3.0, 2.9, 0.0]), torch.tensor([0]), top_k=1, repetition_penalty=2.0)
    assert torch.equal(p, torch.tensor([0.0, 1.0, 0.0]))
    # top-p before temperature: the nucleus is chosen on the untempered distribution (a hot temperature keeps 1 token)
    assert (G.sampling_distribution(torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0]), top_p=0.7, temperature=10.0) > 0).sum() == 1
    # temperature before top-k: with top_k=1 temperature changes nothing
    x = torch.randn(50)
    assert torch.equal(G.sampling_distribution(x, top_k=1, temperature=0.3), G.sampling_distribution(x, top_k=1, temperature=3.0))
    # not in place unless asked
    x2 = x.clone(); G.sampling_distribution(x2, torch.tensor([1, 2]), repetition_penalty=1.5); assert torch.equal(x, x2)


def test_sample_token_is_the_exponential_race():
    probs = torch.softmax(torch.randn(1, 1025), -1)
    torch.manual_seed(11); got = G.sample_token(probs)
    torch.manual_seed(11); q = torch.empty(1, 1025).exponential_(1)
    assert got.dtype == torch.long and got.shape == (1, 1) and got.item() == torch.argmax(probs / q).item()
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.6, 0.3, 0.1, 0.0]])
    freq = torch.bincount(torch.cat([G.sample_token(p, g) for _ in range(20000)]).flatten(), minlength=4) / 20000
    assert torch.allclose(freq, p[0], atol=0.015) and freq[3] == 0


def _reference_style_decode(model, phones, bert, prompt, top_k, top_p, temperature, penalty, max_new):
    "The reference loop written out plainly: logits of the whole sequence, EOS column dropped for steps 0-10, penalty in place, "
    "top-p, temperature, top-k, softmax, q ~ Exp(1), argmax(p/q); stop on EOS (dropped) or after max_new tokens."
    y = prompt.clone()
    P = prompt.shape[1]
    with torch.no_grad():
        for idx in range(max_new):
            out = model.h(torch.cat([model.embed_text(phones, bert), model.embed_audio(y)], 1), G.prefix_lm_mask(phones.shape[1], y.shape[1]))
            logits = model.ar_predict_layer(out[:, -1])
            if idx < 11: logits = logits[:, :-1]
            for t in set(y[0].tolist()):
                s = logits[0, t]; logits[0, t] = s * penalty if s < 0 else s / penalty
            work = logits.clone()
            if top_p < 1:
                srt, order = torch.sort(work, descending=True)
                cum = torch.cumsum(torch.softmax(srt, -1), -1)
                remove = cum > top_p; remove[:, 0] = False
                work[0, order[0][remove[0]]] = float("-inf")
            work = work / max(temperature, 1e-5)
            kth = torch.topk(work, top_k).values[0, -1]
            work[work < kth] = float("-inf")
            probs = torch.softmax(work, -1)
            q = torch.empty_like(probs).exponential_(1)
            token = torch.argmax(probs / q, -1, keepdim=True)
            y = torch.cat([y, token], 1)
            if logits.argmax().item() == model.config.EOS or token.item() == model.config.EOS:
                return y[:, P:-1]
    return y[:, P:]


def test_same_random_draws_as_the_reference_loop(tiny, inputs):
    for seed, kw in [(5, (5, 1.0, 1.0, 1.35)), (6, (15, 0.8, 0.7, 1.2)), (7, (50, 0.95, 1.3, 1.0))]:
        torch.manual_seed(seed); want = _reference_style_decode(tiny, *inputs, *kw, 25)
        torch.manual_seed(seed); got = tiny.infer(*inputs, *kw, max_new_tokens=25)
        assert torch.equal(got, want), (seed, got, want)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(tiny.infer(*inputs, top_k=15, max_new_tokens=20, generator=g1), tiny.infer(*inputs, top_k=15, max_new_tokens=20, generator=g2))


def test_eos_rules_and_max_new_tokens(tiny, inputs):
    assert tiny.infer(*inputs, top_k=1, max_new_tokens=5).shape == (1, 5)
    assert tiny.infer(*inputs, top_k=1, max_new_tokens=1).shape == (1, 1)
    eager = Text2SemanticGPT.from_checkpoint_dict(tiny.to_checkpoint_dict(half=False))
    with torch.no_grad():
        last = eager.h.layers[-1].norm2; last.weight.zero_(); last.bias.normal_()
        eager.ar_predict_layer.weight[-1] = 10 * last.bias          # every output points at EOS
    steps = list(eager.decode(*inputs, top_k=1, max_new_tokens=100))
    assert len(steps) == 12 and steps[-1].eos and not any(s.eos for s in steps[:-1])
    assert [s.logits.shape[-1] for s in steps] == [1024] * 11 + [1025]
    assert eager.infer(*inputs, top_k=1, max_new_tokens=100).shape == (1, 11)       # EOS not returned
    assert eager.infer(*inputs, top_k=1, max_new_tokens=100, min_new_tokens=30).shape == (1, 30)
    assert eager.infer(*inputs, top_k=1, max_new_tokens=8).shape == (1, 8)


# ---------------------------------------------------------------- inputs and errors

def test_convenient_input_forms(tiny, inputs):
    phones, bert, prompt = inputs
    want = tiny.prefill_logits(phones, bert, prompt)
    assert torch.equal(tiny.prefill_logits(phones[0], bert[0], prompt[0]), want)              # [N], [1024, N], [P]
    assert torch.equal(tiny.prefill_logits(phones.numpy(), bert, prompt.int()), want)
    assert tiny.prefill_logits(phones, bert, None).shape == (1, 1025)
    assert torch.equal(tiny.prefill_logits(phones, bert, None), tiny.prefill_logits(phones, bert, torch.zeros(1, 0, dtype=torch.long)))


@pytest.mark.parametrize("change,words", [
    (dict(bert=torch.randn(1, 1024, 9)), ["10 ids", "9 columns"]),
    (dict(bert=torch.randn(1, 768, 10)), ["768 features", "1024", "zeros"]),
    (dict(bert=torch.randn(1, 10, 1024)), ["transpose"]),
    (dict(bert=torch.full((1, 1024, 10), float("nan"))), ["finite"]),
    (dict(phones=torch.randint(0, 5, (2, 10)), bert=torch.randn(2, 1024, 10)), ["[1, N]"]),
    (dict(phones=torch.rand(1, 10)), ["integer phone ids"]),
    (dict(phones=torch.zeros(1, 0, dtype=torch.long), bert=torch.randn(1, 1024, 0)), ["empty"]),
    (dict(phones=torch.full((1, 10), 800)), ["800", "0..731", "phones_to_ids"]),
    (dict(prompt=torch.tensor([[1, 2, 1024]])), ["0..1023"]),
    (dict(prompt=torch.tensor([[-1, 2]])), ["0..1023"]),
    (dict(prompt=torch.rand(1, 3)), ["semantic tokens"]),
])
def test_bad_inputs_are_explained(tiny, inputs, change, words):
    args = dict(zip(("phones", "bert", "prompt"), inputs)) | change
    for call in (lambda: tiny.prefill_logits(**args), lambda: tiny.infer(**args, max_new_tokens=3)):
        with pytest.raises(ConfigError) as e: call()
        assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("knobs,word", [(dict(temperature=-1.0), "temperature"), (dict(top_p=-0.5), "top_p"),
                                        (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(top_k=2.5), "top_k"),
                                        (dict(max_new_tokens=0), "max_new_tokens"), (dict(top_p="high"), "top_p")])
def test_bad_knobs_are_explained(tiny, inputs, knobs, word):
    with pytest.raises(ConfigError, match=word): tiny.infer(*inputs, **knobs)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_dict_round_trip(tiny, inputs, tmp_path):
    ckpt = tiny.to_checkpoint_dict()
    assert set(ckpt) == {"weight", "config", "info"} and ckpt["info"] == "GPT-e0"
    assert all(k.startswith("model.") and v.dtype == torch.float16 for k, v in ckpt["weight"].items())
    assert ckpt["config"]["model"]["phoneme_vocab_size"] == 732 and ckpt["config"]["model"]["linear_units"] == 4 * 32
    assert ckpt["config"]["data"]["max_sec"] == 54
    torch.save(ckpt, tmp_path / "x.ckpt")
    loaded = torch.load(tmp_path / "x.ckpt", map_location="cpu", weights_only=True)
    again = Text2SemanticGPT.from_checkpoint_dict(loaded)
    assert again.config == tiny.config and again.dtype == torch.float32
    assert torch.allclose(again.prefill_logits(*inputs), tiny.prefill_logits(*inputs), atol=2e-2)
    exact = Text2SemanticGPT.from_checkpoint_dict(tiny.to_checkpoint_dict(half=False))
    assert torch.equal(exact.prefill_logits(*inputs), tiny.prefill_logits(*inputs))
    loaded["info"] = "GPT-e7"; loaded["config"]["train"] = {"epochs": 7}
    kept = Text2SemanticGPT.from_checkpoint_dict(loaded).to_checkpoint_dict()
    assert kept["info"] == "GPT-e7" and kept["config"]["train"] == {"epochs": 7}


def test_bad_checkpoint_dicts_are_explained(tiny):
    ckpt = tiny.to_checkpoint_dict()
    with pytest.raises(CheckpointError, match="'weight'"): Text2SemanticGPT.from_checkpoint_dict({"config": ckpt["config"]})
    with pytest.raises(CheckpointError, match="config"): Text2SemanticGPT.from_checkpoint_dict({"weight": ckpt["weight"]})
    w = dict(ckpt["weight"]); w.pop("model.ar_predict_layer.weight")
    with pytest.raises(CheckpointError, match="missing.*ar_predict_layer"): Text2SemanticGPT.from_checkpoint_dict({**ckpt, "weight": w})
    w = dict(ckpt["weight"]); w["model.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected.*extra"): Text2SemanticGPT.from_checkpoint_dict({**ckpt, "weight": w})
    w = dict(ckpt["weight"]); w["enc_p.x"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="SoVITS"): Text2SemanticGPT.from_checkpoint_dict({**ckpt, "weight": w})
    cfg = json.loads(json.dumps(ckpt["config"])); cfg["model"]["phoneme_vocab_size"] = 512
    with pytest.raises(CheckpointError, match="wrong shapes.*ar_text_embedding"): Text2SemanticGPT.from_checkpoint_dict({**ckpt, "config": cfg})


# ---------------------------------------------------------------- training, widget

def test_teacher_forcing_forward_trains_after_inference(tiny, inputs):
    model = Text2SemanticGPT.from_checkpoint_dict(tiny.to_checkpoint_dict(half=False))
    model.infer(*inputs, top_k=1, max_new_tokens=3)                  # builds the position tables in inference mode
    model.train()
    phones, bert, prompt = inputs
    logits = model(phones, bert, prompt)
    assert logits.shape == (1, prompt.shape[1], 1025)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], prompt[0, 1:])
    loss.backward()
    assert model.ar_audio_position.alpha.grad is not None and model.h.layers[0].self_attn.in_proj_weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        full = model(phones, bert, prompt)[:, -1]
    assert torch.allclose(full, model.prefill_logits(*inputs), atol=1e-5)


@pytest.mark.widgets
def test_sampling_widget(tiny, inputs):
    pytest.importorskip("ipywidgets")
    logits = tiny.prefill_logits(*inputs)[0] * 4
    from gpt_sovits_nb.widgets import sampling_widget       # the widget lives with the others (chapter 13)
    ui = sampling_widget(logits, inputs[2])
    ui._gsv["top_k"].value = 3
    assert ui._gsv["status"].value.startswith("3 candidate")
    ui._gsv["top_k"].value = 0; ui._gsv["top_p"].value = 0.05
    probs = ui._gsv["redraw"]()
    assert torch.equal(probs, G.sampling_distribution(logits, inputs[2], 0, 0.05, 1.0, 1.35))
    fig = G.plot_next_token_distribution(probs, torch.softmax(logits, -1))
    assert fig.axes[0].get_xlabel() == "semantic token id"
    assert G.plot_prefix_mask(3, 2).axes[0].get_ylabel().startswith("query")


# ---------------------------------------------------------------- int8 weights (quantize_int8)

def test_int8_copy_decodes_like_the_float_model(tiny, inputs):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    q = G.quantize_int8(tiny)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())     # a copy: the float model is untouched
    assert type(q.ar_predict_layer) is torch.nn.Linear                                # the output layer stays float
    assert all(m.in_proj_int8 is not None for m in q.modules() if isinstance(m, G.SelfAttention))
    a, b = tiny.prefill_logits(*inputs), q.prefill_logits(*inputs)
    assert a.shape == b.shape == (1, 1025)
    assert torch.nn.functional.cosine_similarity(a, b).item() > 0.99
    out = q.infer(inputs[0], inputs[1], inputs[2], top_k=1, max_new_tokens=20)
    assert out.shape[0] == 1 and 1 <= out.shape[1] <= 20 and out.dtype == torch.long


def test_int8_models_are_for_decoding_only(tiny):
    q = G.quantize_int8(tiny)
    with pytest.raises(ConfigError, match="int8 weights.*save the float model"):
        q.to_checkpoint_dict()
    with pytest.raises(ConfigError, match=r"float32 CPU model.*\.float\(\)\.cpu\(\)"):
        G.quantize_int8(Text2SemanticGPT(TINY).half())


def test_int8_nano_gpt_agrees_with_float32():
    "On the trained nano GPT, greedy decoding with int8 weights picks the float model's token almost every step."
    from gpt_sovits_nb.checkpoints import load_gpt, nano_weights
    gpt = load_gpt(nano_weights()[0], device="cpu").eval()
    q = G.quantize_int8(gpt)
    g = torch.Generator().manual_seed(0)
    V = gpt.config.phoneme_vocab_size
    same = total = 0
    # teacher-forced agreement: both models see the float model's greedy path, compare their argmax at each step
    for _ in range(4):
        phones = torch.randint(1, V, (1, 30), generator=g)
        bert = torch.zeros(1, 1024, 30)
        prompt = torch.randint(0, 256, (1, 25), generator=g)
        path = gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=40)
        for t in range(path.shape[1]):
            p = torch.cat([prompt, path[:, :t]], 1)
            same += int(gpt.prefill_logits(phones, bert, p).argmax() == q.prefill_logits(phones, bert, p).argmax())
            total += 1
    assert total >= 20 and same / total > 0.9, (same, total)


# ---------------------------------------------------------------- the reading guide (aligned heads, chapter 06 section 9)

def test_released_gpts_have_no_aligned_heads_and_no_guide(tiny):
    assert tiny.aligned_heads == () and G.ReadingGuide.for_text(tiny, 3, ["AH0", "B", "."]) is None
    with pytest.raises(ConfigError, match="aligned_heads"): G.ReadingGuide((), 0, 1, 2)


def test_reading_guide_window_mask_and_position():
    guide = G.ReadingGuide([(0, 1)], start=2, last=5, end=7, back=1, ahead=2)
    assert guide.window() == (2, 4)
    q, k = torch.randn(1, 4, 1, 8), torch.randn(1, 4, 10, 8)          # one new row; 7 phones then 3 tokens
    k[0, 1, 4] = q[0, 1, 0] * 50                                       # head 1 looks hard at phone 4
    mask = guide.steer(0, q, k, None)
    assert mask.shape == (1, 4, 1, 10) and guide.steer(1, q, k, None) is None   # layer 1 has no aligned head
    assert torch.isinf(mask[0, 1, 0, [0, 1, 5, 6]]).all() and (mask[0, 1, 0, [2, 3, 4, 7, 8, 9]] == 0).all()
    assert (mask[0, [0, 2, 3]] == 0).all()                              # other heads untouched
    logits = torch.zeros(1, 11)
    guide.step(logits, eos=10)
    assert guide.position == 4 and guide.path == [4] and logits[0, 10] == float("-inf")   # not at the last phone: no EOS
    k[0, 1, 4] = 0; k[0, 1, 3] = q[0, 1, 0] * 50                      # looking back does not move it back
    guide.steer(0, q, k, None); guide.step(torch.zeros(1, 11), eos=10)
    assert guide.position == 4


def test_reading_guide_forces_eos_after_the_tail():
    guide = G.ReadingGuide([(0, 0)], start=0, last=1, end=2, tail=2)
    guide.position = 1
    for n in range(3):
        logits = torch.zeros(1, 5)
        guide.step(logits, eos=4, eos_allowed=True)
        assert torch.isinf(logits[0, :4]).all() == (n == 2) and logits[0, 4] == 0
    held = torch.zeros(1, 5); guide.step(held, eos=4, eos_allowed=False)     # before min_new_tokens: nothing forced
    assert (held == 0).all()


def test_guided_decoding_on_a_tiny_model(inputs):
    torch.manual_seed(0)
    gpt = Text2SemanticGPT(TINY).eval()
    gpt.s1_config = {"model": {"aligned_heads": [[1, 0], [0, 2]]}}
    assert gpt.aligned_heads == ((1, 0), (0, 2))
    phones, bert, prompt = inputs
    plain = gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=30, min_new_tokens=0)
    guide = G.ReadingGuide.for_text(gpt, 4, ["AH0", "B", "K", "D", "EH1", "."])      # 4 reference phones + 6 of the text
    assert (guide.start, guide.last, guide.end) == (4, 8, 10)
    held = gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=30, min_new_tokens=0, guide=guide)
    assert all(l.self_attn.steer is None for l in gpt.h.layers)        # detached again
    assert len(guide.path) == held.shape[1] + (held.shape[1] < 30) and guide.path == sorted(guide.path)
    assert all(4 <= p <= 9 for p in guide.path)
    again = gpt.infer(phones, bert, prompt, top_k=1, max_new_tokens=30, min_new_tokens=0)
    assert torch.equal(plain, again)                                   # the model itself is unchanged
    with pytest.raises(ConfigError, match="made for 7 phones"):
        gpt.infer(phones, bert, prompt, guide=G.ReadingGuide([(1, 0)], 0, 5, 7))
    with pytest.raises(ConfigError, match="not in this GPT"):
        gpt.infer(phones, bert, prompt, guide=G.ReadingGuide([(5, 0)], 0, 5, 10))


def test_a_checkpoints_recommended_sampling_is_read_and_checked(tiny):
    from gpt_sovits_nb.core import SAMPLING, CheckpointError
    g = Text2SemanticGPT(TINY).eval()
    assert g.sampling == SAMPLING
    g.s1_config = {"sampling": {"repetition_penalty": 1.0, "beam": 3}}
    assert g.sampling.repetition_penalty == 1.0 and g.sampling.top_k == SAMPLING.top_k   # unknown keys are ignored
    g.s1_config = {"sampling": {"top_k": "many"}}
    with pytest.raises(CheckpointError, match="recommends sampling"): g.sampling
    g.s1_config = {"sampling": [1, 2]}
    assert g.sampling == SAMPLING
