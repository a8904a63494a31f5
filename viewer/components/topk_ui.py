"""Top-k patches of the chosen label: crops with scores, and "inspect" to look at one closely.

Session-state keys: ``topk_k``, ``topk_inspect_<rank>`` (buttons) and ``patch_pick`` (shared
with the deep-zoom view, which sets it when a patch is clicked there).
"""

from __future__ import annotations

import streamlit as st

from hmil.heatmap import topk_indices
from hmil.slides.reader import Slide
from viewer.components import cached, rendering, slide_lookup
from viewer.components.choices import keep_choice, session_state
from viewer.components.deepzoom_ui import OverlayChoice
from viewer.components.inference import SlideResult

CROP_PX = 112
PER_ROW = 8
KEYS = ("topk_k", "patch_pick")


def _select_patch(index: int) -> None:
    st.session_state["patch_pick"] = int(index)


def topk_gallery(result: SlideResult, slide: Slide | None, choice: OverlayChoice) -> None:
    """The k patches with the highest attention for the chosen label, with their scores
    (raw and × uniform), and the "Inspect patch" box."""
    if result.coords is None:
        return
    state = session_state()
    state.setdefault("topk_k", 8)
    st.subheader(f"Top patches · {choice.level} · {choice.label}")
    k = int(st.slider("Patches", 1, min(32, result.n_instances), key="topk_k"))
    scores = result.scores(choice.level, choice.label)
    top = [int(i) for i in topk_indices(scores, k)]
    colour = rendering.normalized(result, choice.level, choice.label, choice.style.normalize)
    for start in range(0, len(top), PER_ROW):
        cols = st.columns(PER_ROW)
        for col, (rank, index) in zip(
            cols, list(enumerate(top))[start : start + PER_ROW], strict=False
        ):
            crop = cached.patch_crop(
                slide, result, index, CROP_PX, colour_values=colour, cmap=choice.style.cmap
            )
            col.image(
                crop,
                caption=f"#{rank + 1} · {scores[index]:.3g} "
                f"(×{scores[index] * result.n_instances:.1f})",
            )
            col.button("inspect", key=f"topk_inspect_{rank}", on_click=_select_patch, args=(index,))
    options = slide_lookup.inspect_options(top, state.get("patch_pick"), result.n_instances)
    keep_choice(state, "patch_pick", options, None)
    coords = result.coords.tolist()
    st.selectbox(
        "Inspect patch",
        options,
        key="patch_pick",
        format_func=lambda i: "(none)" if i is None else f"patch {i} at {tuple(coords[i])}",
        placeholder="pick a patch above (inspect), or click one on the view",
    )
