"""The HTTP server (chapter 15) driven as a client would: a real uvicorn on a free loopback port, tiny models."""
import io, os, pickle, resource, shutil, socket, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from gpt_sovits_nb.cli import tiny_model_set
from gpt_sovits_nb.corpus import reference_clip
from gpt_sovits_nb.pipeline import VoiceCloner
from gpt_sovits_nb.serve import (Limits, RequestError, TTSService, TTSRequest, is_loopback, pack_audio, parse_request,
                                 start_server, create_app, wav_stream_header, ffmpeg_available)

TIMEOUT = 300


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "Tiny v2 (and v1) model sets, a folder of voices, and a running server."
    root = tmp_path_factory.mktemp("serve")
    tiny = tiny_model_set(root / "tiny")
    tiny_v1 = tiny_model_set(root / "tiny_v1", "v1")
    voices = root / "voices"; voices.mkdir()
    slt, awb = reference_clip("flite_slt"), reference_clip("flite_awb")
    shutil.copy(slt.path, voices / "slt.wav"); shutil.copy(awb.path, voices / "awb.wav")
    (voices / "notes.txt").write_text("not audio")
    (root / "secret.wav").write_bytes((voices / "slt.wav").read_bytes())
    (voices / "escape.wav").symlink_to(root / "secret.wav")
    service = TTSService(VoiceCloner.from_paths(tiny, device="cpu"), tiny, ref_dirs=[voices],
                         limits=Limits(max_new_tokens=40, max_text_chars=300))
    server = start_server(service)
    base = dict(text="Hello there. How are you?", text_lang="en", ref_audio_path="slt.wav", prompt_lang="en",
                prompt_text=slt.text, seed=3, top_k=5)
    yield dict(root=root, tiny=tiny, tiny_v1=tiny_v1, voices=voices, service=service, server=server, url=server.url,
               base=base, slt=slt)
    server.stop()


def get(world, path="/tts", **params):
    return httpx.get(world["url"] + path, params=params, timeout=TIMEOUT)


def wav_of(content):
    data, sr = sf.read(io.BytesIO(content), dtype="int16")
    return data, sr


# ---- the protocol: requests, media types

def test_parse_request_defaults_and_coercion():
    q = parse_request(dict(text="Hi.", text_lang="EN", ref_audio_path="a.wav", prompt_lang="en", top_k="3", top_p="0.5",
                           split_bucket="false", parallel_infer=0, streaming_mode="true", seed="-1", batch_size=2.0))
    assert (q.text_lang, q.top_k, q.top_p, q.split_bucket, q.parallel_infer, q.streaming_mode, q.seed, q.batch_size) == \
           ("en", 3, 0.5, False, False, 1, -1, 2)
    d = TTSRequest()
    assert (d.top_k, d.top_p, d.temperature, d.batch_size, d.batch_threshold, d.split_bucket, d.speed_factor,
            d.fragment_interval, d.seed, d.media_type, d.streaming_mode, d.parallel_infer, d.repetition_penalty,
            d.sample_steps, d.super_sampling, d.overlap_length, d.min_chunk_length, d.text_split_method, d.prompt_text) == \
           (15, 1.0, 1.0, 1, 0.75, True, 1.0, 0.3, -1, "wav", 0, True, 1.35, 32, False, 2, 16, "cut5", "")


@pytest.mark.parametrize("change, words", [
    (dict(text=""), "text is required"), (dict(text_lang=None), "text_lang is required"),
    (dict(ref_audio_path=""), "ref_audio_path is required"), (dict(prompt_lang=None), "prompt_lang is required"),
    (dict(text_lang="ko"), "text_lang: ko is not supported"), (dict(prompt_lang="yue"), "prompt_lang: yue is not supported"),
    (dict(media_type="mp3"), "media_type: mp3 is not supported"), (dict(text_split_method="cut9"), "text_split_method: cut9"),
    (dict(streaming_mode=4), "streaming_mode must be 0, 1, 2, 3"), (dict(streaming_mode="fast"), "streaming_mode must be"),
    (dict(top_k=0), "top_k=0"), (dict(top_p=1.5), "top_p=1.5"), (dict(temperature="hot"), "temperature='hot'"),
    (dict(speed_factor=10), "speed_factor=10"), (dict(seed=-2), "seed=-2"), (dict(batch_size=True), "batch_size=True"),
    (dict(fragment_interval=-1), "fragment_interval=-1"), (dict(split_bucket="maybe"), "split_bucket='maybe'"),
    (dict(text="x" * 301), "at most 300"), (dict(aux_ref_audio_paths=[1, 2]), "aux_ref_audio_paths must be a list"),
    (dict(text=5), "text must be a string"),
])
def test_parse_request_refuses(change, words):
    raw = {**dict(text="Hi.", text_lang="en", ref_audio_path="a.wav", prompt_lang="en"), **change}
    with pytest.raises(RequestError) as e: parse_request(raw, max_text_chars=300)
    assert words in str(e.value) and e.value.status == 400


