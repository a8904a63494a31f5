"""The deep-zoom section of the slide page: overlay controls, the view, the inspected patch.

Session-state keys (every widget has one): ``ov_level``, ``ov_label``, ``ov_mode``,
``ov_alpha``, ``ov_cmap``, ``ov_norm``, ``ov_smooth``, ``ov_gt``; the component ``deepzoom``
and its go-to request ``dz_goto`` (:mod:`.slide_state`); ``patch_pick`` is shared with the
top-k gallery.

Label and level can be switched on the view itself (its label strip recolours in the browser at
once, then tells the page) or with the widgets here (the page re-runs and the browser recolours
without reloading the slide). Changing normalisation or smoothing recomputes the layer bytes.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from hmil.errors import HMILError
from hmil.heatmap import CMAPS, HeatmapStyle
from hmil.slides.reader import Slide
from viewer.components import (
    cached,
    charts,
    deepzoom,
    deepzoom_data,
    rendering,
    slide_lookup,
    slide_state,
)
from viewer.components.choices import keep_choice, session_state
from viewer.components.inference import LEVELS, SlideResult, patch_attention_rows
from viewer.components.slide_pick import Picked
from viewer.components.viewport import slide_facts
from viewer.state import ViewerSettings
from viewer.tiles.registry import AttentionEntry, shared_registry

CROP_PX = 160
KEYS = ("ov_level", "ov_label", "ov_mode", "ov_gt", "ov_alpha", "ov_cmap", "ov_norm", "ov_smooth")


@dataclass(frozen=True)
class OverlayChoice:
    level: str
    label: str
    all_labels: bool
    style: HeatmapStyle
    gt_outline: bool = False


#: the options of the overlay's choice widgets, in display order
MODES = ("single", "all")
NORMS = ("percentile", "raw")

#: the overlay widgets' values before the visitor touches them
DEFAULTS: dict[str, object] = {
    "ov_level": "fine", "ov_mode": "single", "ov_alpha": 0.4, "ov_cmap": "jet",
    "ov_norm": "percentile", "ov_smooth": 0.0, "ov_gt": True,
}  # fmt: skip


def resolve_choice(
    state: MutableMapping[str, Any], result: SlideResult, has_mask: bool
) -> OverlayChoice:
    """What the overlay shows, from the widgets' session-state values (defaults filled in, a
    value no longer among its options, such as a label of the other level, replaced by its
    default).

    Read before the widgets are drawn, so the page can send the deep-zoom view to the browser
    ahead of its controls (drawn above it afterwards into a container): the view then starts
    loading while the browser still renders the widgets.
    """
    for key in ("ov_alpha", "ov_smooth", "ov_gt"):
        state.setdefault(key, DEFAULTS[key])
    level = str(keep_choice(state, "ov_level", LEVELS, DEFAULTS["ov_level"]))
    names = result.names(level)
    label = str(keep_choice(state, "ov_label", names, slide_lookup.default_label(result, level)))
    mode = keep_choice(state, "ov_mode", MODES, DEFAULTS["ov_mode"])
    cmap = str(keep_choice(state, "ov_cmap", CMAPS, DEFAULTS["ov_cmap"]))
    norm = str(keep_choice(state, "ov_norm", NORMS, DEFAULTS["ov_norm"]))
    style = cached.style(cmap, float(state["ov_alpha"]), norm, float(state["ov_smooth"]))
    return OverlayChoice(
        level, label, mode == "all", style, gt_outline=has_mask and bool(state["ov_gt"])
    )


def overlay_controls(result: SlideResult, has_mask: bool, choice: OverlayChoice) -> None:
    """Level, label (or all labels), opacity, colormap, normalisation, smoothing, and the
    ground-truth outline when the slide has a lesion mask; their values are in session state
    (:func:`resolve_choice` read them), so a change re-runs the page with the new ones."""
    cols = st.columns([1.2, 1.4, 1.5, 1.1] if has_mask else [1.2, 1.4, 1.5])
    cols[0].radio("Level", list(LEVELS), key="ov_level", horizontal=True)
    if has_mask:
        cols[3].checkbox("Outline lesion", key="ov_gt", help="ground-truth lesion mask (demo)")
    cols[1].selectbox("Label", list(result.names(choice.level)), key="ov_label")
    cols[2].radio(
        "Show",
        list(MODES),
        key="ov_mode",
        horizontal=True,
        format_func={"single": "one label", "all": f"all {choice.level} labels"}.__getitem__,
    )
    cols = list(st.columns(4))
    cols[0].slider("Opacity", 0.0, 1.0, key="ov_alpha", step=0.05)
    cols[1].selectbox("Colormap", list(CMAPS), key="ov_cmap")
    cols[2].radio(
        "Normalise",
        list(NORMS),
        key="ov_norm",
        horizontal=True,
        help="percentile: rank among the slide's patches; raw: min–max of the attention.",
    )
    cols[3].slider("Smoothing", 0.0, 3.0, key="ov_smooth", step=0.25, help="σ in patches")


def _slide_key(picked: Picked, slide: Slide | None) -> str | None:
    """Register the slide file for the tile routes (None on the coordinate canvas)."""
    if slide is None or picked.slide_file is None:
        return None
    try:
        return shared_registry().register_slide(
            picked.slide_file, picked.slide_roots, slide.dimensions
        )
    except (HMILError, OSError):
        return None


def _attention_key(picked: Picked, result: SlideResult, slide: Slide) -> str:
    """Register the prediction's attention for server-rendered overlay tiles."""
    assert result.coords is not None
    w, h = slide.dimensions
    entry = AttentionEntry(
        width=w,
        height=h,
        coords=result.coords,
        patch_size=result.patch_size,
        attention={level: result.attention(level) for level in LEVELS},
    )
    return shared_registry().register_attention(_identity(picked), entry)


