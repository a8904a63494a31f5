"""The deep-zoom section of the slide page: the view, its style controls, the inspected patch.

Session-state keys: ``ov_level``, ``ov_label``, ``ov_mode``, ``ov_alpha`` (set by the view:
its label strip, "all labels" button and opacity slider report them as component triggers);
the style values ``ov_cmap``, ``ov_norm``, ``ov_per_label``, ``ov_smooth``, ``ov_gt`` and their
widgets' keys ``w_cmap``, ``w_norm``, ``w_per_label``, ``w_smooth``, ``w_gt`` with the switch
``ov_style_open``; the component ``deepzoom`` and its requests ``dz_goto`` and ``dz_viewport``
(:mod:`viewer.core.slide_state`, :mod:`viewer.core.address`); ``patch_pick`` is shared with the
top-k gallery.

The overlay has one set of controls: level, label, all labels, opacity and the layer switch
live on the view (they recolour in the browser at once, then tell the page); the scale,
colormap, smoothing and the lesion outline live behind the "Colours & scale" switch (the page
re-runs and the browser re-reads the layer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from hmil.attention_scale import SCALES
from hmil.errors import HMILError
from hmil.overlay import CMAPS, HeatmapStyle
from hmil.slides.reader import Slide
from viewer.components import cached_ui, deepzoom_element_ui
from viewer.components.shell_ui import session_state
from viewer.core import patch_bars, rendering, slide_lookup, slide_state
from viewer.core.address import VIEWPORT_KEY
from viewer.core.choices import keep_choice
from viewer.core.inference import LEVELS, TIMES_AVERAGE, SlideResult, patch_attention_rows
from viewer.core.viewport import Canvas, slide_facts
from viewer.state import ViewerSettings
from viewer.tiles import deepzoom_data
from viewer.tiles.registry import AttentionEntry, shared_registry

CROP_PX = 160
#: the switch that shows the style controls, and the keys of those controls (kept while hidden)
STYLE_OPEN = "ov_style_open"
STYLE_KEYS = ("ov_cmap", "ov_norm", "ov_per_label", "ov_smooth", "ov_gt")
#: the widget key of each style value
WIDGET_OF = {key: "w_" + key.removeprefix("ov_") for key in STYLE_KEYS}
KEYS = (
    "ov_level", "ov_label", "ov_mode", "ov_gt", "ov_alpha", "ov_cmap", "ov_norm", "ov_per_label",
    "ov_smooth",
)  # fmt: skip


@dataclass(frozen=True)
class OverlayChoice:
    level: str
    label: str
    all_labels: bool
    style: HeatmapStyle
    gt_outline: bool = False


#: the options of the overlay's choice widgets, in display order
MODES = ("single", "all")
NORMS = tuple(SCALES)
#: the scales as the style controls name them
SCALE_NAMES = {
    "relative": "× an average patch (log)",
    "percentile": "percentile rank",
    "raw": "attention weight (min–max)",
}

#: the overlay's values before the visitor touches them: perceptually uniform colours on the
#: scale with an absolute meaning, shared by every label
DEFAULTS: dict[str, object] = {
    "ov_level": "fine", "ov_mode": "single", "ov_alpha": 0.5, "ov_cmap": "viridis",
    "ov_norm": "relative", "ov_per_label": False, "ov_smooth": 0.0, "ov_gt": True,
}  # fmt: skip


def resolve_choice(
    state: MutableMapping[str, Any], result: SlideResult, has_mask: bool
) -> OverlayChoice:
    """What the overlay shows, from session state (defaults filled in, a value no longer among
    its options, such as a label of the other level, replaced by its default)."""
    for key in ("ov_alpha", "ov_smooth", "ov_gt", "ov_per_label"):
        state.setdefault(key, DEFAULTS[key])
    level = str(keep_choice(state, "ov_level", LEVELS, DEFAULTS["ov_level"]))
    names = result.names(level)
    label = str(keep_choice(state, "ov_label", names, slide_lookup.default_label(result, level)))
    mode = keep_choice(state, "ov_mode", MODES, DEFAULTS["ov_mode"])
    cmap = str(keep_choice(state, "ov_cmap", CMAPS, DEFAULTS["ov_cmap"]))
    norm = str(keep_choice(state, "ov_norm", NORMS, DEFAULTS["ov_norm"]))
    style = cached_ui.style(
        cmap, float(state["ov_alpha"]), norm, float(state["ov_smooth"]), bool(state["ov_per_label"])
    )
    return OverlayChoice(
        level, label, mode == "all", style, gt_outline=has_mask and bool(state["ov_gt"])
    )


def _adopt(state: MutableMapping[str, Any], key: str) -> None:
    """A style widget changed: its value becomes the overlay's (``ov_*``)."""
    state[key] = state[WIDGET_OF[key]]


