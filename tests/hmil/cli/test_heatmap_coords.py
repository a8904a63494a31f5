"""``hmil heatmap`` on torchmil bags whose coords are patch-grid indices: scaled by a stated
patch size, refused with one line without one (SYNTHETIC features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main
from hmil.config import ModelConfig
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL

SMALL = ModelConfig(hidden_dim=16, coarse_dim=16, fine_dim=8, coarse_attention_dim=8,
                    fine_attention_dim=8)  # fmt: skip
#: a 4 × 3 grid of patch indices, as torchmil's datasets hold them after ``coords / patch_size``
GRID = np.stack(np.divmod(np.arange(12), 3), 1)[:, ::-1].astype(np.int64)


def torchmil_bag(root: Path) -> Path:
    """``<root>/features/features_uni/s1.npy`` and ``<root>/coords/s1.npy`` (grid units)."""
    (root / "features" / "features_uni").mkdir(parents=True)
    (root / "coords").mkdir()
    rng = np.random.default_rng(0)
    np.save(root / "features" / "features_uni" / "s1.npy", rng.standard_normal((12, 8)))
    np.save(root / "coords" / "s1.npy", GRID)
    return root / "features" / "features_uni" / "s1.npy"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    info = CheckpointInfo(hierarchy=Hierarchy.preset("bracs"), in_dim=8, model_config=SMALL)
    return save_checkpoint(tmp_path / "ckpt.pt", HMIL(8, 3, 7, SMALL), info)


def _heatmap(checkpoint: Path, bag: Path, out: Path, *extra: str) -> int:
    return main(["heatmap", "--checkpoint", str(checkpoint), "--bag", str(bag), "--level",
                 "fine", "--label", "IC", "--out", str(out), "--max-size", "256",
                 "--device", "cpu", *extra])  # fmt: skip


def test_grid_coords_without_a_patch_size_are_refused_in_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = torchmil_bag(tmp_path / "processed")
    assert _heatmap(checkpoint, bag, tmp_path / "h.png") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {bag}: coords are patch-grid indices (0, 1, 2, ...), not level-0 pixels, and "
        "the bag states no patch size: give the level-0 patch size to scale them"
    ]
    assert not (tmp_path / "h.png").exists()


def test_grid_coords_are_scaled_by_the_given_or_the_folders_patch_size(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = torchmil_bag(tmp_path / "processed")
    out = tmp_path / "given.png"
    assert _heatmap(checkpoint, bag, out, "--patch-size", "256") == 0
    assert "(patch 256px at level 0)" in capsys.readouterr().err
    with Image.open(out) as image:  # 3 × 4 patches of 256 px: a 768 × 1024 canvas, ≤ 256 a side
        assert image.size == (192, 256)
    folder_bag = torchmil_bag(tmp_path / "patches_512")  # torchmil's patches_<size> folder
    out = tmp_path / "folder.png"
    assert _heatmap(checkpoint, folder_bag, out) == 0
    assert "(patch 512px at level 0)" in capsys.readouterr().err
    with Image.open(out) as image:
        assert image.size == (192, 256)
