"""Checkpoint files: safe loading (malicious pickles refused, nothing run), damaged files, version detection,
saving in the official formats and the golden fixture files. The hub cache / offline behaviour: test_hub.py."""
from __future__ import annotations
import io, os, pickle, subprocess, sys, zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from gpt_sovits_nb.core import CheckpointError, UnsafeCheckpointError, GSVError, plain
from gpt_sovits_nb import checkpoints as C
from golden import model_file

# file -> (kind, version, dtype of the weights, config type, first two bytes)
GOLDEN_FILES = {
    "gpt/gptA1_v2_fp32.ckpt": ("gpt", "v2", torch.float32, "dict", b"PK"),
    "gpt/gptA2_v2_half.ckpt": ("gpt", "v2", torch.float16, "dict", b"PK"),
    "gpt/gptA3_v1_fp32_eos.ckpt": ("gpt", "v1", torch.float32, "dict", b"PK"),
    "sovits/sovA_v2_fp32_hparams.pth": ("sovits", "v2", torch.float32, "HParams", b"PK"),
    "sovits/sovA_v2Pro_half_dict.pth": ("sovits", "v2Pro", torch.float16, "dict", b"05"),
    "sovits/sovA_v2ProPlus_half_hparams.pth": ("sovits", "v2ProPlus", torch.float16, "HParams", b"06"),
}


@pytest.fixture(scope="session")
def golden(tmp_path_factory):
    "The golden model files, decompressed once: {relative name: path}."
    root = tmp_path_factory.mktemp("golden_ckpt")
    return {rel: model_file(f"models/{rel}", root) for rel in GOLDEN_FILES}


