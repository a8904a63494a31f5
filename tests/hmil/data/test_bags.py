"""Bags in the peers' own folder layouts: TRIDENT job folders, torchmil grid coords, CLAM's
feature folder, and the encoder a folder names (SYNTHETIC features, the peers' paths and keys)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hmil.data.bags import (
    ENCODER_FROM_FOLDER,
    find_bag,
    folder_encoder,
    in_grid_units,
    infer_patch_size,
    level0_coords,
    load_bag,
    save_bag,
    save_feature_tensor,
)
from hmil.errors import BagError

RNG = np.random.default_rng(7)
FEATURES = RNG.standard_normal((6, 8)).astype(np.float32)
#: a 3 × 2 patch grid (x, y): indices, and TRIDENT's level-0 pixels for 512 px patches
GRID = np.stack(np.divmod(np.arange(6), 2), 1)[:, ::-1].astype(np.int64)
PIXELS = GRID * 512


def trident_job(root: Path, encoder: str = "uni_v1") -> Path:
    """A TRIDENT job folder as ``Processor.run_patching_job`` / ``run_feature_extraction_job``
    lay it out: ``<job>/20x_256px_0px_overlap/patches/s1_patches.h5`` (``coords`` with
    ``coords_to_h5``'s attributes) and ``features_<enc>/s1.pt`` (``torch.save`` of the numpy
    features, ``saveas="pt"``). Returns the ``.pt`` bag."""
    coords_dir = root / "job" / "20x_256px_0px_overlap"
    (coords_dir / "patches").mkdir(parents=True)
    with h5py.File(coords_dir / "patches" / "s1_patches.h5", "w") as f:
        dset = f.create_dataset("coords", data=PIXELS)
        attrs = {
            "patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
            "target_magnification": 20, "overlap": 0, "name": "s1",
            "savetodir": str(coords_dir), "level0_width": 4096, "level0_height": 4096,
        }  # fmt: skip
        for key, value in attrs.items():
            dset.attrs[key] = value
    features_dir = coords_dir / f"features_{encoder}"
    features_dir.mkdir()
    torch.save(FEATURES, features_dir / "s1.pt")
    return features_dir / "s1.pt"


def test_trident_pt_bags_find_their_coords_in_the_job_folder(tmp_path: Path) -> None:
    bag = load_bag(trident_job(tmp_path))
    np.testing.assert_array_equal(bag.features.numpy(), FEATURES)
    assert bag.coords is not None and (bag.coords == PIXELS).all()
    assert bag.attrs["coords_file"].endswith("patches/s1_patches.h5")
    assert bag.attrs["level0_magnification"] == 40
    assert infer_patch_size(bag.coords, bag.attrs, bag.path) == 512  # patch_size_level0 wins
    # the folder names the encoder (TRIDENT's .pt records none)
    assert bag.attrs["encoder"] == "uni_v1"
    assert bag.attrs[ENCODER_FROM_FOLDER] == "features_uni_v1"


def test_a_trident_patch_file_for_another_run_is_refused(tmp_path: Path) -> None:
    pt = trident_job(tmp_path)
    with h5py.File(pt.parent.parent / "patches" / "s1_patches.h5", "a") as f:
        del f["coords"]
        f["coords"] = PIXELS[:4]
    with pytest.raises(BagError, match=r"4 coords in .*s1_patches\.h5 for 6 feature vectors"):
        load_bag(pt)


def test_recorded_encoders_win_over_the_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "features_uni_v1"
    save_bag(folder / "a.h5", FEATURES, PIXELS, {"encoder": "conch_v15"})
    save_bag(folder / "b.h5", FEATURES, PIXELS)
    assert load_bag(folder / "a.h5").attrs["encoder"] == "conch_v15"
    b = load_bag(folder / "b.h5")
    assert b.attrs["encoder"] == "uni_v1" and b.attrs[ENCODER_FROM_FOLDER] == "features_uni_v1"
    assert folder_encoder(tmp_path / "features_resnet50" / "pt_files" / "x.pt") == "resnet50"
    assert folder_encoder(tmp_path / "bags" / "x.pt") == ""
    assert folder_encoder(tmp_path / "features_" / "x.pt") == ""
    assert "encoder" not in load_bag(save_bag(tmp_path / "plain" / "c.h5", FEATURES)).attrs


def test_grid_units_are_told_from_pixels() -> None:
    assert in_grid_units(GRID)
    assert not in_grid_units(PIXELS)
    assert not in_grid_units(GRID[:1])  # one patch: nothing to tell
    # CLAM's per-contour grids: two columns 1 px apart, most gaps are the patch step
    contours = np.array([[0, 0], [256, 0], [512, 0], [513, 256], [769, 256], [1025, 256]])
    assert not in_grid_units(contours)


def torchmil_root(root: Path, coords: np.ndarray) -> Path:
    """torchmil's processed layout (``Camelyon16MILDataset``): ``<root>/features/features_<enc>/
    <name>.npy`` and ``<root>/coords/<name>.npy``. Returns the features file."""
    (root / "features" / "features_uni").mkdir(parents=True)
    (root / "coords").mkdir()
    np.save(root / "features" / "features_uni" / "s2.npy", FEATURES)
    np.save(root / "coords" / "s2.npy", coords)
    return root / "features" / "features_uni" / "s2.npy"


def test_torchmil_grid_coords_are_scaled_by_the_patches_folder(tmp_path: Path) -> None:
    bag = load_bag(torchmil_root(tmp_path / "patches_512", GRID))
    assert bag.coords is not None and (bag.coords == PIXELS).all()
    assert bag.attrs["patch_size_level0"] == 512 and bag.attrs["coords_grid_scale"] == 512
    assert infer_patch_size(bag.coords, bag.attrs, bag.path) == 512
    assert bag.attrs["encoder"] == "uni"
    # coords already in pixels are kept as they are
    pixels = load_bag(torchmil_root(tmp_path / "px" / "patches_512", PIXELS))
    assert pixels.coords is not None and (pixels.coords == PIXELS).all()
    assert "coords_grid_scale" not in pixels.attrs


def test_grid_coords_without_a_stated_size_are_refused_not_drawn(tmp_path: Path) -> None:
    bag = load_bag(torchmil_root(tmp_path / "processed", GRID))
    assert bag.coords is not None and (bag.coords == GRID).all()  # prediction does not need them
    with pytest.raises(BagError, match=r"s2\.npy: coords are patch-grid indices"):
        infer_patch_size(bag.coords, bag.attrs, bag.path)
    with pytest.raises(BagError, match="states no patch size"):
        level0_coords(bag.coords, bag.attrs, None, bag.path)
    coords, size = level0_coords(bag.coords, bag.attrs, 256.0, bag.path)
    assert size == 256.0 and (coords == GRID * 256).all()
    # a stated size on pixel coords only sets the drawn size
    coords, size = level0_coords(PIXELS, {}, 500.0)
    assert size == 500.0 and (coords == PIXELS).all()


def test_grid_coords_in_an_h5_with_a_size_attribute_are_scaled(tmp_path: Path) -> None:
    save_bag(tmp_path / "g.h5", FEATURES, GRID, coords_attrs={"patch_size_level0": 224})
    bag = load_bag(tmp_path / "g.h5")
    assert bag.coords is not None and (bag.coords == GRID * 224).all()


def test_clam_feature_folder_is_read_with_coords_from_h5_files(tmp_path: Path) -> None:
    """CLAM's ``extract_features_fp.py``: ``h5_files/<id>.h5`` (``features``, ``coords``, no
    attributes) and ``pt_files/<id>.pt`` (``torch.save`` of the features tensor)."""
    data_dir = tmp_path / "FEATURES"
    (data_dir / "h5_files").mkdir(parents=True)
    with h5py.File(data_dir / "h5_files" / "s3.h5", "w") as f:
        f["features"] = FEATURES
        f["coords"] = PIXELS.astype(np.int32)  # CLAM writes int32 coords
    save_feature_tensor(data_dir / "pt_files" / "s3.pt", FEATURES)
    assert find_bag(data_dir, "s3") == data_dir / "h5_files" / "s3.h5"
    bag = load_bag(data_dir / "pt_files" / "s3.pt")
    assert bag.coords is not None and (bag.coords == PIXELS).all()
    assert bag.attrs["coords_file"] == str(data_dir / "h5_files" / "s3.h5")
    assert infer_patch_size(bag.coords, bag.attrs) == 512  # CLAM stores no size: the grid step
    (data_dir / "h5_files" / "s3.h5").unlink()
    assert find_bag(data_dir, "s3") == data_dir / "pt_files" / "s3.pt"