def test_pack_audio_round_trips():
    wav = 0.3 * torch.sin(torch.linspace(0, 300, 8000))[None]
    pcm = np.clip(np.round(wav.numpy()[0] * 32767), -32767, 32767).astype("<i2")
    assert pack_audio(wav, 8000, "raw") == pcm.tobytes()
    data, sr = wav_of(pack_audio(wav, 8000, "wav"))
    assert sr == 8000 and np.array_equal(data, pcm)
    data, sr = sf.read(io.BytesIO(pack_audio(wav, 8000, "ogg")))
    assert sr == 8000 and abs(len(data) - 8000) <= 1 and np.abs(data - pcm / 32767).max() < 0.05
    head = wav_stream_header(32000)
    assert len(head) == 44 and head[:4] == b"RIFF" and head[40:44] == b"\xff\xff\xff\xff"
    data, sr = wav_of(head + pcm.tobytes())                  # header + PCM, as a stream is joined
    assert sr == 32000 and np.array_equal(data, pcm)


def test_get_and_post_give_the_same_audio(world):
    r = get(world, **world["base"])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    data, sr = wav_of(r.content)
    assert sr == 32000 and len(data) > 32000 * 0.5
    p = httpx.post(world["url"] + "/tts", json=world["base"], timeout=TIMEOUT)
    assert p.status_code == 200 and p.content == r.content
    again = get(world, **world["base"])
    assert again.content == r.content                        # the seed decides everything
    other = get(world, **{**world["base"], "seed": 4})
    assert other.status_code == 200 and other.content != r.content