def _torch_load_trusted(path: Path):
    "Reference read of a golden file with torch itself (weights_only, utils.HParams allowed as our stand-in)."
    data = path.read_bytes()
    with torch.serialization.safe_globals([(C.HParams, "utils.HParams")]):
        return torch.load(io.BytesIO(b"PK" + data[2:]), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------- golden files
@pytest.mark.parametrize("rel", list(GOLDEN_FILES))
def test_golden_files_read(golden, rel):
    kind, version, dtype, cfg_type, head = GOLDEN_FILES[rel]
    path = golden[rel]
    ckpt, f = C.read_checkpoint(path)
    assert f.head == head and f.container == "zip"
    assert C.checkpoint_kind(ckpt) == kind
    assert C.detect_version(path) == version
    assert type(ckpt["config"]).__name__ == cfg_type
    floats = {v.dtype for v in ckpt["weight"].values() if v.is_floating_point()}
    assert floats == {dtype}
    if kind == "sovits":
        assert not any(k.startswith("enc_q.") for k in ckpt["weight"])
        assert C.sovits_version(path) == version
        # the config works both ways the reference uses it (item and attribute access for HParams)
        assert ckpt["config"]["model"]["gin_channels"] > 0
        if cfg_type == "HParams": assert ckpt["config"].model.gin_channels == ckpt["config"]["model"]["gin_channels"]
    info = C.checkpoint_info(path)
    assert (info.kind, info.version, info.header, info.dtype, info.config_type) == (kind, version, head.decode(), str(dtype)[6:], cfg_type)
    assert info.n_params == sum(v.numel() for v in ckpt["weight"].values()) and str(path) in str(info)


@pytest.mark.parametrize("rel", ["gpt/gptA2_v2_half.ckpt", "sovits/sovA_v2ProPlus_half_hparams.pth"])
def test_golden_same_as_torch_load(golden, rel):
    mine, _ = C.read_checkpoint(golden[rel])
    ref = _torch_load_trusted(golden[rel])
    assert mine["info"] == ref["info"] and plain(mine["config"]) == plain(ref["config"])
    assert list(mine["weight"]) == list(ref["weight"])
    for k, v in ref["weight"].items():
        assert mine["weight"][k].dtype == v.dtype and mine["weight"][k].shape == v.shape and torch.equal(mine["weight"][k], v), k


def test_sovits_config_usable_by_sovitsconfig(golden):
    from gpt_sovits_nb.core import SoVITSConfig
    ckpt, _ = C.read_checkpoint(golden["sovits/sovA_v2ProPlus_half_hparams.pth"])
    cfg = SoVITSConfig.from_dict(ckpt["config"], "v2ProPlus")
    assert cfg.version == "v2ProPlus" and cfg.gin_channels == ckpt["config"]["model"]["gin_channels"]


# ---------------------------------------------------------------------------------------------- malicious files
class _Payload:
    "Pickles as: os.system('touch <marker>')."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch '{self.marker}'",))


def _assert_refused(path, marker, name_part="system"):
    with pytest.raises(UnsafeCheckpointError) as e:
        C.read_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and name_part in msg and "refused" in msg
    assert not marker.exists(), "the payload ran!"
    return msg


def test_malicious_torch_zip_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "voice.pth"
    torch.save({"weight": {"enc_p.x": torch.zeros(2)}, "config": _Payload(marker), "info": "x"}, p)
    msg = _assert_refused(p, marker)
    assert "posix.system" in msg or "os.system" in msg or "nt.system" in msg


def test_malicious_retagged_zip_refused(tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO(); torch.save({"weight": {}, "config": _Payload(marker)}, buf)
    p = tmp_path / "voice_pro.pth"; p.write_bytes(b"06" + buf.getvalue()[2:])
    _assert_refused(p, marker)


@pytest.mark.parametrize("protocol", [0, 2, 4, pickle.HIGHEST_PROTOCOL])
def test_malicious_plain_pickle_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    p = tmp_path / "voice.ckpt"
    p.write_bytes(pickle.dumps({"weight": {}, "config": _Payload(marker)}, protocol=protocol))
    _assert_refused(p, marker)


def test_malicious_eval_and_build_refused(tmp_path):
    marker = tmp_path / "pwned"
    # builtins.eval through REDUCE
    class Eval:
        def __reduce__(self): return (eval, (f"open({str(marker)!r}, 'w').close()",))
    p = tmp_path / "eval.pth"
    p.write_bytes(pickle.dumps({"weight": Eval()}, protocol=2))
    _assert_refused(p, marker, "eval")
    # BUILD on an allowed, non-config object (would set attributes on it) is refused too
    p = tmp_path / "build.pth"
    p.write_bytes(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01}q\x02X\x01\x00\x00\x00aK\x01sb.")
    with pytest.raises(UnsafeCheckpointError, match="state"):
        C.safe_load(p)


def test_safe_globals_are_our_objects():
    "Every allowed name maps to a dtype, a storage marker, a builtin container or one of our own functions."
    allowed = (OrderedDict, set, frozenset, C.HParams, C._rebuild_tensor, C._rebuild_parameter, C._latin1_bytes, C._path_text)
    for key, obj in C.SAFE_GLOBALS.items():
        assert isinstance(obj, (torch.dtype, C._StorageType)) or any(obj is a for a in allowed), key


# ---------------------------------------------------------------------------------------------- damaged files
def test_missing_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as e: C.read_checkpoint(tmp_path / "nope.pth")
    assert "nope.pth" in str(e.value)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as e: C.load_sovits(tmp_path / "empty.pth")
    assert "empty.pth" in str(e.value) and "again" in str(e.value)
    with pytest.raises(CheckpointError, match="folder"): C.read_checkpoint(tmp_path)


def test_truncated_and_corrupt_zip(golden, tmp_path):
    data = golden["gpt/gptA1_v2_fp32.ckpt"].read_bytes()
    p = tmp_path / "half.ckpt"; p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or incomplete") as e: C.load_gpt(p)
    assert "half.ckpt" in str(e.value) and "again" in str(e.value)
    # a flipped byte inside a tensor record: the zip's CRC check catches it
    with zipfile.ZipFile(golden["gpt/gptA1_v2_fp32.ckpt"]) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("data/0")))
    h = info.header_offset   # local file header: 30 bytes, then the name and the (local) extra field, then the data
    start = h + 30 + int.from_bytes(data[h + 26:h + 28], "little") + int.from_bytes(data[h + 28:h + 30], "little")
    bad = bytearray(data); bad[start + 5] ^= 0xFF
    p = tmp_path / "flipped.ckpt"; p.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="damaged"): C.read_checkpoint(p)


