"""Top-k patches of the chosen label: crops with scores, and "inspect" to look at one closely.

Session-state keys: ``topk_k``, ``topk_inspect`` (the rank chips, cleared once read) and
``patch_pick`` (shared with the deep-zoom view, which sets it when a patch is clicked there).
The crops are one image-list element and the ranks one chip row: the browser renders every
Streamlit element through React on each page load, and eight images plus eight buttons were
~0.1–0.2 s of a first render on 2 cores (measured).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from hmil.crops import topk_indices
from hmil.slides.reader import Slide
from viewer.components import cached_ui
from viewer.components.deepzoom_ui import OverlayChoice
from viewer.components.shell_ui import session_state
from viewer.core import charts, rendering, slide_lookup
from viewer.core.choices import keep_choice
from viewer.core.inference import SlideResult

CROP_PX = 112
KEYS = ("topk_k", "patch_pick")
INSPECT_KEY = "topk_inspect"


def inspect_rank(state: Any, top: list[int]) -> None:
    """Callback of the rank chips: inspect the chosen rank's patch, then clear the chips (they
    are a one-shot action; the "Inspect patch" box shows what is inspected)."""
    rank = state.get(INSPECT_KEY)
    if rank is not None and 0 <= int(rank) < len(top):
        state["patch_pick"] = int(top[int(rank)])
    state[INSPECT_KEY] = None


def topk_gallery(result: SlideResult, slide: Slide | None, choice: OverlayChoice) -> None:
    """The k patches with the highest attention for the chosen label, with their scores
    (raw and × uniform), and the "Inspect patch" box."""
    if result.coords is None:
        return
    state = session_state()
    state.setdefault("topk_k", 8)
    st.subheader(
        f"Top patches · {choice.level} · {charts.escape_markdown(choice.label)}", anchor=False
    )
    k = int(st.slider("Patches", 1, min(32, result.n_instances), key="topk_k"))
    scores = result.scores(choice.level, choice.label)
    top = [int(i) for i in topk_indices(scores, k)]
    colour = rendering.normalized(result, choice.level, choice.label, choice.style)
    crops = [
        cached_ui.patch_crop(slide, result, index, CROP_PX, colour_values=colour,
                          cmap=choice.style.cmap)
        for index in top
    ]  # fmt: skip
    captions = [
        f"#{rank + 1} · ×{scores[index] * result.n_instances:.1f} average ({scores[index]:.3g})"
        for rank, index in enumerate(top)
    ]
    st.image(crops, caption=captions, width=CROP_PX)
    st.pills(
        "Inspect",
        list(range(len(top))),
        format_func=lambda rank: f"#{rank + 1}",
        key=INSPECT_KEY,
        on_change=inspect_rank,
        args=(state, top),
    )
    options = slide_lookup.inspect_options(top, state.get("patch_pick"), result.n_instances)
    keep_choice(state, "patch_pick", options, None)
    coords = result.coords.tolist()
    st.selectbox(
        "Inspect patch",
        options,
        key="patch_pick",
        format_func=lambda i: "(none)" if i is None else f"patch {i} at {tuple(coords[i])}",
        placeholder="pick a rank above, or click a patch on the view",
    )
