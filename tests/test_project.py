"""The project's own promises: the README is built from the index, CI runs the README's test command,
nbdev keeps papermill's tags, and the golden fixtures are untouched copies of the reference's numbers."""
import configparser, hashlib, json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_built_from_index():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e \".[dev]\"" in readme and "bash .ci/test" in readme
    assert "bash .ci/test" in (ROOT / ".ci" / "run").read_text()
    test = (ROOT / ".ci" / "test").read_text()
    assert "nbdev_test" in test and "pytest tests" in test


def test_settings_keep_papermill_tags_and_test_flags():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    assert d["allowed_cell_metadata_keys"].strip() == "tags"
    assert {"slow", "gpu"} <= set(d["tst_flags"].split("|"))
    assert "nbdev==2.4.14" in d["dev_requirements"] and "torch==2.11.0" in d["dev_requirements"]
    assert not any(r.startswith(("nbdev", "papermill")) for r in d["requirements"].split()), "nbdev and papermill are dev-only"


def test_golden_fixtures_match_their_index():
    g = ROOT / "tests" / "fixtures" / "golden"
    files = json.loads((g / "index.json").read_text())["files"]
    bad = [rel for rel, meta in files.items() if hashlib.sha256((g / rel).read_bytes()).hexdigest() != meta["sha256"]]
    assert not bad, f"golden fixtures differ from their index (restore them from ../shared/golden): {bad[:5]}"
    shared = ROOT.parent / "shared" / "golden"
    if shared.exists():
        assert json.loads((shared / "index.json").read_text())["files"] == files


def test_rendered_chapters_are_current():
    "docs/ holds an executed copy of every chapter with its current cells (tools/render_chapters.py), so outputs are readable without running."
    sys.path.insert(0, str(ROOT / "tools"))
    try: import render_chapters as R
    finally: sys.path.pop(0)
    stale = [w for w in (R.stale(c) for c in R.chapters()) if w]
    assert not stale, ("Re-render the chapters you changed (python tools/render_chapters.py --stale), then commit docs/:\n  "
                       + "\n  ".join(stale))
    for doc in (ROOT / "docs").glob("*.ipynb"):
        nb = json.loads(doc.read_text(encoding="utf-8"))
        outs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        assert all(o["output_type"] != "error" for o in outs), f"{doc.name} was rendered from a failing run"
        assert (ROOT / "nbs" / doc.name).is_file(), f"docs/{doc.name} has no chapter in nbs/: delete it"
        assert "<audio" not in json.dumps(outs) and doc.stat().st_size < 1.5e6, doc.name   # no audio payloads; a bounded size


def test_static_outputs_of_the_renderer():
    "What a static page cannot use is replaced by a line that says so; long printouts are shortened; addresses dropped."
    sys.path.insert(0, str(ROOT / "tools"))
    try: import render_chapters as R
    finally: sys.path.pop(0)
    audio = {"output_type": "display_data", "data": {"text/html": "<audio controls src='data:audio/wav;base64,AAAA'>", "text/plain": "<Audio>"}}
    widget = {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "VBox()"}}
    assert R.static_output(audio)["data"] == {"text/plain": R.AUDIO_NOTE}
    assert R.static_output(widget)["data"] == {"text/plain": R.WIDGET_NOTE}
    long = R.static_output({"output_type": "stream", "name": "stdout", "text": "line\n" * 5000})
    assert len(long["text"]) < R.MAX_TEXT + 200 and "lines left out" in long["text"]
    doc = R.static_output({"output_type": "execute_result", "data": {"text/plain": "<gpt_sovits_nb.core.DocMarkdown at 0x7f00>",
                                                                       "text/markdown": "### f"}, "metadata": {}})
    assert doc["data"] == {"text/plain": "", "text/markdown": "### f"}
    assert R.static_output({"output_type": "display_data", "data": {"application/javascript": "x()"}}) is None
