"""Training (chapter 11): a run killed with SIGKILL resumes from its last complete checkpoint, every file it leaves loads
with the strict loaders, the exported voices are in the official formats, and the GPT's batched loss is what it should be."""
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch

from gpt_sovits_nb.checkpoints import checkpoint_info, load_gpt, load_sovits, read_checkpoint, safe_load
from gpt_sovits_nb.core import CheckpointError
from gpt_sovits_nb.gpt import Text2SemanticGPT
from gpt_sovits_nb.sovits import SoVITS
from gpt_sovits_nb.train import (GPTTrainConfig, GPTTrainer, MultiPeriodDiscriminator, SoVITSTrainConfig, SoVITSTrainer,
                                 TINY_DISCRIMINATOR, bucket_batches, collate_gpt, export_gpt, export_sovits, gpt_example,
                                 gpt_loss, list_checkpoints, load_sovits_for_training, load_training_checkpoint,
                                 synthetic_feature_set, tiny_gpt_config, tiny_sovits_config, training_clips, SOVITS_NEEDS,
                                 GPT_NEEDS)

ROOT = Path(__file__).resolve().parents[1]

TRAIN_SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb.train import *
    work, steps = Path(sys.argv[1]), int(sys.argv[2])
    feats = work / "features"
    if not (feats / "manifest.json").exists(): synthetic_feature_set(feats, 3, (1.0, 1.6), ssl_dim=32)
    clips, _ = training_clips(feats)
    torch.manual_seed(0)
    model, _ = load_sovits_for_training(SoVITS(tiny_sovits_config("v2", ssl_dim=32)))
    trainer = SoVITSTrainer(model, clips, work / "run", SoVITSTrainConfig(batch_size=2, save_every=3, keep_last=3), device="cpu",
                            discriminator=MultiPeriodDiscriminator("v2", **TINY_DISCRIMINATOR))
    print("RESUMED", trainer.resume(), flush=True)
    class Progress:
        def update(self, t, force=False):
            if not force: print("STEP", t.step, flush=True)
        def show_sample(self, t): pass
    trainer.fit(steps, Progress())
    print("DONE", trainer.step, flush=True)
