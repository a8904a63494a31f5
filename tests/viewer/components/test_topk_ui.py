"""The top-k gallery: the k patches with the highest attention of the chosen label as crops with
their scores, rank chips that pick a patch to inspect (and clear themselves)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP_TIMEOUT

from hmil.train.runs import fold_paths
from viewer.components import topk_ui

pytestmark = pytest.mark.usefixtures("app_env")


def _page(checkpoint: str, bag: str) -> None:
    from pathlib import Path

    from hmil.overlay import HeatmapStyle
    from viewer.components import cached_ui, topk_ui
    from viewer.components.deepzoom_ui import OverlayChoice

    result = cached_ui.slide_result(Path(checkpoint), Path(bag))
    choice = OverlayChoice("fine", result.fine[0], all_labels=False, style=HeatmapStyle())
    topk_ui.topk_gallery(result, None, choice)


def test_inspect_rank_picks_the_ranked_patch_once() -> None:
    state: dict[str, object] = {topk_ui.INSPECT_KEY: 2}
    topk_ui.inspect_rank(state, [40, 7, 13])
    assert state == {topk_ui.INSPECT_KEY: None, "patch_pick": 13}
    topk_ui.inspect_rank(state, [40, 7, 13])  # cleared: nothing more happens
    assert state["patch_pick"] == 13
    state[topk_ui.INSPECT_KEY] = 5  # out of range
    topk_ui.inspect_rank(state, [40])
    assert state["patch_pick"] == 13


def test_gallery_shows_k_crops(viewer_root: Path) -> None:
    checkpoint = fold_paths(viewer_root / "run", 0).checkpoint
    bag = next(iter(sorted((viewer_root / "cohort" / "features").glob("*.h5"))))
    at = AppTest.from_function(_page, args=(str(checkpoint), str(bag)), default_timeout=APP_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value.startswith("Top patches · fine · ")
    assert at.slider(key="topk_k").value == 8
    (images,) = at.get("image")
    captions = [i.caption for i in images.proto.imgs]
    assert [c.split(" ")[0] for c in captions] == [f"#{r}" for r in range(1, 9)]
    at.slider(key="topk_k").set_value(3).run()
    (images,) = at.get("image")
    assert len(images.proto.imgs) == 3
    assert at.selectbox(key="patch_pick").value is None
