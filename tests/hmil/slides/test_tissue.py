"""Tissue mask, patch plan and grid, patch files and QC images (real and SYNTHETIC slides)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from skimage.morphology import dilation, disk
from slide_helpers import GLASS, TISSUE, disc_image

from hmil.data.bags import infer_patch_size
from hmil.demo.classes import DEMO_CLASSES
from hmil.demo.cohort import CohortConfig, plan_cohort
from hmil.demo.defaults import N_SLIDES
from hmil.demo.synthetic_slides import build_texture_bank, render_slide, write_slide
from hmil.errors import HMILError, SlideError
from hmil.geojson import read_tissue_geojson, write_tissue_geojson
from hmil.slides import Region, open_slide
from hmil.slides.patch_files import load_patches, save_patches
from hmil.slides.reader import bounds_from_properties
from hmil.slides.slide_list import read_slide_list
from hmil.slides.tile_batch import tile_slides
from hmil.slides.tiling import grid_coords, plan_patches, tile_slide, tissue_fractions
from hmil.slides.tissue import (
    TilingConfig,
    TissueConfig,
    mask_polygons,
    rasterize_polygons,
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


def _fragment_on_glass() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(300, 400, 3)`` SYNTHETIC thumbnail that is nearly all glass: one small fragment (a
    stained core whose blue-grey stain fades out over its rim, 1 % of the image) and a grey
    smudge (dark, not coloured).

    Returns:
        the image, the ``(300, 400)`` bool fragment and the ``(300, 400)`` bool pale rim.
    """
    rng = np.random.default_rng(1)
    image = np.full((300, 400, 3), GLASS, dtype=np.uint8)
    image += rng.integers(0, 4, image.shape, dtype=np.uint8)
    yy, xx = np.mgrid[:300, :400]
    r = np.hypot(yy - 150, xx - 120)
    fragment, core = r < 20, r < 11
    rim = fragment & ~core
    alpha = (0.3 - 0.22 * (r[rim] - 11) / 9)[:, None]  # stain fades from 30 % to 8 %
    pale = (1 - alpha) * np.array(GLASS) + alpha * np.array((110, 100, 190))
    image[rim] = np.rint(pale).astype(np.uint8)  # saturation 0.05..0.12
    image[core] = TISSUE
    image[np.hypot(yy - 100, xx - 300) < 25] = (200, 200, 200)  # grey smudge
    return image, fragment, rim


def test_pale_rim_of_a_small_fragment_on_glass_is_tissue() -> None:
    """On a slide that is nearly all glass, Otsu's cut (clipped to 0.12) would drop the pale rim
    of a small fragment; the cut is lowered to just above the glass's own saturation."""
    image, fragment, rim = _fragment_on_glass()
    mask = tissue_mask(image, patch_area_px=64.0, config=TissueConfig())
    assert mask[rim].mean() > 0.95  # the plain clipped Otsu cut finds 7 % of it
    assert mask[fragment].mean() > 0.97
    assert not mask[~dilation(fragment, disk(3))].any()  # no glass, no grey smudge
    plain = TissueConfig(sparse_tissue_share=0.0)  # the rule off: Otsu's cut, clipped
    assert tissue_mask(image, 64.0, plain)[rim].mean() < 0.2
    # the rule only acts on nearly blank slides: the pale-rimmed disc (24 % tissue) is unchanged
    disc = disc_image(1536, 1024, radius=350)[::4, ::4].copy()
    yy, xx = np.mgrid[:256, :384]
    disc[np.abs(np.hypot(yy - 125, xx - 175) - 85) < 4] = (214, 211, 232)
    assert (tissue_mask(disc, 64.0, TissueConfig()) == tissue_mask(disc, 64.0, plain)).all()


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
    with pytest.raises(HMILError, match=r"^tissue_threshold: must lie in \[0, 1\], got 1.5$"):
        TilingConfig(tissue_threshold=1.5)
    with pytest.raises(HMILError, match=r"^patch_size: must be ≥ 8, got 2$"):
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
    # default settings (256 px at 20x, or at level 0 without magnification); the same counts
    # before and after the sparse-tissue rule of the saturation cut (these slides are 33 %,
    # 61 % and 49 % tissue, so they keep Otsu's cut)
    assert report.n_patches["cmu-1-small-region"] == 37
    assert report.n_patches["tcga-cr-7395-01a-01-ts1"] == 155
    assert report.n_patches["boxes-4-level"] == 1
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
    # kidney-48-5 without magnification is tiled at level 0: its fragment (about 4,600 px²) is
    # 7 % of one 256-px patch, so no patch can be half tissue, and the message says why
    kidney = [p for w, p in problems.items() if w.endswith("kidney-48-5.tif")]
    assert kidney and "0 patches passed the tissue threshold 0.5" in kidney[0]
    assert "stain on 0.3% was dropped as pieces under 0.25 of a patch (256 px" in kidney[0]
    assert "try a smaller patch_size" in kidney[0] and "\n" not in kidney[0]
    assert (out / "masks" / "kidney-48-5.png").is_file()  # QC still written
    assert not (out / "patches" / "kidney-48-5.h5").exists()
    assert any(w.endswith("unreadable-tiles.svs") for w in problems)
    assert set(report.patch_files) == {
        "cmu-1-small-region",
        "tcga-cr-7395-01a-01-ts1",
        "boxes-4-level",
    }


