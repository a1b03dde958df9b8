"""Draw nbs/images/pipeline.svg: the GPT-SoVITS data flow with the tensor shapes at each stage.

Run `python tools/pipeline_figure.py` after changing a stage; the SVG is committed (README and index use it).
"""
from pathlib import Path
from xml.sax.saxutils import escape

W, H = 1180, 540
DY = 40  # room for the title and the phones line above the boxes
boxes = {  # name: (x, y, w, h, title, shape line, chapter, colour)
    "text":   (20,  40, 150, 60, "target text", "“Hello there.”", "", "#eeeeee"),
    "front":  (210, 40, 200, 60, "text front end", "phones [N], word2ph", "02_text", "#dbeafe"),
    "bert":   (450, 40, 210, 60, "text encoder (BERT, zh)", "bert [1, 1024, N]", "03_text_encoder", "#dbeafe"),
    "ref":    (20, 200, 150, 60, "reference clip", "3-10 s, any rate", "01_audio", "#eeeeee"),
    "ssl":    (210, 160, 200, 60, "HuBERT @ 16 kHz", "ssl [1, 768, 50/s]", "05_tokens", "#dcfce7"),
    "vq":     (450, 160, 210, 60, "ssl_proj + VQ (1024)", "prompt tokens [1, P] 25/s", "05_tokens", "#dcfce7"),
    "spec":   (210, 260, 200, 60, "spectrogram @ 32 kHz", "refer_spec [1, 1025, 50/s]", "01_audio", "#fef9c3"),
    "style":  (450, 260, 210, 60, "style encoder (+SV)", "ge [1, 512|1024, 1]", "04_speaker", "#fef9c3"),
    "gpt":    (720, 90, 200, 80, "GPT (prefix LM)", "semantic tokens [1, T]", "06_gpt", "#fde2e4"),
    "sovits": (720, 330, 200, 90, "SoVITS decoder", "MRTE, flow⁻¹, HiFi-GAN", "07_sovits", "#fde2e4"),
    "wav":    (980, 345, 180, 60, "speech @ 32 kHz", "wav [1, 1, 1280·T]", "09_pipeline", "#eeeeee"),
}
boxes = {k: (x, y + DY, *rest) for k, (x, y, *rest) in boxes.items()}
arrows = [("text", "front"), ("front", "bert"), ("ref", "ssl"), ("ssl", "vq"), ("ref", "spec"), ("spec", "style"),
          ("bert", "gpt"), ("vq", "gpt"), ("front", "gpt", "phones"), ("gpt", "sovits", "tokens ×2 → 50/s"),
          ("style", "sovits", "ge"), ("front", "sovits", "phones"), ("sovits", "wav")]


def anchor(b, side):
    x, y, w, h = boxes[b][:4]
    return {"r": (x + w, y + h / 2), "l": (x, y + h / 2), "t": (x + w / 2, y), "b": (x + w / 2, y + h)}[side]


def route(a, b):
    ax, ay, aw, ah = boxes[a][:4]; bx, by, bw, bh = boxes[b][:4]
    if bx >= ax + aw: return anchor(a, "r"), anchor(b, "l")
    if by > ay: return anchor(a, "b"), anchor(b, "t")
    return anchor(a, "t"), anchor(b, "b")


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Arial, sans-serif">',
       '<defs><marker id="a" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#444"/></marker></defs>',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       '<text x="20" y="24" font-size="16" font-weight="bold">GPT-SoVITS: from text and a reference clip to speech (shapes for batch 1)</text>']
for a_b in arrows:
    a, b = a_b[:2]; label = a_b[2] if len(a_b) > 2 else ""
    (x1, y1), (x2, y2) = route(a, b)
    if (a, b) == ("front", "sovits"):   # long route below everything
        pts = f"{x1},{y1} {x1},{y1+10}"
        x1b, y1b = anchor("front", "b")
        top = boxes['front'][1] - 18
        sx, sy = boxes['sovits'][0] + 170, boxes['sovits'][1]
        d = f"M{boxes['gpt'][0]+100},{top} L{945},{top} L{945},{sy-20} L{sx},{sy-20} L{sx},{sy}"
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1.5" marker-end="url(#a)"/>')
        out.append(f'<text x="{950}" y="{(top + sy) / 2}" font-size="12" fill="#444">{escape(label)}</text>')
        continue
    if (a, b) == ("front", "gpt"):
        top = boxes['front'][1] - 18
        d = f"M{boxes['front'][0]+100},{boxes['front'][1]} L{boxes['front'][0]+100},{top} L{boxes['gpt'][0]+100},{top} L{boxes['gpt'][0]+100},{boxes['gpt'][1]}"
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1.5" marker-end="url(#a)"/>')
        out.append(f'<text x="{boxes["bert"][0]+60}" y="{top-4}" font-size="12" fill="#444">{escape(label)} [1, N] (ids)</text>')
        continue
    if (a, b) == ("style", "sovits"):
        d = f"M{x1},{boxes['style'][1]+30} L{690},{boxes['style'][1]+30} L{690},{boxes['sovits'][1]+25} L{boxes['sovits'][0]},{boxes['sovits'][1]+25}"
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1.5" marker-end="url(#a)"/>')
        continue
    if (a, b) == ("ref", "spec"):
        d = f"M{boxes['ref'][0]+75},{boxes['ref'][1]+60} L{boxes['ref'][0]+75},{boxes['spec'][1]+30} L{boxes['spec'][0]},{boxes['spec'][1]+30}"
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1.5" marker-end="url(#a)"/>')
        continue
    if (a, b) == ("ref", "ssl"):
        d = f"M{boxes['ref'][0]+75},{boxes['ref'][1]} L{boxes['ref'][0]+75},{boxes['ssl'][1]+30} L{boxes['ssl'][0]},{boxes['ssl'][1]+30}"
        out.append(f'<path d="{d}" fill="none" stroke="#444" stroke-width="1.5" marker-end="url(#a)"/>')
        continue
    out.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#444" stroke-width="1.5" marker-end="url(#a)"/>')
    if label:
        out.append(f'<text x="{(x1+x2)/2+6}" y="{(y1+y2)/2}" font-size="12" fill="#444">{escape(label)}</text>')
for name, (x, y, w, h, title, shape, chap, col) in boxes.items():
    out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{col}" stroke="#555"/>')
    out.append(f'<text x="{x+w/2}" y="{y+22}" font-size="13" font-weight="bold" text-anchor="middle">{escape(title)}</text>')
    out.append(f'<text x="{x+w/2}" y="{y+40}" font-size="12" text-anchor="middle" font-family="DejaVu Sans Mono, monospace">{escape(shape)}</text>')
    if chap: out.append(f'<text x="{x+w-6}" y="{y+h-6}" font-size="10" text-anchor="end" fill="#666">{escape(chap)}</text>')
out.append(f'<text x="20" y="{H-40}" font-size="12" fill="#333">N phones (reference text + target text) · P prompt tokens (25 per second of the reference) · T new tokens · 1280 samples per token at 32 kHz.</text>')
out.append(f'<text x="20" y="{H-20}" font-size="12" fill="#333">Grey corner labels name the chapter (notebook in nbs/) that builds and explains each stage.</text>')
out.append("</svg>")
Path(__file__).resolve().parents[1].joinpath("nbs", "images", "pipeline.svg").write_text("\n".join(out), encoding="utf-8")
print("wrote nbs/images/pipeline.svg")