def style_controls(has_mask: bool) -> None:
    """The map's scale, colormap, smoothing and (demo) lesion outline, shown when their switch
    is on. Drawn only on request: five widgets in a popover cost the first render about 0.1 s
    on 2 cores (measured), for controls most visits never open.

    The values live in plain session keys (``ov_cmap``, …: :data:`STYLE_KEYS`), which the
    address and :func:`resolve_choice` read; each widget has its own key (:data:`WIDGET_OF`),
    set from the value before it is drawn and copied back when changed. Streamlit drops or
    resets the state of a widget that is off the page for a run (the switch closed, another
    page), never a plain key."""
    if not st.toggle("Colours & scale", key=STYLE_OPEN):
        return
    state = session_state()
    for key, widget in WIDGET_OF.items():
        state[widget] = state.get(key, DEFAULTS[key])
    with st.container(border=True):
        st.radio(
            "Scale",
            list(NORMS),
            key=WIDGET_OF["ov_norm"],
            format_func=SCALE_NAMES.__getitem__,
            on_change=_adopt,
            args=(state, "ov_norm"),
            help=" · ".join(f"{SCALE_NAMES[k]}: {v.description}" for k, v in SCALES.items()),
        )
        st.checkbox(
            "Each label its own range",
            key=WIDGET_OF["ov_per_label"],
            on_change=_adopt,
            args=(state, "ov_per_label"),
            help="Off: every label of the level shares one scale, so two maps can be compared. "
            "On: each label's colours span its own values (the percentile rank always does).",
        )
        st.selectbox(
            "Colours",
            list(CMAPS),
            key=WIDGET_OF["ov_cmap"],
            on_change=_adopt,
            args=(state, "ov_cmap"),
            help="viridis and magma are perceptually uniform; jet invents edges.",
        )
        st.slider(
            "Smoothing", 0.0, 3.0, key=WIDGET_OF["ov_smooth"], step=0.25, on_change=_adopt,
            args=(state, "ov_smooth"), help="Gaussian σ in patches",
        )  # fmt: skip
        if has_mask:
            st.checkbox(
                "Outline the lesion", key=WIDGET_OF["ov_gt"], on_change=_adopt,
                args=(state, "ov_gt"), help="the demo's ground-truth mask",
            )  # fmt: skip


def _slide_key(slide_file: Any, slide_roots: tuple[Any, ...], slide: Slide | None) -> str | None:
    """Register the slide file for the tile routes (None on the coordinate canvas)."""
    if slide is None or slide_file is None:
        return None
    try:
        return shared_registry().register_slide(slide_file, slide_roots, slide.dimensions)
    except (HMILError, OSError):
        return None


def _attention_key(identity: str, result: SlideResult, slide: Slide) -> str:
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
    return shared_registry().register_attention(identity, entry)


def identity(checkpoint: Any, bag: Any) -> str:
    """Names one prediction: the versions of its checkpoint and bag files."""
    return repr((cached_ui.signature(checkpoint), cached_ui.signature(bag)))


@dataclass(frozen=True)
class ViewContext:
    """What the view needs besides the prediction: which slide it is, the browse list, truth.

    Attributes:
        view_id: changes whenever another slide is shown (the view then drops the previous
            slide's label, pending clicks and tooltip).
        slide_file, slide_roots: the slide file and the roots it was admitted under.
        truth: the true label per level (None when unknown).
        nav: ``{has_prev, has_next}`` of the browse list, or None without one.
        mask_outline: the lesion outline in level-0 px (demo), or None.
        identity: the prediction's identity (:func:`identity`).
    """

    view_id: str
    slide_file: Any
    slide_roots: tuple[Any, ...]
    truth: dict[str, str] | None
    nav: dict[str, bool] | None
    mask_outline: list[list[float]] | None
    identity: str