#: outline of the one tissue fragment of kidney-48-5.tif, level-0 (x, y), traced on the image
KIDNEY_FRAGMENT = [(370, 568), (351, 560), (339, 560), (333, 554), (312, 550), (308, 544),
                   (297, 542), (288, 535), (284, 518), (293, 508), (311, 502), (334, 510),
                   (339, 508), (359, 512), (371, 522), (382, 522), (394, 536), (400, 549),
                   (392, 560), (374, 564)]  # fmt: skip


def test_small_faint_kidney_fragment_is_tiled_with_patches_its_size(slides_dir: Path) -> None:
    """kidney-48-5.tif is a 1493 × 901 low-resolution image without microns per pixel: glass,
    grey debris and one fragment of about 115 × 65 px whose rim is pale blue-grey. Its
    magnification is unknown, so it is tiled at level 0 with patches its size: 16 px
    (``hmil tile --patch-size 16``), the fragment spans about 7 × 4 of them.

    Otsu's cut (0.07 here: the slide is 99.7 % glass) left out the pale rim (88 % of the
    fragment in the mask, 16 patches covering 81 % of it); the cut just above the glass's own
    saturation finds it (95 %; 17 patches covering 85 %), and none of the glass and debris.
    """
    with open_slide(slides_dir / "kidney-48-5.tif") as slide:
        result = tile_slide(slide, TilingConfig(patch_size=16))
    assert result.plan.note is not None and "magnification unknown" in result.plan.note
    ring = np.asarray(KIDNEY_FRAGMENT, dtype=np.float64)
    fragment = rasterize_polygons([[ring]], (901, 1493), (1.0, 1.0), (0.0, 0.0))
    assert result.mask.shape == fragment.shape  # the mask is at full resolution
    assert result.mask[fragment].mean() > 0.93  # 0.95 (0.88 with the plain Otsu cut)
    near = dilation(fragment, disk(4))
    assert not result.mask[~near].any()  # no glass, no debris
    assert 17 <= result.n_patches <= 22  # 17 (16 with the plain Otsu cut)
    covered = np.zeros_like(fragment)
    for x, y in result.coords:
        covered[y : y + 16, x : x + 16] = True
    assert covered[fragment].mean() > 0.83  # 0.85 (0.81 with the plain Otsu cut)
    assert near[covered].mean() > 0.95  # 0.98: the patches are on the fragment, not beside it


#: slide id → (patch count, SHA-256 prefix of the int64 coords) of ``hmil demo``'s own slides
#: tiled as ``hmil demo`` tiles them; the shipped demo checkpoint was trained on these patches
DEMO_TILES = {"synth-006": (45, "9e17c25f05bb9fd8"), "synth-036": (35, "4af1475c0492f6c9")}


def test_demo_slides_keep_their_patches(tmp_path: Path) -> None:
    """Two SYNTHETIC slides of the demo cohort (seed 0, 48 slides: ``hmil demo``'s defaults)
    give exactly the patches they gave when the demo checkpoint was trained: a change of the
    tissue mask that moves one patch fails here (the demo's tissue is 18–48 % of a slide, so
    the sparse-tissue rule of the saturation cut never acts on it)."""
    plan = {p.spec.slide_id: p.spec for p in plan_cohort(CohortConfig(n_slides=N_SLIDES, seed=0))}
    bank = build_texture_bank(0, tuple(c.name for c in DEMO_CLASSES))
    for sid, (count, digest) in DEMO_TILES.items():
        files = write_slide(render_slide(plan[sid], bank), tmp_path)
        with open_slide(tmp_path / files.slide) as slide:
            result = tile_slide(slide, TilingConfig(patch_size=256, magnification=20.0))
        coords = np.ascontiguousarray(result.coords, dtype=np.int64)
        assert result.n_patches == count, sid
        assert hashlib.sha256(coords.tobytes()).hexdigest()[:16] == digest, sid


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


