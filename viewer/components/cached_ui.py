"""Streamlit caches around the pure loaders: models, slides, predictions, run tables.

Keys include file signatures ``(path, mtime_ns, size)``, so a checkpoint rewritten by training or
a fold finishing on disk is picked up on the next rerun without clearing anything by hand. (A
parameter whose name starts with ``_`` is left out of Streamlit's cache key: the signatures are
therefore plain parameters, and only unhashable objects such as a prediction are ``_``-named.)

* ``st.cache_resource`` — objects shared by every session and not copied: the loaded model
  (:class:`hmil.predict.Predictor`, on the GPU when there is one) and open slide handles.
* ``st.cache_data`` — picklable results: per-slide predictions with attention, run tables,
  lesion outlines and the attention layer's bytes for the browser (bounded by
  ``max_entries``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import streamlit as st

from hmil.errors import SlideError
from hmil.heatmap import HeatmapStyle, Normalization
from hmil.slides.reader import Slide
from viewer.core import rendering, runs
from viewer.core.inference import SlideResult


def signature(path: Path | None) -> tuple[str, int, int] | None:
    """``(path, mtime_ns, size)`` of one file, or None when missing."""
    if path is None:
        return None
    sig = runs.file_signature([path])
    return sig[0] if sig else None


@st.cache_resource(max_entries=8, show_spinner=False)
def _predictor(path: str, sig: Any) -> Any:
    from hmil.predict import load_checkpoint

    return load_checkpoint(path, device="auto")


def predictor(path: Path) -> Any:
    """The model of a checkpoint (loaded once per file version)."""
    return _predictor(str(path), signature(path))


@st.cache_data(max_entries=64, show_spinner=False)
def _slide_result(ckpt: str, ckpt_sig: Any, bag: str, bag_sig: Any, slide_id: str) -> SlideResult:
    from viewer.core.inference import predict_slide

    return predict_slide(predictor(Path(ckpt)), Path(bag), slide_id=slide_id)


def slide_result(checkpoint: Path, bag: Path, slide_id: str | None = None) -> SlideResult:
    """Prediction + attention of one bag under one checkpoint (cached per file versions)."""
    sid = slide_id or bag.stem
    return _slide_result(str(checkpoint), signature(checkpoint), str(bag), signature(bag), sid)


def _slide(path: str) -> Slide:
    """The process's handle of ``path``, shared with the tile routes in a cache bounded in bytes
    (:func:`viewer.tiles.registry.cached_slide`), refused when its low zoom cannot be read
    within the viewer's bounds (:func:`viewer.tiles.sources.check_viewable`)."""
    from viewer.tiles.registry import cached_slide
    from viewer.tiles.sources import check_viewable

    handle = cached_slide(path)
    check_viewable(handle)
    return handle


def slide(path: Path) -> Slide:
    """An open slide handle shared across reruns and sessions (raises SlideError); a rewritten
    file gets a new one."""
    return _slide(str(path))


@st.cache_data(max_entries=32, show_spinner=False)
def _mask(path: str, sig: Any) -> np.ndarray:
    return rendering.load_mask(Path(path))


def mask(path: Path) -> np.ndarray:
    return _mask(str(path), signature(path))


@st.cache_data(max_entries=512, show_spinner=False)
def _slide_crop(path: str, sig: Any, x: float, y: float, size: float, px: int) -> np.ndarray:
    from hmil.slides.reader import Region
    from viewer.tiles.sources import read_bounded

    return read_bounded(slide(Path(path)), Region(x, y, size, size), (px, px))


def slide_crop(path: Path, x: float, y: float, size: float, px: int) -> np.ndarray:
    """``(px, px, 3)`` pixels of a level-0 square of a slide file, read once per file version
    (the top-k gallery and the inspected patch show the same crops on every rerun and to every
    visitor)."""
    return _slide_crop(str(path), signature(path), float(x), float(y), float(size), int(px))


def patch_crop(
    slide: Slide | None,
    result: SlideResult,
    index: int,
    px: int,
    colour_values: np.ndarray | None = None,
    cmap: str = "viridis",
) -> np.ndarray:
    """:func:`viewer.core.rendering.patch_crop`, with the slide pixels from :func:`slide_crop`
    (within the tile bounds; a patch whose pixels cannot be read within them is drawn as its
    swatch)."""
    if slide is None or result.coords is None:
        return rendering.patch_crop(slide, result, index, px, colour_values, cmap)
    x, y = (float(v) for v in result.coords[index])
    try:
        return slide_crop(slide.path, x, y, float(result.patch_size), px)
    except SlideError:
        return rendering.patch_crop(None, result, index, px, colour_values, cmap)


@st.cache_data(max_entries=32, show_spinner=False)
def _mask_outline(path: str, sig: Any, slide_width: int) -> list[list[float]]:
    m = mask(Path(path))
    return rendering.mask_outline(m, slide_width / m.shape[1])


def mask_outline(path: Path, slide_width: int) -> list[list[float]]:
    """The lesion mask's boundary as level-0 polylines (the mask covers the slide's width)."""
    return _mask_outline(str(path), signature(path), int(slide_width))


@st.cache_data(max_entries=32, show_spinner=False)
def _layer_part(_result: SlideResult, style: HeatmapStyle, identity: str) -> dict[str, Any]:
    from viewer.tiles.deepzoom_data import layer_part

    return layer_part(_result, style, identity)


def layer_part(result: SlideResult, style: HeatmapStyle, identity: str) -> dict[str, Any]:
    """The attention layer's bytes for the browser, once per prediction and scale
    (``identity`` names the prediction: checkpoint and bag versions; the colormap and opacity
    do not change the bytes)."""
    scale_only = HeatmapStyle(
        normalize=style.normalize, smooth=style.smooth, per_label=style.per_label
    )
    return _layer_part(result, scale_only, identity + result.slide_id)


@st.cache_data(max_entries=16, show_spinner=False, ttl=30)
def _run_tables(
    run: str, roots: tuple[Path, ...], sig: Any
) -> tuple[runs.RunInfo, pd.DataFrame, pd.DataFrame]:
    info = runs.load_run_info(Path(run), roots)
    predictions = runs.load_predictions(Path(run))
    return info, predictions, runs.slide_table(info, predictions, roots)


def run_tables(
    run: Path, roots: tuple[Path, ...]
) -> tuple[runs.RunInfo, pd.DataFrame, pd.DataFrame]:
    """``(info, stacked predictions, slide table)`` of a run, re-read when its files change;
    files the run's config names outside ``roots`` are not read (see :mod:`viewer.core.runs`)."""
    return _run_tables(str(run), roots, runs.file_signature(runs.run_files(run)))


@st.cache_data(max_entries=8, show_spinner=False, ttl=10)
def discover_runs(roots: tuple[Path, ...]) -> list[Path]:
    """Run directories under the data roots (re-scanned at most every 10 s)."""
    return runs.discover_runs(roots)


def style(
    cmap: str, alpha: float, normalize: str, smooth: float, per_label: bool = False
) -> HeatmapStyle:
    mode = cast(Normalization, normalize)  # a widget's str; HeatmapStyle refuses others
    return HeatmapStyle(cmap=cmap, alpha=alpha, normalize=mode, smooth=smooth, per_label=per_label)