def _identity(picked: Picked) -> str:
    return repr((cached.signature(picked.checkpoint), cached.signature(picked.bag)))


def deepzoom_section(
    picked: Picked,
    result: SlideResult,
    slide: Slide | None,
    reason: str,
    choice: OverlayChoice,
    cfg: ViewerSettings,
) -> None:
    """The deep-zoom view with the attention layer, and one line of slide facts."""
    if result.coords is None:
        st.info("This bag has no patch coordinates: predictions only, no attention map.")
        return
    if slide is None:
        st.info(
            f"**No slide image** ({reason}): the attention is drawn on a coordinate canvas — a "
            "white background covering the patches' extent, in level-0 pixels.",
            icon=":material/grid_on:",
        )
    canvas = rendering.canvas_for(slide, result)
    key = _slide_key(picked, slide)
    layer = cached.layer_part(
        result, choice.style.normalize, choice.style.smooth, _identity(picked)
    )
    strategy = cfg.overlay if key is not None else "canvas"
    if strategy == "tiles" and slide is not None:
        layer = {**layer, "tiles": deepzoom_data.tile_layer_urls(
            result, _attention_key(picked, result, slide), choice.style)}  # fmt: skip
    outline = None
    if choice.gt_outline and picked.mask_file is not None and slide is not None:
        outline = cached.mask_outline(picked.mask_file, slide.dimensions[0])
    show = deepzoom_data.show_part(
        choice.level,
        choice.label,
        "all" if choice.all_labels else "single",
        choice.style,
        outline,
    )
    data = deepzoom_data.component_data(
        deepzoom_data.slide_part(key, slide),
        deepzoom_data.canvas_part(canvas),
        layer,
        show,
        strategy,
        patch_box=_patch_box(result),
        goto=st.session_state.get(slide_state.GOTO_KEY),
    )
    state = session_state()
    deepzoom.deepzoom_view(
        data,
        on_label=functools.partial(slide_state.on_label, state, deepzoom.KEY),
        on_alpha=functools.partial(slide_state.on_alpha, state, deepzoom.KEY),
        on_patch=functools.partial(slide_state.on_patch, state, deepzoom.KEY),
    )
    where = "the slide" if slide is not None else "the coordinate canvas"
    facts = (
        slide_facts(slide.dimensions, slide.level_count, slide.mpp, slide.objective_power,
                    slide.backend)
        if slide is not None
        else f"coordinate canvas {canvas.width:.0f} × {canvas.height:.0f} level-0 px"
    )  # fmt: skip
    shown = (
        f"all {choice.level} labels" if choice.all_labels else f"{choice.level} · {choice.label}"
    )
    st.caption(f"{shown} — attention over {where} · {facts} · layer: {strategy}")


def _patch_box(result: SlideResult) -> tuple[float, float, float] | None:
    index = st.session_state.get("patch_pick")
    if index is None or result.coords is None or not 0 <= int(index) < result.n_instances:
        return None
    x, y = result.coords[int(index)]
    return float(x), float(y), float(result.patch_size)


def patch_panel(
    picked: Picked, result: SlideResult, slide: Slide | None, choice: OverlayChoice
) -> None:
    """The inspected patch (clicked on the view or picked in the gallery): its crop, its
    attention under every coarse and fine label, and a button that zooms the view to it."""
    index = st.session_state.get("patch_pick")
    if index is None or result.coords is None or not 0 <= int(index) < result.n_instances:
        return
    index = int(index)
    x, y = (int(v) for v in result.coords[index])
    st.markdown(f"**Patch {index}** at ({x}, {y}) level-0 px, {result.patch_size} px")
    rows = pd.DataFrame(patch_attention_rows(result, index))
    cols = st.columns([1, 2, 1.4])
    colour = rendering.normalized(result, choice.level, choice.label, choice.style.normalize)
    cols[0].image(
        cached.patch_crop(slide, result, index, CROP_PX, colour, choice.style.cmap),
        caption=f"patch {index}",
    )
    cols[1].plotly_chart(
        charts.patch_attention_figure(rows, f"patch {index}: attention under every label"),
        key="patch_attention",
        config={"displayModeBar": False},
    )
    cols[2].dataframe(
        rows.round({"attention": 5, "x_uniform": 2, "percentile": 1}),
        hide_index=True,
        key="patch_table",
    )
    cols[0].button(
        "Go to this patch",
        key="patch_goto",
        on_click=slide_state.go_to_patch,
        args=(st.session_state, float(x), float(y), float(result.patch_size)),
    )
