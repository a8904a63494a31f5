"""Sections of the slide page (Streamlit layout over the pure components).

Session-state keys (every widget has one): ``slide_source``, ``slide_search``, ``slide_pick``,
``slide_fold``, ``up_bag``, ``up_slide``, ``up_ckpt``, ``up_ckpt_path``, ``ov_level``,
``ov_label``, ``ov_mode``, ``ov_alpha``, ``ov_cmap``, ``ov_norm``, ``ov_smooth``, the viewport
keys of :mod:`viewer.components.slide_state`, ``topk_k``, ``patch_pick``; non-widget:
``open_slide`` (set by the cohort page or a link), ``upload_dir``.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import streamlit as st

from hmil.errors import HMILError
from hmil.heatmap import CMAPS, HeatmapStyle, topk_indices
from hmil.slides.reader import Region, Slide
from viewer.components import cached, charts, rendering, runs, shell, slide_state
from viewer.components import viewport as vpm
from viewer.components.inference import LEVELS, SlideResult, patch_attention_rows
from viewer.components.paths import check_under_roots, is_under
from viewer.components.uploads import (
    UPLOAD_MAX_AGE_S,
    UPLOAD_PREFIX,
    remove_stale_uploads,
    save_upload,
)
from viewer.components.viewport import Canvas
from viewer.state import ViewerSettings

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator

VIEW = vpm.DEFAULT_VIEW_SIZE
SMALL_VIEW = (360, 240)
THUMB_MAX = 320
CROP_PX = 112


def _state() -> MutableMapping[str, Any]:
    """The session state as slide_state's mapping (streamlit types its keys ``str | int``)."""
    return cast("MutableMapping[str, Any]", st.session_state)


SLIDE_UPLOAD_TYPES = ["svs", "tif", "tiff", "ndpi", "mrxs", "scn", "png", "jpg", "jpeg"]
PERSISTENT_KEYS = (
    "slide_source", "slide_search", "slide_pick", "slide_fold", "up_ckpt", "up_ckpt_path",
    "ov_level", "ov_label", "ov_mode", "ov_gt", "ov_alpha", "ov_cmap", "ov_norm", "ov_smooth",
    "vp_zoom", "vp_cx", "vp_cy", "topk_k", "patch_pick",
)  # fmt: skip


@dataclass(frozen=True)
class Picked:
    """The slide to show: its bag, the checkpoint, and optional slide file / truth / mask."""

    slide_id: str
    bag: Path
    checkpoint: Path
    slide_file: Path | None
    mask_file: Path | None
    true_fine: str | None
    true_coarse: str | None
    slide_note: str = ""


# ----------------------------------------------------------------------------- choosing


def apply_open_request() -> None:
    """Consume ``open_slide`` (cohort page button or link) before the widgets are drawn."""
    slide_id = st.session_state.pop("open_slide", None)
    if slide_id:
        st.session_state["slide_source"] = "run"
        st.session_state["slide_search"] = ""
        st.session_state["slide_pick"] = slide_id


def pick_source(run: Path | None) -> str:
    options = ["run", "upload"] if run is not None else ["upload"]
    if st.session_state.get("slide_source") not in options:
        st.session_state["slide_source"] = options[0]
    names = {"run": "Slide of the run", "upload": "Upload a bag"}
    return str(
        st.radio(
            "Source", options, key="slide_source", horizontal=True, format_func=names.__getitem__
        )
    )


