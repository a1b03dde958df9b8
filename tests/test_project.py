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
