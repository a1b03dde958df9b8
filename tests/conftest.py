import os, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))   # so tests can `import golden`
os.environ.setdefault("GSV_FAST", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The reference's English dictionaries (cmudict.rep & co., not redistributed) live in ../shared/reference beside the
# repository on the team's machines and in CI: the golden English cases need them to match exactly.
_ref = Path(__file__).resolve().parents[2] / "shared" / "reference"
if _ref.is_dir(): os.environ.setdefault("GSV_ENGLISH_DICT", str(_ref))


def pytest_configure(config):
    for m in ("slow: long-running tests", "gpu: needs a CUDA GPU", "browser: drives JupyterLab in Chromium",
              "network: needs internet access", "widgets: drives ipywidgets callbacks (run under ipywidgets 8 and 7.7.1)"):
        config.addinivalue_line("markers", m)
