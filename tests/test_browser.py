"""The five-minute tutorial in a real browser: JupyterLab 4 + Chromium, driven by Playwright (recipe: ../shared/BROWSER.md,
helpers: tests/labdriver.py). A temporary copy gets tiny-model parameters, runs with Run All, and then a learner's moves are
replayed on the clone studio: a slider nudged with the keyboard, the speak button clicked. Each must bring a NEW audio
player (loaded by the browser) and a NEW spectrogram image. Screenshots go to the test's folder and to tests/artifacts/.

CI sets GSV_REQUIRE_BROWSER=1: there a missing Chromium or Playwright fails the test; elsewhere it is skipped."""
import os, shutil, time
from pathlib import Path

import pytest

from labdriver import CHROMIUM, CHROMIUM_ARGS, browser_available, jupyter_lab, open_notebook, run_all

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tutorials" / "five_minute_tutorial.ipynb"
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
TINY = dict(device="cpu", weights="tiny", max_new_tokens=30, seed=0, text="Hello there. How are you?")
END = "END OF TUTORIAL"

STATUS_IS = "(want) => { const s = document.querySelector('.t-status'); return !!s && s.textContent.trim() === want; }"
MARK_OLD = """() => { for (const e of document.querySelectorAll('.t-audio audio, .t-plot img')) e.dataset.gsvOld = '1';
    const a = document.querySelector('.t-audio audio'); return a ? a.duration : null; }"""
NEW_AUDIO = """() => { const a = document.querySelector('.t-audio audio');
    return !!a && !a.dataset.gsvOld && a.readyState >= 1 && a.duration > 0; }"""
NEW_PLOT = """() => { const i = document.querySelector('.t-plot img');
    return !!i && !i.dataset.gsvOld && i.complete && i.naturalWidth > 0 && i.getAttribute('src').startsWith('data:image/png'); }"""
PLOT_SRC = "() => { const i = document.querySelector('.t-plot img'); return i ? i.getAttribute('src') : null; }"
DURATION = "() => document.querySelector('.t-audio audio').duration"


def wait_new_result(page, done: str, timeout_ms: int = 120_000):
    "Wait until the studio says `done` and shows a new, loaded audio player and a new, decoded spectrogram image."
    page.wait_for_function(STATUS_IS, arg=done, timeout=timeout_ms)
    page.wait_for_function(NEW_AUDIO, timeout=60_000)
    page.wait_for_function(NEW_PLOT, timeout=60_000)


def require_browser():
    reason = browser_available()
    if reason is None:
        try: import papermill  # noqa: F401  (its parameter injection)
        except ImportError: reason = "papermill is not installed"
    if reason:
        if os.environ.get("GSV_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GSV_REQUIRE_BROWSER=1 but the browser test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)


def tiny_copy(folder: Path) -> str:
    "A copy of the tutorial with the tiny-model parameters injected (as papermill does): never run the original in place."
    import nbformat
    from papermill.parameterize import parameterize_notebook
    from papermill.iorw import load_notebook_node                        # adds the metadata papermill expects
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), TINY, kernel_name="python3", language="python")
    nbformat.write(nb, folder / NOTEBOOK.name)
    return NOTEBOOK.name


@pytest.mark.browser
@pytest.mark.timeout(900)
def test_tutorial_studio_in_jupyterlab(tmp_path, monkeypatch):
    require_browser()
    from playwright.sync_api import sync_playwright
    for k, v in dict(GSV_FAST="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TRANSFORMERS_OFFLINE="1").items(): monkeypatch.setenv(k, v)
    root = tmp_path / "lab"; root.mkdir()
    name = tiny_copy(root)
    shots = tmp_path / "screenshots"; shots.mkdir()
    times = {}
    t_start = time.perf_counter()
    with jupyter_lab(root, tmp_path / "jupyterlab.log") as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            open_notebook(page, base, token, name)
            times["open"] = time.perf_counter() - t_start
            run_all(page)
            page.wait_for_selector(f".jp-OutputArea-output:has-text('{END}')", timeout=300_000)
            times["run_all"] = time.perf_counter() - t_start
            wait_new_result(page, "done 1")                                       # the studio spoke once by itself
            assert page.locator(".jp-OutputArea-output:has-text('Traceback')").count() == 0
            assert page.locator(".jp-OutputArea-output:has-text('TINY RANDOM MODELS')").count() == 1
            studio = page.locator(".t-studio")
            studio.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "1-after-run-all.png"))
            studio.screenshot(path=str(shots / "2-studio-first.png"))

            # a learner nudges the temperature slider with the keyboard: the studio speaks again
            plot0, seconds0 = page.evaluate(PLOT_SRC), page.evaluate(MARK_OLD)
            handle = page.locator(".t-temperature .noUi-handle")
            handle.focus(); handle.press("ArrowRight")
            wait_new_result(page, "done 2")
            assert page.locator(".t-temperature .widget-readout").inner_text().strip() == "1.05"
            assert "temperature 1.05" in page.locator(".t-info").inner_text()
            assert page.evaluate(PLOT_SRC) != plot0                               # at least the figure's title changed
            studio.screenshot(path=str(shots / "3-studio-after-slider.png"))
            times["slider"] = time.perf_counter() - t_start

            # ... unticks "speak on change", speeds it up by 0.2, and presses speak: a new, shorter clone
            page.click(".t-auto input[type=checkbox]")
            speed = page.locator(".t-speed .noUi-handle")
            speed.focus()
            for _ in range(4): speed.press("ArrowRight")                          # 1.00 -> 1.20, silently
            page.wait_for_function("() => document.querySelector('.t-speed .widget-readout').textContent.trim() === '1.20'")
            time.sleep(1.0)
            assert page.evaluate("() => document.querySelector('.t-status').textContent.trim()") == "done 2"
            seconds1 = page.evaluate(MARK_OLD)
            page.click(".t-speak")
            wait_new_result(page, "done 3")
            assert "speed 1.2" in page.locator(".t-info").inner_text()
            assert page.evaluate(DURATION) < seconds1 - 0.2                       # same tokens, 1.2x faster
            assert page.locator(".t-audio audio").count() == 1 and page.locator(".t-plot img").count() == 1
            studio.screenshot(path=str(shots / "4-studio-after-speak.png"))
            times["speak"] = time.perf_counter() - t_start
        except Exception:
            try: page.screenshot(path=str(shots / "failure.png"))
            except Exception: pass
            raise
        finally:
            browser.close()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for f in shots.glob("*.png"): shutil.copy(f, ARTIFACTS / f.name)
    print("browser test timings (s from start):", {k: round(v, 1) for k, v in times.items()})
    assert (root / "clone.wav").exists()
