"""The one bag-on-slide check (hmil.slides.match) and the slide fields ``hmil tile`` records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from slide_helpers import disc_image

from hmil.errors import BagError, SlideError
from hmil.slides import open_slide
from hmil.slides.match import (
    RecordedSlide,
    SlideFacts,
    check_bag_on_slide,
    slide_attrs,
)
from hmil.slides.patch_files import load_patches, save_patches
from hmil.slides.tiling import tile_slide
from hmil.slides.tissue import TilingConfig

#: the two real slides' facts (cmu-1 states 0.499 µm/px; the TCGA file states none)
CMU = SlideFacts(Path("/slides/cmu-1-small-region.svs"), "cmu-1-small-region", (2220, 2967), 0.499)
TCGA = SlideFacts(Path("/slides/tcga-cr-7395-01a-01-ts1.svs"), "tcga-cr-7395-01a-01-ts1",
                  (4443, 3567), None)  # fmt: skip
CMU_BAG = {"name": "cmu-1-small-region", "level0_width": 2220, "level0_height": 2967, "mpp": 0.499}
INSIDE = np.array([[0, 0], [256, 512], [1792, 2560]])


def test_a_matching_pair_passes_and_says_what_was_compared() -> None:
    match = check_bag_on_slide(CMU_BAG, INSIDE, CMU)
    assert match.ok and match.problem is None and not match.renamed
    assert (match.method, match.compared, match.mismatched) == (
        "recorded",
        ("name", "size", "mpp"),
        (),
    )
    assert match.note == (
        "compared the bag's recorded slide name, level-0 size and MPP with slide "
        "'cmu-1-small-region' (2220x2967 px), and its coordinate extent"
    )


def test_a_size_mismatch_is_refused_with_both_names_and_sizes() -> None:
    with pytest.raises(SlideError) as refused:
        check_bag_on_slide(CMU_BAG, INSIDE, TCGA)
    assert str(refused.value) == (
        "/slides/tcga-cr-7395-01a-01-ts1.svs: the bag was tiled from slide 'cmu-1-small-region' "
        "(2220x2967 px), this is 'tcga-cr-7395-01a-01-ts1' (4443x3567 px)"
    )
    # a bag recording only the size (no name) is refused the same way
    with pytest.raises(SlideError, match=r"tiled from a slide \(2220x2967 px\), this is 'tcga"):
        check_bag_on_slide({"level0_width": 2220, "level0_height": 2967}, INSIDE, TCGA)


def test_a_name_only_mismatch_is_refused_unless_allowed() -> None:
    renamed = SlideFacts(Path("/slides/case-17.svs"), "case-17", (2220, 2967), 0.499)
    with pytest.raises(SlideError) as refused:
        check_bag_on_slide(CMU_BAG, INSIDE, renamed)
    assert refused.value.problem == (
        "the bag was tiled from slide 'cmu-1-small-region' (2220x2967 px), "
        "this is 'case-17' (2220x2967 px)"
    )
    allowed = check_bag_on_slide(CMU_BAG, INSIDE, renamed, allow_mismatch=True)
    assert allowed.renamed and not allowed.ok and allowed.mismatched == ("name",)
    assert allowed.problem == refused.value.problem


def test_override_reports_every_mismatch_instead_of_raising() -> None:
    match = check_bag_on_slide(CMU_BAG, INSIDE + 4000, TCGA, allow_mismatch=True)
    # TCGA states no MPP: the recorded one cannot be compared
    assert match.compared == ("name", "size") and match.mismatched == ("name", "size", "extent")
    assert not match.renamed and match.problem is not None
    assert match.problem.startswith("the bag was tiled from slide 'cmu-1-small-region'")


def test_an_mpp_mismatch_is_refused_and_rounding_is_tolerated() -> None:
    at_40x = SlideFacts(CMU.path, CMU.slide_id, CMU.dimensions, 0.2495)
    with pytest.raises(SlideError) as refused:
        check_bag_on_slide(CMU_BAG, INSIDE, at_40x)
    assert refused.value.problem == (
        "the bag was tiled from slide 'cmu-1-small-region' (2220x2967 px, 0.499 µm/px), "
        "this is 'cmu-1-small-region' (2220x2967 px, 0.2495 µm/px)"
    )
    rounded = SlideFacts(CMU.path, CMU.slide_id, CMU.dimensions, 0.5)  # 0.2 % off: same scan
    assert check_bag_on_slide(CMU_BAG, INSIDE, rounded).compared == ("name", "size", "mpp")
    unknown = SlideFacts(CMU.path, CMU.slide_id, CMU.dimensions, None)
    assert check_bag_on_slide(CMU_BAG, INSIDE, unknown).compared == ("name", "size")


def test_a_bag_without_fields_is_checked_by_its_coordinate_extent() -> None:
    clam = {"patch_size": 256, "patch_level": 0}  # CLAM/TRIDENT bags may record nothing else
    match = check_bag_on_slide(clam, INSIDE, CMU)
    assert (match.method, match.compared, match.ok) == ("extent", (), True)
    assert match.note == (
        "the bag records no slide name, size or MPP: only its coordinate extent could be "
        "checked against slide 'cmu-1-small-region' (2220x2967 px)"
    )
    # corners are top-left: (2219, 2966) is the last pixel inside, (2220, _) is outside
    assert check_bag_on_slide(None, np.array([[2219, 2966]]), CMU).ok
    with pytest.raises(SlideError) as refused:
        check_bag_on_slide(clam, np.array([[0, 0], [2220, 100]]), CMU)
    assert refused.value.problem == (
        "the bag's patch corners span (0, 0)–(2220, 100), outside slide "
        "'cmu-1-small-region' (2220x2967 px)"
    )
    with pytest.raises(SlideError, match=r"span \(-1, 5\)"):
        check_bag_on_slide({}, np.array([[-1, 5]]), CMU)
    # a matching name does not excuse coords beyond the slide
    with pytest.raises(SlideError, match="outside slide"):
        check_bag_on_slide({"name": "cmu-1-small-region"}, INSIDE + 2000, CMU)
    # no coords: nothing to place, nothing refused
    assert check_bag_on_slide({}, None, CMU).ok
    assert check_bag_on_slide({}, np.zeros((0, 2)), CMU).ok


@pytest.mark.parametrize(
    "attrs",
    [
        {"name": 7, "level0_width": "2220", "level0_height": 2967.0, "mpp": "0.25"},
        {"name": "", "level0_width": True, "level0_height": 1, "mpp": float("nan")},
        {"name": ["x"], "level0_width": [2220], "level0_height": -4, "mpp": 352.8},
        {"name": None, "level0_width": 2220.5, "level0_height": float("inf"), "mpp": -0.5},
        {"level0_width": 4443},  # half a size is no size
    ],
)
def test_malformed_attributes_read_as_not_recorded(attrs: dict[str, object]) -> None:
    assert RecordedSlide.from_attrs(attrs).size is None
    match = check_bag_on_slide(attrs, INSIDE, TCGA)
    assert match.method == "extent" and match.ok


def test_well_typed_variants_are_read() -> None:
    recorded = RecordedSlide.from_attrs(
        {
            "name": b"cmu-1-small-region",
            "level0_width": np.int64(2220),
            "level0_height": 2967.0,
            "mpp": np.float32(0.499),
        }
    )
    assert recorded.name == "cmu-1-small-region" and recorded.size == (2220, 2967)
    assert recorded.mpp == pytest.approx(0.499)
    assert RecordedSlide.from_attrs("not a mapping") == RecordedSlide()  # type: ignore[arg-type]


def test_malformed_coords_are_a_bag_error() -> None:
    with pytest.raises(BagError, match=r"\(N, 2\)"):
        check_bag_on_slide({}, np.zeros((3, 3)), CMU)
    with pytest.raises(BagError, match="non-finite"):
        check_bag_on_slide({}, np.array([[0.0, np.nan]]), CMU)


def test_an_upload_keeps_the_name_the_user_gave_it(slides_dir: Path) -> None:
    with open_slide(slides_dir / "cmu-1-small-region.svs") as slide:
        as_saved = SlideFacts.of(slide)
        as_uploaded = SlideFacts.of(slide, file_name="CMU-1 Small Region.svs")
        assert as_saved == SlideFacts(slide.path, "cmu-1-small-region", (2220, 2967), 0.499)
        assert as_uploaded.slide_id == "CMU-1 Small Region" and as_uploaded.path == slide.path
        # an open Slide is accepted as it is
        assert check_bag_on_slide(CMU_BAG, INSIDE, slide).ok
        assert slide_attrs(slide) == CMU_BAG


def test_tile_records_the_slide_files_mpp(
    disc_slide: Path, make_slide: Callable[..., Path], tmp_path: Path
) -> None:
    config = TilingConfig(patch_size=64, magnification=10)
    with open_slide(disc_slide) as slide:
        result = tile_slide(slide, config)
        # an override changes the geometry, not what the file states
        overridden = tile_slide(slide, config, mpp=0.25)
    assert result.coords_attrs()["mpp"] == 0.5 and result.trident_attrs()["mpp"] == 0.5
    assert overridden.coords_attrs()["mpp"] == 0.5
    saved = load_patches(save_patches(tmp_path / "disc.h5", result))
    assert saved.attrs["mpp"] == 0.5 and saved.attrs["name"] == "disc"
    assert check_bag_on_slide(saved.attrs, saved.coords, SlideFacts.of(slide)).compared == (
        "name",
        "size",
        "mpp",
    )
    no_mpp = make_slide("nompp.tiff", disc_image(), mpp=None)
    with open_slide(no_mpp) as slide:
        result = tile_slide(slide, TilingConfig(patch_size=64), mpp=0.5)
    assert "mpp" not in result.coords_attrs() and "mpp" not in result.trident_attrs()
