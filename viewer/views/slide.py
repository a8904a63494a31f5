"""Slide page: one slide's prediction per level and its class-wise attention, pan and zoom."""

from __future__ import annotations

import streamlit as st

from hmil.errors import HMILError
from hmil.slides.reader import Slide
from viewer.components import cached, shell, slide_ui
from viewer.components.inference import SlideResult


@st.fragment
def attention_view(
    picked: slide_ui.Picked, result: SlideResult, slide: Slide | None, reason: str
) -> None:
    """Overlay controls, viewport, navigation, overview and gallery. A fragment: zooming,
    panning or switching label re-runs only this part, not the slide picker above."""
    try:
        view = slide_ui.prepare_view(picked, result, slide)
        left, right = st.columns([2.7, 1])
        with left:
            choice = slide_ui.overlay_controls(result, has_mask=picked.mask_file is not None)
            slide_ui.main_view(view, picked, result, slide, reason, choice)
        with right:
            with st.container():
                slide_ui.prediction_bars(result, picked)
            slide_ui.side_panel(view, picked, result, slide, choice)
        slide_ui.topk_gallery(picked, result, slide, choice)
    finally:
        shell.keep(*slide_ui.PERSISTENT_KEYS)  # a fragment re-run skips the page's own keep


def main() -> None:
    cfg = shell.settings()
    run = shell.current_run()
    st.title("Slide")
    slide_ui.apply_open_request()
    source = slide_ui.pick_source(run)
    try:
        if source == "run" and run is not None:
            picked = slide_ui.pick_from_run(run, cfg)
        else:
            picked = slide_ui.pick_upload(cfg, shell.known_runs(cfg))
        if picked is None:
            return
        with st.spinner("Predicting…"):
            result = cached.slide_result(picked.checkpoint, picked.bag, picked.slide_id)
    except HMILError as exc:
        shell.show_problem(exc)
        return
    slide, reason = slide_ui.open_slide_for(picked, result)
    st.caption(
        f"{picked.slide_id} · {result.n_instances} patches of {result.patch_size} px (level 0) · "
        f"model {picked.checkpoint} · encoder {result.encoder or 'unknown'}"
    )
    slide_ui.prediction_flags(result, picked)
    attention_view(picked, result, slide, reason)


shell.restore(*slide_ui.PERSISTENT_KEYS)
try:
    main()
finally:
    shell.keep(*slide_ui.PERSISTENT_KEYS)
