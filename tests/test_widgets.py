"""The clone studio driven in-process, as a learner's clicks drive it: sliders set, the button clicked, the outputs
checked. Runs under ipywidgets 8 (JupyterLab) and, in .ci/test, again under 7.7.1 (Colab) on PYTHONPATH."""
import base64

import pytest
import torch

W = pytest.importorskip("ipywidgets")
from gpt_sovits_nb.widgets import audio_output, clone_widget, compare_figure, figure_output

pytestmark = pytest.mark.widgets


@pytest.fixture(scope="module")
def cloner(tmp_path_factory):
    from gpt_sovits_nb.pipeline import VoiceCloner, make_tiny_models
    return VoiceCloner.from_paths(make_tiny_models(tmp_path_factory.mktemp("tiny"), "v2"), device="cpu")


@pytest.fixture(scope="module")
def clip():
    from gpt_sovits_nb.corpus import reference_clip
    return reference_clip("ps_librivox")


@pytest.fixture(scope="module")
def ref(cloner, clip):
    return cloner.prepare_reference(clip.path, clip.text, clip.lang)


def png_of(out):
    "The PNG bytes an Output widget shows (exactly one image)."
    images = [o["data"]["image/png"] for o in out.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, out.outputs
    png = base64.b64decode(images[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png


def audio_of(out):
    "The HTML audio player an Output widget shows (exactly one)."
    players = [o["data"]["text/html"] for o in out.outputs if "<audio" in o.get("data", {}).get("text/html", "")]
    assert len(players) == 1, out.outputs
    assert "data:audio/wav;base64," in players[0]
    return players[0]


def test_ipywidgets_version_is_known():
    print("ipywidgets", W.__version__)
    assert W.__version__.split(".")[0] in ("7", "8")


def test_outputs_and_figure(cloner, ref):
    sp = cloner.synthesize("Hello there.", "en", ref=ref, seed=0, max_new_tokens=20, progress=False)
    fig = compare_figure(ref.spec, sp, "speed 1")
    ax_ref, ax_out = fig.axes[:2]                                          # (then their colour bars)
    assert ax_ref.get_title() == "reference" and ax_out.get_title().startswith("clone: ") and "speed 1" in ax_out.get_title()
    assert ax_out.get_xlabel() == "time (s)" and ax_out.get_ylabel() == "frequency (kHz)"
    out = W.Output()
    out.outputs = (figure_output(fig), audio_output(sp.wav, sp.sr))
    png_of(out); audio_of(out)


def test_studio_speaks_on_change_and_on_click(cloner, ref):
    ui = clone_widget(cloner, ref, "Hello there. How are you?", max_new_tokens=20, seed=1)
    w = ui._gsv
    for key, cls in (("temperature", "t-temperature"), ("top_k", "t-topk"), ("speed", "t-speed"), ("noise", "t-noise"),
                     ("speak_button", "t-speak"), ("plot", "t-plot"), ("audio", "t-audio"), ("status", "t-status")):
        assert cls in w[key]._dom_classes, key
    assert isinstance(w["audio"], W.Output) and isinstance(w["plot"], W.Output) and isinstance(w["status"], W.Label)
    assert w["status"].value == "done 1"                                   # it spoke once when built
    first, png1, audio1 = w["last"](), png_of(w["plot"]), audio_of(w["audio"])
    assert first.seed == 1 and len(first.pieces) == 2

    w["temperature"].value = 1.5                                           # moving a knob speaks again (auto is on)
    assert w["status"].value == "done 2"
    second = w["last"]()
    assert second is not first and png_of(w["plot"]) != png1 and audio_of(w["audio"]) != audio1
    assert "temperature 1.5" in w["info"].value

    w["auto"].value = False                                                # now only the button speaks
    w["top_k"].value = 1; w["noise"].value = 0.0; w["speed"].value = 2.0
    assert w["status"].value == "done 2" and w["last"]() is second
    w["speak_button"].click()
    assert w["status"].value == "done 3"
    third = w["last"]()
    gaps = len(third.pieces) * round(0.3 * 32000)
    tokens = sum(len(p["tokens"]) for p in third.pieces)
    assert abs((third.wav.shape[-1] - gaps) - 1280 * tokens / 2) <= 1280 * len(third.pieces)   # speed 2: half as long
    png_of(w["plot"]); audio_of(w["audio"])

    w["speak_button"].click()                                              # top_k 1, noise 0: the same sound again
    assert w["status"].value == "done 4" and torch.equal(w["last"]().wav, third.wav)


def test_studio_shows_errors(cloner, ref):
    ui = clone_widget(cloner, ref, "   ", max_new_tokens=10)
    w = ui._gsv
    assert w["status"].value == "error 1" and "TextError" in w["info"].value and w["last"]() is None
    assert w["plot"].outputs == () and w["audio"].outputs == ()
    w["text"].value = "Hello there."
    w["speak_button"].click()
    assert w["status"].value == "done 2"
    png_of(w["plot"]); audio_of(w["audio"])


def test_studio_from_a_path_without_speaking(cloner, clip):
    ui = clone_widget(cloner, clip.path, ref_text=clip.text, max_new_tokens=10, speak_now=False)
    w = ui._gsv
    assert w["status"].value == "ready" and w["plot"].outputs == ()
    assert w["reference"].prompt is not None and w["reference"].spec.shape[1] == 1025
    assert w["speak"]() is not None and w["status"].value == "done 1"


def test_studio_reading_guide_switch_for_nano(clip, monkeypatch):
    "With the nano model the studio shows a 'reading guide' checkbox; turning it off speaks again without the guide."
    from gpt_sovits_nb.pipeline import VoiceCloner
    nano = VoiceCloner.from_pretrained("nano", device="cpu")
    guides, make_guide = [], VoiceCloner._guide
    monkeypatch.setattr(VoiceCloner, "_guide", lambda self, call, tf: guides.append(make_guide(self, call, tf)) or guides[-1])
    ui = clone_widget(nano, clip.path, "What time is it?", ref_text=clip.text, max_new_tokens=60, speak_now=False)
    w = ui._gsv
    assert w["guided"].value is True and "t-guided" in w["guided"]._dom_classes
    w["speak"]()
    assert len(guides) == 1 and guides[0] is not None and guides[0].path    # decoded under a reading guide
    w["guided"].value = False                       # speak on change: speaks again
    assert w["status"].value == "done 2" and "guided off" in w["info"].value
    assert guides[1:] == [None]                     # ... this time without one
