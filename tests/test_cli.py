"""`gsv-nb` end to end, as a user runs it: a subprocess with tiny random models, offline. The WAV it writes must be
32 kHz, finite, and exactly as long as the token counts it reports (1280 samples per semantic token per piece plus a
pause after each piece); errors must be one readable line and a non-zero exit status, never a traceback."""
import contextlib, io, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gpt_sovits_nb.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def gsv(*args, env=None, cwd=None, script=False, timeout=240, stdin=None):
    "Run the CLI in a fresh process: `python -m gpt_sovits_nb.cli` (or the `gsv-nb` console script)."
    exe = [str(Path(sys.executable).parent / "gsv-nb")] if script else [sys.executable, "-m", "gpt_sovits_nb.cli"]
    e = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    e.update(env or {})
    e = {k: v for k, v in e.items() if v is not None}                  # None: unset it
    return subprocess.run(exe + [str(a) for a in args], capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout,
                          input=stdin)


def one_line_error(r, status=1):
    "The process failed with `status` and said why in exactly one line on stderr, without a traceback."
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout and lines[0].startswith("gsv-nb"), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny random v2 set, built once (the CLI reuses a complete set in its --tiny folder)."
    from gpt_sovits_nb.cli import tiny_model_set
    d = tmp_path_factory.mktemp("tiny")
    tiny_model_set(d, "v2")
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    "A reference clip as a user has one: a WAV file outside the corpus (3.5 s of a corpus recording)."
    from gpt_sovits_nb.corpus import reference_clip
    c = reference_clip("ps_librivox")
    data, sr = sf.read(str(c.path), dtype="float32")
    p = tmp_path_factory.mktemp("ref") / "my voice.wav"
    sf.write(str(p), data[: int(3.5 * sr)], sr)
    return p


def check_wav(path, report):
    "The file is 32 kHz, finite, and as long as the reported tokens and pauses say."
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == report["sample_rate"] == 32000 and data.shape[1] == 1
    assert np.isfinite(data).all() and np.abs(data).max() > 0
    expected = sum(report["samples_per_token"] * p["tokens"] + report["pause_samples"] for p in report["pieces"])
    assert data.shape[0] == report["samples"] == expected
    assert all(p["tokens"] >= 1 for p in report["pieces"])
    return data[:, 0]


def test_say_end_to_end_json(tiny, tmp_path):
    out = tmp_path / "sub dir" / "hello.wav"                            # a folder that does not exist yet
    r = gsv("say", "Hello there. How are you today?", "--ref", "corpus:ps_librivox", "--tiny", tiny, "--device", "cpu",
            "--seed", "7", "--max-new-tokens", "40", "--pause", "0.25", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)                                           # stdout holds only the JSON
    assert rep["out"] == str(out.resolve()) and rep["seed"] == 7 and rep["version"] == "v2" and rep["tiny"]
    assert len(rep["pieces"]) == 2 and rep["pause_samples"] == 8000 and rep["settings"]["max_new_tokens"] == 40
    assert rep["pieces"][0]["text"].strip() == "Hello there." and not rep["reference_free"]
    assert all(1 <= p["tokens"] <= 40 for p in rep["pieces"])
    check_wav(out, rep)


