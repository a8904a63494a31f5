"""Slide page: one slide's deep-zoom view with class-wise attention, its prediction per level,
next / previous along a browse list, and an address that reproduces the view."""

from __future__ import annotations

import functools
from pathlib import Path

import streamlit as st

from hmil.errors import HMILError
from hmil.slides.match import SlideMatch
from hmil.slides.reader import Slide
from viewer.components import (
    cached_ui,
    deepzoom_element_ui,
    deepzoom_ui,
    regions_ui,
    review_ui,
    shell_ui,
    slide_pick_ui,
    topk_ui,
)
from viewer.components.shell_ui import session_state
from viewer.core import address, charts, regions, reviews, runs, slide_state
from viewer.core.inference import SlideResult
from viewer.state import ViewerSettings

PERSISTENT_KEYS = (*slide_pick_ui.KEYS, *deepzoom_ui.KEYS, *topk_ui.KEYS)
VIEW_COLUMNS = [4.2, 1]


def write_address(run: Path | None) -> None:
    """Put what the page shows into the URL when a driving parameter changed
    (:mod:`viewer.core.address`)."""
    state = session_state()
    wanted = address.desired(state, str(run) if run is not None else None)
    kept = state.get("_address_viewport") or {}
    viewport = (
        kept.get("params", {}) if kept.get("slide") == state.get(address.SLIDE_SHOWN_KEY) else {}
    )
    params = address.to_write(state, wanted, viewport)
    if params is None:
        return
    st.query_params.from_dict(params)
    state[address.WRITTEN_KEY] = dict(params)


def show_notes() -> None:
    """Why parameters of the address were ignored (once)."""
    notes = st.session_state.pop(address.NOTES_KEY, None)
    if notes:
        st.caption("Link: " + charts.escape_markdown("; ".join(notes)))


def match_line(match: SlideMatch | None, picked: slide_pick_ui.Picked) -> None:
    """What the bag-on-slide check compared, and the override when it refused the pair."""
    if match is None:
        return
    if match.problem is not None:
        problem = charts.escape_markdown(match.problem)
        st.error(f"The bag does not belong to this slide: {problem}", icon=":material/block:")
        st.checkbox(
            "The slide file was renamed: draw the bag on it anyway",
            key=slide_state.MISMATCH_KEY,
            help="Only the name differs when a file was renamed; a different size or "
            "resolution is another scan, and the attention would land on the wrong tissue.",
        )
    elif match.method == "extent":
        st.caption(
            "The bag records no slide name or size: only its patch coordinates were checked "
            "to lie inside this slide."
        )


def caption(
    picked: slide_pick_ui.Picked,
    choice: deepzoom_ui.OverlayChoice,
    context: deepzoom_ui.ViewContext,
    run: Path | None,
) -> dict[str, str]:
    """What the view's PNG export writes under the image: slide, label shown, truth, model."""
    model = reviews.checkpoint_name(run, picked.checkpoint) if run else picked.checkpoint.name
    label = "all labels" if choice.all_labels else choice.label
    return regions.caption_part(picked.slide_id, choice.level, label, context.truth, model)


@st.fragment
def attention_view(
    picked: slide_pick_ui.Picked,
    result: SlideResult,
    slide: Slide | None,
    reason: str,
    cfg: ViewerSettings,
    context: deepzoom_ui.ViewContext,
    run: Path | None,
    run_synthetic: bool,
) -> None:
    """The view, the prediction beside it, the inspected patch and the gallery. A fragment: a
    label, style or patch change re-runs only this part, not the pickers above."""
    state = session_state()
    if slide_state.NAV_REQUEST in state or slide_state.OPEN_REQUEST in state:
        st.rerun()  # next / previous / next unreviewed slide: the pickers must move
    try:
        slide_state.apply_patch_request(state)
        has_mask = picked.mask_file is not None
        choice = deepzoom_ui.resolve_choice(state, result, has_mask)
        dimensions = slide.dimensions if slide is not None else None
        target = regions_ui.target_for(
            run if picked.browse else None, picked.slide_id, result, dimensions, picked.true_fine
        )
        shown = regions_ui.load(target) if target is not None else []
        on_region = None
        if target is not None:
            on_region = functools.partial(regions_ui.on_region, target, deepzoom_element_ui.KEY)
        view = regions_ui.view_parts(target, shown, caption(picked, choice, context, run))
        left, right = st.columns(VIEW_COLUMNS)
        with left:
            deepzoom_ui.deepzoom_section(
                result, slide, reason, choice, cfg, context, view, on_region
            )
            regions_ui.stats_section(
                shown, result, choice.level, choice.label, context.truth, context.identity
            )
        with right:
            slide_pick_ui.prediction_flags(result, picked, run_synthetic)
            if run is not None and picked.browse and picked.true_fine is not None:
                review_ui.review_panel(
                    run, picked.slide_id, picked.checkpoint, result.fine,
                    picked.true_fine != result.fine_pred, picked.browse,
                )  # fmt: skip
            if target is not None:
                regions_ui.regions_panel(target, shown)
            deepzoom_ui.style_controls(has_mask)
            slide_pick_ui.prediction_bars(result, picked)
        deepzoom_ui.patch_panel(result, slide, choice)
        topk_ui.topk_gallery(result, slide, choice)
    finally:
        shell_ui.keep(*PERSISTENT_KEYS)  # a fragment re-run skips the page's own keep
        write_address(run)