def pick_from_run(run: Path, cfg: ViewerSettings) -> Picked | None:
    """Searchable slide picker over the run's labelled slides (truth and prediction shown)."""
    info, _, table = cached.run_tables(run, cfg.roots)
    if table.empty:
        st.info("This run has no labelled slides yet.")
        return None
    checkpoints = runs.run_checkpoints(run)
    if not checkpoints:
        st.info("No fold of this run has a checkpoint yet (training still starting?).")
        return None
    cols = st.columns([1, 3])
    search = cols[0].text_input(
        "Search", key="slide_search", placeholder="slide id or class", help="Filters the list."
    )
    labels = {row["slide_id"]: runs.slide_option_label(row) for _, row in table.iterrows()}
    ids = [sid for sid, text in labels.items() if search.lower() in text.lower()] or list(labels)
    if st.session_state.get("slide_pick") not in ids:
        st.session_state["slide_pick"] = ids[0]
    slide_id = str(
        cols[1].selectbox(
            f"Slide ({len(ids)} of {len(labels)})",
            ids,
            key="slide_pick",
            format_func=labels.__getitem__,
        )
    )
    row = table[table["slide_id"] == slide_id].iloc[0]
    folds = sorted(checkpoints)
    test_fold = int(row["fold"])
    if (
        st.session_state.get("slide_fold_for") != slide_id
        or st.session_state.get("slide_fold") not in folds
    ):
        st.session_state["slide_fold"] = test_fold if test_fold in folds else folds[0]
        st.session_state["slide_fold_for"] = slide_id
    fold = int(
        st.selectbox(
            "Model (fold checkpoint)",
            folds,
            key="slide_fold",
            format_func=lambda f: f"fold {f}" + (" (tested this slide)" if f == test_fold else ""),
            help="By default the fold whose test set holds the slide, so the prediction is "
            "out-of-sample.",
        )
    )
    bag = runs.find_bag_file(info, slide_id)
    if bag is None:
        st.error(f"{slide_id}: no bag file in {info.features}")
        return None
    folders = runs.cohort_dirs(info, cfg.data_roots)
    slide_file = runs.find_slide_file(slide_id, folders)
    note = ""
    if slide_file is None:
        note = "no slide file found beside the cohort (slides/<id>.*)"
    elif not is_under(slide_file, cfg.roots):
        note = f"slide file {slide_file} is outside the data roots"
        slide_file = None
    mask = runs.find_lesion_mask(slide_id, folders)
    if mask is not None and not is_under(mask, cfg.roots):
        mask = None
    return Picked(
        slide_id=slide_id,
        bag=check_under_roots(bag, cfg.roots),
        checkpoint=checkpoints[fold],
        slide_file=slide_file,
        mask_file=mask,
        true_fine=str(row["true_fine"]),
        true_coarse=str(row["true_coarse"]),
        slide_note=note,
    )


def _upload_dir() -> Path:
    if "upload_dir" not in st.session_state:
        remove_stale_uploads(Path(tempfile.gettempdir()), UPLOAD_MAX_AGE_S)
        st.session_state["upload_dir"] = tempfile.mkdtemp(prefix=UPLOAD_PREFIX)
    return Path(st.session_state["upload_dir"])


def pick_upload(cfg: ViewerSettings, known: list[Path]) -> Picked | None:
    """Upload a bag (+ optional slide) and choose a checkpoint to predict with."""
    st.caption(f"Uploads up to {cfg.max_upload_mb} MB each; kept in a private temporary folder.")
    cols = st.columns(2)
    bag_up = cols[0].file_uploader(
        "Feature bag (.h5 / .pt)",
        type=["h5", "pt"],
        key="up_bag",
        max_upload_size=cfg.max_upload_mb,
    )
    slide_up = cols[1].file_uploader(
        "Slide (optional)",
        type=SLIDE_UPLOAD_TYPES,
        key="up_slide",
        max_upload_size=cfg.max_upload_mb,
    )
    extra = [p for p in (cfg.checkpoint,) if p is not None]
    extra += [r for r in cfg.roots if r.name == "checkpoints" and r.is_dir()]
    options = [str(p) for p in runs.list_checkpoints(known, extra)]
    cols = st.columns(2)
    chosen = None
    if options:
        if st.session_state.get("up_ckpt") not in options:
            st.session_state["up_ckpt"] = options[0]
        chosen = cols[0].selectbox("Checkpoint", options, key="up_ckpt")
    typed = cols[1].text_input(
        "…or checkpoint path", key="up_ckpt_path", placeholder="path/to/checkpoint.pt"
    )
    if typed.strip():
        try:
            path = check_under_roots(typed, cfg.roots)
        except HMILError as exc:
            shell.show_problem(exc)
            return None
        if not path.is_file():
            st.error(f"{path}: checkpoint not found")
            return None
        chosen = str(path)
    if chosen is None:
        st.info("No checkpoint found under the data roots; give a path.")
        return None
    if bag_up is None:
        st.info("Upload a feature bag to predict it with the chosen checkpoint.")
        return None
    try:
        folder = _upload_dir()
        bag = save_upload(bag_up.getvalue(), bag_up.name, folder, cfg.max_upload_mb)
        slide_file = None
        if slide_up is not None:
            slide_file = save_upload(slide_up.getvalue(), slide_up.name, folder, cfg.max_upload_mb)
    except HMILError as exc:
        shell.show_problem(exc)
        return None
    return Picked(
        slide_id=Path(bag_up.name).stem,
        bag=bag,
        checkpoint=Path(chosen),
        slide_file=slide_file,
        mask_file=None,
        true_fine=None,
        true_coarse=None,
        slide_note="" if slide_file is not None else "no slide uploaded",
    )


