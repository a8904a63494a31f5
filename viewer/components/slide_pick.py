"""Choosing what the slide page shows: run slide or upload, fold checkpoint, and the
prediction summary (flags and probability bars).

Session-state keys: ``slide_source``, ``slide_search``, ``slide_pick``, ``slide_fold``
(+ ``slide_fold_for``), ``up_bag``, ``up_slide``, ``up_ckpt``, ``up_ckpt_path``; non-widget:
``open_slide`` (set by the cohort page or a link), ``upload_dir``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from hmil.errors import HMILError
from hmil.slides.reader import Slide
from viewer.components import cached, charts, runs, shell, slide_lookup
from viewer.components.choices import keep_choice, session_state
from viewer.components.inference import SlideResult
from viewer.components.paths import check_under_roots
from viewer.components.uploads import (
    UPLOAD_MAX_AGE_S,
    UPLOAD_PREFIX,
    remove_stale_uploads,
    save_upload,
)
from viewer.state import ViewerSettings

SLIDE_UPLOAD_TYPES = ["svs", "tif", "tiff", "ndpi", "mrxs", "scn", "png", "jpg", "jpeg"]
KEYS = ("slide_source", "slide_search", "slide_pick", "slide_fold", "up_ckpt", "up_ckpt_path")


@dataclass(frozen=True)
class Picked:
    """The slide to show: its bag, the checkpoint, and optional slide file / truth / mask.

    ``slide_roots`` are the roots the slide file was admitted under (the data roots, or the
    session's upload folder); the tile routes check the file against them on every request.
    """

    slide_id: str
    bag: Path
    checkpoint: Path
    slide_file: Path | None
    mask_file: Path | None
    true_fine: str | None
    true_coarse: str | None
    slide_note: str = ""
    slide_roots: tuple[Path, ...] = ()


def apply_open_request() -> None:
    """Consume ``open_slide`` (cohort page button or link) before the widgets are drawn."""
    slide_id = st.session_state.pop("open_slide", None)
    if slide_id:
        st.session_state["slide_source"] = "run"
        st.session_state["slide_search"] = ""
        st.session_state["slide_pick"] = slide_id


def pick_source(run: Path | None) -> str:
    options = ["run", "upload"] if run is not None else ["upload"]
    keep_choice(session_state(), "slide_source", options)
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
    ids = slide_lookup.matching_slides(labels, search)
    keep_choice(session_state(), "slide_pick", ids)
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
    state = session_state()
    if state.get("slide_fold_for") != slide_id:
        state["slide_fold"] = slide_lookup.default_fold(test_fold, folds)
        state["slide_fold_for"] = slide_id
    keep_choice(state, "slide_fold", folds, slide_lookup.default_fold(test_fold, folds))
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
    slide_file, note = slide_lookup.locate_slide(slide_id, folders, cfg.roots)
    return Picked(
        slide_id=slide_id,
        bag=check_under_roots(bag, cfg.roots),
        checkpoint=checkpoints[fold],
        slide_file=slide_file,
        mask_file=slide_lookup.locate_mask(slide_id, folders, cfg.roots),
        true_fine=str(row["true_fine"]),
        true_coarse=str(row["true_coarse"]),
        slide_note=note,
        slide_roots=tuple(cfg.roots),
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
        keep_choice(session_state(), "up_ckpt", options)
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
        slide_roots=(folder,),
    )


def open_slide_for(picked: Picked, result: SlideResult) -> tuple[Slide | None, str]:
    """The slide handle, or None with the reason the coordinate canvas is used instead."""
    if picked.slide_file is None:
        return None, picked.slide_note
    try:
        slide = cached.slide(check_under_roots(picked.slide_file, picked.slide_roots))
    except HMILError as exc:
        return None, f"cannot open the slide ({exc.problem})"
    problem = slide_lookup.coords_problem(result.coords, slide.dimensions)
    return (None, problem) if problem else (slide, "")


def prediction_flags(result: SlideResult, picked: Picked) -> None:
    """One line with the prediction and truth, and a warning when the heads disagree or the
    prediction is inconsistent across levels. Class names come from the run's hierarchy file:
    Markdown in them is shown as typed."""
    e = charts.escape_markdown
    fine, coarse, head = e(result.fine_pred), e(result.coarse_pred), e(result.coarse_head_pred)
    flags = []
    if not result.heads_agree:
        flags.append(
            f"**Heads disagree** — the coarse head predicts **{head}** but the "
            f"fine head summed per coarse class (Mᵀp_f) gives **{coarse}**."
        )
    if not result.consistent:
        flags.append(
            f"**Inconsistent prediction** — fine **{fine}** is not under coarse **{coarse}**."
        )
    for text in flags:
        st.warning(text, icon=":material/warning:")
    verdict = ""
    if picked.true_fine is not None:
        ok = picked.true_fine == result.fine_pred
        truth = f"**{e(picked.true_fine)}** ({e(picked.true_coarse or '')})"
        verdict = f" · truth {truth} " + ("✓" if ok else "✗")
    st.markdown(f"Prediction: **{fine}** (fine) / **{coarse}** (coarse){verdict}")


def prediction_bars(result: SlideResult, picked: Picked) -> None:
    """Probability bars per level (coarse Mᵀ p_f, coarse head, fine), the prediction in bold
    and the truth marked."""
    bars = [
        ("coarse (Mᵀ p_f)", result.coarse, result.coarse_probs, picked.true_coarse),
        ("coarse head", result.coarse, result.coarse_head_probs, picked.true_coarse),
        ("fine", result.fine, result.fine_probs, picked.true_fine),
    ]
    levels = [
        (title, charts.probability_rows(names, probs, truth)) for title, names, probs, truth in bars
    ]
    st.markdown(charts.probability_html(levels), unsafe_allow_html=True)
