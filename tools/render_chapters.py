#!/usr/bin/env python
"""Executed copies of the chapters, for reading without running: nbs/NAME.ipynb -> docs/NAME.ipynb.

The notebooks in nbs/ are committed clean (no outputs: readable diffs, clean merges, nbdev_clean's rules). A reader on GitHub
or in any notebook viewer opens docs/ instead: the same cells, run the way CI runs them (GSV_FAST=1: small settings, seeded,
offline, cells flagged slow/gpu/browser not run), with their printed shapes, tables and figures. Outputs a static page cannot
use are replaced by a line that says so: audio players ("run the notebook to listen") and widgets ("run the notebook to use
it"); long printouts are shortened. tests/test_project.py checks that every copy holds the current cells of its chapter, so a
chapter changed without re-rendering fails CI with the command to run:

    python tools/render_chapters.py nbs/06_gpt.ipynb      # one chapter (or several)
    python tools/render_chapters.py                       # every chapter (about 10 minutes on 2 CPU cores)
    python tools/render_chapters.py --check               # which copies are missing or out of date (no execution)
"""
from __future__ import annotations
import argparse, base64, configparser, copy, io, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, DOCS = ROOT / "nbs", ROOT / "docs"
def _test_flags() -> set[str]:
    "settings.ini's tst_flags: the flags of cells nbdev_test (and so CI) does not run."
    ini = configparser.ConfigParser(interpolation=None); ini.read(ROOT / "settings.ini")
    return set(filter(None, ini["DEFAULT"].get("tst_flags", "").split("|")))

SKIP_FLAGS = _test_flags()
MAX_TEXT = 3000                                          # characters of one printout kept
MAX_HTML = 60_000                                        # an HTML output bigger than this keeps only its text form
MAX_IMAGE = 400_000                                      # base64 characters of one figure
AUDIO_NOTE = "[audio player: run the notebook to listen]"
WIDGET_NOTE = "[interactive widget: run the notebook to use it]"


def chapters() -> list[Path]:
    "Every notebook of nbs/ but the README's source (index.ipynb)."
    return sorted(p for p in NBS.glob("*.ipynb") if p.name != "index.ipynb")


def cells_of(nb: dict) -> list[tuple[str, str]]:
    "What a copy must share with its chapter: each cell's type and source."
    return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in nb["cells"]]


def stale(chapter: Path) -> str | None:
    "Why docs/ has no current copy of `chapter` (None: it has one)."
    doc = DOCS / chapter.name
    if not doc.is_file(): return f"docs/{chapter.name} is missing"
    if cells_of(json.loads(doc.read_text(encoding="utf-8"))) != cells_of(json.loads(chapter.read_text(encoding="utf-8"))):
        return f"docs/{chapter.name} holds other cells than nbs/{chapter.name}"
    return None