# ----------------------------------------------------------------------------- prediction


def open_slide_for(picked: Picked, result: SlideResult) -> tuple[Slide | None, str]:
    """The slide handle, or None with the reason the coordinate canvas is used instead."""
    if picked.slide_file is None:
        return None, picked.slide_note
    try:
        slide = cached.slide(picked.slide_file)
    except HMILError as exc:
        return None, f"cannot open the slide ({exc.problem})"
    if result.coords is not None:
        w, h = slide.dimensions
        cmax = result.coords.max(axis=0)
        if cmax[0] >= w or cmax[1] >= h or result.coords.min() < 0:
            return None, f"the bag's coordinates reach {tuple(cmax)} beyond the {w}×{h} slide"
    return slide, ""


def prediction_flags(result: SlideResult, picked: Picked) -> None:
    """One line with the prediction and truth, and a warning when the heads disagree or the
    prediction is inconsistent across levels."""
    flags = []
    if not result.heads_agree:
        flags.append(
            f"**Heads disagree** — the coarse head predicts **{result.coarse_head_pred}** but the "
            f"fine head summed per coarse class (Mᵀp_f) gives **{result.coarse_pred}**."
        )
    if not result.consistent:
        flags.append(
            f"**Inconsistent prediction** — fine **{result.fine_pred}** is not under coarse "
            f"**{result.coarse_pred}**."
        )
    for text in flags:
        st.warning(text, icon=":material/warning:")
    verdict = ""
    if picked.true_fine is not None:
        ok = picked.true_fine == result.fine_pred
        verdict = f" · truth **{picked.true_fine}** ({picked.true_coarse}) " + ("✓" if ok else "✗")
    st.markdown(
        f"Prediction: **{result.fine_pred}** (fine) / **{result.coarse_pred}** (coarse){verdict}"
    )


def prediction_bars(result: SlideResult, picked: Picked) -> None:
    """Probability bars per level (coarse Mᵀ p_f, coarse head, fine), truth outlined."""
    bars = [
        ("bars_coarse", result.coarse, result.coarse_probs, picked.true_coarse, "coarse (Mᵀ p_f)"),
        ("bars_coarse_head", result.coarse, result.coarse_head_probs, picked.true_coarse,
         "coarse head"),
        ("bars_fine", result.fine, result.fine_probs, picked.true_fine, "fine"),
    ]  # fmt: skip
    for key, names, probs, truth, title in bars:
        st.plotly_chart(
            charts.probability_bars(names, probs, truth, title),
            key=key,
            config={"displayModeBar": False},
        )


# ----------------------------------------------------------------------------- overlay


@dataclass(frozen=True)
class OverlayChoice:
    level: str
    label: str
    all_labels: bool
    style: HeatmapStyle
    gt_outline: bool = False