def test_random_bytes_and_html(tmp_path):
    g = torch.Generator().manual_seed(0)
    p = tmp_path / "random.pth"; p.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8).tolist()))
    with pytest.raises(CheckpointError) as e: C.read_checkpoint(p)
    assert "random.pth" in str(e.value) and not isinstance(e.value, UnsafeCheckpointError)
    p = tmp_path / "page.pth"; p.write_bytes(b"<!DOCTYPE html><html>404</html>")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"): C.read_checkpoint(p)


def test_harmless_pickle_and_legacy_format(tmp_path):
    p = tmp_path / "plain.pkl"; p.write_bytes(pickle.dumps({"weight": {}}, protocol=2))
    with pytest.raises(CheckpointError, match="bare pickle"): C.read_checkpoint(p)
    p = tmp_path / "legacy.pth"
    torch.save({"weight": {"dec.x": torch.ones(3)}}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="PyTorch < 1.6"): C.read_checkpoint(p)


def test_wrong_kind(golden):
    with pytest.raises(CheckpointError, match="load_sovits") as e: C.load_gpt(golden["sovits/sovA_v2Pro_half_dict.pth"])
    assert "sovA_v2Pro_half_dict.pth" in str(e.value)
    with pytest.raises(CheckpointError, match="load_gpt") as e: C.load_sovits(golden["gpt/gptA1_v2_fp32.ckpt"])
    assert "gptA1_v2_fp32.ckpt" in str(e.value)


def test_training_checkpoints_get_their_own_message(tmp_path):
    p = tmp_path / "G_1000.pth"
    torch.save({"model": {"enc_p.x": torch.zeros(1)}, "iteration": 1000, "optimizer": {}, "learning_rate": 1e-4}, p)
    with pytest.raises(CheckpointError, match="training checkpoint"): C.read_checkpoint(p)
    p = tmp_path / "epoch=1.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "epoch": 1}, p)
    with pytest.raises(CheckpointError, match="Lightning"): C.read_checkpoint(p)
    p = tmp_path / "tensor.pth"; torch.save(torch.zeros(3), p)
    with pytest.raises(CheckpointError, match="not GPT-SoVITS weights"): C.read_checkpoint(p)


# ---------------------------------------------------------------------------------------------- versions
@pytest.mark.parametrize("head,what", [(b"02", "v3"), (b"03", "v3"), (b"04", "v4")])
def test_v3_v4_refused(golden, tmp_path, head, what):
    p = tmp_path / "v34.pth"; p.write_bytes(head + golden["sovits/sovA_v2Pro_half_dict.pth"].read_bytes()[2:])
    for fn in (C.sniff_file, C.detect_version, C.load_sovits, C.checkpoint_info):
        with pytest.raises(CheckpointError, match="v3/v4 are not supported") as e: fn(p)
        assert what in str(e.value) and "v34.pth" in str(e.value)


def test_v3_weights_refused_and_unknown_tag(tmp_path):
    p = C.save_checkpoint({"weight": {"cfm.x": torch.zeros(2), "enc_p.ssl_proj.weight": torch.zeros(2)}, "config": {}}, tmp_path / "v3.pth")
    with pytest.raises(CheckpointError, match="v3/v4 are not supported"): C.detect_version(p)
    p2 = tmp_path / "v7.pth"; p2.write_bytes(b"07" + p.read_bytes()[2:])
    with pytest.raises(CheckpointError, match="newer GPT-SoVITS"): C.read_checkpoint(p2)


