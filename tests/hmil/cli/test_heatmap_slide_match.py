"""``hmil heatmap --slide`` refuses a bag drawn over another slide (the shared check in
hmil.slides.match) and draws it with ``--allow-slide-mismatch``; ``hmil tile``/``extract`` record
the slide fields it compares. Real slides, 4 patches, an untrained model: only the plumbing."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main
from hmil.config import ModelConfig
from hmil.data.bags import load_bag
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.slides.encoders import HED_TEXTURE_DIM

CMU, TCGA = "cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


def _keep_first(patch_file: Path, n: int, attrs: dict[str, object] | None = None) -> None:
    """Cut a patch file down to its first ``n`` patches (a fast extract); ``attrs`` replace
    the coords attributes when given."""
    with h5py.File(patch_file, "r") as f:
        coords = f["coords"][:n]
        kept = dict(f["coords"].attrs) if attrs is None else attrs
    with h5py.File(patch_file, "w") as f:
        dset = f.create_dataset("coords", data=coords)
        for key, value in kept.items():
            dset.attrs[key] = value


@pytest.fixture(scope="module")
def cmu_bag(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """cmu-1 tiled and extracted (4 patches), and an untrained checkpoint for its features."""
    root = tmp_path_factory.mktemp("match")
    slide = slides_dir / f"{CMU}.svs"
    assert main(["tile", str(slide), "--out", str(root / "tiles"), "--quiet"]) == 0
    _keep_first(root / "tiles" / "patches" / f"{CMU}.h5", 4)
    assert main(["extract", str(slide), "--patches", str(root / "tiles"), "--out",
                 str(root / "bags"), "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    torch.manual_seed(0)
    hierarchy = Hierarchy.preset("bracs")
    config = ModelConfig(hidden_dim=16, coarse_dim=16, fine_dim=8, coarse_attention_dim=8,
                         fine_attention_dim=8)  # fmt: skip
    model = HMIL(HED_TEXTURE_DIM, len(hierarchy.coarse), len(hierarchy.fine), config)
    info = CheckpointInfo(hierarchy=hierarchy, in_dim=HED_TEXTURE_DIM, model_config=config,
                          encoder="hed-texture")  # fmt: skip
    save_checkpoint(root / "checkpoint.pt", model, info)
    return {"root": root, "bag": root / "bags" / f"{CMU}.h5", "checkpoint": root / "checkpoint.pt"}


def _heatmap(cmu_bag: dict[str, Path], slide: Path, out: Path, *extra: str) -> int:
    return main(["heatmap", "--checkpoint", str(cmu_bag["checkpoint"]), "--bag",
                 str(cmu_bag["bag"]), "--slide", str(slide), "--level", "coarse", "--label",
                 "malignant", "--out", str(out), "--max-size", "256", "--device", "cpu",
                 *extra])  # fmt: skip


def test_tile_and_extract_record_the_slide_fields(cmu_bag: dict[str, Path]) -> None:
    attrs = load_bag(cmu_bag["bag"]).attrs
    assert attrs["name"] == CMU
    assert (attrs["level0_width"], attrs["level0_height"]) == (2220, 2967)
    assert attrs["mpp"] == pytest.approx(0.499)


def test_extract_fills_the_slide_fields_a_clam_patch_file_lacks(
    cmu_bag: dict[str, Path], slides_dir: Path, tmp_path: Path
) -> None:
    patches = tmp_path / "patches" / f"{CMU}.h5"
    patches.parent.mkdir()
    patches.write_bytes((cmu_bag["root"] / "tiles" / "patches" / f"{CMU}.h5").read_bytes())
    clam = {"patch_size": 256, "patch_level": 0, "downsample": np.array([1.0, 1.0]),
            "name": CMU}  # fmt: skip
    _keep_first(patches, 2, clam)
    assert main(["extract", str(slides_dir / f"{CMU}.svs"), "--patches", str(tmp_path),
                 "--out", str(tmp_path / "bags"), "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    attrs = load_bag(tmp_path / "bags" / f"{CMU}.h5").attrs
    assert (attrs["level0_width"], attrs["level0_height"]) == (2220, 2967)
    assert attrs["mpp"] == pytest.approx(0.499) and attrs["patch_size"] == 256


def test_heatmap_refuses_another_slide_and_draws_it_when_allowed(
    cmu_bag: dict[str, Path], slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tcga = slides_dir / f"{TCGA}.svs"
    out = tmp_path / "h.png"
    capsys.readouterr()
    assert _heatmap(cmu_bag, tcga, out) == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: {tcga}: the bag was tiled from slide '{CMU}' (2220x2967 px), this is "
        f"'{TCGA}' (4443x3567 px) (wrong --slide? --allow-slide-mismatch draws it anyway)"
    ]
    assert not out.exists()
    assert _heatmap(cmu_bag, tcga, out, "--allow-slide-mismatch") == 0
    err = capsys.readouterr().err
    assert not _errors(err) and out.is_file()
    assert f"warning: {tcga}: the bag was tiled from slide '{CMU}' (2220x2967 px)" in err


def test_heatmap_over_a_renamed_slide_file(
    cmu_bag: dict[str, Path], slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    renamed = tmp_path / "case-17.svs"
    renamed.symlink_to(slides_dir / f"{CMU}.svs")
    out = tmp_path / "h.png"
    capsys.readouterr()
    assert _heatmap(cmu_bag, renamed, out) == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: {renamed}: the bag was tiled from slide '{CMU}' (2220x2967 px), this is "
        "'case-17' (2220x2967 px) (wrong --slide? --allow-slide-mismatch draws it anyway)"
    ]
    assert _heatmap(cmu_bag, renamed, out, "--allow-slide-mismatch") == 0 and out.is_file()
    assert _heatmap(cmu_bag, slides_dir / f"{CMU}.svs", tmp_path / "same.png") == 0