def overlay_controls(result: SlideResult, has_mask: bool) -> OverlayChoice:
    """Level, label (or all labels), opacity, colormap, normalisation, smoothing, and the
    ground-truth outline when the slide has a lesion mask."""
    state = st.session_state
    state.setdefault("ov_level", "fine")
    state.setdefault("ov_mode", "single")
    state.setdefault("ov_alpha", 0.4)
    state.setdefault("ov_cmap", "jet")
    state.setdefault("ov_norm", "percentile")
    state.setdefault("ov_smooth", 0.0)
    state.setdefault("ov_gt", True)
    cols: Sequence[DeltaGenerator] = st.columns(
        [1.2, 1.4, 1.5, 1.1] if has_mask else [1.2, 1.4, 1.5]
    )
    level = str(cols[0].radio("Level", list(LEVELS), key="ov_level", horizontal=True))
    gt = has_mask and bool(
        cols[3].checkbox("Outline lesion", key="ov_gt", help="ground-truth lesion mask (demo)")
    )
    names = list(result.names(level))
    if state.get("ov_label") not in names:
        state["ov_label"] = result.coarse_pred if level == "coarse" else result.fine_pred
    label = str(cols[1].selectbox("Label", names, key="ov_label"))
    mode = cols[2].radio(
        "Show",
        ["single", "all"],
        key="ov_mode",
        horizontal=True,
        format_func={"single": "one label", "all": f"all {level} labels"}.__getitem__,
    )
    cols = st.columns(4)
    alpha = float(cols[0].slider("Opacity", 0.0, 1.0, key="ov_alpha", step=0.05))
    cmap = str(cols[1].selectbox("Colormap", list(CMAPS), key="ov_cmap"))
    norm = str(
        cols[2].radio(
            "Normalise",
            ["percentile", "raw"],
            key="ov_norm",
            horizontal=True,
            help="percentile: rank among the slide's patches; raw: min–max of the attention.",
        )
    )
    smooth = float(
        cols[3].slider("Smoothing", 0.0, 3.0, key="ov_smooth", step=0.25, help="σ in patches")
    )
    return OverlayChoice(
        level, label, mode == "all", cached.style(cmap, alpha, norm, smooth), gt_outline=gt
    )


@dataclass(frozen=True)
class View:
    """The current viewport of the slide page (level-0 canvas, viewport, visible region)."""

    canvas: Canvas
    vp: vpm.Viewport
    region: Region
    downsample: float
    base_path: Path | None


def prepare_view(picked: Picked, result: SlideResult, slide: Slide | None) -> View | None:
    """Sync the viewport state with the slide (reset for a new one); None without coords."""
    if result.coords is None:
        return None
    state = _state()
    canvas = rendering.canvas_for(slide, result)
    source_key = str(picked.slide_file or picked.bag)
    slide_state.ensure(state, slide_state.canvas_key(source_key, canvas), canvas)
    vp = slide_state.read(state, canvas, VIEW)
    slide_state.write(state, vp)
    return View(
        canvas=canvas,
        vp=vp,
        region=vpm.region(canvas, vp, VIEW),
        downsample=vpm.downsample(canvas, VIEW, vp.zoom),
        base_path=picked.slide_file if slide is not None else None,
    )


def main_view(
    view: View | None,
    picked: Picked,
    result: SlideResult,
    slide: Slide | None,
    reason: str,
    choice: OverlayChoice,
) -> None:
    """The viewport render (or small multiples of every label), navigation and zoom info."""
    if view is None:
        st.info("This bag has no patch coordinates: predictions only, no attention map.")
        return
    if slide is None:
        st.info(
            f"**No slide image** ({reason}): the attention is drawn on a coordinate canvas — a "
            "white background covering the patches' extent, in level-0 pixels.",
            icon=":material/grid_on:",
        )
    if choice.all_labels:
        _small_multiples(view, picked, result, slide, choice)
    else:
        base = cached.base_image(view.base_path, view.region, VIEW)
        image = rendering.overlay(
            base, result, choice.level, choice.label, choice.style, view.region
        )
        image = rendering.shade_outside(image, view.canvas, view.region)
        image = _outline_truth(image, picked, slide, choice, view.region)
        image = _mark_patch(image, result, view.region)
        st.image(
            image,
            caption=f"{choice.level} · {choice.label} — attention over "
            f"{'the slide' if slide else 'the coordinate canvas'}",
            output_format="JPEG",
        )
    _navigation(view.canvas)
    ds = view.downsample
    power = slide.objective_power if slide else None
    mpp = slide.mpp if slide else None
    text = vpm.magnification_text(ds, power, mpp)
    if slide is not None:
        level_used = slide.get_best_level_for_downsample(ds)
        text += f" · read from level {level_used} of {slide.level_count}"
    r = view.region
    st.caption(
        f"Zoom {view.vp.zoom}/{vpm.max_zoom(view.canvas, VIEW)} · {text} · centre "
        f"({view.vp.cx:.0f}, {view.vp.cy:.0f}) · view {r.w:.0f}×{r.h:.0f} level-0 px"
    )


