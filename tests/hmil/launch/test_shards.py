"""``hmil extract --launcher local --shards K`` end to end on SYNTHETIC slides: the shards'
bags equal inline extraction, and a rerun extracts only the slides still missing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from hmil.cli import main
from hmil.slides.tile_batch import tile_slides
from hmil.slides.tissue import TilingConfig


def _slide(path: Path, seed: int) -> Path:
    """A 512 × 384 SYNTHETIC pyramidal TIFF: glass with a textured pink tissue block."""
    rng = np.random.default_rng(seed)
    image = np.full((384, 512, 3), 242, dtype=np.uint8)
    block = rng.integers(0, 60, size=(256, 320, 3), dtype=np.uint8)
    image[64:320, 96:416] = np.array([190, 90, 160], dtype=np.uint8) - block // 2
    options = {
        "tile": (128, 128),
        "photometric": "rgb",
        "compression": "zlib",
        "resolution": (2e4, 2e4),
        "resolutionunit": "CENTIMETER",
    }
    with tifffile.TiffWriter(path) as writer:
        for i, ds in enumerate((1, 2)):
            writer.write(np.ascontiguousarray(image[::ds, ::ds]), subfiletype=int(i > 0), **options)
    return path


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("shards")
    slides = [_slide(root / f"slide{i}.tiff", seed=i) for i in range(3)]
    tile_slides(
        slides, root / "tiles", TilingConfig(patch_size=64, magnification=20), progress=False
    )
    return slides, root / "tiles"


def _features(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as f:
            out[path.stem] = np.asarray(f["features"][()])
    return out


@pytest.mark.slow
def test_local_shards_match_inline_and_rerun_only_missing_slides(
    tiled: tuple[list[Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slides, tiles = tiled
    base = ["extract", *map(str, slides), "--patches", str(tiles), "--device", "cpu", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "inline")]) == 0
    sharded = tmp_path / "sharded"
    capsys.readouterr()
    args = [*base, "--out", str(sharded), "--launcher", "local", "--shards", "2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{sharded}: 3 extracted, 0 already there, 0 skipped with errors" in err
    want, got = _features(tmp_path / "inline"), _features(sharded)
    assert sorted(got) == ["slide0", "slide1", "slide2"]
    assert all(np.array_equal(want[k], got[k]) for k in want)
    record = json.loads((sharded / "jobs" / "extract.json").read_text())
    assert [len(s["slides"]) for s in record["shards"]] == [2, 1]
    assert all(Path(s["stderr"]).is_file() for s in record["shards"])

    # a preempted shard = a missing bag: the rerun shards only that slide
    (sharded / "slide1.h5").unlink()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{sharded}: 1 extracted, 2 already there, 0 skipped with errors" in err
    assert [
        len(s["slides"])
        for s in json.loads((sharded / "jobs" / "extract.json").read_text())["shards"]
    ] == [1]
    assert np.array_equal(_features(sharded)["slide1"], want["slide1"])
    assert main(args) == 0  # nothing left: no job at all
    assert f"{sharded}: 0 extracted, 3 already there" in capsys.readouterr().err