def test_say_console_script_human_output(tiny, clip, tmp_path):
    "The installed `gsv-nb` script, a user's WAV, the text from a file, reference-free mode, an extra reference."
    if not (Path(sys.executable).parent / "gsv-nb").exists(): pytest.skip("the gsv-nb console script is not installed (pip install -e .)")
    (tmp_path / "text.txt").write_text("Good morning!\nThe weather is fine.\n", encoding="utf-8")
    r = gsv("say", "--text-file", "text.txt", "--ref", clip, "--no-ref-text", "--aux-ref", "corpus:flite_slt", "--tiny", tiny,
            "--device", "cpu", "--seed", "3", "--max-new-tokens", "30", "--speed", "1.0", "--noise-scale", "0", "--top-k", "3",
            "--temperature", "0.8", "--cut", "cut5", script=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote " in r.stdout and "out.wav" in r.stdout and "seed 3" in r.stdout and "noise, not speech" in r.stdout
    assert (tmp_path / "out.wav").exists() and "Traceback" not in r.stderr
    data, sr = sf.read(str(tmp_path / "out.wav"))
    assert sr == 32000 and np.isfinite(data).all()


def test_missing_reference(tmp_path):
    msg = one_line_error(gsv("say", "Hello there.", "--ref", tmp_path / "nope.wav", "--ref-text", "Hi.", "--tiny", tmp_path / "t"))
    assert "nope.wav" in msg and "no such file" in msg
    assert not (tmp_path / "t").exists()                                 # failed before building or loading any model


def test_unreadable_reference(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    msg = one_line_error(gsv("say", "Hello there.", "--ref", bad, "--ref-text", "Hi."))
    assert "broken.wav" in msg and "cannot read it as audio" in msg


def test_bad_language_is_a_usage_error():
    msg = one_line_error(gsv("say", "Hello there.", "--ref", "corpus:ps_librivox", "--lang", "klingon"), status=2)
    assert "--lang" in msg and "klingon" in msg and "en" in msg


def test_offline_without_weights(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_hf"), "HF_HUB_CACHE": None, "HUGGINGFACE_HUB_CACHE": None,
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    msg = one_line_error(gsv("say", "Hello there.", "--ref", "corpus:ps_librivox", "--device", "cpu", "--version", "v2", env=env,
                             cwd=tmp_path))                              # a released version by name: no fallback
    assert "HF_HUB_OFFLINE" in msg and "lj1995/GPT-SoVITS" in msg and str(tmp_path / "empty_hf") in msg and "nano" in msg
    r = gsv("info", env=env)                                             # info says what is missing, and how to get it
    assert r.returncode == 0 and "ready offline: nano" in r.stdout and "offline" in r.stdout
    assert r.stdout.count(" no ") >= 8


def test_info_describes_files(tiny, tmp_path):
    from gpt_sovits_nb.cli import tiny_model_set
    p = tiny_model_set(tiny)
    r = gsv("info", "--json", p.gpt, p.sovits, p.hubert, tmp_path / "missing.pth")
    assert r.returncode == 1 and "missing.pth" in r.stderr and "Traceback" not in r.stderr
    rep = json.loads(r.stdout)
    gpt, sov, hub, missing = rep["files"]
    assert (gpt["kind"], gpt["version"], sov["kind"], sov["version"]) == ("gpt", "v2", "sovits", "v2")
    assert hub["kind"] == "hf-folder" and hub["model_type"] == "hubert" and "error" in missing and rep["failed"] == 1


def test_help_is_complete():
    r = gsv("say", "--help")
    assert r.returncode == 0
    say = build_parser()._subparsers._group_actions[0].choices["say"]
    for action in say._actions:
        assert action.help, action.dest
        for opt in action.option_strings: assert opt in r.stdout, opt
    for opt in ("--top-k", "--top-p", "--temperature", "--repetition-penalty", "--speed", "--noise-scale", "--seed", "--cut",
                "--pause", "--aux-ref", "--no-ref-text", "--max-new-tokens", "--quiet", "--tiny", "--local-dir", "--gpt", "--sovits",
                "--hubert", "--bert", "--sv", "--device", "--json", "--debug", "--text-file", "--ref-lang", "--out"):
        assert opt in r.stdout, opt
    assert "examples:" in r.stdout and "gsv-nb say" in r.stdout.split("examples:")[1]
    r = gsv("info", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout
    r = gsv("--version")
    assert r.returncode == 0 and "gpt_sovits_nb" in r.stdout


def run_main(argv):
    "main() in this process: (status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, status, words", [
    (["say", "...", "--ref", "corpus:ps_librivox"], 1, "Nothing speakable"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--text", "Hello."], 1, "once"),
    (["say", "--ref", "corpus:ps_librivox"], 1, "Nothing to say"),
    (["say", "Hello."], 1, "--ref"),
    (["say", "Hello.", "--ref", "corpus:nobody"], 1, "nobody"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--ref-text", "x", "--no-ref-text"], 1, "contradict"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--out", "x.mp3"], 1, ".wav"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--tiny", "T", "--gpt", "g.ckpt"], 1, "--gpt"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--tiny", "T", "--version", "v2Pro"], 1, "v2Pro"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--top-p", "0"], 2, "top-p"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--top-k", "many"], 2, "not an integer"),
    (["say", "Hello.", "--ref", "corpus:ps_librivox", "--speed", "9"], 2, "speed"),
    ([], 2, "say"),
])
def test_cheap_errors_in_process(argv, status, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(argv)
    assert rc == status, (rc, err)
    assert words in err and "Traceback" not in err
    if argv: assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "T").exists()                                # no model was built for a doomed run


def test_debug_shows_the_traceback(tmp_path):
    from gpt_sovits_nb.core import AudioError
    with pytest.raises(AudioError):
        run_main(["say", "Hello.", "--ref", tmp_path / "nope.wav", "--ref-text", "x", "--debug"])


def test_interrupt_is_one_line(monkeypatch):
    import gpt_sovits_nb.cli as cli
    def stop(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_say", stop)
    rc, out, err = run_main(["say", "Hello.", "--ref", "corpus:ps_librivox"])
    assert rc == 130 and err.strip() == "gsv-nb say: interrupted"