# --------------------------------------------------------------------------- TRIDENT/CLAM options


def test_overlap_steps_the_grid_like_trident(disc_slide: Path) -> None:
    with open_slide(disc_slide) as slide:
        plain = tile_slide(slide, TilingConfig(patch_size=64, magnification=10))
        half = tile_slide(slide, TilingConfig(patch_size=64, magnification=10, overlap=32))
    assert half.plan.step_level0 == 64 and plain.plan.step_level0 == 128
    assert np.diff(np.unique(half.coords[:, 0])).min() == 64
    assert half.n_patches == pytest.approx(4 * plain.n_patches, rel=0.15)
    attrs = half.trident_attrs()
    assert (attrs["patch_size"], attrs["overlap"], attrs["patch_size_level0"]) == (64, 32, 128)
    assert (attrs["level0_magnification"], attrs["target_magnification"]) == (20.0, 10.0)
    with pytest.raises(HMILError, match=r"^overlap: must lie in \[0, patch_size 64\), got 64$"):
        TilingConfig(patch_size=64, overlap=64)


def test_mpp_override_gives_slides_without_metadata_a_magnification(
    make_slide: object, tmp_path: Path
) -> None:
    path = make_slide("nompp.tiff", disc_image(), mpp=None)  # type: ignore[operator]
    with open_slide(path) as slide:
        assert slide.magnification is None
        unknown = plan_patches(slide, TilingConfig(patch_size=64, magnification=10))
        known = plan_patches(slide, TilingConfig(patch_size=64, magnification=10, mpp=0.5))
    assert unknown.note is not None and unknown.patch_size_level0 == 64
    assert known.note is None and known.patch_size_level0 == 128 and known.patch_level == 1
    with pytest.raises(HMILError, match=r"^mpp: must lie in \[0.05, 20\], got 500$"):
        TilingConfig(mpp=500.0)


def test_slide_list_csv_of_trident_and_clam(make_slide: object, tmp_path: Path) -> None:
    a = make_slide("a.tiff", disc_image(), mpp=None)  # type: ignore[operator]
    make_slide("b.tiff", disc_image())  # type: ignore[operator]
    trident = tmp_path / "wsis.csv"
    trident.write_text("wsi,mpp\na.tiff,0.5\nb.tiff,\n")
    entries = read_slide_list(trident)
    assert [(e.path.name, e.mpp) for e in entries] == [("a.tiff", 0.5), ("b.tiff", None)]
    clam = tmp_path / "process_list.csv"
    clam.write_text("slide_id,process\na.tiff,0\nb.tiff,1\n")
    assert [e.path.name for e in read_slide_list(clam, slides_dir=tmp_path)] == ["b.tiff"]
    report = tile_slides(entries[:1], tmp_path / "out", TilingConfig(patch_size=64,
                         magnification=10), progress=False)  # fmt: skip
    assert report.n_patches["a"] > 0  # tiled at 10x thanks to the CSV's mpp
    with h5py.File(report.patch_files["a"]) as f:
        assert f["coords"].attrs["patch_size_level0"] == 128
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nx\n")
    with pytest.raises(HMILError, match="no slide column"):
        read_slide_list(bad)
    bad.write_text("wsi,mpp\na.tiff,fast\n")
    with pytest.raises(HMILError, match="row 2: mpp 'fast' is not a number"):
        read_slide_list(bad)
    assert a.is_file()


def test_rerun_skips_finished_slides_and_retiles_edited_tissue(
    disc_slide: Path, tmp_path: Path
) -> None:
    config = TilingConfig(patch_size=64, magnification=10, trident_names=True)
    first = tile_slides([disc_slide], tmp_path, config, progress=False)
    contours = tmp_path / "contours_geojson" / "disc.geojson"
    stamp = first.patch_files["disc"].stat().st_mtime_ns
    again = tile_slides([disc_slide], tmp_path, config, progress=False)
    assert list(again.skipped) == ["disc"] and not again.patch_files
    assert first.patch_files["disc"].stat().st_mtime_ns == stamp
    # the contours round-trip: read back, they give (almost) the same patches
    tissue = read_tissue_geojson(contours)
    assert len(tissue) == 1 and len(tissue[0]) == 1  # one disc, no holes
    with open_slide(disc_slide) as slide:
        from_contours = tile_slide(slide, config, tissue=tissue)
    kept = {tuple(c) for c in first_coords(first)}
    again_kept = {tuple(c) for c in from_contours.coords}
    assert len(kept ^ again_kept) <= 0.05 * len(kept)
    # "edit in QuPath": keep the left half of the disc only, save → the rerun re-tiles on it
    data = json.loads(contours.read_text())
    data["features"][0]["geometry"]["coordinates"] = [
        [[350, 150], [700, 150], [700, 850], [350, 850], [350, 150]]
    ]
    contours.write_text(json.dumps(data))
    lines: list[str] = []
    edited = tile_slides([disc_slide], tmp_path, config, log=lines.append, progress=False)
    assert "disc" in edited.patch_files and any("tissue from" in line for line in lines)
    xs = first_coords(edited)[:, 0]
    assert xs.max() < 700 and edited.n_patches["disc"] < first.n_patches["disc"]


