"""The Colab tutorial, run by papermill as CI runs it: offline, on the CPU, tiny random models, the embedded corpus standing in
for the learner's recordings, a few training steps. The exported voice must exist and load, and the notebook must show its
plots and players."""
import json, os, sys
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tutorials" / "clone_your_voice.ipynb"


def test_notebook_is_colab_ready():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = nb.cells[0].source
    assert "colab.research.google.com/github/gpt-sovits-nb/gpt_sovits_nb/blob/main/tutorials/clone_your_voice.ipynb" in first
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert "google.colab" in setup.source and "git+https://github.com/gpt-sovits-nb/gpt_sovits_nb" in setup.source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in ("device", "weights", "sovits_steps", "gpt_steps", "batch_size", "data_source", "out_dir"):
        assert f"\n{name} = " in "\n" + params[0].source, name


def test_clone_your_voice_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))  # the kernel's python
    monkeypatch.setenv("GSV_FAST", "1"); monkeypatch.setenv("HF_HUB_OFFLINE", "1"); monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    executed = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        parameters=dict(device="cpu", weights="tiny", version="v2", data_source="corpus:flite_slt", max_clips=4,
                                        sovits_steps=3, gpt_steps=2, batch_size=2, gpt_batch_size=2, save_every=2, sample_every=3,
                                        out_dir=str(out), voice_name="slt", seed=0))
    report = json.loads((out / "report.json").read_text())
    assert report["sovits"]["steps"] == 3 and report["gpt"]["steps"] == 2
    assert report["sovits"]["seconds_per_step"] > 0 and report["usable_clips"] >= 3
    assert set(report["similarity"]) >= {"zero-shot", "fine-tuned"}

    from gpt_sovits_nb.checkpoints import checkpoint_info, load_gpt, load_sovits
    sov, gpt = Path(report["files"]["sovits"]), Path(report["files"]["gpt"])
    assert sov == out / "weights" / "slt_sovits.pth" and gpt == out / "weights" / "slt_gpt.ckpt"
    assert load_sovits(sov).version == "v2" and checkpoint_info(sov).dtype == "float16"
    assert load_gpt(gpt).config.n_layer == 2 and checkpoint_info(gpt).info == "GPT-e1"
    for name in ("zero-shot", "fine-tuned"): assert (out / f"{name}.wav").stat().st_size > 1000
    assert list((out / "runs" / "sovits" / "checkpoints").glob("sovits-*.pt"))

    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") if isinstance(o.get("data", {}).get("text/html", ""), str)
                   else "".join(o["data"]["text/html"]) for o in outputs)
    assert html.count("<audio") >= 3                             # the samples and the side-by-side players
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4   # quality plot, loss curves, spectrograms