@pytest.mark.parametrize("media", ["raw", "ogg", "aac"])
def test_media_types(world, media):
    if media == "aac" and not ffmpeg_available(): pytest.skip("ffmpeg is not installed")
    wav = get(world, **world["base"]).content
    pcm, sr = wav_of(wav)
    r = get(world, **{**world["base"], "media_type": media})
    assert r.status_code == 200 and r.headers["content-type"] == f"audio/{media}"
    if media == "raw":
        assert np.array_equal(np.frombuffer(r.content, "<i2"), pcm)
    elif media == "ogg":
        data, osr = sf.read(io.BytesIO(r.content))
        assert osr == sr and abs(len(data) - len(pcm)) <= 1
    else:
        assert r.content[:2] in (b"\xff\xf1", b"\xff\xf9") and len(r.content) > 1000   # ADTS frames
        dec = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", str(sr), "pipe:1"],
                             input=r.content, capture_output=True, timeout=60)
        assert dec.returncode == 0 and abs(len(dec.stdout) // 2 - len(pcm)) < 0.1 * len(pcm)


def test_ignored_parameters_are_accepted(world):
    base = get(world, **world["base"]).content
    r = get(world, **{**world["base"], "sample_steps": 8, "super_sampling": "true", "batch_threshold": 0.1, "split_bucket": "false",
                      "unknown_field": "x"})
    assert r.status_code == 200 and r.content == base


# ---- streaming

def stream(world, **params):
    chunks = []
    with httpx.stream("GET", world["url"] + "/tts", params=params, timeout=TIMEOUT) as s:
        status, ctype = s.status_code, s.headers.get("content-type")
        for part in s.iter_raw(): chunks.append(part)
    return status, ctype, b"".join(chunks)


def test_sentence_streaming_equals_the_whole_answer(world):
    whole = get(world, **world["base"]).content
    for mode in (1, "true", True):
        status, ctype, body = stream(world, **{**world["base"], "streaming_mode": mode})
        assert status == 200 and ctype == "audio/wav" and body[:4] == b"RIFF"
        assert np.array_equal(wav_of(body)[0], wav_of(whole)[0])
    status, _, raw = stream(world, **{**world["base"], "streaming_mode": 1, "media_type": "raw"})
    assert status == 200 and np.array_equal(np.frombuffer(raw, "<i2"), wav_of(whole)[0])


@pytest.mark.parametrize("mode", [2, 3])
def test_token_streaming(world, mode):
    whole, sr = wav_of(get(world, **{**world["base"], "top_k": 1}).content)
    status, ctype, body = stream(world, **{**world["base"], "top_k": 1, "streaming_mode": mode, "min_chunk_length": 8,
                                            "overlap_length": 2})
    assert status == 200 and ctype == "audio/wav"
    got, gsr = wav_of(body)
    assert gsr == sr and abs(len(got) - len(whole)) <= 0.05 * len(whole) + 2 * 1280
    status, ctype, ogg = stream(world, **{**world["base"], "top_k": 1, "streaming_mode": mode, "media_type": "ogg"})
    assert status == 200 and ctype == "audio/ogg" and ogg[:4] == b"OggS"


def test_a_client_that_hangs_up_mid_stream_releases_the_model(world):
    with httpx.stream("GET", world["url"] + "/tts", timeout=TIMEOUT,
                      params={**world["base"], "text": "One. Two. Three. Four. Five. Six.", "streaming_mode": 1}) as s:
        assert s.status_code == 200
        next(s.iter_raw())                                   # the header and the first sentence, then hang up
    r = get(world, **world["base"])                          # the next client is served
    assert r.status_code == 200
    deadline = time.time() + 60
    while world["service"].cloner._lock.locked() and time.time() < deadline: time.sleep(0.1)
    assert not world["service"].cloner._lock.locked() and world["service"]._busy == 0


# ---- safety

@pytest.mark.parametrize("path", ["../secret.wav", "escape.wav", "/etc/passwd", "nothing.wav", "notes.txt", "voices/../../secret.wav"])
def test_reference_paths_outside_the_allowed_folders_are_refused(world, path):
    if path == "/etc/passwd": path = str(world["root"] / "secret.wav")   # an absolute path that exists, outside --ref-dir
    r = get(world, **{**world["base"], "ref_audio_path": path})
    assert r.status_code == 400
    msg = r.json()["message"]
    assert ("may read" in msg) if path != "notes.txt" else ("not an audio file" in msg), msg


def test_aux_references(world):
    ok = httpx.post(world["url"] + "/tts", json={**world["base"], "aux_ref_audio_paths": ["awb.wav"]}, timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.content != get(world, **world["base"]).content
    bad = httpx.post(world["url"] + "/tts", json={**world["base"], "aux_ref_audio_paths": ["../secret.wav"]}, timeout=TIMEOUT)
    assert bad.status_code == 400 and "aux_ref_audio_paths" in bad.json()["message"]


def test_limits_on_reference_files(world):
    svc = world["service"]
    old = svc.limits
    try:
        svc.limits = Limits(max_ref_mb=0.01, max_new_tokens=40)
        r = get(world, **world["base"])
        assert r.status_code == 400 and "MB" in r.json()["message"]
        svc.limits = Limits(max_ref_seconds=1.0, max_new_tokens=40)
        r = get(world, **world["base"])
        assert r.status_code == 400 and "lasts" in r.json()["message"]
    finally:
        svc.limits = old


def test_error_answers_are_json(world):
    u = world["url"]
    cases = [
        (httpx.post(u + "/tts", content=b"text=hi", timeout=TIMEOUT), 400, "must be JSON"),
        (httpx.post(u + "/tts", json=[1, 2], timeout=TIMEOUT), 400, "JSON object"),
        (httpx.get(u + "/tts", params={**world["base"], "text": "..."}, timeout=TIMEOUT), 400, "tts failed"),
        (httpx.get(u + "/tts", params={k: v for k, v in world["base"].items() if k != "text"}, timeout=TIMEOUT), 400,
         "text is required"),
        (httpx.get(u + "/control", timeout=TIMEOUT), 400, "command is required"),
        (httpx.get(u + "/control", params={"command": "reboot"}, timeout=TIMEOUT), 400, "not supported"),
        (httpx.get(u + "/set_gpt_weights", timeout=TIMEOUT), 400, "gpt weight path is required"),
        (httpx.get(u + "/set_sovits_weights", timeout=TIMEOUT), 400, "sovits weight path is required"),
        (httpx.get(u + "/set_refer_audio", timeout=TIMEOUT), 400, "refer_audio_path is required"),
    ]
    for r, status, words in cases:
        assert r.status_code == status and words in r.json()["message"], (r.status_code, r.text)
    assert get(world, **world["base"]).status_code == 200  # and the server still works


def test_weights_switching(world):
    tiny, u = world["tiny"], world["url"]
    before = get(world, **world["base"]).content
    r = httpx.get(u + "/set_gpt_weights", params={"weights_path": str(tiny.gpt)}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {"message": "success"}
    r = httpx.get(u + "/set_sovits_weights", params={"weights_path": tiny.sovits.name}, timeout=TIMEOUT)  # relative to --weights-dir
    assert r.status_code == 200 and r.json() == {"message": "success"}
    assert get(world, **world["base"]).content == before     # the same files: the same audio
    folder = Path(tiny.gpt).parent
    refusals = {
        str(world["root"] / "secret.wav"): "may read",                        # outside --weights-dir
        "../voices/slt.wav": "may read",
    }
    (folder / "broken.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "evil.ckpt").write_bytes(pickle.dumps({"x": 1}) + b"cos\nsystem\n(S'echo pwned > /tmp/gsv_pwned'\ntR.")
    refusals[str(folder / "broken.ckpt")] = "change gpt weight failed"
    refusals[str(folder / "evil.ckpt")] = "change gpt weight failed"
    refusals[str(tiny.sovits)] = "change gpt weight failed"                   # a SoVITS file given as the GPT
    for path, words in refusals.items():
        r = httpx.get(u + "/set_gpt_weights", params={"weights_path": path}, timeout=TIMEOUT)
        assert r.status_code == 400 and words in r.json()["message"], (path, r.text)
    assert not Path("/tmp/gsv_pwned").exists()
    # a v1 GPT does not fit a v2 SoVITS: refused, and the old one keeps speaking
    shutil.copy(world["tiny_v1"].gpt, folder / "v1_gpt.ckpt")
    r = httpx.get(u + "/set_gpt_weights", params={"weights_path": "v1_gpt.ckpt"}, timeout=TIMEOUT)
    assert r.status_code == 400 and "phone table" in r.json()["message"]
    r = httpx.get(u + "/set_sovits_weights", params={"weights_path": str(tiny.gpt)}, timeout=TIMEOUT)
    assert r.status_code == 400 and "change sovits weight failed" in r.json()["message"]
    assert get(world, **world["base"]).content == before


def test_set_refer_audio_becomes_the_default(world):
    svc = world["service"]
    r = httpx.get(world["url"] + "/set_refer_audio", params={"refer_audio_path": "../secret.wav"}, timeout=TIMEOUT)
    assert r.status_code == 400 and "may read" in r.json()["message"]
    assert svc.default_ref is None
    no_ref = {k: v for k, v in world["base"].items() if k != "ref_audio_path"}
    assert get(world, **no_ref).json()["message"] == "ref_audio_path is required"
    r = httpx.get(world["url"] + "/set_refer_audio", params={"refer_audio_path": "slt.wav", "prompt_text": world["slt"].text,
                                                            "prompt_lang": "en"}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {"message": "success"}
    try:
        assert get(world, **no_ref).content == get(world, **world["base"]).content
    finally:
        svc.default_ref = None


def test_control_from_another_machine_is_refused(world):
    from starlette.testclient import TestClient             # its client address is "testclient", not a loopback one
    assert not is_loopback("testclient") and is_loopback("127.0.0.1") and is_loopback("::1")
    client = TestClient(create_app(world["service"]))
    for command in ("exit", "restart"):
        r = client.get("/control", params={"command": command})
        assert r.status_code == 403 and "only accepted from this machine" in r.json()["message"]


def test_control_restart_and_exit(world, tmp_path):
    svc = TTSService(VoiceCloner.from_paths(world["tiny"], device="cpu"), world["tiny"], ref_dirs=[world["voices"]],
                     limits=Limits(max_new_tokens=20))
    server = start_server(svc)
    try:
        assert httpx.get(server.url + "/tts", params=world["base"], timeout=TIMEOUT).status_code == 200
        assert len(svc._refs) == 1
        r = httpx.post(server.url + "/control", json={"command": "restart"}, timeout=TIMEOUT)
        assert r.status_code == 200 and len(svc._refs) == 0
        r = httpx.get(server.url + "/control", params={"command": "exit"}, timeout=TIMEOUT)
        assert r.status_code == 200
        server.thread.join(20)
        assert not server.running
    finally:
        server.stop()


def test_bearer_token(world):
    server = start_server(world["service"], token="s3cret")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.get(server.url + "/tts", params=world["base"], headers=headers, timeout=TIMEOUT)
            assert r.status_code == 401 and "Authorization: Bearer" in r.json()["message"]
        r = httpx.get(server.url + "/tts", params=world["base"], headers={"Authorization": "Bearer s3cret"}, timeout=TIMEOUT)
        assert r.status_code == 200
    finally:
        server.stop()


def test_a_full_queue_answers_503(world):
    svc = world["service"]
    old = svc.limits
    svc.limits = Limits(max_queue=1, max_new_tokens=40)
    try:
        with svc.ticket():                                   # one request is running
            r = get(world, **world["base"])
            assert r.status_code == 503 and "busy" in r.json()["message"]
        assert get(world, **world["base"]).status_code == 200
    finally:
        svc.limits = old


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def test_eight_concurrent_clients(world):
    seeds = [11, 12, 13, 14]
    params = lambda s: {**world["base"], "seed": s, "top_k": 15, "text": "Many clients at once."}
    alone = {s: get(world, **params(s)).content for s in seeds}
    assert len(set(alone.values())) == len(seeds)           # different seeds, different audio

    def client(i):
        s = seeds[i % len(seeds)]
        if i % 3 == 2:
            r = httpx.post(world["url"] + "/tts", json=params(s), timeout=TIMEOUT)
        else:
            r = httpx.get(world["url"] + "/tts", params=params(s), timeout=TIMEOUT)
        return s, r.status_code, r.content

    rounds = []
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool: results = list(pool.map(client, range(16)))
        assert all(status == 200 for _, status, _ in results)
        assert all(content == alone[s] for s, _, content in results)   # no mixed-up answers, no RNG crosstalk
        rounds.append(rss_mb())
    assert rounds[-1] - rounds[0] < 150, rounds              # memory is stable under load
    assert world["service"]._busy == 0


# ---- the command

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_gsv_nb_serve_end_to_end(world, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gpt_sovits_nb.cli", "serve", "--tiny", str(Path(world["tiny"].gpt).parent),
                             "--port", str(port), "--ref-dir", str(world["voices"]), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                httpx.get(url + "/control", timeout=2); break
            except httpx.TransportError:
                if proc.poll() is not None: break
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        r = httpx.get(url + "/tts", params={**world["base"], "text": "Hi."}, timeout=TIMEOUT)
        assert r.status_code == 200 and wav_of(r.content)[1] == 32000
        r = httpx.get(url + "/control", params={"command": "exit"}, timeout=TIMEOUT)
        assert r.status_code == 200
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None: proc.kill()
    out = proc.stdout.read()
    assert "serving v2 on http://127.0.0.1:" in out, out


def test_gsv_nb_serve_refuses_bad_options(world, tmp_path):
    from gpt_sovits_nb.cli import main
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0)); taken.listen(1)
        busy = taken.getsockname()[1]
        rc = main(["serve", "--tiny", str(Path(world["tiny"].gpt).parent), "--port", str(busy), "--device", "cpu", "-q"])
        assert rc == 1
    assert main(["serve", "--tiny", str(tmp_path / "t"), "--ref-dir", str(tmp_path / "nope"), "--port", str(port)]) == 1


def test_an_oversized_body_is_refused_unread(world):
    r = httpx.post(world["url"] + "/tts", content=b"{" + b" " * (300 * 1024) + b"}", timeout=TIMEOUT,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "kB" in r.json()["message"]
    assert get(world, **world["base"]).status_code == 200
