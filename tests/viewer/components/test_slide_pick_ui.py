"""Choosing what the slide page shows: the source radio (a run's slide, an upload, a file), the
run's first slide with its fold checkpoint and truth, and slide files under the data roots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

from viewer.components import slide_pick_ui
from viewer.core.inference import SlideCall, SlideResult

pytestmark = pytest.mark.usefixtures("app_env")


def _page(with_run: bool) -> None:
    import streamlit as st

    from viewer.components import shell_ui, slide_pick_ui

    cfg = shell_ui.settings()
    run = shell_ui.sidebar(cfg) if with_run else None
    source = slide_pick_ui.pick_source(run)
    if source == "run" and run is not None:
        picked = slide_pick_ui.pick_from_run(run, cfg)
        if picked is not None:
            st.text(f"{picked.slide_id}|{picked.checkpoint}|{picked.true_fine}|{picked.slide_file}")
    elif source == "file":
        st.text(f"file|{slide_pick_ui.pick_file(cfg)}")


def test_sources_name_what_they_show() -> None:
    assert set(slide_pick_ui.SOURCE_NAMES) == {"run", "upload", "file"}
    assert "svs" in slide_pick_ui.SLIDE_UPLOAD_TYPES


def test_a_slide_of_the_run(viewer_root: Path) -> None:
    at = AppTest.from_function(_page, args=(True,), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    source = at.radio(key="slide_source")
    assert source.value == "run" and source.options == list(slide_pick_ui.SOURCE_NAMES.values())
    assert at.selectbox(key="slide_pick").value == "synth-0000"
    (line,) = [t.value for t in at.main.text]
    slide_id, checkpoint, truth, slide_file = line.split("|")
    assert slide_id == "synth-0000"
    assert Path(checkpoint).name == "checkpoint.pt" and Path(checkpoint).parent.parent == (
        viewer_root / "run"
    )
    assert truth and Path(slide_file) == viewer_root / "cohort" / "slides" / "synth-0000.tiff"


def test_a_slide_file_alone(viewer_root: Path) -> None:
    at = AppTest.from_function(_page, args=(False,), default_timeout=APP_TIMEOUT)
    at.run()
    assert at.radio(key="slide_source").options == ["Upload a bag", "A slide file alone"]
    at.radio(key="slide_source").set_value("file").run()
    assert not at.exception, [e.value for e in at.exception]
    (line,) = [t.value for t in at.main.text]
    chosen = Path(line.removeprefix("file|"))
    assert chosen.is_file() and chosen.is_relative_to(viewer_root)
    options = at.selectbox(key="file_pick").options
    assert "cohort/slides/synth-0000.tiff" in " ".join(options)


def _result(calibrated: bool, call: SlideCall | None) -> SlideResult:
    return SlideResult(
        slide_id="s", coarse=("benign", "atypical"), fine=("N", "A*B"), parent=(0, 1),
        fine_probs=np.array([0.3, 0.7]), coarse_probs=np.array([0.3, 0.7]),
        coarse_head_probs=np.array([0.4, 0.6]), attention_coarse=np.full((2, 1), 1.0),
        attention_fine=np.full((2, 1), 1.0), coords=None, patch_size=256,
        calibrated=calibrated, temperatures=(1.8, 1.25), call=call,
    )  # fmt: skip


def test_the_call_and_which_probabilities_are_shown() -> None:
    coarse = _result(True, SlideCall("coarse", "atypical", 0.9))
    assert slide_pick_ui.call_line(coarse) == (
        "Call at 90 % coverage: **atypical — subtype uncertain**"
    )
    fine = _result(True, SlideCall("fine", "A*B", 0.9))
    assert slide_pick_ui.call_line(fine) == r"Call at 90 % coverage: **fine: A\*B**"
    assert slide_pick_ui.call_line(_result(True, SlideCall("none", None, 0.8))) == (
        "Call at 80 % coverage: **no call**"
    )
    assert slide_pick_ui.call_line(_result(False, None)) == ""
    assert slide_pick_ui.probabilities_caption(coarse) == (
        "probabilities calibrated (T = 1.80 fine, 1.25 coarse classifier)"
    )
    assert slide_pick_ui.probabilities_caption(_result(False, None)) == (
        "raw probabilities (the checkpoint has no calibration)"
    )
