"""Bounded fuzzing (issue 16): slide files with random bytes flipped, bags whose ``.h5`` shape
claims more than they store, and random label/split tables. Each loader must either work or
raise its own error class naming the file — never another exception, never a long hang or a
huge allocation. Example counts keep the whole module under ~60 s on 2 CPU cores (the
hypothesis database replays earlier failures first)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hmil.data.bags import load_bag
from hmil.data.labels import read_labels
from hmil.data.splits import read_split
from hmil.demo.tiff import aperio_description, write_pyramid_tiff
from hmil.errors import BagError, LabelError, SlideError, SplitError
from hmil.hierarchy import Hierarchy
from hmil.slides.reader import Region, open_slide

FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _small_tiff(path: Path) -> bytes:
    """A 2-level JPEG pyramid TIFF of 128 × 96 (SYNTHETIC pixels), as bytes."""
    rng = np.random.default_rng(0)
    level0 = rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
    levels = [level0, level0[::4, ::4].copy()]
    desc = aperio_description(128, 96, 32, 80, 0.5, 20.0, "SYNTHETIC fuzz slide")
    write_pyramid_tiff(path, levels, mpp=0.5, description=desc, tile=32)
    return path.read_bytes()


with tempfile.TemporaryDirectory() as _tmp:
    TIFF = _small_tiff(Path(_tmp) / "seed.tiff")


def _read_everything(path: Path) -> None:
    try:
        slide = open_slide(path)
    except SlideError as exc:
        assert str(path) in str(exc)
        return
    with slide:
        w, h = slide.dimensions
        assert w > 0 and h > 0
        for level in range(slide.level_count):
            lw, lh = slide.level_dimensions[level]
            assert lw > 0 and lh > 0
        try:
            rgb = slide.read_rect(Region(0, 0, w, h), (16, 12))
        except SlideError as exc:
            assert str(path) in str(exc)
            return
        assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8


@settings(FUZZ, max_examples=200)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(TIFF) - 1), st.integers(1, 255)), min_size=1, max_size=8
    ),
    cut=st.none() | st.integers(8, len(TIFF)),
    suffix=st.sampled_from([".tiff", ".svs"]),
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Corrupt EXIF data"
def test_a_tiff_with_flipped_bytes_opens_or_is_refused(flips, cut, suffix) -> None:
    data = bytearray(TIFF)
    for index, mask in flips:
        data[index] ^= mask
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"slide{suffix}"
        path.write_bytes(bytes(data[:cut]))
        _read_everything(path)


@settings(FUZZ, max_examples=150)
@given(
    rows=st.integers(0, 10**12),
    dim=st.integers(0, 10**6),
    written=st.integers(0, 64),
    compressed=st.booleans(),
)
def test_an_h5_shape_claim_is_checked_before_allocating(rows, dim, written, compressed) -> None:
    """Whatever a file claims, loading it takes well under a second and allocates at most
    what the file can hold."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bag.h5"
        chunk = (max(1, min(rows, 64)), max(1, min(dim, 64)))
        with h5py.File(path, "w") as f:
            dset = f.create_dataset(
                "features", shape=(rows, dim), dtype="f4", chunks=chunk if rows and dim else None,
                compression="gzip" if compressed and rows and dim else None,
            )  # fmt: skip
            n = min(written, rows)
            if n and dim:
                dset[:n, : min(dim, 64)] = 1.0
        start = time.perf_counter()
        try:
            bag = load_bag(path)
        except BagError as exc:
            assert str(path) in str(exc)
        else:
            assert bag.features.numel() * 4 <= max(path.stat().st_size * 1100, 1 << 20)
        assert time.perf_counter() - start < 5.0


_cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6) | st.sampled_from(
    ["N", "IC", "yes", "no", "", " ", "synth-1", "0", "NaN"]
)


def _csv(rows: list[list[str]]) -> str:
    return "\n".join(",".join(row) for row in rows) + "\n"


@FUZZ
@example(header=["label", "slide_id", "slide_id"], body=[["", "", "0", ""], ["", ""]], raw=None)
@given(
    header=st.lists(st.sampled_from(["slide_id", "label", "case_id", "x", ""]), max_size=4),
    body=st.lists(st.lists(_cell, min_size=0, max_size=4), max_size=8),
    raw=st.none() | st.binary(max_size=200),
)
def test_a_label_table_reads_or_is_refused(header, body, raw) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(_csv([header, *body]), encoding="utf-8")
        for hierarchy in (None, Hierarchy.preset("bracs")):
            try:
                table = read_labels(path, hierarchy)
            except LabelError as exc:
                assert str(path) in str(exc)
                continue
            assert table["slide_id"].is_unique and (table["slide_id"] != "").all()


@FUZZ
@given(
    header=st.lists(st.sampled_from(["", "train", "val", "test", "x"]), max_size=5),
    body=st.lists(st.lists(_cell, min_size=0, max_size=5), max_size=8),
    raw=st.none() | st.binary(max_size=200),
)
def test_a_split_file_reads_or_is_refused(header, body, raw) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "splits_0.csv"
        if raw is not None:
            path.write_bytes(raw)
        else:
            path.write_text(_csv([header, *body]), encoding="utf-8")
        try:
            split = read_split(path, cases={})
        except SplitError as exc:
            assert str(path) in str(exc)
            return
        ids = [i for part in split.parts().values() for i in part]
        assert len(ids) == len(set(ids)) and split.train