def _short(text: str) -> str:
    if len(text) <= MAX_TEXT: return text
    cut = text.count("\n", MAX_TEXT // 2, len(text) - MAX_TEXT // 2)
    return text[:MAX_TEXT // 2] + f"\n[... {cut} lines left out of the rendered copy ...]\n" + text[-MAX_TEXT // 2:]


def _plain(text: str) -> dict:
    return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {}}


def smaller_png(b64: str, over: int = 60_000) -> str:
    "A big PNG (base64) redrawn with a palette of 256 colours when that is smaller (plots and spectrograms look the same)."
    if len(b64) <= over: return b64
    from PIL import Image
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    buf = io.BytesIO()
    img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    small = base64.b64encode(buf.getvalue()).decode()
    return small if len(small) < len(b64) else b64


def static_output(out: dict) -> dict | None:
    "An output as a static page can show it (None: leave it out)."
    out = copy.deepcopy(out)
    kind = out.get("output_type")
    if kind == "stream":
        out["text"] = _short("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
        return out
    if kind == "error": return out
    data = out.get("data") or {}
    join = lambda v: "".join(v) if isinstance(v, list) else v
    html = join(data.get("text/html", ""))
    if "<audio" in html or "audio/wav" in data or "audio/x-wav" in data: return _plain(AUDIO_NOTE)
    if "application/vnd.jupyter.widget-view+json" in data: return _plain(WIDGET_NOTE)
    if "application/javascript" in data: return None
    if len(html) > MAX_HTML: data.pop("text/html")
    if "image/png" in data: data["image/png"] = smaller_png(join(data["image/png"]))
    for k in [k for k in data if k.startswith("image/") and len(join(data[k])) > MAX_IMAGE]: data.pop(k)
    if "text/plain" in data: data["text/plain"] = _short(join(data["text/plain"]))
    if re.fullmatch(r"<[\w.]+ (object )?at 0x[0-9a-f]+>", data.get("text/plain", "")) and len(data) > 1:
        data["text/plain"] = ""                          # a memory address: differs every run, says nothing
    if not data: return None
    out["data"] = data
    out["metadata"] = {k: v for k, v in (out.get("metadata") or {}).items() if k.startswith("image/")}
    return out


def execute(chapter: Path) -> dict:
    "Run `chapter` as nbdev_test does (same skipped cells, same working folder) and return it with static outputs."
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    os.environ["IN_TEST"] = "1"
    run = NBProcessor(chapter, procs=FrontmatterProc, process=True).nb
    raw = json.loads(chapter.read_text(encoding="utf-8"))
    if len(run.cells) != len(raw["cells"]): raise SystemExit(f"{chapter}: nbdev's view has another number of cells")

    def no_eval(cell):                                   # nbdev_test's rule (nbdev.test.test_nb), which it does not export
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        direc = getattr(cell, "directives_", {}) or {}
        if direc.get("eval:", [""])[0].lower() == "false": return True
        return bool(SKIP_FLAGS & direc.keys())

    shell = CaptureShell(chapter, mpl_format="png")     # pyplot figures at the end of their cell, plain PNG (retina is 4x the bytes)
    with working_directory(chapter.parent):
        shell.run_all(run, exc_stop=True, preproc=no_eval)
    count = 0
    for mine, theirs in zip(raw["cells"], run.cells):
        if mine["cell_type"] != "code": continue
        outs = [o for o in (static_output(o) for o in (getattr(theirs, "outputs", None) or [])) if o is not None]
        ran = getattr(theirs, "outputs", None) is not None and not no_eval(theirs)
        if ran: count += 1
        for o in outs:
            if o.get("output_type") == "execute_result": o["execution_count"] = count
        mine["outputs"], mine["execution_count"] = outs, count if ran else None
    raw.setdefault("metadata", {})["rendered"] = {"by": "tools/render_chapters.py", "settings": "GSV_FAST=1, offline, CPU"}
    return raw


def render(chapter: Path) -> Path:
    "Execute `chapter` in a fresh Python (one notebook's state never leaks into the next) and write docs/<name>."
    env = dict(os.environ, GSV_FAST="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, __file__, "--one", str(chapter)], env=env, cwd=ROOT)
    if r.returncode: raise SystemExit(f"{chapter.name} failed (exit {r.returncode}); nothing written for it")
    print(f"{chapter.name}: {time.perf_counter() - t0:.0f} s, {(DOCS / chapter.name).stat().st_size / 1e3:.0f} kB", flush=True)
    return DOCS / chapter.name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="chapters to render (default: every chapter)")
    ap.add_argument("--check", action="store_true", help="only say which copies are missing or out of date")
    ap.add_argument("--stale", action="store_true", help="render only the chapters whose copies are missing or out of date")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        nb = execute(Path(args.one).resolve())
        DOCS.mkdir(exist_ok=True)
        (DOCS / Path(args.one).name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    todo = [Path(p).resolve() for p in args.notebooks] or chapters()
    if args.check or args.stale:
        why = {c: stale(c) for c in todo}
        for c, w in why.items():
            if w and args.check: print(w)
        if args.check: raise SystemExit(1 if any(why.values()) else 0)
        todo = [c for c, w in why.items() if w]
    for c in todo: render(c)


if __name__ == "__main__":
    main()