def test_version_from_weights(golden, tmp_path):
    ckpt, _ = C.read_checkpoint(golden["sovits/sovA_v2ProPlus_half_hparams.pth"])
    # untagged Pro files (like the released s2Gv2Pro.pth) are recognised from weights + config
    p = tmp_path / "untagged.pth"; p.write_bytes(b"PK" + golden["sovits/sovA_v2ProPlus_half_hparams.pth"].read_bytes()[2:])
    assert C.sniff_file(p).header_version is None and C.detect_version(p) == "v2ProPlus"
    cfg = plain(ckpt["config"]); cfg["model"].pop("version", None); cfg.pop("version", None)
    assert C.sovits_version({**ckpt, "config": cfg}) == "v2Pro"        # no version, HiFi-GAN not 768 wide
    cfg["model"]["upsample_initial_channel"] = 768
    assert C.sovits_version({**ckpt, "config": cfg}) == "v2ProPlus"    # the reference's inspect_version rule
    # 322 phone rows: v1; no speaker projection and no tag: v2
    w = dict(ckpt["weight"]); w[C.SOVITS_PHONE_KEY] = torch.zeros(322, 4)
    assert C.sovits_version({"weight": w, "config": {}}) == "v1"
    w = {k: v for k, v in ckpt["weight"].items() if not k.startswith(("sv_emb", "ge_to512", "prelu"))}
    assert C.sovits_version({"weight": w, "config": {}}) == "v2"
    # a tag that the weights contradict is an error
    p = C.save_sovits({"weight": w, "config": {}}, tmp_path / "liar.pth", version="v2")
    p.write_bytes(b"05" + p.read_bytes()[2:])
    with pytest.raises(CheckpointError, match="inconsistent"): C.detect_version(p)


def test_gpt_version_rows():
    assert C.gpt_version({"weight": {C.GPT_PHONE_KEY: torch.zeros(512, 2)}}) == "v1"
    assert C.gpt_version({"weight": {C.GPT_PHONE_KEY: torch.zeros(732, 2)}}) == "v2"
    with pytest.raises(CheckpointError, match="512"): C.gpt_version({"weight": {C.GPT_PHONE_KEY: torch.zeros(100, 2)}})


# ---------------------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("rel", [r for r in GOLDEN_FILES if r.startswith("sovits")])
def test_save_sovits_round_trip(golden, tmp_path, rel):
    kind, version, *_ = GOLDEN_FILES[rel]
    ckpt, _ = C.read_checkpoint(golden[rel])
    extra = dict(ckpt["weight"]); extra["enc_q.pre.weight"] = torch.ones(3)          # training-only: must be dropped
    out = C.save_sovits({**ckpt, "weight": extra}, tmp_path / "out.pth")
    assert out.read_bytes()[:2] == (C.VERSION_HEADERS.get(version) or C.size_rule_tag(version, out.stat().st_size) or b"PK")
    back, f = C.read_checkpoint(out)
    assert C.detect_version(out) == version and type(back["config"]) is dict and back["info"] == ckpt["info"]
    assert set(back["weight"]) == set(ckpt["weight"])
    for k, v in ckpt["weight"].items():
        want = v.half() if v.is_floating_point() else v
        assert back["weight"][k].dtype == want.dtype and torch.equal(back["weight"][k], want), k
    # what the official loader does (load_sovits_new): patch PK back in and torch.load; weights_only works since config is a dict
    official = torch.load(io.BytesIO(b"PK" + out.read_bytes()[2:]), map_location="cpu", weights_only=True)
    assert set(official) == {"weight", "config", "info"} and official["config"] == plain(ckpt["config"])
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("rel", [r for r in GOLDEN_FILES if r.startswith("gpt")])
def test_save_gpt_round_trip(golden, tmp_path, rel):
    ckpt, _ = C.read_checkpoint(golden[rel])
    out = C.save_gpt(ckpt, tmp_path / "out.ckpt")
    assert out.read_bytes()[:2] == b"PK"
    back, _ = C.read_checkpoint(out)
    assert back["config"] == ckpt["config"] and back["info"] == ckpt["info"] and C.detect_version(out) == C.detect_version(golden[rel])
    for k, v in ckpt["weight"].items():
        assert back["weight"][k].dtype == torch.float16 and torch.equal(back["weight"][k], v.half()), k
    official = torch.load(out, map_location="cpu", weights_only=True)
    assert list(official) == ["weight", "config", "info"]