def slide_alone(path: Path, cfg: ViewerSettings) -> None:
    """A slide file without a bag: the deep-zoom view with nothing to overlay."""
    try:
        slide = cached_ui.slide(path)
    except HMILError as exc:
        shell_ui.show_problem(exc)
        return
    slide_state.forget_previous_slide(session_state(), f"file:{path}")
    context = deepzoom_ui.ViewContext(
        view_id=f"file:{path}", slide_file=path, slide_roots=tuple(cfg.roots), truth=None,
        nav=None, mask_outline=None, identity="",
    )  # fmt: skip
    deepzoom_ui.deepzoom_section(None, slide, "", None, cfg, context)


def main(cfg: ViewerSettings, run: Path | None) -> None:
    slide_pick_ui.apply_open_request()
    with st.sidebar:
        st.divider()
        source = slide_pick_ui.pick_source(run)
        picked = None
        if source == "upload":
            picked = slide_pick_ui.pick_upload(cfg, shell_ui.known_runs(cfg))
        elif source == "file":
            file = slide_pick_ui.pick_file(cfg)
    show_notes()
    if source == "file":
        if file is not None:
            slide_alone(file, cfg)
        return
    try:
        if source == "run" and run is not None:
            picked = slide_pick_ui.pick_from_run(run, cfg)
        if picked is None:
            if source == "upload":
                st.info("Upload a feature bag (and its slide) in the sidebar.")
            return
        with st.spinner("Predicting…"):
            result = cached_ui.slide_result(picked.checkpoint, picked.bag, picked.slide_id)
    except HMILError as exc:
        shell_ui.show_problem(exc)
        return
    state = session_state()
    view_id = f"{source}:{picked.slide_id}:{picked.bag}"
    slide_state.forget_previous_slide(state, picked.slide_id if source == "run" else view_id)
    slide, reason, match = slide_pick_ui.open_slide_for(picked, result)
    match_line(match, picked)
    run_synthetic = False
    nav = None
    if source == "run" and run is not None:
        info, _, _ = cached_ui.run_tables(run, cfg.roots)
        run_synthetic = runs.is_synthetic(info)
        nav = slide_state.browse_nav(state, picked.browse, reviewing=picked.true_fine is not None)
    outline = None
    if picked.mask_file is not None and slide is not None:
        outline = cached_ui.mask_outline(picked.mask_file, slide.dimensions[0])
    truth = None
    if picked.true_fine is not None:
        truth = {"fine": picked.true_fine, "coarse": picked.true_coarse or ""}
    context = deepzoom_ui.ViewContext(
        view_id=view_id,
        slide_file=picked.slide_file if slide is not None else None,
        slide_roots=picked.slide_roots,
        truth=truth,
        nav=nav,
        mask_outline=outline,
        identity=deepzoom_ui.identity(picked.checkpoint, picked.bag),
    )
    attention_view(picked, result, slide, reason, cfg, context, run, run_synthetic)


shell_ui.restore(*PERSISTENT_KEYS)
try:
    main(shell_ui.settings(), shell_ui.current_run())
finally:
    shell_ui.keep(*PERSISTENT_KEYS)
    write_address(shell_ui.current_run())
