"""The hub (gpt_sovits_nb.hub, chapter 00a): the released weights table, the Hugging Face cache, offline mode and the
one error that says what to do. Everything runs offline, with HF_HOME pointing at a temporary folder."""
from __future__ import annotations
import subprocess, sys
from pathlib import Path

import pytest

from gpt_sovits_nb.core import WeightsNotFoundError, GSVError
from gpt_sovits_nb import hub as H


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return home


def _put_in_cache(home: Path, filename: str, data: bytes, repo="lj1995/GPT-SoVITS", commit="a" * 40):
    root = home / "hub" / ("models--" + repo.replace("/", "--"))
    f = root / "snapshots" / commit / filename
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return f


def test_hub_offline_missing(hf_env, tmp_path):
    assert H.hub_cache_dir() == hf_env / "hub" and H.hub_offline()
    with pytest.raises(WeightsNotFoundError) as e:
        H.hub_file("lj1995/GPT-SoVITS", "v2Pro/s2Gv2Pro.pth")
    msg = str(e.value)
    assert "v2Pro/s2Gv2Pro.pth" in msg and str(hf_env / "hub") in msg and "HF_HUB_OFFLINE" in msg
    assert "https://huggingface.co/lj1995/GPT-SoVITS/resolve/main/v2Pro/s2Gv2Pro.pth" in msg and "local_dir" in msg
    local = tmp_path / "pretrained_models"
    with pytest.raises(WeightsNotFoundError) as e:
        H.pretrained_weights("sovits-v2", local_dir=local)
    assert str(local / "gsv-v2final-pretrained" / "s2G2333k.pth") in str(e.value)
    with pytest.raises(WeightsNotFoundError, match="Unknown weights name"): H.pretrained_weights("sovits-v4")
    assert not any(r["cached"] for r in H.cached_weights())
    assert isinstance(e.value, GSVError)


def test_hub_cache_hits(hf_env, tmp_path):
    f = _put_in_cache(hf_env, "sv/pretrained_eres2netv2w24s4ep4.ckpt", b"x" * 10)
    assert H.hub_file("lj1995/GPT-SoVITS", "sv/pretrained_eres2netv2w24s4ep4.ckpt") == f
    assert H.pretrained_weights("sv") == f
    # a folder model counts only when all its files are there
    _put_in_cache(hf_env, "chinese-hubert-base/config.json", b"{}")
    rows = {r["name"]: r for r in H.cached_weights()}
    assert rows["sv"]["cached"] and rows["sv"]["path"] == f and not rows["hubert"]["cached"]
    for name in ("preprocessor_config.json", "pytorch_model.bin"):
        _put_in_cache(hf_env, f"chinese-hubert-base/{name}", b"{}")
    folder = H.pretrained_weights("hubert")
    assert folder.name == "chinese-hubert-base" and (folder / "pytorch_model.bin").exists()
    assert {r["name"] for r in H.cached_weights() if r["cached"]} == {"sv", "hubert"}


def test_hub_local_dir(hf_env, tmp_path):
    local = tmp_path / "pretrained_models"
    (local / "v2Pro").mkdir(parents=True)
    (local / "v2Pro" / "s2Gv2ProPlus.pth").write_bytes(b"weights")
    assert H.pretrained_weights("sovits-v2ProPlus", local_dir=local) == local / "v2Pro" / "s2Gv2ProPlus.pth"
    rows = {r["name"]: r["cached"] for r in H.cached_weights(local_dir=local)}
    assert rows["sovits-v2ProPlus"] and not rows["sovits-v2Pro"]
    (local / "v2Pro" / "s2Gv2Pro.pth").write_bytes(b"")          # an empty (interrupted) file does not count
    with pytest.raises(WeightsNotFoundError): H.pretrained_weights("sovits-v2Pro", local_dir=local)


def test_known_weights_table():
    assert set(H.WEIGHTS_FOR) == {"v1", "v2", "v2Pro", "v2ProPlus"}
    for v, need in H.WEIGHTS_FOR.items():
        assert all(n in H.KNOWN_WEIGHTS for n in need.values())
        assert ("sv" in need) == v.startswith("v2Pro")
        assert H.KNOWN_WEIGHTS[need["sovits"]].version == v
    assert H.KNOWN_WEIGHTS["gpt-v2"].filename == "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"


def test_import_downloads_nothing():
    code = "import sys, gpt_sovits_nb.hub; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_checkpoints_still_exports_the_hub_helpers():
    "Old code imports them from gpt_sovits_nb.checkpoints: the same objects, not copies."
    from gpt_sovits_nb import checkpoints as C
    for name in ("HF_REPO", "HubWeights", "KNOWN_WEIGHTS", "WEIGHTS_FOR", "hub_cache_dir", "hub_offline", "hub_reachable",
                 "hub_file", "pretrained_weights", "cached_weights"):
        assert getattr(C, name) is getattr(H, name), name
