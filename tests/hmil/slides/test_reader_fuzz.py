"""Bounded fuzzing: slide files with random bytes flipped, bags whose ``.h5`` shape
claims more than they store, and random label/split tables. Each loader must either work or
raise its own error class naming the file — never another exception, never a long hang or a
huge allocation. Example counts keep the whole module under ~60 s on 2 CPU cores (the
hypothesis database replays earlier failures first).

Uploads go further: mutated slides, images and files claiming huge sizes are saved through the
viewer's upload path, opened as the slide page opens them and requested from the tile routes,
in a child process whose address space is capped; each must be served or refused with one line,
within a bound on the peak RSS it adds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from crafted import forged_stripped_tiff, forged_tiff, png_bomb, run_capped
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

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
    _png = Path(_tmp) / "seed.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 128, 4), np.uint8)).save(_png)
    #: upload seeds by suffix: real small files and tiny files claiming huge images
    UPLOAD_SEEDS = {
        "pyramid.tiff": TIFF,
        "image.png": _png.read_bytes(),
        "forged.tif": forged_tiff(Path(_tmp) / "forged.tif", 100_000).read_bytes(),
        "stripped.tif": forged_stripped_tiff(Path(_tmp) / "stripped.tif", 30_000).read_bytes(),
        "bomb.png": png_bomb(Path(_tmp) / "bomb.png", 13000, 13000).read_bytes(),
    }
#: peak RSS one upload and its tiles may add in the child (MB); the viewer's budget is 1.5 GB
UPLOAD_PEAK_MB = 400


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


_UPLOAD_IMPORTS = """
from pathlib import Path
from starlette.applications import Starlette
from starlette.testclient import TestClient
from hmil.errors import HMILError
from viewer.components import cached_ui
from viewer.core.uploads import save_upload
from viewer.tiles.geometry import DeepZoomGeometry
from viewer.tiles.registry import SlideRegistry
from viewer.tiles.routes import TileService
"""

#: per file: upload, open as the page does, then the descriptor and the coarsest, a middle and
#: the full-resolution corner tile; statuses and the peak RSS each file added
_UPLOAD_BODY = """
registry = SlideRegistry()
client = TestClient(Starlette(routes=TileService(registry).routes()))
folder = Path({folder!r})
for src in {files!r}:
    src = Path(src)
    base = reset()
    record = {{"statuses": [], "texts": []}}
    try:
        path = save_upload(src.read_bytes(), src.name, folder, 64)
        size = cached_ui.slide(path).dimensions
        record["page"] = "ok"
    except HMILError as exc:
        record["page"] = str(exc)
        size = None
    if size is not None:
        key = registry.register_slide(path, [folder], size)
        geo = DeepZoomGeometry(*size)
        top = geo.level_count - 1
        urls = [f"/hmil/dz/{{key}}.dzi"] + [
            f"/hmil/dz/{{key}}_files/{{level}}/0_0.jpeg" for level in (0, top // 2, top)
        ]
        for url in urls:
            response = client.get(url)
            record["statuses"].append(response.status_code)
            if response.status_code != 200:
                record["texts"].append(response.text)
    record["peak_mb"] = peak_since(base)
    result[src.name] = record
"""


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Corrupt EXIF data"
def test_mutated_uploads_are_served_or_refused_within_memory(tmp_path: Path) -> None:
    """Hypothesis draws the mutations; the files are then served in one capped child."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    files: list[str] = []

    @settings(FUZZ, max_examples=60, database=None)
    @given(
        seed=st.sampled_from(sorted(UPLOAD_SEEDS)),
        flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                       max_size=6),
        cut=st.none() | st.floats(0.05, 1),
    )  # fmt: skip
    def mutate(seed: str, flips: list[tuple[float, int]], cut: float | None) -> None:
        data = bytearray(UPLOAD_SEEDS[seed])
        for where, mask in flips:
            data[int(where * len(data))] ^= mask
        end = len(data) if cut is None else max(8, int(cut * len(data)))
        path = inputs / f"{len(files):03d}-{seed}"
        path.write_bytes(bytes(data[:end]))
        files.append(str(path))

    mutate()
    out = run_capped(
        _UPLOAD_IMPORTS,
        _UPLOAD_BODY.format(folder=str(tmp_path / "up"), files=files),
        budget=3 << 30,
    )
    assert sorted(out) == sorted(Path(f).name for f in files)
    for name, record in out.items():
        assert record["page"] == "ok" or (
            record["page"].count("\n") == 0 and ": " in record["page"]
        )
        assert all(s == 200 or 400 <= s < 500 for s in record["statuses"]), (name, record)
        assert all("\n" not in text for text in record["texts"]), (name, record)
        assert record["peak_mb"] < UPLOAD_PEAK_MB, (name, record)


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
