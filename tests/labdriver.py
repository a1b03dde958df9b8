"""Run a notebook in a real browser: JupyterLab 4 + Debian's Chromium, driven by Python Playwright.

Recipe checked in ../shared/BROWSER.md: Chromium from Debian (/usr/bin/chromium; Playwright cannot download its
own browser here), the closed-network flags, a lab server with a random token, temporary settings/workspace dirs
and `fetchNews: false`, teardown through POST /api/shutdown.
"""
from __future__ import annotations
import contextlib, json, os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("GSV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def browser_available() -> str | None:
    "None when the browser test can run here, else the reason it cannot."
    if not Path(CHROMIUM).exists(): return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "the Python package playwright is not installed (pip install playwright)"
    if shutil.which("jupyter") is None and not (Path(sys.executable).parent / "jupyter").exists(): return "jupyter is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path, log: Path):
    "Start JupyterLab serving `root`; yield (base_url, token); shut it down afterwards."
    port, token = _free_port(), secrets.token_hex(16)
    cfg = root.parent / (root.name + "_labcfg")
    (cfg / "settings" / "@jupyterlab" / "application-extension").mkdir(parents=True, exist_ok=True)
    (cfg / "settings" / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (cfg / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (cfg / "workspaces").mkdir(exist_ok=True)
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [str(jupyter) if jupyter.exists() else "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", "--allow-root", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={cfg / 'settings'}", f"--LabApp.workspaces_dir={cfg / 'workspaces'}",
           "--ServerApp.open_browser=False"]
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg / "config"), MPLBACKEND="module://matplotlib_inline.backend_inline")
    logf = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2); break
            except Exception:
                if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited: see {log}")
                time.sleep(0.5)
        else:
            raise RuntimeError(f"jupyter lab did not start in 60 s: see {log}")
        yield base, token
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=5)
        except Exception:
            pass
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.terminate(); proc.wait(timeout=10)
        logf.close()


def open_notebook(page, base: str, token: str, name: str, timeout_ms: int = 120_000):
    "Open `name` in JupyterLab and wait until its kernel is idle."
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset", timeout=timeout_ms)
    page.wait_for_selector(".jp-NotebookPanel-toolbar .jp-KernelName:has-text('Python 3')", timeout=timeout_ms)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_ms)
    page.wait_for_selector("#jp-main-statusbar:has-text('Idle')", timeout=timeout_ms)


def run_all(page):
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")