def first_coords(report: object) -> np.ndarray:
    return load_patches(report.patch_files["disc"]).coords  # type: ignore[attr-defined]


def test_tissue_geojson_is_what_qupath_and_trident_read(disc_slide: Path, tmp_path: Path) -> None:
    tile_slides([disc_slide], tmp_path, TilingConfig(patch_size=64), progress=False)
    data = json.loads((tmp_path / "contours_geojson" / "disc.geojson").read_text())
    feature = data["features"][0]
    assert data["type"] == "FeatureCollection" and feature["geometry"]["type"] == "Polygon"
    props = feature["properties"]
    assert props["objectType"] == "annotation" and props["tissue_id"] == 0
    assert props["classification"] == {"name": "Tissue", "color": [0, 170, 0]}
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    assert (ring[0] == ring[-1]).all()
    radius = np.hypot(ring[:, 0] - 700, ring[:, 1] - 500)
    assert radius.min() > 330 and radius.max() < 370  # the disc of radius 350
    # QuPath's "export as array", MultiPolygons with holes, and junk
    ring_a = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    hole = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
    (tmp_path / "q.geojson").write_text(json.dumps([{"type": "Feature", "geometry": {
        "type": "MultiPolygon", "coordinates": [[ring_a, hole]]}, "properties": {}}]))  # fmt: skip
    polygons = read_tissue_geojson(tmp_path / "q.geojson", offset=(10, 20))
    assert len(polygons) == 1 and len(polygons[0]) == 2 and polygons[0][0][0].tolist() == [10, 20]
    mask = rasterize_polygons(polygons, (13, 13), (10.0, 10.0), (0.0, 0.0))
    assert mask[3, 2] and not mask[7, 6]  # inside the square, inside the hole
    (tmp_path / "junk.geojson").write_text("{nope")
    with pytest.raises(HMILError, match="not a readable GeoJSON"):
        read_tissue_geojson(tmp_path / "junk.geojson")


def test_openslide_bounds_offset_every_export(disc_slide: Path, tmp_path: Path) -> None:
    """MRXS-like bounds: tiling stays inside them, coords stay level-0 (OpenSlide's frame),
    GeoJSON is in QuPath's frame (level-0 minus the bounds corner)."""
    props = {"openslide.bounds-x": "300", "openslide.bounds-y": "100",
             "openslide.bounds-width": "900", "openslide.bounds-height": "800"}  # fmt: skip
    bounds = bounds_from_properties(props, (1536, 1024))
    assert bounds == Region(300, 100, 900, 800)
    assert bounds_from_properties({"openslide.bounds-x": "5"}, (100, 100)) is None
    assert bounds_from_properties({**props, "openslide.bounds-width": "9000"}, (1536, 1024)) is None
    with open_slide(disc_slide) as slide:
        slide.bounds = bounds  # as the OpenSlide backend sets it for an MRXS
        assert slide.offset == (300, 100)
        result = tile_slide(slide, TilingConfig(patch_size=64))
        assert result.coords[:, 0].min() >= 300 and result.coords[:, 1].min() >= 100
        assert ((result.coords - (300, 100)) % 64 == 0).all()  # the grid starts at the corner
        attrs = result.coords_attrs()
        assert (attrs["bounds_x"], attrs["bounds_y"]) == (300, 100)
        polygons = mask_polygons(result.mask, result.mask_scale, (300.0, 100.0))
        write_tissue_geojson(tmp_path / "t.geojson", polygons, slide.offset)
        ring = np.asarray(
            json.loads((tmp_path / "t.geojson").read_text())["features"][0]["geometry"][
                "coordinates"
            ][0]
        )
        assert abs(np.hypot(ring[:, 0] - 400, ring[:, 1] - 400).mean() - 350) < 15
        back = read_tissue_geojson(tmp_path / "t.geojson", slide.offset)
        assert abs(np.hypot(back[0][0][:, 0] - 700, back[0][0][:, 1] - 500).mean() - 350) < 15