def test_save_is_atomic(tmp_path):
    target = tmp_path / "voice.pth"
    C.save_checkpoint({"weight": {"dec.x": torch.ones(2)}}, target)
    before = target.read_bytes()
    with pytest.raises(Exception):
        C.save_checkpoint({"weight": {"dec.x": torch.ones(2)}, "bad": lambda: 0}, target)   # torch.save fails half-way
    assert target.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_save_refuses_non_plain_config(tmp_path):
    from gpt_sovits_nb.core import SoVITSConfig
    w = {"enc_p.text_embedding.weight": torch.zeros(732, 2), "dec.conv_pre.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="config"):
        C.save_sovits({"weight": w, "config": SoVITSConfig()}, tmp_path / "x.pth", version="v2")
    with pytest.raises(CheckpointError, match=r"config\['model'\]\['dev'\]"):
        C.save_sovits({"weight": w, "config": {"model": {"dev": torch.device("cpu")}}}, tmp_path / "x.pth", version="v2")
    assert not list(tmp_path.iterdir())


def test_save_refuses_wrong_kind(golden, tmp_path):
    g, _ = C.read_checkpoint(golden["gpt/gptA1_v2_fp32.ckpt"])
    s, _ = C.read_checkpoint(golden["sovits/sovA_v2Pro_half_dict.pth"])
    with pytest.raises(CheckpointError): C.save_sovits(g, tmp_path / "x.pth")
    with pytest.raises(CheckpointError): C.save_gpt(s, tmp_path / "x.ckpt")


# ---------------------------------------------------------------------------------------------- models (when chapters 06/07 exist)
def test_load_and_save_gpt_model(golden, tmp_path):
    pytest.importorskip("gpt_sovits_nb.gpt")
    m = C.load_gpt(golden["gpt/gptA2_v2_half.ckpt"], device="cpu")
    assert not m.training
    out = C.save_gpt(m, tmp_path / "m.ckpt")
    m2 = C.load_gpt(out)
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:   # the file was float16 to begin with, so nothing is lost by saving in float16 again
        assert torch.equal(sd1[k].to(sd2[k].dtype), sd2[k]), k
    ref, _ = C.read_checkpoint(golden["gpt/gptA2_v2_half.ckpt"])
    back, _ = C.read_checkpoint(out)
    assert set(back["weight"]) == set(ref["weight"])


@pytest.mark.parametrize("rel", [r for r in GOLDEN_FILES if r.startswith("sovits")])
def test_load_and_save_sovits_model(golden, tmp_path, rel):
    pytest.importorskip("gpt_sovits_nb.sovits")
    version = GOLDEN_FILES[rel][1]
    m = C.load_sovits(golden[rel], device="cpu")
    assert m.version == version and not m.training
    out = C.save_sovits(m, tmp_path / "m.pth")
    assert out.read_bytes()[:2] == (C.VERSION_HEADERS.get(version) or C.size_rule_tag(version, out.stat().st_size) or b"PK")
    m2 = C.load_sovits(out)
    assert m2.version == version
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        a = sd1[k].half() if sd1[k].is_floating_point() else sd1[k]
        b = sd2[k].half() if sd2[k].is_floating_point() else sd2[k]
        assert torch.equal(a, b), k
    ref, _ = C.read_checkpoint(golden[rel])
    back, _ = C.read_checkpoint(out)
    assert set(back["weight"]) == set(ref["weight"])          # same keys as the official saver wrote


def test_import_downloads_nothing():
    code = "import sys, gpt_sovits_nb.checkpoints; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_plain_state_dict_files_load_safely(tmp_path):
    "torch.save(module.state_dict()) pickles an OrderedDict with `_metadata` (per-module versions): plain data, admitted."
    import torch
    from gpt_sovits_nb.checkpoints import safe_load
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    p = tmp_path / "sd.pth"; torch.save(m.state_dict(), p)
    sd, _ = safe_load(p)
    assert set(sd) == set(m.state_dict()) and all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    assert getattr(sd, "_metadata", None) == m.state_dict()._metadata
