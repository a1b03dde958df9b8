"""Build README.md from nbs/index.ipynb with nbconvert (Quarto, which nbdev_readme needs, is not available here).

Markdown cells are copied; code cells become ```python blocks (without nbdev's `#|` directive lines); cells marked
`#| hide` are left out; image links that point into nbs/ are rewritten to work from the repository root.
Usage: python tools/build_readme.py [--check]   (--check exits 1 if README.md is out of date)
"""
import re, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    keep = []
    for c in nb.cells:
        src = c.source
        if c.cell_type == "code":
            lines = src.splitlines()
            if any(re.match(r"#\|\s*(hide|export|exporti|default_exp)\b", l) for l in lines): continue
            c.source = "\n".join(l for l in lines if not l.startswith("#|")).strip()
            c.outputs = []
            if not c.source: continue
        keep.append(c)
    nb.cells = keep
    cfg = Config(); cfg.MarkdownExporter.exclude_output = True
    body, _ = MarkdownExporter(config=cfg).from_notebook_node(nb)
    body = re.sub(r"\]\((?!https?://|#|/)(images/[^)]+|[\w.-]+\.ipynb)\)", r"](nbs/\1)", body)
    body = re.sub(r'src="(?!https?://)(images/[^"]+)"', r'src="nbs/\1"', body)
    body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    return "<!-- Built from nbs/index.ipynb by tools/build_readme.py: edit the notebook, not this file. -->\n\n" + body


if __name__ == "__main__":
    text = render()
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        if readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date: run `python tools/build_readme.py`."); sys.exit(1)
        print("README.md is up to date.")
    else:
        readme.write_text(text, encoding="utf-8"); print("wrote README.md")
