"""Synthetic slides: OpenSlide reads them with levels and metadata, ground truth is consistent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from scipy import ndimage

from hmil.demo.synthetic_slides import (
    MASK_DOWNSAMPLE,
    SlideSpec,
    SyntheticSlide,
    TextureBank,
    build_texture_bank,
    render_slide,
    write_slide,
)
from hmil.demo.textures import EOSIN_RGB, HEMATOXYLIN_RGB, stains_to_rgb

SIZE = (1280, 1024)  # width, height: small, non-square, not a multiple of the 512 block


@pytest.fixture(scope="module")
def bank() -> TextureBank:
    return build_texture_bank(3, ("normal", "carcinoma-small"))


def _spec(label: str, seed: int = 11, fraction: float = 0.1) -> SlideSpec:
    return SlideSpec(
        slide_id=f"synth-test-{label}",
        label=label,
        seed=seed,
        width=SIZE[0],
        height=SIZE[1],
        lesion_fraction=fraction if label != "normal" else 0.0,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, bank: TextureBank) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("slides")
    slides = {}
    for label in ("normal", "carcinoma-small"):
        slide = render_slide(_spec(label), bank)
        write_slide(slide, root)
        slides[label] = slide
    return root, slides


def test_openslide_opens_pyramid_with_mpp_and_magnification(written: tuple[Path, dict]) -> None:
    root, slides = written
    slide: SyntheticSlide = slides["carcinoma-small"]
    path = root / "slides" / f"{slide.spec.slide_id}.tiff"
    with openslide.OpenSlide(str(path)) as osr:
        assert osr.level_count == 3
        assert osr.dimensions == SIZE
        assert [round(d) for d in osr.level_downsamples] == [1, 4, 16]
        props = osr.properties
        assert float(props[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        assert float(props[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)
        assert float(props[openslide.PROPERTY_NAME_OBJECTIVE_POWER]) == 20
        assert "SYNTHETIC" in props["aperio.Synthetic"]
        assert "SYNTHETIC" in props[openslide.PROPERTY_NAME_COMMENT]
        # level 0 decodes to what was rendered (up to JPEG loss), colours included
        region = np.asarray(osr.read_region((0, 0), 0, SIZE).convert("RGB")).astype(int)
        assert np.abs(region - slide.rgb.astype(int)).mean() < 6
        # a reduced level matches a downsample of level 0
        small = np.asarray(osr.read_region((0, 0), 2, (80, 64)).convert("RGB")).astype(int)
        expected = np.asarray(Image.fromarray(slide.rgb).reduce(16)).astype(int)
        assert np.abs(small - expected).mean() < 6


def test_slide_looks_like_stained_tissue_on_glass(written: tuple[Path, dict]) -> None:
    _, slides = written
    slide: SyntheticSlide = slides["normal"]
    tissue = np.kron(slide.tissue, np.ones((MASK_DOWNSAMPLE, MASK_DOWNSAMPLE), bool))
    tissue = tissue[: SIZE[1], : SIZE[0]]
    assert 0.1 < tissue.mean() < 0.9
    rgb = slide.rgb.astype(float)
    glass = rgb[~tissue].mean(axis=0)
    stained = rgb[tissue].mean(axis=0)
    assert (glass > 235).all()  # near-white background
    assert stained.sum() < glass.sum() - 60  # tissue absorbs light
    assert stained[1] < stained[0] and stained[1] < stained[2]  # H&E: green absorbed most


def test_lesion_mask_inside_tissue_with_planned_share(written: tuple[Path, dict]) -> None:
    root, slides = written
    slide: SyntheticSlide = slides["carcinoma-small"]
    sid = slide.spec.slide_id
    tissue = np.asarray(Image.open(root / "masks" / f"{sid}_tissue.png")) > 0
    lesion = np.asarray(Image.open(root / "masks" / f"{sid}_lesion.png")) > 0
    assert tissue.shape == lesion.shape == (SIZE[1] // MASK_DOWNSAMPLE, SIZE[0] // MASK_DOWNSAMPLE)
    np.testing.assert_array_equal(tissue, slide.tissue)
    assert lesion.sum() > 0
    assert not (lesion & ~tissue).any()
    assert lesion.sum() / tissue.sum() == pytest.approx(0.1, abs=0.01)

    normal = slides["normal"]
    assert not normal.lesion.any()
    normal_lesion = np.asarray(Image.open(root / "masks" / f"{normal.spec.slide_id}_lesion.png"))
    assert normal_lesion.max() == 0
    geo = json.loads((root / "masks" / f"{normal.spec.slide_id}_lesion.geojson").read_text())
    assert geo == {"type": "FeatureCollection", "features": []}


def test_lesion_is_rendered_where_the_mask_says(written: tuple[Path, dict]) -> None:
    _, slides = written
    slide: SyntheticSlide = slides["carcinoma-small"]
    ds = MASK_DOWNSAMPLE
    # cells well inside / well outside the lesion, both inside tissue
    inner = ndimage.binary_erosion(slide.lesion, iterations=1)
    outer = slide.tissue & ~ndimage.binary_dilation(slide.lesion, iterations=2)
    outer &= ndimage.binary_erosion(slide.tissue, iterations=2)
    od = -np.log(np.clip(slide.rgb.astype(np.float32), 1, 255) / 255.0)
    # hematoxylin share of the optical density, by projection on the two stain vectors
    stains = np.linalg.lstsq(np.stack([HEMATOXYLIN_RGB, EOSIN_RGB], 1), od.reshape(-1, 3).T)[0]
    h_map = stains[0].reshape(SIZE[1], SIZE[0])
    cell_h = h_map[: SIZE[1] // ds * ds, : SIZE[0] // ds * ds]
    cell_h = cell_h.reshape(SIZE[1] // ds, ds, SIZE[0] // ds, ds).mean(axis=(1, 3))
    assert cell_h[inner].mean() > cell_h[outer].mean() + 0.15


def test_geojson_outlines_the_lesion_in_level0_pixels(written: tuple[Path, dict]) -> None:
    root, slides = written
    slide: SyntheticSlide = slides["carcinoma-small"]
    geo = json.loads((root / "masks" / f"{slide.spec.slide_id}_lesion.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"]
    total_area = 0
    for feature in geo["features"]:
        props = feature["properties"]
        assert props["classification"]["name"] == "carcinoma-small"
        assert props["synthetic"] is True
        x0, y0, x1, y1 = props["bbox"]
        assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1]
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert ring.shape[1] == 2 and (ring[0] == ring[-1]).all()
        assert ring[:, 0].min() >= x0 - 1 and ring[:, 0].max() <= x1 + 1
        assert ring[:, 1].min() >= y0 - 1 and ring[:, 1].max() <= y1 + 1
        total_area += props["area_px"]
    assert total_area == slide.lesion.sum() * MASK_DOWNSAMPLE**2


def test_rendering_is_deterministic_by_seed(bank: TextureBank) -> None:
    first = render_slide(_spec("carcinoma-small", seed=5), bank)
    again = render_slide(_spec("carcinoma-small", seed=5), bank)
    other = render_slide(_spec("carcinoma-small", seed=6), bank)
    np.testing.assert_array_equal(first.rgb, again.rgb)
    np.testing.assert_array_equal(first.lesion, again.lesion)
    assert not np.array_equal(first.tissue, other.tissue)
    # the texture bank is deterministic too
    rebuilt = build_texture_bank(3, ("normal", "carcinoma-small"))
    np.testing.assert_array_equal(first.rgb, render_slide(_spec("carcinoma-small", 5), rebuilt).rgb)


def test_stains_to_rgb_is_beer_lambert() -> None:
    zero = stains_to_rgb(np.zeros(1, np.float32), np.zeros(1, np.float32))
    assert zero.tolist() == [[255, 255, 255]]
    purple = stains_to_rgb(np.float32([1.0]), np.float32([0.0]))[0]
    pink = stains_to_rgb(np.float32([0.0]), np.float32([1.0]))[0]
    assert purple[2] > purple[0] > purple[1]  # hematoxylin: blue-purple
    assert pink[1] < pink[0] and pink[1] < pink[2]  # eosin: green absorbed


def test_project_reader_and_tiler_use_the_metadata(written: tuple[Path, dict]) -> None:
    from hmil.slides.reader import open_slide
    from hmil.slides.tiling import tile_slide
    from hmil.slides.tissue import TilingConfig

    root, slides = written
    slide: SyntheticSlide = slides["carcinoma-small"]
    with open_slide(root / "slides" / f"{slide.spec.slide_id}.tiff") as opened:
        assert opened.backend == "openslide"
        assert opened.mpp == pytest.approx(0.5)
        assert opened.magnification == 20
        result = tile_slide(opened, TilingConfig(patch_size=256, magnification=20))
    assert result.plan.patch_size_level0 == 256 and result.plan.patch_level == 0
    # every tissue patch lies on the slide's tissue: its grid cell is mostly tissue in our mask
    cells = 256 // MASK_DOWNSAMPLE
    for x, y in result.coords:
        cell = slide.tissue[y // MASK_DOWNSAMPLE : y // MASK_DOWNSAMPLE + cells,
                            x // MASK_DOWNSAMPLE : x // MASK_DOWNSAMPLE + cells]  # fmt: skip
        assert cell.mean() > 0.25
    assert result.n_patches >= 0.6 * slide.tissue.sum() / cells**2
