"""``hmil tile`` → ``hmil extract`` → ``hmil heatmap`` on the real test slides, through the CLI.

Most tests use an untrained HMIL model (random weights) for the hed-texture dimension: the point
there is the plumbing (files, exit codes, messages). ``test_trained_demo_model_heatmap_on_every_
tiled_slide`` renders the committed, trained demo checkpoint (same encoder) on each real slide.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main
from hmil.config import ModelConfig
from hmil.data.bags import load_bag, save_bag
from hmil.geojson import colour_for_class
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.slides.encoders import HED_TEXTURE_DIM

H_AND_E = ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs"]
BAD = ["truncated-aperio.svs", "unreadable-tiles.svs", "unsupported-compression.tiff"]


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


def h5_bag(root: Path, sid: str) -> Path:
    """The ``.h5`` bag ``--format both`` writes: CLAM's ``h5_files/`` under ``--out``."""
    return root / "bags" / "h5_files" / f"{sid}.h5"


@pytest.fixture(scope="module")
def pipeline(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tile and extract the real slides once (and a checkpoint for D = 104)."""
    root = tmp_path_factory.mktemp("pipeline")
    slides = [str(slides_dir / n) for n in [*H_AND_E, "boxes-4-level.tiff"]]
    assert main(["tile", *slides, "--out", str(root / "tiles"), "--quiet"]) == 0
    code = main(["extract", *slides, "--patches", str(root / "tiles"), "--out",
                 str(root / "bags"), "--format", "both", "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    torch.manual_seed(0)
    hierarchy = Hierarchy.preset("bracs")
    config = ModelConfig(hidden_dim=32, coarse_dim=32, fine_dim=16, coarse_attention_dim=8,
                         fine_attention_dim=8)  # fmt: skip
    model = HMIL(HED_TEXTURE_DIM, len(hierarchy.coarse), len(hierarchy.fine), config)
    info = CheckpointInfo(hierarchy=hierarchy, in_dim=HED_TEXTURE_DIM, model_config=config,
                          encoder="hed-texture")  # fmt: skip
    save_checkpoint(root / "checkpoint.pt", model, info)
    return {"root": root, "checkpoint": root / "checkpoint.pt", "slides": slides_dir}


def test_tile_and_extract_outputs(pipeline: dict[str, Path]) -> None:
    root = pipeline["root"]
    counts = {"cmu-1-small-region": 37, "tcga-cr-7395-01a-01-ts1": 155, "boxes-4-level": 1}
    for sid, n in counts.items():
        assert (root / "tiles" / "masks" / f"{sid}.png").is_file()
        for suffix in (".h5", ".pt"):
            bag = load_bag(root / "bags" / f"{suffix[1:]}_files" / f"{sid}{suffix}")  # CLAM
            assert bag.features.shape == (n, HED_TEXTURE_DIM)
            assert bag.coords is not None and bag.coords.shape == (n, 2)
            assert bag.attrs["encoder"] == "hed-texture" and bag.attrs["patch_size_level0"] == 256


def test_bad_slides_are_skipped_with_one_line_each(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slides = pipeline["slides"]
    bad = [str(slides / "bad" / n) for n in BAD]
    code = main(["tile", str(slides / H_AND_E[0]), *bad, "--out", str(tmp_path), "--quiet"])
    errors = _errors(capsys.readouterr().err)
    assert code == 3
    assert [e.split(": ")[1] for e in errors] == bad
    assert code == 3 and (tmp_path / "patches" / "cmu-1-small-region.h5").is_file()
    # only bad slides: nothing could be done → 2; --strict stops at the first → 2
    assert main(["tile", *bad, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert main(["tile", bad[0], str(slides / H_AND_E[0]), "--out", str(tmp_path / "s"),
                 "--strict", "--quiet"]) == 2  # fmt: skip
    assert len(_errors(capsys.readouterr().err)) == 4
    assert not (tmp_path / "s" / "patches").exists()
    code = main(["extract", *bad, "--patches", str(pipeline["root"] / "tiles"), "--out",
                 str(tmp_path / "bags"), "--quiet"])  # fmt: skip
    assert code == 2 and len(_errors(capsys.readouterr().err)) == 3


def test_no_traceback_from_the_real_command(pipeline: dict[str, Path], tmp_path: Path) -> None:
    bad = pipeline["slides"] / "bad" / "unsupported-compression.tiff"
    proc = subprocess.run(
        [sys.executable, "-m", "hmil", "tile", str(bad), "--out", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"error: {bad}: not a readable slide" in proc.stderr
    assert "Unsupported TIFF compression: 52479" in proc.stderr


def test_extract_resumes(pipeline: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = pipeline["root"]
    slide = str(pipeline["slides"] / H_AND_E[0])
    code = main(["extract", slide, "--patches", str(root / "tiles" / "patches"), "--out",
                 str(root / "bags"), "--format", "both", "--quiet"])  # fmt: skip
    assert code == 0
    assert "bag exists, skipped" in capsys.readouterr().err


@pytest.mark.parametrize("sid", ["cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"])
def test_heatmap_over_the_slide_geojson_and_crops(
    pipeline: dict[str, Path], tmp_path: Path, sid: str
) -> None:
    root, slides = pipeline["root"], pipeline["slides"]
    slide = next(slides / n for n in H_AND_E if n.startswith(sid))
    code = main(["heatmap", "--checkpoint", str(pipeline["checkpoint"]), "--bag",
                 str(h5_bag(root, sid)), "--slide", str(slide), "--level", "fine",
                 "--label", "IC", "--out", str(tmp_path / "h.png"), "--geojson",
                 str(tmp_path / "h.geojson"), "--max-size", "512", "--topk", "2", "--crops",
                 str(tmp_path / "crops"), "--smooth", "0.5", "--cmap", "magma",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0
    with Image.open(tmp_path / "h.png") as image:
        assert max(image.size) == 512
    bag = load_bag(h5_bag(root, sid))
    collection = json.loads((tmp_path / "h.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    assert len(collection["features"]) == bag.n_instances
    properties = collection["features"][0]["properties"]
    bracs = Hierarchy.preset("bracs")
    assert set(properties["measurements"]) == {f"attention_{c}" for c in bracs.fine} | {
        "top_label_index"
    }
    ic = {"name": "IC", "color": list(colour_for_class("IC", bracs))}
    assert properties["classification"] == ic  # the --label, coloured by the hierarchy
    total = sum(f["properties"]["measurements"]["attention_IC"] for f in collection["features"])
    assert total == pytest.approx(1.0, abs=1e-4)  # attention is a softmax over the patches
    crops = sorted((tmp_path / "crops").glob("*/*.png"))
    assert len(crops) == 2 * 7
    with Image.open(crops[0]) as crop:
        assert crop.size == (256, 256)


DEMO_CHECKPOINT = Path(__file__).resolve().parents[3] / "checkpoints" / "demo" / "checkpoint.pt"


@pytest.mark.parametrize("sid", ["cmu-1-small-region", "tcga-cr-7395-01a-01-ts1", "boxes-4-level"])
def test_trained_demo_model_heatmap_on_every_tiled_slide(
    pipeline: dict[str, Path], tmp_path: Path, sid: str
) -> None:
    # kidney-48-5 is the fourth real slide: it has no tissue patches (reported by tile), so no bag
    root, slides = pipeline["root"], pipeline["slides"]
    slide = next(slides.glob(f"{sid}.*"))
    code = main(["heatmap", "--checkpoint", str(DEMO_CHECKPOINT), "--bag",
                 str(h5_bag(root, sid)), "--slide", str(slide), "--level", "coarse",
                 "--label", "malignant", "--out", str(tmp_path / "h.png"), "--geojson",
                 str(tmp_path / "h.geojson"), "--max-size", "384", "--device", "cpu"])  # fmt: skip
    assert code == 0
    with Image.open(tmp_path / "h.png") as image:
        assert 0 < max(image.size) <= 384  # --max-size caps; boxes-4-level is smaller
        assert np.asarray(image.convert("RGB")).std() > 0  # slide + overlay, not a blank image
    collection = json.loads((tmp_path / "h.geojson").read_text())
    assert len(collection["features"]) == load_bag(h5_bag(root, sid)).n_instances
    first = collection["features"][0]["properties"]["measurements"]
    assert set(first) == {"attention_benign", "attention_atypical", "attention_malignant",
                          "top_label_index"}  # fmt: skip


def test_heatmap_on_a_blank_canvas_and_errors(
    pipeline: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, slides = pipeline["root"], pipeline["slides"]
    base = ["heatmap", "--checkpoint", str(pipeline["checkpoint"]), "--device", "cpu"]
    bag = str(root / "bags" / "pt_files" / "tcga-cr-7395-01a-01-ts1.pt")
    out = tmp_path / "blank.png"
    assert main([*base, "--bag", bag, "--level", "coarse", "--label", "malignant",
                 "--out", str(out)]) == 0  # fmt: skip
    with Image.open(out) as png:
        image = np.asarray(png)
    assert max(image.shape[:2]) <= 2048 and image.shape[2] == 3
    assert main([*base, "--bag", bag, "--level", "coarse", "--label", "IC",
                 "--out", str(out)]) == 2  # fmt: skip
    cmu = str(slides / H_AND_E[0])
    assert main([*base, "--bag", bag, "--slide", cmu, "--level", "fine", "--label", "IC",
                 "--out", str(out)]) == 2  # fmt: skip
    no_coords = tmp_path / "plain.pt"
    save_bag(no_coords, load_bag(bag).features)
    assert main([*base, "--bag", str(no_coords), "--level", "fine", "--label", "IC",
                 "--out", str(out)]) == 2  # fmt: skip
    errors = _errors(capsys.readouterr().err)
    assert "'IC' is not a coarse class" in errors[0]
    assert "wrong --slide" in errors[1]
    assert "bag has no coords" in errors[2]
