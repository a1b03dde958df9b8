"""tutorials/train_from_scratch.ipynb under papermill at a few steps, as CI runs it: data (with the Debian voices when
installed), features, both trainers, the epoch picker, export, evaluation and the A/B widget; then a rerun resumes."""
import os, sys, time
from pathlib import Path

import pytest

pm = pytest.importorskip("papermill")
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tutorials" / "train_from_scratch.ipynb"
SMALL = dict(minutes_per_voice=0.2, sovits_steps=4, gpt_steps=4, phone_steps=10, eval_every=2, eval_sentences=1, device="cpu")


def test_notebook_is_colab_ready_and_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "colab.research.google.com/github/gpt-sovits-nb/gpt_sovits_nb/blob/main/tutorials/train_from_scratch.ipynb" in nb.cells[0].source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in ("work_dir", "recipe", "device", "minutes_per_voice", "sovits_steps", "gpt_steps", "phone_steps", "eval_every"):
        assert f"\n{name} = " in "\n" + params[0].source, name
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")


@pytest.mark.timeout(1800)
def test_train_from_scratch_small(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    for k, v in dict(GSV_FAST="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1").items(): monkeypatch.setenv(k, v)
    work = tmp_path / "run"
    for attempt in (1, 2):                                   # the second run resumes: nothing is redone
        executed = tmp_path / f"executed{attempt}.ipynb"
        t0 = time.perf_counter()
        pm.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                            parameters=dict(SMALL, work_dir=str(work)), execution_timeout=240)   # cells take <60 s here; see the note on a lost reply
        print(f"run {attempt}: {time.perf_counter() - t0:.0f} s")
        nb = nbformat.read(executed, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"]
        text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
        assert "END OF TUTORIAL" in text and "yours  :" in text and "shipped:" in text
    assert "resumed at step 4 of 4" in text
    from gpt_sovits_nb.checkpoints import checkpoint_info
    for name in ("nano_gpt.ckpt", "nano_sovits.pth"): assert checkpoint_info(work / "export" / name).version == "nano"
    assert (work / "gpt_scores.json").is_file()
