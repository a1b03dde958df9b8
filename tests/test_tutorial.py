"""The five-minute tutorial, run by papermill as a learner runs it (kernel python3, its own working folder), offline on the
CPU with a tiny random model set: no errors, the players and plots it promises, and the clone studio speaking once."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

pm = pytest.importorskip("papermill")
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tutorials" / "five_minute_tutorial.ipynb"
TINY = dict(device="cpu", weights="tiny", max_new_tokens=40, seed=0, text="Hello there. How are you?")


def test_notebook_is_colab_ready_and_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = nb.cells[0].source
    assert "colab.research.google.com/github/gpt-sovits-nb/gpt_sovits_nb/blob/main/tutorials/five_minute_tutorial.ipynb" in first
    assert "noise, not speech" in first
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert "'google.colab' in sys.modules" in setup.source.replace('"', "'") and "git+" in setup.source
    assert "https://github.com/gpt-sovits-nb/gpt_sovits_nb" in setup.source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in ("device", "weights", "local_dir", "reference", "reference_text", "text", "lang", "max_new_tokens", "seed"):
        assert f"\n{name} = " in "\n" + params[0].source, name
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for chapter in ("06_gpt", "07_sovits", "05_tokens", "02_text", "09_pipeline", "13_widgets"):
        assert f"nbs/{chapter}.ipynb" in text, chapter


def test_nbdev_clean_keeps_the_parameters_tag(tmp_path):
    "CI runs `nbdev_clean --fname tutorials`: it must keep papermill's tag (settings.ini allows the `tags` metadata)."
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    exe = Path(sys.executable).parent / "nbdev_clean"
    if not exe.exists(): pytest.skip("nbdev is not installed")
    r = subprocess.run([str(exe), "--fname", str(copy)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    nb = nbformat.read(copy, as_version=4)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert copy.read_text(encoding="utf-8") == NOTEBOOK.read_text(encoding="utf-8"), "the committed tutorial is not nbdev_clean'ed"


def widget_values(nb) -> list:
    "The `value` of every widget model in the notebook's saved widget state."
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [m.get("state", {}).get("value") for m in state.values()]


def test_five_minute_tutorial_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))  # the kernel's python
    for k, v in dict(GSV_FAST="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1").items(): monkeypatch.setenv(k, v)
    executed = tmp_path / "executed.ipynb"
    t0 = time.perf_counter()
    pm.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        parameters=TINY)
    seconds = time.perf_counter() - t0
    print(f"papermill run: {seconds:.1f} s")
    assert seconds < 180

    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert html.count("<audio") >= 2                                      # the reference and the clone
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2   # the reference's plots, reference vs clone
    assert "TINY RANDOM MODELS" in text and "END OF TUTORIAL" in text and "--tiny" in text
    assert "prompt tokens: (1, " in text and "spectrogram: (1, 1025, " in text
    assert (tmp_path / "clone.wav").stat().st_size > 1000
    assert any(o.get("data", {}).get("application/vnd.jupyter.widget-view+json") for o in outputs)   # the studio
    values = widget_values(nb)
    assert "done 1" in values, "the studio did not speak"


def test_five_minute_tutorial_offline_uses_nano(tmp_path, monkeypatch):
    "Unedited (weights='auto'), offline with nothing downloaded: the nano model speaks (intelligibly once it meets its bar)."
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    for k, v in dict(GSV_FAST="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf")).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    executed = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(executed), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                        parameters=dict(device="cpu", seed=0))
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "NANO MODEL" in text and "note: the released v2ProPlus weights" in text and "END OF TUTORIAL" in text
    assert "spectrogram: (1, 80, " in text and "--version" not in text.split("END OF TUTORIAL")[0].splitlines()[-1]
    import soundfile as sf
    from gpt_sovits_nb.eval import transcribe_speech, word_errors
    wav, sr = sf.read(tmp_path / "clone.wav")
    assert sr == 22050
    assert 1.0 < len(wav) / sr < 12 and np.isfinite(wav).all() and np.abs(wav).max() > 0.05
    from gpt_sovits_nb.checkpoints import nano_dir
    quality = json.loads((nano_dir() / "quality.json").read_text())
    if quality["heldout"]["wer"] <= 0.35:                                  # the bar: then the clone must be intelligible
        heard = transcribe_speech(wav, sr, asr="pocketsphinx")
        # one long two-sentence line: the shipped nano model scores 0.43 here (0.21-0.57 over its four voices and seeds 0, 1;
        # its held-out bar is tests/test_nano.py's); a whistle or babble scores about 1
        assert word_errors("Hello! I learned this voice from five seconds of speech. Is it not remarkable?", heard)["wer"] <= 0.65, heard
    assert "done 1" in widget_values(nb)
