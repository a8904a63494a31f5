"""``hmil extract --format both`` writes CLAM's feature folder, read back the way CLAM's
``Generic_MIL_Dataset`` reads it (``pt_files/<id>.pt``, ``h5_files/<id>.h5``) and by hmil
(SYNTHETIC slide)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from slide_helpers import disc_image, write_pyramid_tiff

from hmil.cli import main
from hmil.data.bags import find_bag, load_bag
from hmil.slides.extract import bag_paths


def test_both_formats_go_to_clams_folders_one_format_stays_flat(tmp_path: Path) -> None:
    assert bag_paths(tmp_path, "s1", ("h5", "pt")) == [
        tmp_path / "h5_files" / "s1.h5",
        tmp_path / "pt_files" / "s1.pt",
    ]
    assert bag_paths(tmp_path, "s1", ("h5",)) == [tmp_path / "s1.h5"]
    assert bag_paths(tmp_path, "s1", ("pt",)) == [tmp_path / "s1.pt"]


@pytest.fixture(scope="module")
def clam_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hmil tile`` + ``hmil extract --format both`` of a SYNTHETIC disc slide."""
    root = tmp_path_factory.mktemp("clam")
    slide = write_pyramid_tiff(root / "disc.tiff", disc_image())
    assert main(["tile", str(slide), "--out", str(root / "tiles"), "--patch-size", "128",
                 "--quiet"]) == 0  # fmt: skip
    code = main(["extract", str(slide), "--patches", str(root / "tiles"), "--out",
                 str(root / "FEATURES"), "--format", "both", "--device", "cpu",
                 "--quiet"])  # fmt: skip
    assert code == 0
    return root / "FEATURES"


def test_clams_generic_mil_dataset_reads_the_output(clam_features: Path) -> None:
    data_dir = str(clam_features)
    # dataset_generic.py, use_h5 False: torch.load(os.path.join(data_dir, 'pt_files', ...))
    features = torch.load(os.path.join(data_dir, "pt_files", "{}.pt".format("disc")))
    assert isinstance(features, torch.Tensor) and features.ndim == 2 and features.shape[1] == 104
    # use_h5 True: hdf5_file['features'][:] and hdf5_file['coords'][:]
    with h5py.File(os.path.join(data_dir, "h5_files", "{}.h5".format("disc")), "r") as f:
        h5_features, coords = f["features"][:], f["coords"][:]
    np.testing.assert_array_equal(h5_features, features.numpy())
    assert coords.shape == (features.shape[0], 2)
    assert sorted(p.name for p in clam_features.iterdir()) == ["h5_files", "pt_files"]


def test_hmil_reads_clams_folder_and_resumes(
    clam_features: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert find_bag(clam_features, "disc") == clam_features / "h5_files" / "disc.h5"
    pt = load_bag(clam_features / "pt_files" / "disc.pt")
    h5 = load_bag(clam_features / "h5_files" / "disc.h5")
    assert pt.coords is not None and h5.coords is not None and (pt.coords == h5.coords).all()
    assert pt.attrs["encoder"] == "hed-texture" and pt.attrs["patch_size_level0"] == 128
    slide = clam_features.parent / "disc.tiff"
    assert main(["extract", str(slide), "--patches", str(clam_features.parent / "tiles"),
                 "--out", str(clam_features), "--format", "both", "--quiet"]) == 0  # fmt: skip
    assert "bag exists, skipped" in capsys.readouterr().err


def test_older_side_by_side_output_still_reads(clam_features: Path, tmp_path: Path) -> None:
    for sub, name in (("h5_files", "disc.h5"), ("pt_files", "disc.pt")):
        (tmp_path / name).write_bytes((clam_features / sub / name).read_bytes())
    bag = load_bag(tmp_path / "disc.pt")  # coords from disc.h5 beside it
    assert bag.coords is not None and bag.attrs["coords_file"] == str(tmp_path / "disc.h5")