def side_panel(
    view: View | None,
    picked: Picked,
    result: SlideResult,
    slide: Slide | None,
    choice: OverlayChoice,
) -> None:
    """Clickable overview with the viewport outlined, and the ground truth when known."""
    if view is None:
        return
    _thumbnail(picked, result, slide, view, choice)
    _ground_truth(picked, slide, view.region)


def _mark_patch(image: np.ndarray, result: SlideResult, region: Region) -> np.ndarray:
    """Outline the inspected patch (``patch_pick``) on the view when it is visible."""
    index = st.session_state.get("patch_pick")
    if index is None or result.coords is None or not 0 <= int(index) < result.n_instances:
        return image
    x, y = result.coords[int(index)]
    patch = Region(float(x), float(y), float(result.patch_size), float(result.patch_size))
    frame = Canvas(region.x, region.y, region.w, region.h)
    return rendering.draw_box(image, frame, patch, width=3)


def _outline_truth(
    image: np.ndarray, picked: Picked, slide: Slide | None, choice: OverlayChoice, region: Region
) -> np.ndarray:
    """Draw the ground-truth lesion outline on a view when asked and available."""
    if not choice.gt_outline or picked.mask_file is None or slide is None:
        return image
    mask = cached.mask(picked.mask_file)
    return rendering.outline_mask(image, mask, slide.dimensions[0] / mask.shape[1], region)


def _small_multiples(
    view: View, picked: Picked, result: SlideResult, slide: Slide | None, choice: OverlayChoice
) -> None:
    names = result.names(choice.level)
    base = cached.base_image(view.base_path, view.region, SMALL_VIEW)
    per_row = 3
    for start in range(0, len(names), per_row):
        cols = st.columns(per_row)
        for col, name in zip(cols, names[start : start + per_row], strict=False):
            image = rendering.overlay(base, result, choice.level, name, choice.style, view.region)
            image = rendering.shade_outside(image, view.canvas, view.region)
            image = _outline_truth(image, picked, slide, choice, view.region)
            col.image(image, caption=f"{choice.level} · {name}", output_format="JPEG")


def _navigation(canvas: Canvas) -> None:
    state = st.session_state
    buttons: list[tuple[str, str, str, Callable[..., None], tuple[Any, ...]]] = [
        ("zoom in", ":material/zoom_in:", "nav_in", slide_state.zoom, (canvas, VIEW, 1)),
        ("zoom out", ":material/zoom_out:", "nav_out", slide_state.zoom, (canvas, VIEW, -1)),
        ("", ":material/arrow_back:", "nav_left", slide_state.pan, (canvas, VIEW, -0.5, 0.0)),
        ("", ":material/arrow_forward:", "nav_right", slide_state.pan, (canvas, VIEW, 0.5, 0.0)),
        ("", ":material/arrow_upward:", "nav_up", slide_state.pan, (canvas, VIEW, 0.0, -0.5)),
        ("", ":material/arrow_downward:", "nav_down", slide_state.pan, (canvas, VIEW, 0.0, 0.5)),
        ("fit", ":material/fit_screen:", "nav_fit", slide_state.reset, (canvas, VIEW)),
    ]
    helps = {"nav_left": "pan left", "nav_right": "pan right", "nav_up": "pan up"}
    helps["nav_down"] = "pan down"
    cols = st.columns([1.3, 1.3, 1, 1, 1, 1, 1])
    for col, (text, icon, key, fn, args) in zip(cols, buttons, strict=True):
        col.button(
            text,
            icon=icon,
            key=key,
            on_click=fn,
            args=(state, *args),
            help=helps.get(key),
            use_container_width=True,
        )
    cols = st.columns([1, 2, 2])
    cols[0].slider("Zoom step", 0, max(1, vpm.max_zoom(canvas, VIEW)), key="vp_zoom")
    x0, y0 = int(canvas.x0), int(canvas.y0)
    cols[1].slider("Centre x (level-0 px)", x0, x0 + max(1, int(canvas.width)), key="vp_cx")
    cols[2].slider("Centre y (level-0 px)", y0, y0 + max(1, int(canvas.height)), key="vp_cy")


