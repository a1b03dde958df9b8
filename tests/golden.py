"""The one loader of the golden fixtures (tests/fixtures/golden, copied from ../shared/golden; never edited),
used by the tests and by the chapters that show them (04, 06, 07, 08).

Each case folder holds case.json (the call, the model, the inputs, the expected output and its tolerance),
inputs.npz and expected.npz. Model files are stored gzip-compressed: `materialize` (a case's model) and
`model_file` (any one file) decompress them into a temporary folder with the relative paths kept, so HF folders
look like the released ones. `manifest` reads the key lists of the released checkpoints.

Tests import it directly (conftest.py puts tests/ on sys.path); a notebook finds the repository, puts its tests/
folder on sys.path and does `import golden`. The library itself never looks for this folder.
"""
from __future__ import annotations
import gzip, json, shutil
from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def cases(prefix: str = "") -> list[str]:
    "Names of all golden cases whose name starts with `prefix`."
    return sorted(p.name for p in (GOLDEN / "cases").iterdir() if p.name.startswith(prefix) and (p / "case.json").exists())


def load_case(name: str) -> dict:
    c = json.loads((GOLDEN / "cases" / name / "case.json").read_text(encoding="utf-8"))
    c["_dir"] = GOLDEN / "cases" / name
    return c


def _gunzip(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(src, "rb") as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g)


def model_file(rel: str, tmp: Path, compressed: bool = True) -> Path:
    "Decompress (or copy, when not `compressed`) the golden file `rel` (e.g. 'models/gpt/gptA1_v2_fp32.ckpt') to `tmp`/`rel`, once."
    dst = Path(tmp) / rel
    if not dst.exists():
        src = GOLDEN / (rel + (".gz" if compressed else ""))
        _gunzip(src, dst) if compressed else (dst.parent.mkdir(parents=True, exist_ok=True), shutil.copy(src, dst))
    return dst


def manifest(name: str, part: str | None = "tensors") -> dict:
    """{key: [shape, dtype]} of every tensor of a released checkpoint (manifests/`name`.json, e.g. 'sovits_v2Pro');
    `part=None`: the whole manifest (with num_tensors, num_params and, for GPTs, config_model)."""
    whole = json.loads((GOLDEN / "manifests" / f"{name}.json").read_text(encoding="utf-8"))
    return whole if part is None else whole[part]


def materialize(case: dict, tmp: Path) -> Path:
    "Decompress the case's model (file or folder) under `tmp`; return the logical path (file, or folder)."
    m = case["model"]
    tmp = Path(tmp)
    if "file" in m:
        return model_file(m["file"], tmp, compressed=bool(m.get("gzip")))
    src_dir, dst_dir = GOLDEN / m["dir"], tmp / m["dir"]
    if not dst_dir.exists():
        dst_dir.mkdir(parents=True)
        for f in src_dir.iterdir():
            if f.suffix == ".gz" and m.get("gzip"): _gunzip(f, dst_dir / f.name[:-3])
            else: shutil.copy(f, dst_dir / f.name)
    return dst_dir


def _tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.long() if a.dtype.kind in "iu" else t


def case_args(case: dict) -> tuple[list, dict]:
    "The call's positional and keyword arguments as torch tensors (a list in `args` means a list of arrays)."
    inp = case["inputs"]
    if "file" not in inp:  # non-array inputs live in case.json
        return [], {k: v for k, v in inp.items()}
    z = np.load(case["_dir"] / inp["file"])
    args = [[_tensor(z[k]) for k in a] if isinstance(a, list) else _tensor(z[a]) for a in inp.get("args", [])]
    kwargs = dict(case.get("kwargs") or {})
    for k, key in (inp.get("kwargs_arrays") or {}).items():
        kwargs[k] = _tensor(z[key])
    return args, kwargs


def expected(case: dict) -> np.ndarray:
    e = case["expected"]
    return np.load(case["_dir"] / e["file"])[e["key"]]


def check(case: dict, got) -> None:
    "Assert `got` matches the case's expected array: shape, dtype kind, and exact or allclose at the case's tolerance."
    want = expected(case)
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert tuple(got.shape) == tuple(want.shape), f"{case['name']}: shape {tuple(got.shape)} != expected {tuple(want.shape)}"
    if case["compare"] == "exact":
        assert got.dtype.kind == want.dtype.kind, f"{case['name']}: dtype {got.dtype} vs {want.dtype}"
        diff = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
        assert diff.size == 0, f"{case['name']}: {diff.size} of {want.size} values differ, first at {diff[0]}: got {got.reshape(-1)[diff[0]]}, want {want.reshape(-1)[diff[0]]}"
    else:
        tol = case["tolerance"]
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        bound = tol["atol"] + tol["rtol"] * np.abs(want.astype(np.float64))
        bad = err > bound
        assert not bad.any(), (f"{case['name']}: {int(bad.sum())} of {want.size} values outside atol={tol['atol']} rtol={tol['rtol']}; "
                               f"max abs err {err.max():.3g}")