def deepzoom_section(
    result: SlideResult | None,
    slide: Slide | None,
    reason: str,
    choice: OverlayChoice | None,
    cfg: ViewerSettings,
    context: ViewContext,
    regions: dict[str, Any] | None = None,
    on_region: Callable[[], None] | None = None,
) -> None:
    """The deep-zoom view with the attention layer (or the slide alone when ``result`` is
    None), and one line of slide facts.

    ``regions`` holds the data's ``regions``, ``draw`` and ``caption``
    (:func:`viewer.components.regions_ui.view_parts`; none drawn and drawing off when None);
    ``on_region`` runs when a region was drawn on the view."""
    if result is not None and result.coords is None:
        st.info("This bag has no patch coordinates: predictions only, no attention map.")
        return
    if slide is None and result is None:
        st.info(f"Nothing to show: {reason}")
        return
    note = ""
    if result is None:
        note = "Slide only — no bag was given, so there is no attention to overlay."
    elif slide is None:
        note = (
            f"No slide image ({reason}): the attention is drawn on a white canvas covering the "
            "patches' extent, in level-0 pixels."
        )
    canvas = rendering.canvas_for(slide, result)
    key = _slide_key(context.slide_file, context.slide_roots, slide)
    layer = None
    show: dict[str, Any]
    style = choice.style if choice is not None else cached_ui.style(**_default_style())
    strategy = cfg.overlay if key is not None else "canvas"
    if result is not None and choice is not None:
        layer = cached_ui.layer_part(result, choice.style, context.identity)
        if strategy == "tiles" and slide is not None:
            tiles = deepzoom_data.tile_layer_urls(
                result, _attention_key(context.identity, result, slide), choice.style
            )
            layer = {**layer, "tiles": tiles}
        show = deepzoom_data.show_part(
            choice.level, choice.label, "all" if choice.all_labels else "single", style,
            context.mask_outline if choice.gt_outline else None,
        )  # fmt: skip
    else:
        show = deepzoom_data.show_part("fine", "", "single", style, None)
    data = deepzoom_data.component_data(
        deepzoom_data.slide_part(key, slide),
        deepzoom_data.canvas_part(canvas),
        layer,
        show,
        strategy,
        patch_box=_patch_box(result),
        goto=st.session_state.get(slide_state.GOTO_KEY),
        view_id=context.view_id,
        truth=context.truth,
        nav=context.nav,
        viewport=st.session_state.get(VIEWPORT_KEY),
        note=note,
    )
    data.update(regions or _no_regions(context))
    state = session_state()
    deepzoom_element_ui.deepzoom_view(
        data,
        on_label=functools.partial(slide_state.on_label, state, deepzoom_element_ui.KEY),
        on_alpha=functools.partial(slide_state.on_alpha, state, deepzoom_element_ui.KEY),
        on_patch=functools.partial(slide_state.on_patch, state, deepzoom_element_ui.KEY),
        on_mode=functools.partial(slide_state.on_mode, state, deepzoom_element_ui.KEY),
        on_nav=functools.partial(slide_state.on_nav, state, deepzoom_element_ui.KEY),
        on_region=on_region,
    )
    st.caption(_facts(slide, canvas))


def _no_regions(context: ViewContext) -> dict[str, Any]:
    """The data's region fields where regions are not offered (no run open, a file alone)."""
    name = Path(str(context.slide_file)).stem if context.slide_file is not None else ""
    caption = {"slide_id": name, "label": "", "truth": "", "model": ""}
    draw = {"enabled": False, "classification": "", "colour": [127, 127, 127]}
    return {"regions": [], "draw": draw, "caption": caption}


def _default_style() -> dict[str, Any]:
    return {
        "cmap": str(DEFAULTS["ov_cmap"]),
        "alpha": float(DEFAULTS["ov_alpha"]),  # type: ignore[arg-type]  # a float entry
        "normalize": str(DEFAULTS["ov_norm"]),
        "smooth": 0.0,
        "per_label": False,
    }


def _facts(slide: Slide | None, canvas: Canvas) -> str:
    if slide is None:
        return f"white canvas {canvas.width:.0f} × {canvas.height:.0f} level-0 px (no slide image)"
    return slide_facts(
        slide.dimensions, slide.level_count, slide.mpp, slide.objective_power, slide.backend
    )


def _patch_box(result: SlideResult | None) -> tuple[float, float, float] | None:
    index = st.session_state.get("patch_pick")
    if result is None or result.coords is None:
        return None
    if index is None or not 0 <= int(index) < result.n_instances:
        return None
    x, y = result.coords[int(index)]
    return float(x), float(y), float(result.patch_size)


def patch_panel(result: SlideResult, slide: Slide | None, choice: OverlayChoice) -> None:
    """The inspected patch (clicked on the view or picked in the gallery): its crop, its
    attention under every coarse and fine label, and a button that zooms the view to it."""
    index = st.session_state.get("patch_pick")
    if index is None or result.coords is None or not 0 <= int(index) < result.n_instances:
        return
    index = int(index)
    x, y = (int(v) for v in result.coords[index])
    st.markdown(f"**Patch {index}** at ({x}, {y}) level-0 px, {result.patch_size} px")
    rows = patch_attention_rows(result, index)
    cols = st.columns([1, 2, 1.6])
    colour = rendering.normalized(result, choice.level, choice.label, choice.style)
    cols[0].image(
        cached_ui.patch_crop(slide, result, index, CROP_PX, colour, choice.style.cmap),
        caption=f"patch {index}",
    )
    current = f"{choice.level}/{choice.label}"
    cols[1].markdown(
        patch_bars.patch_bars_html(rows, TIMES_AVERAGE, current), unsafe_allow_html=True
    )
    cols[2].dataframe(
        pd.DataFrame(rows).round({"attention": 5, TIMES_AVERAGE: 2, "percentile": 1}),
        hide_index=True,
        key="patch_table",
    )
    cols[0].button(
        "Go to this patch",
        key="patch_goto",
        on_click=slide_state.go_to_patch,
        args=(st.session_state, float(x), float(y), float(result.patch_size)),
    )
