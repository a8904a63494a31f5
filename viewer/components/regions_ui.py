"""The slide page's regions: annotation polygons drawn on the view or imported from QuPath
GeoJSON, saved per run and slide in ``RUN/regions/<slide_id>.geojson`` (:mod:`hmil.regions`),
listed in a "Regions" expander under the review panel; the attention-vs-region table goes
under the view, where its columns fit.

Session keys: widgets ``rg_class`` (the class of new drawings), ``rg_all_labels`` (the table
shows every label), ``rg_upload_<n>`` (the GeoJSON upload; ``n`` = ``_rg_upload_n`` moves on
after each import so the box empties), ``rg_delete_<i>``, ``rg_download``, ``rg_stats``;
non-widget: ``_rg_for`` (the slide the class was chosen for), ``_rg_nonces`` (drawings already
received), ``_rg_message`` (the last change's one-line outcome).

Every write goes to the open run's ``regions/`` folder (the run was admitted under the data
roots when it was opened); nothing from the page names a path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from hmil import regions as lib
from hmil.errors import HMILError, RegionError
from hmil.geojson import colour_among
from viewer.components.shell_ui import session_state
from viewer.core import regions as core
from viewer.core import text
from viewer.core.inference import SlideResult

CLASS_KEY = "rg_class"
ALL_LABELS_KEY = "rg_all_labels"
UPLOAD_COUNTER = "_rg_upload_n"
FOR_KEY = "_rg_for"
NONCES_KEY = "_rg_nonces"
MESSAGE_KEY = "_rg_message"
#: the slide the last message was first shown on (it stays until another action or slide)
MESSAGE_FOR = "_rg_message_for"
#: how many received nonces are remembered (a replay is older than a handful of drawings)
KEEP_NONCES = 256
SWATCH_PX = 14


@dataclass(frozen=True)
class Target:
    """Where a slide's regions are kept and what they are checked against.

    Attributes:
        run: the open run (its ``regions/`` folder holds the files).
        slide_id: the slide.
        bounds: level-0 (width, height) of the slide, or None without a slide image (then
            nothing can be drawn or imported: a polygon cannot be checked against the slide).
        classes: the run hierarchy's class names (coarse and fine).
        options: the classes a new drawing may get (:func:`viewer.core.regions.class_options`).
        default: the class picked for new drawings until the visitor picks another.
    """

    run: Path
    slide_id: str
    bounds: tuple[int, int] | None
    classes: tuple[str, ...]
    options: tuple[str, ...]
    default: str


def target_for(
    run: Path | None,
    slide_id: str,
    result: SlideResult,
    dimensions: tuple[int, int] | None,
    true_fine: str | None,
) -> Target | None:
    """The regions target of the shown slide; None when no run is open (nowhere to save)."""
    if run is None:
        return None
    options = tuple(core.class_options(result.coarse, result.fine))
    return Target(
        run=run,
        slide_id=slide_id,
        bounds=dimensions,
        classes=tuple(dict.fromkeys((*result.coarse, *result.fine))),
        options=options,
        default=core.default_class(true_fine, options),
    )


def current_message(state: Any, slide_id: str) -> tuple[str, str] | None:
    """The last region action's line while its slide is shown. It is not dropped after one
    run: a drawing's save is followed at once by the view's own re-run, which used to wipe
    the "saved region N" line before anyone could read it."""
    message = state.get(MESSAGE_KEY)
    if message is None:
        return None
    if state.setdefault(MESSAGE_FOR, slide_id) != slide_id:
        state.pop(MESSAGE_KEY, None)
        state.pop(MESSAGE_FOR, None)
        return None
    kind, line = message
    return str(kind), str(line)


def _say(kind: str, message: str) -> None:
    state = session_state()
    state[MESSAGE_KEY] = (kind, message)
    state.pop(MESSAGE_FOR, None)


def load(target: Target) -> list[lib.Region]:
    """The slide's saved regions ([] when none; a file that cannot be read is reported once)."""
    try:
        return lib.load_regions(target.run, target.slide_id, target.classes)
    except RegionError as exc:
        _say("error", f"{exc.where}: {exc.problem}")
    except OSError as exc:
        _say("error", f"regions of {target.slide_id}: cannot read ({exc.strerror})")
    return []


def draw_class(target: Target) -> str:
    """The class new drawings get: the panel's choice, reset to the slide's default whenever
    another slide is shown."""
    state = session_state()
    if state.get(FOR_KEY) != target.slide_id or state.get(CLASS_KEY) not in target.options:
        state[FOR_KEY] = target.slide_id
        state[CLASS_KEY] = target.default
    return str(state[CLASS_KEY])


