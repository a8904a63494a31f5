"""Streamed extraction into bags: layout, equality with direct encoding, resume, bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hmil.data.bags import load_bag
from hmil.errors import HMILError, SlideError
from hmil.slides import open_slide
from hmil.slides.encoders import PatchEncoder, create_encoder
from hmil.slides.extract import (
    ExtractConfig,
    ReadPlan,
    extract_slide,
    extract_slides,
    iter_patch_batches,
    plan_reads,
    read_patch,
    resolve_patches_dir,
)
from hmil.slides.patch_files import load_patches
from hmil.slides.tile_batch import tile_slides
from hmil.slides.tissue import TilingConfig


@pytest.fixture(scope="module")
def encoder() -> PatchEncoder:
    return create_encoder("hed-texture", device="cpu")


@pytest.fixture(scope="module")
def tiled(disc_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hmil tile`` output of the SYNTHETIC disc slide: 64 px patches at 10x (level 1)."""
    out = tmp_path_factory.mktemp("tiled")
    tile_slides([disc_slide], out, TilingConfig(patch_size=64, magnification=10), progress=False)
    return out


def test_bag_layout_and_features_equal_direct_encoding(
    disc_slide: Path, tiled: Path, tmp_path: Path, encoder: PatchEncoder
) -> None:
    outcome = extract_slide(
        disc_slide, tiled / "patches" / "disc.h5", tmp_path, encoder,
        ExtractConfig(batch_size=7, formats=("h5", "pt")), progress=False,
    )  # fmt: skip
    patches = load_patches(tiled / "patches" / "disc.h5")
    n = patches.coords.shape[0]
    assert outcome.status == "done" and outcome.n_patches == n > 20
    h5_path, pt_path = tmp_path / "h5_files" / "disc.h5", tmp_path / "pt_files" / "disc.pt"
    h5_bag, pt_bag = load_bag(h5_path), load_bag(pt_path)
    # both formats: CLAM's feature folder; the .pt is a plain tensor, its coords and provenance
    # come from h5_files/
    assert isinstance(torch.load(pt_path, weights_only=True), torch.Tensor)
    for bag in (h5_bag, pt_bag):
        assert bag.features.shape == (n, encoder.dim)
        assert (bag.coords == patches.coords).all()
        assert bag.attrs["encoder"] == "hed-texture" and bag.attrs["dim"] == 104
        assert bag.attrs["patch_size_level0"] == 128 and bag.attrs["patch_level"] == 1
    assert torch.equal(h5_bag.features, pt_bag.features)
    with h5py.File(h5_path) as f:  # the contract's layout, as save_bag writes it
        assert f["features"].dtype == np.float32 and f["coords"].dtype == np.int64
        assert f["coords"].attrs["level0_width"] == 1536
        assert f["features"].attrs["encoder_precision"] == "fp32"
    # the same patches encoded directly give the same features
    with open_slide(disc_slide) as slide:
        plan = plan_reads(slide, patches)
        # 64 px read at level 1 (the tile size); the encoder upsamples to its 128 px
        assert plan == ReadPlan(level=1, read_size=64, tile_size=64, patch_size_level0=128)
        direct = encoder(torch.from_numpy(np.stack([read_patch(slide, c, plan, encoder) for c in
                                                     patches.coords[:5]])))  # fmt: skip
    assert torch.allclose(h5_bag.features[:5], direct, atol=1e-5)


def test_batches_keep_order_and_bound_prefetch(disc_slide: Path, tiled: Path) -> None:
    patches = load_patches(tiled / "patches" / "disc.h5")
    coords = patches.coords[:23]
    reads: list[int] = []
    lock = threading.Lock()
    with open_slide(disc_slide) as slide:
        plan = ReadPlan(level=0, read_size=32, tile_size=16, patch_size_level0=32)
        original = slide.read_region

        def counting_read(*args: object, **kwargs: object) -> np.ndarray:
            with lock:
                reads.append(1)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        slide.read_region = counting_read  # type: ignore[method-assign]
        batches = iter_patch_batches(slide, coords, plan, 4, num_readers=2, prefetch_batches=2)
        first = next(batches)
        time.sleep(0.3)  # readers would run ahead here if prefetch were unbounded
        assert len(reads) <= 3 * 4  # the consumed batch + at most 2 in flight
        rest = list(batches)
        slide.read_region = original  # type: ignore[method-assign]
        expected = [read_patch(slide, c, plan) for c in coords]
    got = np.concatenate([first, *rest])
    assert [len(b) for b in [first, *rest]] == [4, 4, 4, 4, 4, 3]
    assert got.shape == (23, 16, 16, 3)
    assert all((g == e).all() for g, e in zip(got, expected, strict=True))


