import os, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))   # so tests can `import golden`
os.environ.setdefault("GSV_FAST", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def pytest_configure(config):
    for m in ("slow: long-running tests", "gpu: needs a CUDA GPU", "browser: drives JupyterLab in Chromium",
              "network: needs internet access"):
        config.addinivalue_line("markers", m)
