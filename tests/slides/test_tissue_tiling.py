"""Tissue mask, patch plan and grid, patch files and QC images (real and SYNTHETIC slides)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from slide_helpers import GLASS, TISSUE, disc_image

from hmil.data.bags import infer_patch_size
from hmil.errors import HMILError, SlideError
from hmil.slides import open_slide
from hmil.slides.tissue import (
    TilingConfig,
    TissueConfig,
    grid_coords,
    load_patches,
    plan_patches,
    save_patches,
    tile_slide,
    tile_slides,
    tissue_fractions,
    tissue_mask,
)


def test_tissue_mask_finds_the_disc_and_fills_small_holes() -> None:
    image = disc_image(1536, 1024, radius=350)[::4, ::4].copy()  # 384 × 256, disc radius 87.5
    image[125:128, 175:178] = GLASS  # a 9-pixel hole inside the disc
    image[10:12, 10:12] = TISSUE  # a 4-pixel speck on the glass
    mask = tissue_mask(image, patch_area_px=64.0, config=TissueConfig())
    yy, xx = np.mgrid[:256, :384]
    disc = (yy - 125) ** 2 + (xx - 175) ** 2 < 85**2
    assert mask[disc].mean() > 0.99  # hole filled
    assert mask[~((yy - 125) ** 2 + (xx - 175) ** 2 < 90**2)].mean() < 0.001  # speck removed


def test_tissue_mask_of_blank_glass_is_empty() -> None:
    glass = np.full((200, 300, 3), GLASS, dtype=np.uint8)
    glass += np.random.default_rng(0).integers(0, 4, glass.shape, dtype=np.uint8)
    assert not tissue_mask(glass, 16.0, TissueConfig()).any()


def test_grid_and_fractions_from_an_integral_image() -> None:
    coords = grid_coords(100, 50, 32)
    assert coords.tolist()[:4] == [[0, 0], [32, 0], [64, 0], [96, 0]]
    assert coords.shape == (4 * 2, 2)  # edge cells extend past the border
    mask = np.zeros((25, 50), dtype=bool)  # mask at half resolution
    mask[:, :16] = True  # x < 32 at level 0
    frac = tissue_fractions(mask, (2.0, 2.0), coords, 32)
    assert frac[0] == pytest.approx(1.0)  # cell (0, 0)
    assert frac[1] == pytest.approx(0.0)
    assert frac[4] == pytest.approx(18 / 32)  # second row: y 32..64, only 18 rows inside


def test_plan_at_a_known_magnification(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:  # 20x, levels 1, 2, 4
        plan = plan_patches(slide, TilingConfig(patch_size=128, magnification=10))
        assert (plan.patch_level, plan.level_downsample, plan.downsample) == (1, 2.0, 2.0)
        assert (plan.patch_size_level0, plan.read_size) == (256, 128)
        assert plan.target_magnification == pytest.approx(10.0) and plan.note is None
        plan = plan_patches(slide, TilingConfig(patch_size=128, magnification=7))
        assert plan.patch_level == 1 and plan.read_size == round(366 / 2)
        assert plan.patch_size_level0 == round(128 * 20 / 7)
        plan = plan_patches(slide, TilingConfig(patch_size=64, level=2))
        assert (plan.patch_level, plan.patch_size_level0, plan.read_size) == (2, 256, 64)
        with pytest.raises(SlideError, match="requested 40x but level 0 is 20x"):
            plan_patches(slide, TilingConfig(magnification=40))
        with pytest.raises(SlideError, match="level 3 does not exist"):
            plan_patches(slide, TilingConfig(level=3))


def test_plan_falls_back_to_level0_when_magnification_is_unknown(slides_dir: Path) -> None:
    with open_slide(slides_dir / "tcga-cr-7395-01a-01-ts1.svs") as slide:
        plan = plan_patches(slide, TilingConfig(patch_size=256, magnification=20))
        assert (plan.patch_level, plan.patch_size_level0) == (0, 256)
        assert plan.target_magnification is None
        assert plan.note is not None and "magnification unknown" in plan.note


def test_tiling_config_validation() -> None:
    with pytest.raises(HMILError, match="--tissue-threshold"):
        TilingConfig(tissue_threshold=1.5)
    with pytest.raises(HMILError, match="--patch-size"):
        TilingConfig(patch_size=2)


def test_synthetic_disc_is_tiled_inside_the_disc(disc_slide: Path, tmp_path: Path) -> None:
    with open_slide(disc_slide) as slide:
        result = tile_slide(slide, TilingConfig(patch_size=64, magnification=20))
        assert result.n_patches > 0
        centres = result.coords + 32
        dist = np.hypot(centres[:, 0] - 700, centres[:, 1] - 500)
        assert dist.max() < 350 + 32  # every kept patch is mostly inside the disc
        # all full cells inside the disc are kept: count ≈ disc area / patch area
        assert result.n_patches == pytest.approx(np.pi * 350**2 / 64**2, rel=0.1)
        path = save_patches(tmp_path / "disc.h5", result)
    patches = load_patches(path)
    assert patches.coords.dtype == np.int64 and patches.coords.shape == (result.n_patches, 2)
    a = patches.attrs
    assert (a["patch_size"], a["patch_level"], a["patch_size_level0"]) == (64, 0, 64)
    assert (a["level0_width"], a["level0_height"]) == (1536, 1024)
    assert a["target_magnification"] == pytest.approx(20.0)
    assert a["patch_size"] * a["downsample"][0] == a["patch_size_level0"]
    assert infer_patch_size(patches.coords, a) == 64
    with h5py.File(path) as f:
        assert f["tissue_fraction"].shape == (result.n_patches,)
        assert (f["tissue_fraction"][()] >= 0.5).all()


@pytest.fixture(scope="module")
def real_tiles(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("tiles")
    errors: list[tuple[str, str]] = []
    names = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "kidney-48-5.tif"]
    names += ["boxes-4-level.tiff", "bad/unreadable-tiles.svs"]
    report = tile_slides(
        [slides_dir / n for n in names],
        out,
        TilingConfig(),
        on_error=lambda where, problem: errors.append((where, problem)),
        progress=False,
    )
    return out, [report, errors]


def test_real_h_and_e_slides_are_tiled_on_tissue(
    real_tiles: tuple[Path, list], slides_dir: Path
) -> None:
    out, (report, _) = real_tiles
    assert report.n_patches["cmu-1-small-region"] == 37
    assert report.n_patches["tcga-cr-7395-01a-01-ts1"] == 155
    for sid, name in (("cmu-1-small-region", "cmu-1-small-region.svs"),
                      ("tcga-cr-7395-01a-01-ts1", "tcga-cr-7395-01a-01-ts1.svs")):  # fmt: skip
        patches = load_patches(out / "patches" / f"{sid}.h5")
        with open_slide(slides_dir / name) as slide:
            pixels = np.stack(
                [slide.read_region(tuple(c), 0, (256, 256)) for c in patches.coords[::5]]
            ).astype(np.float32)
        # stained tissue is coloured: mean saturation of the patches far above glass (~0.02)
        hi, lo = pixels.max(axis=3), pixels.min(axis=3)
        saturation = ((hi - lo) / np.maximum(hi, 1)).mean(axis=(1, 2))
        assert saturation.min() > 0.12, sid
        with Image.open(out / "masks" / f"{sid}.png") as qc:
            assert max(qc.size) == 1024


def test_slides_without_tissue_patches_or_unreadable_are_reported(
    real_tiles: tuple[Path, list],
) -> None:
    out, (report, errors) = real_tiles
    problems = dict(errors)
    kidney = [p for w, p in problems.items() if w.endswith("kidney-48-5.tif")]
    assert kidney and "0 patches passed the tissue threshold 0.5" in kidney[0]
    assert (out / "masks" / "kidney-48-5.png").is_file()  # QC still written
    assert not (out / "patches" / "kidney-48-5.h5").exists()
    assert any(w.endswith("unreadable-tiles.svs") for w in problems)
    assert set(report.patch_files) == {
        "cmu-1-small-region",
        "tcga-cr-7395-01a-01-ts1",
        "boxes-4-level",
    }


def test_strict_stops_at_the_first_bad_slide(slides_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SlideError, match=r"truncated-aperio\.svs"):
        tile_slides(
            [slides_dir / "bad" / "truncated-aperio.svs", slides_dir / "boxes-4-level.tiff"],
            tmp_path,
            TilingConfig(),
            strict=True,
            progress=False,
        )
    assert not (tmp_path / "patches").exists()


def test_duplicate_slide_ids_are_reported(disc_slide: Path, tmp_path: Path) -> None:
    copy = tmp_path / "other" / disc_slide.name
    copy.parent.mkdir()
    copy.write_bytes(disc_slide.read_bytes())
    errors: list[tuple[str, str]] = []
    report = tile_slides(
        [disc_slide, copy],
        tmp_path / "out",
        TilingConfig(patch_size=128),
        on_error=lambda w, p: errors.append((w, p)),
        progress=False,
    )
    assert list(report.patch_files) == ["disc"]
    assert errors and "duplicate slide id 'disc'" in errors[0][1]


def test_load_patches_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(HMILError, match="run `hmil tile` first"):
        load_patches(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(HMILError, match="not a readable HDF5"):
        load_patches(junk)
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["coords"] = np.zeros((3, 3))
    with pytest.raises(HMILError, match=r"\(N, 2\)"):
        load_patches(wrong)
