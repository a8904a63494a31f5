"""The demo's localisation number and ``hmil regions`` are one definition: on a tiny SYNTHETIC
slide whose lesion outline is written by the demo's own writer, the model card's key-instance
mask (:func:`hmil.demo.cohort.lesion_key_mask`) is the patches inside the lesion region, and
the true row's AUROC of the card equals the true label's ``auroc`` of ``region_stats``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmil.demo.classes import demo_hierarchy
from hmil.demo.cohort import lesion_key_mask
from hmil.demo.synthetic_slides import MASK_DOWNSAMPLE, lesion_features
from hmil.geojson import write_features
from hmil.regions import merge_by_class, read_annotations, region_stats
from hmil.train.attention_metrics import bag_localisation

SLIDE = "synth-tiny"
LABEL = "carcinoma-small"
PATCH = 128


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 1024 x 1024 px SYNTHETIC slide's lesion (two components) and its 8 x 8 patch grid.

    Returns the cohort root, the ``(64, 2)`` coords and the hand-computed ``(64,)`` mask.
    """
    side = 1024 // MASK_DOWNSAMPLE
    lesion = np.zeros((side, side), dtype=bool)
    lesion[8:24, 8:24] = True  # level-0 x, y in [128, 384): patch centres 192 and 320
    lesion[40:56, 40:48] = True  # x in [640, 768), y in [640, 896): centres (704, 704), (704, 832)
    features = lesion_features(lesion, LABEL, SLIDE)
    assert len(features) == 2
    write_features(tmp_path / "masks" / f"{SLIDE}_lesion.geojson", features)
    ys, xs = np.mgrid[0:1024:PATCH, 0:1024:PATCH]
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    centre = coords + PATCH // 2
    expected = np.zeros(len(coords), dtype=bool)
    for x, y in [(192, 192), (320, 192), (192, 320), (320, 320), (704, 704), (704, 832)]:
        expected |= (centre[:, 0] == x) & (centre[:, 1] == y)
    return tmp_path, coords, expected


def test_the_key_instances_are_the_patches_inside_the_lesion(
    tiny: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    root, coords, expected = tiny
    mask = lesion_key_mask(root, SLIDE, coords, {"patch_size_level0": PATCH})
    assert mask.sum() == 6
    assert mask.tolist() == expected.tolist()


def test_model_card_auroc_equals_region_stats_auroc(
    tiny: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    root, coords, _ = tiny
    hierarchy = demo_hierarchy()
    rng = np.random.default_rng(0)
    fine = rng.dirichlet(np.ones(coords.shape[0]), size=len(hierarchy.fine))
    coarse = rng.dirichlet(np.ones(coords.shape[0]), size=len(hierarchy.coarse))
    true = hierarchy.fine.index(LABEL)
    mask = lesion_key_mask(root, SLIDE, coords, {"patch_size_level0": PATCH})
    card = bag_localisation(fine, mask, true).true_row_auroc
    regions = read_annotations(
        root / "masks" / f"{SLIDE}_lesion.geojson", classes=[*hierarchy.fine, *hierarchy.coarse]
    )
    stats = region_stats(
        merge_by_class(regions),
        coords,
        PATCH,
        {"coarse": coarse, "fine": fine},
        {"coarse": hierarchy.coarse, "fine": hierarchy.fine},
    )
    row = stats[(stats["level"] == "fine") & (stats["label"] == LABEL)]
    assert len(row) == 1 and row["n_inside"].iloc[0] == 6
    assert 0.0 < card < 1.0
    assert row["auroc"].iloc[0] == card
