"""``hmil tile`` / ``hmil extract`` options for CLAM/TRIDENT/UNI users, through the CLI.

Slides are SYNTHETIC (a small pyramid); the ResNet-50 trunk is the real architecture (3, 4, 6
blocks) with SEEDED RANDOM weights in torchvision's key layout, on 4 patches.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from seeded_weights import seeded_state_dict
from slide_helpers import GLASS, TISSUE, write_pyramid_tiff

from hmil.cli import main
from hmil.data.bags import load_bag
from hmil.slides.backbones import ResNetTrunkConfig, build_network
from hmil.slides.weights import sha256_of


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """512 × 512 SYNTHETIC slide, no microns-per-pixel (``--mpp`` supplies it)."""
    image = np.empty((512, 512, 3), dtype=np.uint8)
    image[:] = GLASS
    yy, xx = np.mgrid[:512, :512]
    image[(yy - 256) ** 2 + (xx - 256) ** 2 < 200**2] = TISSUE
    return write_pyramid_tiff(tmp_path_factory.mktemp("s") / "tiny.tiff", image, (1, 2), mpp=None)


def test_tile_with_slide_list_overlap_and_rerun(
    small_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "wsis.csv"
    listing.write_text("wsi,mpp\ntiny.tiff,0.5\n")
    out = tmp_path / "20x_128px_64px_overlap"
    args = ["tile", "--slide-list", str(listing), "--slides-dir", str(small_slide.parent),
            "--out", str(out), "--patch-size", "128", "--overlap", "64", "--quiet"]  # fmt: skip
    assert main(args) == 0
    for name in ("patches/tiny.h5", "patches/tiny_patches.h5", "masks/tiny.png",
                 "contours_geojson/tiny.geojson"):  # fmt: skip
        assert (out / name).is_file(), name
    with h5py.File(out / "patches" / "tiny_patches.h5") as f:
        assert (
            f["coords"].attrs["overlap"] == 64 and f["coords"].attrs["target_magnification"] == 20
        )
    capsys.readouterr()
    assert main(args) == 0
    assert "1 already tiled" in capsys.readouterr().err
    assert main(["tile", "--out", str(out)]) == 2
    assert _errors(capsys.readouterr().err) == [
        "error: SLIDE: no slides given (name slide files or use --slide-list CSV)"
    ]


def test_extract_resnet50_trunc_from_a_torchvision_file(
    small_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles = tmp_path / "tiles"
    assert main(["tile", str(small_slide), "--out", str(tiles), "--mpp", "0.5",
                 "--patch-size", "256", "--tissue-threshold", "0.1", "--quiet"]) == 0  # fmt: skip
    with torch.device("meta"):
        net, _ = build_network(ResNetTrunkConfig(), "hmil")
    state = seeded_state_dict({k: tuple(v.shape) for k, v in net.state_dict().items()})
    state = {k: v for k, v in state.items() if "num_batches_tracked" not in k}  # old .pth files
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    weights = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, weights)
    bags = tmp_path / "features_resnet50"
    code = main(["extract", str(small_slide), "--patches", str(tiles), "--out", str(bags),
                 "--encoder", "resnet50_trunc", "--weights", str(weights), "--device", "cpu",
                 "--format", "both", "--batch-size", "2", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    bag = load_bag(bags / "h5_files" / "tiny.h5")  # both formats: CLAM's folders
    assert bag.dim == 1024 and bag.n_instances >= 2
    assert bag.attrs["encoder"] == "resnet50" and bag.attrs["encoder_input_size"] == 224
    assert bag.attrs["encoder_weights_sha256"] == sha256_of(weights)
    assert isinstance(torch.load(bags / "pt_files" / "tiny.pt"), torch.Tensor)


def test_extract_errors_are_one_line(
    small_slide: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["extract", str(small_slide), "--patches", str(tmp_path), "--out", str(tmp_path / "b")]
    assert main([*base, "--encoder", "uni_v1"]) == 2
    assert _errors(capsys.readouterr().err) == [
        "error: --weights: 'uni_v1' needs a weights file (MahmoodLab/UNI pytorch_model.bin); "
        "nothing is downloaded"
    ]
    junk = tmp_path / "pytorch_model.bin"
    junk.write_bytes(b"not torch")
    assert main([*base, "--encoder", "uni_v2", "--weights", str(junk)]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert line.startswith(f"error: {junk}: not a readable weights file")
    assert main([*base, "--precision", "bf16"]) == 2  # hed-texture
    assert "computes in fp32 only" in capsys.readouterr().err