def colour_of(classification: str, classes: Sequence[str] = ()) -> tuple[int, int, int]:
    """The colour a region of ``classification`` is drawn in (as :attr:`Region.colour`, with
    the run's ``classes`` in palette order)."""
    return colour_among(classification, classes)


def view_parts(
    target: Target | None, regions: Sequence[lib.Region], caption: dict[str, str]
) -> dict[str, Any]:
    """``regions``, ``draw`` and ``caption`` of the view's data (drawing is offered only with
    an open run and a slide image to check the drawing against)."""
    if target is None:
        draw = core.draw_part(False, lib.UNCLASSIFIED, colour_of(lib.UNCLASSIFIED))
        return {"regions": [], "draw": draw, "caption": caption}
    cls = draw_class(target)
    draw = core.draw_part(target.bounds is not None, cls, colour_of(cls, target.classes))
    return {"regions": core.regions_part(regions), "draw": draw, "caption": caption}


def _save_new(target: Target, new: Sequence[lib.Region]) -> list[lib.Region]:
    if target.bounds is None:
        raise RegionError(target.slide_id, "no slide image: regions cannot be checked")
    return lib.add_regions(target.run, target.slide_id, new, target.classes)


def on_region(target: Target | None, component_key: str) -> None:
    """The view sent a drawing (trigger ``region``): check it, save it as ``region N`` with
    the panel's class, and say so in one line; a refused drawing changes nothing."""
    state = session_state()
    value = state.get(component_key)
    drawn = value.get("region") if isinstance(value, dict) else None
    if target is None:
        _say("error", f"{core.DRAWN}: open a run to save regions")
        return
    seen: list[str] = list(state.get(NONCES_KEY, []))
    try:
        drawing = core.read_drawing(drawn, set(seen))
        state[NONCES_KEY] = [*seen, drawing.nonce][-KEEP_NONCES:]
        if target.bounds is None:
            raise RegionError(core.DRAWN, "no slide image: the drawing cannot be checked")
        existing = lib.load_regions(target.run, target.slide_id, target.classes)
        region = core.checked_region(
            drawing, core.next_name(existing), draw_class(target), target.bounds, target.classes
        )
        saved = _save_new(target, [region])
    except RegionError as exc:
        _say("error", f"{exc.where}: {exc.problem}")
        return
    except OSError as exc:
        _say("error", f"{core.DRAWN}: cannot save ({exc.strerror})")
        return
    name = saved[-1].name if saved else region.name
    _say("ok", f"saved {name} ({core.class_text(region.classification)})")


def _import(target: Target, key: str) -> None:
    """A GeoJSON file was uploaded: refuse it over the size cap before reading it, parse it
    against the slide and the hierarchy, merge its regions into the saved ones."""
    state = session_state()
    upload = state.get(key)
    state[UPLOAD_COUNTER] = int(state.get(UPLOAD_COUNTER, 0)) + 1  # empty the box next run
    if upload is None:
        return
    name = text.plain(upload.name)
    try:
        if upload.size > lib.MAX_ANNOTATION_BYTES:
            raise RegionError(
                name, f"{upload.size} bytes (at most {lib.MAX_ANNOTATION_BYTES} bytes)"
            )
        new = lib.parse_annotations(
            upload.getvalue(), name, bounds=target.bounds, classes=target.classes
        )
        if not new:
            raise RegionError(name, "no annotation polygon in the file")
        _save_new(target, new)
    except RegionError as exc:
        _say("error", f"{exc.where}: {exc.problem}")
        return
    except OSError as exc:
        _say("error", f"{name}: cannot save ({exc.strerror})")
        return
    _say("ok", f"imported {len(new)} region(s) from {name}")


def _delete(target: Target, name: str) -> None:
    try:
        lib.remove_region(target.run, target.slide_id, name, target.classes)
    except RegionError as exc:
        _say("error", f"{exc.where}: {exc.problem}")
        return
    except OSError as exc:
        _say("error", f"{name}: cannot delete ({exc.strerror})")
        return
    _say("ok", f"deleted {name}")


def _swatch(colour: Sequence[int]) -> np.ndarray:
    """A ``(SWATCH_PX, SWATCH_PX, 3)`` uint8 square of ``colour``."""
    return np.full((SWATCH_PX, SWATCH_PX, 3), np.asarray(colour, dtype=np.uint8), dtype=np.uint8)


def _region_rows(target: Target, regions: Sequence[lib.Region]) -> None:
    for i, region in enumerate(regions):
        swatch, label, button = st.columns([1, 6, 2], vertical_alignment="center")
        swatch.image(_swatch(region.colour), width=SWATCH_PX)
        label.caption(text.markdown(f"{region.name} · {core.class_text(region.classification)}"))
        button.button(
            "", key=f"rg_delete_{i}", icon=":material/delete:", on_click=_delete,
            args=(target, region.name), help=f"Delete {text.plain(region.name)}",
        )  # fmt: skip


