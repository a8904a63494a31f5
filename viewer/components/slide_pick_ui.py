"""Choosing what the slide page shows: a slide of the run, an uploaded bag, or a slide file
alone; the browse list it steps through; the prediction summary (flags and probability bars).

Session-state keys: ``slide_source``, ``slide_pick``, ``browse_list``, ``slide_fold``
(+ ``slide_fold_for``), ``file_pick``, ``up_bag``, ``up_slide``, ``up_ckpt``,
``up_ckpt_path``, ``slide_mismatch_ok``, ``cohort_list`` (ids the cohort page listed, with
``cohort_list_title``); non-widget: ``open_slide`` (set by the cohort page), ``upload_dir``,
``up_saved`` (uploads kept across a switch of source: Streamlit forgets a file uploader that
is not drawn).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from hmil.errors import HMILError
from hmil.model_info import model_provenance
from hmil.slides.match import SlideFacts, SlideMatch, check_bag_on_slide
from hmil.slides.reader import Slide
from viewer.components import cached_ui, shell_ui
from viewer.components.shell_ui import session_state
from viewer.core import address, charts, runs, slide_lookup, slide_state, text
from viewer.core.choices import keep_choice
from viewer.core.inference import SlideResult, call_words
from viewer.core.paths import check_under_roots
from viewer.core.uploads import (
    UPLOAD_MAX_AGE_S,
    UPLOAD_PREFIX,
    display_stem,
    remove_stale_uploads,
    save_upload,
)
from viewer.state import ViewerSettings

SLIDE_UPLOAD_TYPES = ["svs", "tif", "tiff", "ndpi", "mrxs", "scn", "png", "jpg", "jpeg"]
KEYS = (
    "slide_source", "slide_pick", "browse_list", "slide_fold", "file_pick", "up_ckpt",
    "up_ckpt_path",
)  # fmt: skip
SOURCE_NAMES = {"run": "A slide of the run", "upload": "Upload a bag", "file": "A slide file alone"}


@dataclass(frozen=True)
class Picked:
    """The slide to show: its bag, the checkpoint, and optional slide file / truth / mask.

    ``slide_roots`` are the roots the slide file was admitted under (the data roots, or the
    session's upload folder); the tile routes check the file against them on every request.
    ``slide_name`` is the name the slide file goes by for the bag-on-slide check (an upload is
    saved under a content-hashed name but keeps the name the user gave it). ``browse`` is the
    list next / previous walk through (empty outside a run).
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
    slide_name: str | None = None
    allow_mismatch: bool = False
    browse: tuple[str, ...] = ()


def apply_open_request() -> None:
    """Consume ``open_slide`` (the cohort page's choice) before the widgets are drawn."""
    slide_id = st.session_state.pop("open_slide", None)
    if slide_id:
        st.session_state["slide_source"] = "run"
        st.session_state["slide_pick"] = slide_id


def pick_source(run: Path | None) -> str:
    """Where the slide comes from (in the sidebar)."""
    options = ["run", "upload", "file"] if run is not None else ["upload", "file"]
    keep_choice(session_state(), "slide_source", options)
    return str(st.radio("Show", options, key="slide_source", format_func=SOURCE_NAMES.__getitem__))


def pick_from_run(run: Path, cfg: ViewerSettings) -> Picked | None:
    """The slide picker over the run's labelled slides (truth and prediction in each option),
    the browse list it steps through, and the fold checkpoint."""
    info, _, table = cached_ui.run_tables(run, cfg.roots)
    if table.empty:
        st.info("This run has no labelled slides yet.")
        return None
    checkpoints = runs.run_checkpoints(run)
    if not checkpoints:
        st.info("No fold of this run has a checkpoint yet (training still starting?).")
        return None
    state = session_state()
    lists = dict(slide_lookup.BROWSE_LISTS)
    cohort_ids = list(state.get("cohort_list") or [])
    if not cohort_ids:
        lists.pop("cohort")
    else:
        lists["cohort"] = f"from the cohort page: {state.get('cohort_list_title', 'listed')}"
    keep_choice(state, "browse_list", list(lists), "all")
    ids = slide_lookup.browse_ids(table, str(state["browse_list"]), cohort_ids)
    if not ids:  # e.g. nothing misclassified: fall back to every slide
        ids = slide_lookup.browse_ids(table, "all")
    slide_state.apply_nav_request(state, ids)
    labels = {row["slide_id"]: runs.slide_option_label(row) for _, row in table.iterrows()}
    if state.get("slide_pick") not in labels:
        unknown = state.get("slide_pick")
        if unknown:
            state.setdefault(address.NOTES_KEY, []).append(f"no slide '{unknown}' in this run")
        state["slide_pick"] = ids[0]
    current = str(state["slide_pick"])
    options = ids if current in ids else [current, *ids]
    cols = st.columns([3.2, 1.4, 1.2])
    position = f"{options.index(current) + 1} of {len(options)}"
    slide_id = str(
        cols[0].selectbox(
            f"Slide ({position}) — type to search",
            options,
            key="slide_pick",
            format_func=lambda s: text.plain(labels.get(s, str(s))),
        )
    )
    cols[1].selectbox(
        "Step through",
        list(lists),
        key="browse_list",
        format_func=lists.__getitem__,
        help="The list that next / previous (keys n / p) walk through.",
    )
    row = table[table["slide_id"] == slide_id].iloc[0]
    folds = sorted(checkpoints)
    test_fold = int(row["fold"])
    if state.get("slide_fold_for") != slide_id:
        state["slide_fold"] = slide_lookup.default_fold(test_fold, folds)
        state["slide_fold_for"] = slide_id
    keep_choice(state, "slide_fold", folds, slide_lookup.default_fold(test_fold, folds))
    fold = int(
        cols[2].selectbox(
            "Model",
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
        allow_mismatch=bool(state.get(slide_state.MISMATCH_KEY, False)),
        browse=tuple(ids),
    )


def _upload_dir() -> Path:
    if "upload_dir" not in st.session_state:
        remove_stale_uploads(Path(tempfile.gettempdir()), UPLOAD_MAX_AGE_S)
        st.session_state["upload_dir"] = tempfile.mkdtemp(prefix=UPLOAD_PREFIX)
    return Path(st.session_state["upload_dir"])


def _kept_upload(kind: str, widget: Any, cfg: ViewerSettings) -> tuple[Path, str] | None:
    """The file of upload widget ``kind`` (``bag`` / ``slide``), saved in the session's folder;
    the one saved earlier when the widget is empty because the page showed another source
    (Streamlit forgets widgets that were not drawn)."""
    saved: dict[str, tuple[str, str]] = st.session_state.setdefault("up_saved", {})
    if widget is not None:
        path = save_upload(widget.getvalue(), widget.name, _upload_dir(), cfg.max_upload_mb)
        saved[kind] = (str(path), widget.name)
        st.session_state[f"_up_seen_{kind}"] = widget.file_id
        return path, str(widget.name)
    kept = saved.get(kind)
    if kept is None or not Path(kept[0]).is_file():
        return None
    return Path(kept[0]), kept[1]


def _forget_upload(kind: str) -> None:
    st.session_state.setdefault("up_saved", {}).pop(kind, None)


def pick_upload(cfg: ViewerSettings, known: list[Path]) -> Picked | None:
    """Upload a bag (+ optional slide) and choose a checkpoint to predict with (sidebar)."""
    limit = f"up to {cfg.max_upload_mb} MB"
    bag_up = st.file_uploader(
        f"Feature bag (.h5 / .pt, {limit})",
        type=["h5", "pt"],
        key="up_bag",
        max_upload_size=cfg.max_upload_mb,
        help="Kept in a private temporary folder of this session.",
    )
    slide_up = st.file_uploader(
        f"Slide (optional, {limit})",
        type=SLIDE_UPLOAD_TYPES,
        key="up_slide",
        max_upload_size=cfg.max_upload_mb,
        help=f"{', '.join(SLIDE_UPLOAD_TYPES)}. Without a slide the attention is drawn on a "
        "white canvas.",
    )
    try:
        bag = _kept_upload("bag", bag_up, cfg)
        slide = _kept_upload("slide", slide_up, cfg)
    except HMILError as exc:
        shell_ui.show_problem(exc)
        return None
    for kind, widget, kept in (("bag", bag_up, bag), ("slide", slide_up, slide)):
        if widget is None and kept is not None:
            cols = st.columns([3, 1])
            cols[0].caption(f"{kind}: {charts.escape_markdown(kept[1])} (uploaded earlier)")
            cols[1].button("✕", key=f"up_forget_{kind}", on_click=_forget_upload, args=(kind,),
                           help=f"forget this {kind}")  # fmt: skip
    checkpoint = _pick_checkpoint(cfg, known)
    if checkpoint is None:
        return None
    if bag is None:
        st.info("Upload a feature bag to predict it with the chosen checkpoint.")
        return None
    folder = _upload_dir()
    return Picked(
        slide_id=display_stem(bag[1]),
        bag=bag[0],
        checkpoint=checkpoint,
        slide_file=slide[0] if slide else None,
        mask_file=None,
        true_fine=None,
        true_coarse=None,
        slide_note="" if slide is not None else "no slide uploaded",
        slide_roots=(folder,),
        slide_name=slide[1] if slide else None,
        allow_mismatch=bool(st.session_state.get(slide_state.MISMATCH_KEY, False)),
    )


def _pick_checkpoint(cfg: ViewerSettings, known: list[Path]) -> Path | None:
    extra = [p for p in (cfg.checkpoint,) if p is not None]
    extra += [r for r in cfg.roots if r.name == "checkpoints" and r.is_dir()]
    options = [str(p) for p in runs.list_checkpoints(known, extra)]
    chosen = None
    if options:
        keep_choice(session_state(), "up_ckpt", options)
        names = slide_lookup.model_labels(options, cfg.roots)
        chosen = st.selectbox(
            "Model (checkpoint)", options, key="up_ckpt", format_func=names.__getitem__
        )
    typed = st.text_input(
        "…or checkpoint path", key="up_ckpt_path", placeholder="path/to/checkpoint.pt"
    )
    if typed.strip():
        try:
            path = check_under_roots(typed, cfg.roots)
        except HMILError as exc:
            shell_ui.show_problem(exc)
            return None
        if not path.is_file():
            st.error(f"{charts.escape_markdown(str(path))}: checkpoint not found")
            return None
        chosen = str(path)
    if chosen is None:
        st.info("No checkpoint found under the data roots; give a path.")
        return None
    return Path(chosen)


def pick_file(cfg: ViewerSettings) -> Path | None:
    """A slide file under the data roots to look at without a bag (sidebar)."""
    files = [str(p) for p in slide_lookup.slide_files(list(cfg.roots))]
    state = session_state()
    wanted = state.get("file_pick")
    if wanted and wanted not in files:
        try:
            path = check_under_roots(str(wanted), cfg.roots)
        except HMILError as exc:
            state.setdefault(address.NOTES_KEY, []).append(str(exc))
            path = None
        if path is not None and path.is_file():
            files.insert(0, str(path))
    if not files:
        st.info("No slide file under the data roots (`hmil view --data-root DIR`).")
        return None
    keep_choice(state, "file_pick", files)
    chosen = st.selectbox(
        "Slide file",
        files,
        key="file_pick",
        format_func=lambda p: slide_lookup.short_path(p, cfg.roots),
    )
    return Path(chosen)


def open_slide_for(
    picked: Picked, result: SlideResult
) -> tuple[Slide | None, str, SlideMatch | None]:
    """The slide handle, or None with the reason the white canvas is used instead; and what
    the bag-on-slide check compared (:func:`hmil.slides.match.check_bag_on_slide`: the same
    check as ``hmil heatmap``). A pair that does not match is not drawn unless the user says
    the slide file was renamed (``slide_mismatch_ok``)."""
    if picked.slide_file is None:
        return None, picked.slide_note, None
    try:
        slide = cached_ui.slide(check_under_roots(picked.slide_file, picked.slide_roots))
    except HMILError as exc:
        return None, f"cannot open the slide ({exc.problem})", None
    facts = SlideFacts.of(slide, picked.slide_name)
    try:
        match = check_bag_on_slide(result.bag_attrs, result.coords, facts, allow_mismatch=True)
    except HMILError as exc:  # coords that are not (N, 2) numbers
        return None, f"cannot check the bag against the slide ({exc.problem})", None
    if match.problem is not None and not picked.allow_mismatch:
        return None, "the bag does not belong to the slide given", match
    return slide, "", match


def prediction_flags(result: SlideResult, picked: Picked, run_synthetic: bool) -> None:
    """One line with the prediction and truth, and warnings: heads disagree, inconsistent
    levels, a SYNTHETIC-trained model on a slide that is not from its synthetic cohort, an
    encoder mismatch. Class names come from the run's hierarchy file: Markdown in them is
    shown as typed."""
    e = charts.escape_markdown
    fine, coarse, head = e(result.fine_pred), e(result.coarse_pred), e(result.coarse_head_pred)
    flags = []
    provenance = model_provenance(
        picked.checkpoint, cached_ui.predictor(picked.checkpoint).info, result.bag_attrs
    )
    if provenance.synthetic and not run_synthetic:
        flags.append(
            "**Model trained on SYNTHETIC slides** — it has never seen a real slide; its "
            "prediction and attention here demonstrate the software only."
        )
    if provenance.encoder_mismatch:
        flags.append(f"**Features from another encoder** — {e(provenance.encoder_mismatch)}")
    if not result.heads_agree:
        flags.append(
            f"**The two coarse answers disagree** — the coarse classifier predicts **{head}** "
            f"but the fine probabilities summed per coarse class give **{coarse}**."
        )
    if not result.consistent:
        flags.append(
            f"**Inconsistent prediction** — fine **{fine}** is not under coarse **{coarse}**."
        )
    for flag in flags:
        st.warning(flag, icon=":material/warning:")
    verdict = ""
    if picked.true_fine is not None:
        ok = picked.true_fine == result.fine_pred
        truth = f"**{e(picked.true_fine)}** ({e(picked.true_coarse or '')})"
        verdict = f" · truth {truth} " + ("✓" if ok else "✗ misclassified")
    st.markdown(f"Prediction: **{fine}** (fine) / **{coarse}** (coarse){verdict}")
    line = call_line(result)
    if line:
        st.markdown(line)
    if result.call is not None and result.call.limit_note():
        st.caption("No call: " + result.call.limit_note() + ".")
    st.caption(
        f"model: {e(provenance.display_name)} · encoder {e(result.encoder or 'unknown')} · "
        + probabilities_caption(result)
    )


def call_line(result: SlideResult) -> str:
    """``Call at 90 % coverage: **atypical — subtype uncertain**`` (Markdown, the label
    escaped); ``""`` for a checkpoint without a call."""
    call = result.call
    if call is None:
        return ""
    label = None if call.label is None else charts.escape_markdown(call.label)
    head, _, _ = call.sentence().partition(": ")
    return f"{head}: **{call_words(call.level, label)}**"


def probabilities_caption(result: SlideResult) -> str:
    """Which probabilities the page shows: calibrated with the checkpoint's temperatures
    (fitted on its validation slides), or raw (a checkpoint without calibration)."""
    if not result.calibrated:
        return "raw probabilities (the checkpoint has no calibration)"
    t_fine, t_coarse = result.temperatures
    return f"probabilities calibrated (T = {t_fine:.2f} fine, {t_coarse:.2f} coarse classifier)"


def prediction_bars(result: SlideResult, picked: Picked) -> None:
    """Probability bars per level (coarse from the fine probabilities, the coarse classifier,
    fine), the prediction in bold and the truth marked."""
    bars = [
        ("coarse (fine probabilities summed)", result.coarse, result.coarse_probs,
         picked.true_coarse),
        ("coarse classifier", result.coarse, result.coarse_head_probs, picked.true_coarse),
        ("fine", result.fine, result.fine_probs, picked.true_fine),
    ]  # fmt: skip
    levels = [
        (title, charts.probability_rows(names, probs, truth)) for title, names, probs, truth in bars
    ]
    st.markdown(charts.probability_html(levels), unsafe_allow_html=True)