def _thumbnail(
    picked: Picked, result: SlideResult, slide: Slide | None, view: View, choice: OverlayChoice
) -> None:
    canvas = view.canvas
    size = rendering.thumbnail_size(canvas, THUMB_MAX)
    if view.base_path is not None:
        base = cached.thumbnail(view.base_path, size)
    else:
        base = rendering.base_image(None, canvas.region, size)
    thumb = rendering.overlay(base, result, choice.level, choice.label, choice.style, canvas.region)
    thumb = rendering.draw_box(thumb, canvas, view.region)
    st.markdown("**Overview** — click to centre")
    try:
        from streamlit_image_coordinates import streamlit_image_coordinates
    except ImportError:  # optional: navigation then uses the buttons and sliders only
        st.image(thumb)
        return
    streamlit_image_coordinates(
        thumb,
        key="thumb_click",
        use_column_width="always",
        image_format="JPEG",
        jpeg_quality=85,
        on_click=functools.partial(
            slide_state.thumbnail_click, _state(), canvas, VIEW, "thumb_click"
        ),
        cursor="crosshair",
    )


def _ground_truth(picked: Picked, slide: Slide | None, region: Region) -> None:
    if picked.mask_file is None or slide is None:
        return
    mask = cached.mask(picked.mask_file)
    scale = slide.dimensions[0] / mask.shape[1]
    size = (VIEW[0] // 2, VIEW[1] // 2)
    base = cached.base_image(picked.slide_file, region, size)
    st.markdown("**Ground truth** (planted lesion, synthetic demo)")
    st.image(
        rendering.mask_view(base, mask, scale, region),
        caption="green: lesion mask, same view",
        output_format="JPEG",
    )


# ----------------------------------------------------------------------------- top-k


def _select_patch(index: int) -> None:
    st.session_state["patch_pick"] = int(index)


def topk_gallery(
    picked: Picked, result: SlideResult, slide: Slide | None, choice: OverlayChoice
) -> None:
    """The k patches with the highest attention for the chosen label, with scores; a picked
    patch shows its attention under every label and can be zoomed to."""
    if result.coords is None:
        return
    state = st.session_state
    state.setdefault("topk_k", 8)
    st.subheader(f"Top patches · {choice.level} · {choice.label}")
    k = int(st.slider("Patches", 1, min(32, result.n_instances), key="topk_k"))
    scores = result.scores(choice.level, choice.label)
    top = [int(i) for i in topk_indices(scores, k)]
    colour = rendering.normalized(result, choice.level, choice.label, choice.style.normalize)
    per_row = 8
    for start in range(0, len(top), per_row):
        cols = st.columns(per_row)
        for col, (rank, index) in zip(
            cols, list(enumerate(top))[start : start + per_row], strict=False
        ):
            crop = rendering.patch_crop(
                slide, result, index, CROP_PX, colour_values=colour, cmap=choice.style.cmap
            )
            col.image(
                crop,
                caption=f"#{rank + 1} · {scores[index]:.3g} "
                f"(×{scores[index] * result.n_instances:.1f})",
            )
            col.button("inspect", key=f"topk_inspect_{rank}", on_click=_select_patch, args=(index,))
    options = [None, *top]
    current = state.get("patch_pick")
    if current is not None and current not in options:
        options.append(int(current))
    if state.get("patch_pick") not in options:
        state["patch_pick"] = None
    x_of = {i: tuple(int(v) for v in result.coords[i]) for i in options if i is not None}
    picked_index = st.selectbox(
        "Inspect patch",
        options,
        key="patch_pick",
        format_func=lambda i: "(none)" if i is None else f"patch {i} at {x_of[i]}",
        placeholder="pick a patch above (inspect) or here",
    )
    if picked_index is None:
        return
    rows = pd.DataFrame(patch_attention_rows(result, int(picked_index)))
    cols = st.columns([2, 1])
    cols[0].plotly_chart(
        charts.patch_attention_figure(rows, f"patch {picked_index}: attention under every label"),
        key="patch_attention",
        config={"displayModeBar": False},
    )
    cols[1].dataframe(
        rows.round({"attention": 5, "x_uniform": 2, "percentile": 1}),
        hide_index=True,
        key="patch_table",
    )
    canvas = rendering.canvas_for(slide, result)
    x, y = (float(v) for v in result.coords[int(picked_index)])
    cols[1].button(
        "Go to this patch",
        key="patch_goto",
        on_click=slide_state.go_to_patch,
        args=(state, canvas, VIEW, x, y, float(result.patch_size)),
    )