@st.cache_data(max_entries=32, show_spinner=False)
def _stats_frame(
    digest: str, identity: str, _regions: Sequence[lib.Region], _result: SlideResult
) -> pd.DataFrame:
    """:func:`hmil.regions.region_stats` once per version of the regions (``digest``) and
    prediction (``identity``): one ROC AUC per region and label costs about 13 ms (measured),
    and a label switch on the view re-runs the page."""
    assert _result.coords is not None
    return lib.region_stats(
        _regions,
        _result.coords,
        float(_result.patch_size),
        {"coarse": _result.attention_coarse, "fine": _result.attention_fine},
        {"coarse": list(_result.coarse), "fine": list(_result.fine)},
    )


def stats_section(
    regions: Sequence[lib.Region],
    result: SlideResult,
    level: str,
    label: str,
    truth: dict[str, str] | None,
    identity: str,
) -> None:
    """The attention-vs-region table under the view (where its six columns fit; the panel's
    column is a fifth of the page): per region, the label shown and the true label, or every
    label with the switch. Nothing when the slide has no region. ``identity`` names the
    prediction (:func:`viewer.components.deepzoom_ui.identity`), the table's cache key."""
    if not regions:
        return
    if result.coords is None:
        st.caption("The bag has no patch coordinates: no attention to compare with the regions.")
        return
    saved = json.dumps(lib.annotations_collection(regions), sort_keys=True).encode()
    try:
        frame = _stats_frame(hashlib.sha256(saved).hexdigest(), identity, regions, result)
    except HMILError as exc:  # attention that does not fit the patches: one line, no table
        st.caption(":material/warning: " + text.markdown(str(exc)))
        return
    head, switch = st.columns([3, 1], vertical_alignment="bottom")
    head.markdown("**Attention in the regions**")
    every = switch.toggle(
        "All labels", key=ALL_LABELS_KEY,
        help="Off: the label shown on the view and the slide's true label only.",
    )  # fmt: skip
    decimals = {name: st.column_config.NumberColumn(format="%.3f") for name in core.NUMBERS}
    st.dataframe(
        core.stats_table(frame, level, label, truth, every),
        hide_index=True,
        key="rg_stats",
        width="stretch",
        column_config=decimals,
    )
    st.caption(
        "mean attention: N × a averaged over the patches inside (1 = an average patch, "
        "empty: no patch centre inside); share: the region's part of the label's attention; "
        "AUROC: how well the label's attention ranks the patches inside above those outside "
        "(0.5 = no better than chance)."
    )


def regions_panel(target: Target, regions: Sequence[lib.Region]) -> None:
    """The "Regions" expander (open when the slide has regions): the list with delete
    buttons, the class of new drawings, the GeoJSON import and export (the table of attention
    inside each region is under the view: :func:`stats_section`)."""
    state = session_state()
    message = current_message(state, target.slide_id)
    title = f"Regions · {len(regions)}" if regions else "Regions"
    if message is not None:  # above the panel: seen even while it is closed
        kind, line = message
        (st.success if kind == "ok" else st.error)(text.markdown(line))
    with st.expander(title, expanded=bool(regions), icon=":material/shape_line:"):
        _region_rows(target, regions)
        draw_class(target)
        st.selectbox(
            "Class of new drawings", list(target.options), key=CLASS_KEY,
            format_func=lambda c: text.plain(core.class_text(c)),
            disabled=target.bounds is None,
        )  # fmt: skip
        if target.bounds is None:
            st.caption("No slide image: regions can be listed but not drawn or imported.")
        else:
            key = f"rg_upload_{int(state.get(UPLOAD_COUNTER, 0))}"
            st.file_uploader(
                "Import QuPath GeoJSON", type=["geojson", "json"], key=key,
                on_change=_import, args=(target, key),
                help="Annotations in level-0 pixels, classes of the run's hierarchy "
                f"(at most {lib.MAX_ANNOTATION_BYTES // 2**20} MiB).",
            )  # fmt: skip
        st.download_button(
            "Download GeoJSON (QuPath)",
            data=json.dumps(lib.annotations_collection(regions)) + "\n",
            file_name=f"{core.safe_file_stem(target.slide_id)}_regions.geojson",
            mime="application/geo+json",
            key="rg_download",
            on_click="ignore",
            disabled=not regions,
            icon=":material/download:",
            width="stretch",
        )
        if regions:
            st.caption("The attention inside each region: the table under the view.")
