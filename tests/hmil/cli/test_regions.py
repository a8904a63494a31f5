"""``hmil regions`` end to end on a tiny checkpoint and a SYNTHETIC bag: the statistics CSV
equals the library's on the same attention, the printed table, one region per class, the
slide's bounds offset, and bad input as one ``error:`` line, exit 2 and no CSV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from shapely.geometry import box

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main
from hmil.cli import regions as regions_cli
from hmil.config import ModelConfig
from hmil.data.bags import save_bag
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.predict import load_checkpoint
from hmil.regions import STATS_COLUMNS, Region, region_stats

SMALL = ModelConfig(hidden_dim=16, coarse_dim=16, fine_dim=8, coarse_attention_dim=8,
                    fine_attention_dim=8)  # fmt: skip
PATCH = 256
#: a 4 x 3 grid of 256-px patches on a 1024 x 768 px slide (centres x 128..896, y 128..640)
COORDS = np.stack(np.divmod(np.arange(12), 4), 1)[:, ::-1].astype(np.int64) * PATCH
#: holds the centres (128, 128) and (384, 128): patches 0 and 1
LEFT = [[[0, 0], [500, 0], [500, 200], [0, 200], [0, 0]]]
#: holds the centre (896, 640): patch 11
CORNER = [[[800, 600], [1000, 600], [1000, 700], [800, 700], [800, 600]]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    info = CheckpointInfo(hierarchy=Hierarchy.preset("bracs"), in_dim=8, model_config=SMALL)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", HMIL(8, 3, 7, SMALL), info)


def make_bag(path: Path, **extra: Any) -> Path:
    features = np.random.default_rng(0).standard_normal((12, 8))
    attrs = {"patch_size_level0": PATCH, "level0_width": 1024, "level0_height": 768, **extra}
    return save_bag(path, features, COORDS, coords_attrs=attrs)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bag(tmp_path_factory.mktemp("bag") / "s1.h5", name="s1")


def write_geojson(path: Path, *features: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def polygon(coords: Any, kind: str = "Polygon", **properties: Any) -> dict[str, Any]:
    geometry = {"type": kind, "coordinates": coords}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def regions(checkpoint: Path, bag: Path, geojson: Path, out: Path, *extra: str) -> int:
    return main(["regions", "--checkpoint", str(checkpoint), "--bag", str(bag), "--annotations",
                 str(geojson), "--out", str(out), "--device", "cpu", *extra])  # fmt: skip


def test_stats_csv_equals_the_library_on_the_same_attention(
    checkpoint: Path, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    geojson = write_geojson(
        tmp_path / "s1.geojson",
        polygon(LEFT, name="left", classification={"name": "IC", "color": [1, 2, 3]}),
        polygon(CORNER),
    )
    out = tmp_path / "out" / "stats.csv"
    assert regions(checkpoint, bag, geojson, out) == 0
    frame = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(frame.columns) == list(STATS_COLUMNS)
    assert len(frame) == 2 * (3 + 7)  # 2 regions x (coarse + fine classes)
    assert frame["region"].unique().tolist() == ["left", "region 2"]
    assert frame.groupby("region")["n_inside"].first().to_dict() == {"left": 2, "region 2": 1}
    # the same numbers as the library on the predictor's attention
    pred = load_checkpoint(checkpoint, device="cpu").predict(bag, attention=True)
    assert pred.attention is not None
    hierarchy = Hierarchy.preset("bracs")
    shapes = [
        Region("left", "IC", box(0, 0, 500, 200)),
        Region("region 2", "", box(800, 600, 1000, 700)),
    ]
    expected = region_stats(shapes, COORDS, PATCH, pred.attention,
                            {"coarse": hierarchy.coarse, "fine": hierarchy.fine})  # fmt: skip
    for column in ("mean_attention", "attention_share", "auroc"):
        assert np.allclose(frame[column], expected[column], rtol=1e-5, equal_nan=True)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["region", "class", "inside", "level", "label", "x", "uniform",
                                  "share", "AUROC"]  # fmt: skip
    # the region's own class and its coarse parent; the unclassified one: the predicted class
    assert [line.split()[:5] for line in printed[1:3]] == [
        ["left", "IC", "2/12", "coarse", "malignant"],
        ["left", "IC", "2/12", "fine", "IC"],
    ]
    assert printed[3].split()[:4] == ["region", "2", "-", "1/12"]
    assert printed[3].split()[5] == pred.fine_pred
    assert printed[-1] == f"{out}: 20 rows (2 region(s) x 3 coarse + 7 fine classes, 12 patches)"


def test_by_class_merges_a_class_polygons(checkpoint: Path, bag: Path, tmp_path: Path) -> None:
    geojson = write_geojson(
        tmp_path / "s1.geojson",
        polygon(LEFT, classification="IC"),
        polygon(CORNER, classification="IC"),
    )
    out = tmp_path / "stats.csv"
    assert regions(checkpoint, bag, geojson, out, "--by-class") == 0
    frame = pd.read_csv(out)
    assert frame["region"].unique().tolist() == ["IC"]
    assert (frame["n_inside"] == 3).all()


def test_qupath_pixels_are_shifted_by_the_bags_bounds_offset(
    checkpoint: Path, tmp_path: Path
) -> None:
    offset_bag = make_bag(tmp_path / "s2.h5", bounds_x=256, bounds_y=0)
    # QuPath x 0..200 is level-0 x 256..456: it holds the centre (384, 128), patch 1 only
    small = [[[0, 0], [200, 0], [200, 200], [0, 200], [0, 0]]]
    geojson = write_geojson(tmp_path / "s2.geojson", polygon(small))
    out = tmp_path / "stats.csv"
    assert regions(checkpoint, offset_bag, geojson, out) == 0
    assert (pd.read_csv(out)["n_inside"] == 1).all()


@pytest.mark.parametrize(
    ("features", "problem"),
    [
        ([polygon([[0, 0], [5, 5]], kind="LineString")],
         "feature 1: LineString is not a region (only Polygon and MultiPolygon are)"),
        ([polygon(LEFT), polygon([[[0, 0], [20, 20], [20, 0], [0, 20], [0, 0]]])],
         "feature 2: self-intersection at (10, 10)"),
        ([polygon([[[0, 0], [2000, 0], [2000, 10], [0, 0]]])],
         "feature 1 lies outside the slide (1024 x 768 px)"),
        ([polygon(LEFT, classification="Tumour")],
         "feature 1: unknown class 'Tumour' (known: benign, atypical, malignant, N, PB, UDH, "
         "FEA, ADH, DCIS, IC)"),
        ([], "no regions (the file holds no feature)"),
    ],
)  # fmt: skip
def test_bad_annotations_are_one_line_and_no_csv(
    checkpoint: Path,
    bag: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    features: list[dict[str, Any]],
    problem: str,
) -> None:
    geojson = write_geojson(tmp_path / "bad.geojson", *features)
    out = tmp_path / "stats.csv"
    assert regions(checkpoint, bag, geojson, out) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {geojson}: {problem}"]
    assert not out.exists()


def test_a_file_that_is_not_geojson_or_missing_is_one_line(
    checkpoint: Path, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.geojson"
    text.write_text("tumour at the top left")
    out = tmp_path / "stats.csv"
    assert regions(checkpoint, bag, text, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {text}: not JSON (")
    missing = tmp_path / "none.geojson"
    assert regions(checkpoint, bag, missing, out) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {missing}: cannot be read (No such file or directory)"
    ]
    assert not out.exists()


def test_a_bag_without_coords_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = save_bag(tmp_path / "plain.h5", np.zeros((4, 8), dtype=np.float32))
    geojson = write_geojson(tmp_path / "a.geojson", polygon(LEFT))
    out = tmp_path / "stats.csv"
    assert regions(checkpoint, plain, geojson, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {plain}: bag has no coords; regions are compared with patch positions"]
    assert not out.exists()


def test_the_command_declares_its_four_required_inputs() -> None:
    parser = argparse.ArgumentParser(prog="hmil regions")
    regions_cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoint", "c.pt", "--bag", "b.h5"])  # no annotations, no out
    args = parser.parse_args(
        ["--checkpoint", "c.pt", "--bag", "b.h5", "--annotations", "a.geojson", "--out", "s.csv"]
    )
    assert (args.checkpoint, args.annotations, args.out) == ("c.pt", "a.geojson", "s.csv")