def test_resume_skips_finished_slides(
    disc_slide: Path, tiled: Path, tmp_path: Path, encoder: PatchEncoder
) -> None:
    first = extract_slides([disc_slide], tiled, tmp_path, encoder, progress=False)
    assert [o.status for o in first.outcomes] == ["done"]
    stamp = (tmp_path / "disc.h5").stat().st_mtime_ns
    lines: list[str] = []
    again = extract_slides([disc_slide], tiled / "patches", tmp_path, encoder, log=lines.append,
                           progress=False)  # fmt: skip
    assert [o.status for o in again.outcomes] == ["skipped"]
    assert (tmp_path / "disc.h5").stat().st_mtime_ns == stamp
    assert "bag exists, skipped" in lines[0]
    # asking for another format extracts again; no temporary files are left behind
    both = extract_slides([disc_slide], tiled, tmp_path, encoder, ExtractConfig(formats=("pt",)),
                          progress=False)  # fmt: skip
    assert [o.status for o in both.outcomes] == ["done"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disc.h5", "disc.pt"]


def test_bad_slides_are_reported_and_skipped(
    disc_slide: Path, tiled: Path, tmp_path: Path, slides_dir: Path, encoder: PatchEncoder
) -> None:
    errors: list[tuple[str, str]] = []
    bad = slides_dir / "bad" / "unreadable-tiles.svs"
    (tiled / "patches" / "unreadable-tiles.h5").write_bytes(
        (tiled / "patches" / "disc.h5").read_bytes()
    )
    report = extract_slides(
        [bad, slides_dir / "boxes-4-level.tiff", disc_slide],
        tiled,
        tmp_path,
        encoder,
        on_error=lambda w, p: errors.append((w, p)),
        progress=False,
    )
    assert [o.status for o in report.outcomes] == ["failed", "failed", "done"]
    assert errors[0][0] == str(bad) and "cannot decode slide tiles" in errors[0][1]
    assert "patch file not found" in errors[1][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disc.h5"]
    with pytest.raises(SlideError):
        extract_slides([bad, disc_slide], tiled, tmp_path / "strict", encoder, strict=True,
                       progress=False)  # fmt: skip
    (tiled / "patches" / "unreadable-tiles.h5").unlink()


def test_patch_file_of_another_slide_is_refused(
    slides_dir: Path, tiled: Path, tmp_path: Path, encoder: PatchEncoder
) -> None:
    with pytest.raises(HMILError, match="made for a 1536x1024 slide"):
        extract_slide(
            slides_dir / "boxes-4-level.tiff", tiled / "patches" / "disc.h5", tmp_path, encoder,
            progress=False,
        )  # fmt: skip


def test_clam_patch_files_without_level0_size(
    disc_slide: Path, tmp_path: Path, encoder: PatchEncoder
) -> None:
    path = tmp_path / "patches" / "disc.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:  # CLAM: patch_size at patch_level, no patch_size_level0
        dset = f.create_dataset("coords", data=np.array([[512, 384], [640, 384]], dtype=np.int32))
        dset.attrs["patch_size"] = 64
        dset.attrs["patch_level"] = 1
    with open_slide(disc_slide) as slide:
        plan = plan_reads(slide, load_patches(path))
    assert plan == ReadPlan(level=1, read_size=64, tile_size=64, patch_size_level0=128)
    report = extract_slides([disc_slide], tmp_path, tmp_path / "bags", encoder, progress=False)
    bag = load_bag(tmp_path / "bags" / "disc.h5")
    assert report.done and bag.features.shape == (2, 104)
    assert bag.attrs["patch_size_level0"] == 128


def test_empty_patch_file_and_bad_config(
    disc_slide: Path, tmp_path: Path, encoder: PatchEncoder
) -> None:
    path = tmp_path / "disc.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=np.zeros((0, 2), dtype=np.int64)).attrs["patch_size"] = 64
    with pytest.raises(HMILError, match="0 patches"):
        extract_slide(disc_slide, path, tmp_path / "bags", encoder)
    with pytest.raises(HMILError, match=r"^formats: must be a comma-separated list of h5, pt"):
        ExtractConfig(formats=("npy",))
    with pytest.raises(HMILError, match="patches folder not found"):
        resolve_patches_dir(tmp_path / "nowhere")