''')


def _strict_load(path):
    "Both strict loaders: torch's weights_only and the library's own safe unpickler."
    torch.load(path, map_location="cpu", weights_only=True)
    safe_load(path)


def test_sigkill_then_resume(tmp_path):
    script = tmp_path / "train_run.py"
    script.write_text(TRAIN_SCRIPT)
    env = {**os.environ, "GSV_FAST": "1", "OMP_NUM_THREADS": "1"}
    ckpts = tmp_path / "run" / "checkpoints"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "200"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:                          # wait until the run has written its second checkpoint
            done = list_checkpoints(ckpts, "sovits")
            if done and done[-1][0] >= 6: break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            pytest.fail("the training run wrote no checkpoint at step 6 within 120 s")
        proc.send_signal(signal.SIGKILL)                       # no chance to clean up or save
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None: proc.kill()
    out = proc.stdout.read()
    killed_at = max(int(l.split()[1]) for l in out.splitlines() if l.startswith("STEP"))
    assert proc.returncode == -signal.SIGKILL and killed_at < 200

    last = list_checkpoints(ckpts, "sovits")[-1][0]
    assert last % 3 == 0 and last <= killed_at + 1              # a step is saved just before it is reported
    for _, p in list_checkpoints(ckpts, "sovits"): _strict_load(p)
    # a save interrupted by a crash leaves a temporary file; a damaged newest checkpoint must not stop the resume either
    (ckpts / f".sovits-{last + 3:08d}.pt.x1y2.tmp").write_bytes(b"PK\x03\x04 half written")
    (ckpts / f"sovits-{last + 30:08d}.pt").write_bytes(b"not a checkpoint")

    target = last + 3
    r = subprocess.run([sys.executable, str(script), str(tmp_path), str(target)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert f"RESUMED {last}" in lines, r.stdout                 # the newest *good* checkpoint
    steps = [int(l.split()[1]) for l in lines if l.startswith("STEP")]
    assert steps == list(range(last + 1, target + 1)), steps     # the step count continues from the checkpoint
    assert f"DONE {target}" in lines
    assert not list(ckpts.glob("*.tmp")), "stray temporary files are removed on resume"
    (ckpts / f"sovits-{last + 30:08d}.pt").unlink()
    for _, p in list_checkpoints(ckpts, "sovits"): _strict_load(p)
    state = load_training_checkpoint(list_checkpoints(ckpts, "sovits")[-1][1])
    assert state["step"] == target and state["history"]["step"] == list(range(1, target + 1))
    with pytest.raises(CheckpointError):
        load_training_checkpoint(script)


@pytest.fixture(scope="module")
def pro_run(tmp_path_factory):
    "A tiny v2ProPlus SoVITS and a tiny GPT, each trained two steps on synthetic clips."
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("pro")
    torch.manual_seed(0)
    feats = synthetic_feature_set(work / "features", 2, (1.0, 1.5), ssl_dim=32, sv=True)
    sov, msg = load_sovits_for_training(SoVITS(tiny_sovits_config("v2ProPlus", ssl_dim=32)))
    st = SoVITSTrainer(sov, training_clips(feats, SOVITS_NEEDS + ("sv",))[0], work / "run", SoVITSTrainConfig(batch_size=1),
                       device="cpu", discriminator=MultiPeriodDiscriminator("v2ProPlus", **TINY_DISCRIMINATOR))
    st.fit(2)
    gt = GPTTrainer(Text2SemanticGPT(tiny_gpt_config()), training_clips(feats, GPT_NEEDS)[0], work / "run",
                    GPTTrainConfig(batch_size=2, accumulate=2), device="cpu")
    gt.fit(2)
    return work, st, gt


def test_export_sovits_official_format(pro_run):
    work, st, _ = pro_run
    path = export_sovits(st, work / "weights" / "voice_sovits.pth", name="voice")
    raw = path.read_bytes()
    assert raw[:2] == b"06" and raw[2:4] == b"\x03\x04"         # v2ProPlus tag over the zip signature
    ckpt, f = read_checkpoint(path)
    assert f.header_version == "v2ProPlus"
    w = ckpt["weight"]
    assert not any(k.startswith("enc_q.") for k in w)
    assert all(v.dtype == torch.float16 for v in w.values() if v.is_floating_point())
    expected = {k for k in st.model.state_dict() if not k.startswith("enc_q.")}
    assert set(w) == expected and "sv_emb.weight" in w and "ge_to512.weight" in w
    cfg = ckpt["config"]
    assert isinstance(cfg, dict) and cfg["version"] == cfg["model"]["version"] == "v2ProPlus" and cfg["name"] == "voice"
    assert cfg["train"]["segment_size"] == st.model.config.segment_size and cfg["train"]["text_low_lr_rate"] == 0.4
    assert cfg["data"]["hop_length"] == 640 and cfg["data"]["filter_length"] == 2048
    assert ckpt["info"] == f"1epoch_{st.step}iteration"
    info = checkpoint_info(path)
    assert (info.kind, info.version, info.header, info.dtype) == ("sovits", "v2ProPlus", "06", "float16")
    m = load_sovits(path)
    assert m.version == "v2ProPlus" and not m.posterior
    for k, v in st.model.state_dict().items():
        if not k.startswith("enc_q."): assert torch.equal(m.state_dict()[k], v.half().float()), k
    again, msg = load_sovits_for_training(path)                  # an export has no enc_q: it starts fresh, and says so
    assert again.posterior and "fresh" in msg


def test_export_gpt_official_format(pro_run):
    work, _, gt = pro_run
    path = export_gpt(gt, work / "weights" / "voice_gpt.ckpt", name="voice")
    assert path.read_bytes()[:2] == b"PK"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"weight", "config", "info"} and ckpt["info"] == "GPT-e1"
    assert all(k.startswith("model.") for k in ckpt["weight"]) and all(v.dtype == torch.float16 for v in ckpt["weight"].values())
    assert ckpt["config"]["data"]["max_sec"] == 54 and ckpt["config"]["model"]["n_layer"] == 2
    assert ckpt["config"]["optimizer"]["warmup_steps"] == 2000 and ckpt["config"]["train"]["precision"] == "16-mixed"
    info = checkpoint_info(path)
    assert (info.kind, info.version, info.dtype) == ("gpt", "v2", "float16")
    g = load_gpt(path)
    for k, v in gt.gpt.state_dict().items(): assert torch.equal(g.state_dict()[k], v.half().float()), k


def test_small_v2_export_is_tagged_v2(tmp_path):
    torch.manual_seed(0)
    m = SoVITS(tiny_sovits_config("v2", ssl_dim=32), posterior=True)
    path = export_sovits(m, tmp_path / "v2.pth")
    assert path.read_bytes()[:2] == b"01"          # under 81 MiB: tagged, or the WebUI's size rule would call it v1
    assert load_sovits(path).version == "v2"


def test_load_sovits_for_training_keeps_enc_q(tmp_path):
    "A fine-tuning base that carries enc_q (as the released s2G*.pth) gives it back, not a fresh one."
    from gpt_sovits_nb.checkpoints import save_checkpoint
    torch.manual_seed(0)
    m = SoVITS(tiny_sovits_config("v2"), posterior=True)
    ckpt = m.to_checkpoint_dict(half=False)
    ckpt["weight"].update({k: v for k, v in m.state_dict().items() if k.startswith("enc_q.")})
    save_checkpoint(ckpt, tmp_path / "s2G_like.pth")
    again, msg = load_sovits_for_training(tmp_path / "s2G_like.pth")
    assert "loaded" in msg and torch.equal(again.enc_q.pre.weight, m.enc_q.pre.weight)


def test_gpt_loss_ignores_padding(tmp_path):
    "Two clips in one padded batch score exactly what each scores alone (with score_padding=False), and the summed loss is the model's own teacher forcing."
    torch.manual_seed(0)
    clips = training_clips(synthetic_feature_set(tmp_path / "f", 2, (1.0, 2.5), ssl_dim=8), GPT_NEEDS)[0]
    gpt = Text2SemanticGPT(tiny_gpt_config()).eval()
    ex = [gpt_example(c) for c in clips]
    assert ex[0]["semantic"].shape != ex[1]["semantic"].shape
    with torch.no_grad():
        both = gpt_loss(gpt, collate_gpt(ex), score_padding=False)
        alone = [gpt_loss(gpt, collate_gpt([e]))["loss"] for e in ex]
        logits = gpt(ex[0]["phones"][None], torch.zeros(1, 1024, len(ex[0]["phones"])), ex[0]["semantic"][None])
    assert torch.allclose(both["loss"], alone[0] + alone[1], rtol=1e-4)
    assert int(both["n"]) == sum(len(e["semantic"]) for e in ex)
    target = torch.cat([ex[0]["semantic"][1:], torch.tensor([1024])])
    assert torch.allclose(alone[0], torch.nn.functional.cross_entropy(logits[0], target, reduction="sum"), rtol=1e-5)


def test_buckets_follow_the_reference_rules():
    lengths = [10, 40, 50, 299, 301, 350, 1900, 1901, 5000]
    for epoch in range(3):
        b = bucket_batches(lengths, 2, epoch=epoch, seed=7)
        assert b == bucket_batches(lengths, 2, epoch=epoch, seed=7)
        used = [i for batch in b for i in batch]
        assert not {0, 7, 8} & set(used) and {1, 2, 3, 4, 5, 6} <= set(used)    # outside (32, 1900] frames: left out
        assert all(len(batch) == 2 for batch in b)
        for batch in b:                                                           # one bucket per batch
            assert len({next(j for j, e in enumerate((300, 400, 1900)) if lengths[i] <= e) for i in batch}) == 1


def test_discriminator_keys_match_the_released_layout():
    with torch.device("meta"):
        d2, dpro = MultiPeriodDiscriminator("v2"), MultiPeriodDiscriminator("v2Pro")
    s = {k: tuple(v.shape) for k, v in d2.state_dict().items()}
    assert len(d2.discriminators) == 6 and len(dpro.discriminators) == 8
    assert s["discriminators.0.convs.1.weight_v"] == (64, 4, 41) and s["discriminators.0.convs.1.weight_g"] == (64, 1, 1)
    assert s["discriminators.0.conv_post.weight_v"] == (1, 1024, 3)
    assert s["discriminators.1.convs.0.weight_v"] == (32, 1, 5, 1) and s["discriminators.5.conv_post.weight_v"] == (1, 1024, 3, 1)
    assert len(s) == 6 * 3 + 3 + 5 * (5 * 3 + 3)     # S: 6 convs + post, P: 5 convs + post; each weight_g, weight_v, bias


def test_same_seed_sovits_runs_are_identical(tmp_path):
    "Two fresh SoVITS runs with one seed give the same weights, however the trainers were made and whatever ran in between."
    import random, numpy as np
    feats = tmp_path / "features"
    synthetic_feature_set(feats, 3, (1.0, 1.6), ssl_dim=32)
    clips, _ = training_clips(feats)
    def make(name):
        torch.manual_seed(0)
        model, _ = load_sovits_for_training(SoVITS(tiny_sovits_config("v2", ssl_dim=32)))
        return SoVITSTrainer(model, clips, tmp_path / name, SoVITSTrainConfig(batch_size=2, save_every=0), device="cpu",
                             discriminator=MultiPeriodDiscriminator("v2", **TINY_DISCRIMINATOR))
    a, b = make("a"), make("b")                          # both made first: a's steps must not change b's
    a.fit(2)
    torch.rand(7); random.random(); np.random.rand()      # other work in between
    b.fit(2)
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()): assert torch.equal(x, y)
    assert a.history["loss/mel"] == b.history["loss/mel"]
