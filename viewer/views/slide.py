"""Slide page: one slide's prediction per level and its class-wise attention, deep zoom."""

from __future__ import annotations

import streamlit as st

from hmil.errors import HMILError
from hmil.slides.reader import Slide
from viewer.components import cached, deepzoom_ui, shell, slide_pick, slide_state, topk_ui
from viewer.components.choices import session_state
from viewer.components.inference import SlideResult
from viewer.state import ViewerSettings

PERSISTENT_KEYS = (*slide_pick.KEYS, *deepzoom_ui.KEYS, *topk_ui.KEYS)


@st.fragment
def attention_view(
    picked: slide_pick.Picked,
    result: SlideResult,
    slide: Slide | None,
    reason: str,
    cfg: ViewerSettings,
) -> None:
    """Overlay controls, the deep-zoom view, bars, the inspected patch and the gallery. A
    fragment: a label, style or patch change re-runs only this part, not the picker above."""
    try:
        slide_state.apply_patch_request(session_state())
        left, right = st.columns([2.7, 1])
        has_mask = picked.mask_file is not None
        with left:
            controls = st.container()  # above the view, filled after it (see resolve_choice)
            choice = deepzoom_ui.resolve_choice(session_state(), result, has_mask)
            deepzoom_ui.deepzoom_section(picked, result, slide, reason, choice, cfg)
            with controls:
                deepzoom_ui.overlay_controls(result, has_mask, choice)
        with right:
            slide_pick.prediction_bars(result, picked)
        deepzoom_ui.patch_panel(picked, result, slide, choice)
        topk_ui.topk_gallery(result, slide, choice)
    finally:
        shell.keep(*PERSISTENT_KEYS)  # a fragment re-run skips the page's own keep


def main() -> None:
    cfg = shell.settings()
    run = shell.current_run()
    st.title("Slide")
    slide_pick.apply_open_request()
    source = slide_pick.pick_source(run)
    try:
        if source == "run" and run is not None:
            picked = slide_pick.pick_from_run(run, cfg)
        else:
            picked = slide_pick.pick_upload(cfg, shell.known_runs(cfg))
        if picked is None:
            return
        with st.spinner("Predicting…"):
            result = cached.slide_result(picked.checkpoint, picked.bag, picked.slide_id)
    except HMILError as exc:
        shell.show_problem(exc)
        return
    slide, reason = slide_pick.open_slide_for(picked, result)
    st.caption(
        f"{picked.slide_id} · {result.n_instances} patches of {result.patch_size} px (level 0) · "
        f"model {picked.checkpoint} · encoder {result.encoder or 'unknown'}"
    )
    slide_pick.prediction_flags(result, picked)
    attention_view(picked, result, slide, reason, cfg)


shell.restore(*PERSISTENT_KEYS)
try:
    main()
finally:
    shell.keep(*PERSISTENT_KEYS)
