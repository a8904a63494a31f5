"""``hmil extract``'s arguments: ExtractConfig fields under their familiar flags, the launcher
flags shared with ``hmil train`` (without ``--workers``), and :func:`run` inline on one small
real slide."""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import pytest

from hmil.cli import extract, tile
from hmil.errors import ConfigError
from hmil.slides.encoders import HED_TEXTURE_DIM


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="hmil extract")
    extract.add_arguments(out)
    return out


def test_defaults() -> None:
    args = parser().parse_args(["a.svs", "--patches", "tiles", "--out", "bags"])
    assert (args.encoder, args.device, args.backend, args.format) == (
        "hed-texture", "auto", "auto", "h5"
    )  # fmt: skip
    assert args.batch_size is None and args.num_readers is None  # not given: config default
    assert args.shards == 1 and not args.detach and args.config is None
    assert getattr(args, "launcher.kind") is None


def test_flags_set_extract_and_launcher_fields() -> None:
    args = parser().parse_args(
        ["a.svs", "b.svs", "--patches", "t", "--out", "b", "--batch-size", "32", "--readers", "2",
         "--overwrite", "--format", "both", "--launcher", "local", "--shards", "3",
         "--cpus-per-job", "2"]
    )  # fmt: skip
    assert args.slides == ["a.svs", "b.svs"]
    assert (args.batch_size, args.num_readers, args.overwrite) == (32, 2, True)
    assert (getattr(args, "launcher.kind"), args.shards) == ("local", 3)
    assert getattr(args, "launcher.cpus_per_job") == 2


def test_help_lists_the_flags_but_no_workers() -> None:
    text = " ".join(parser().format_help().split())
    for flag in ("--readers N", "--torch-threads N", "--launcher NAME", "--shards", "--detach"):
        assert flag in text
    assert "--workers" not in text
    with pytest.raises(SystemExit):
        parser().parse_args(["a.svs", "--patches", "t", "--out", "b", "--format", "zarr"])


def test_list_encoders_prints_the_table_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["--list-encoders"])  # before the required arguments
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "hed-texture" in out and f"D = {HED_TEXTURE_DIM}" in out


def test_sharded_run_refuses_an_unknown_encoder(tmp_path: Path) -> None:
    args = parser().parse_args(["a.svs", "--patches", str(tmp_path), "--out", str(tmp_path),
                                "--launcher", "local", "--encoder", "nope"])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        extract.run(args)
    assert info.value.where == "encoder"


def test_run_extracts_a_bag_inline(slides_dir: Path, tmp_path: Path) -> None:
    slide = str(slides_dir / "boxes-4-level.tiff")
    tiles = argparse.ArgumentParser()
    tile.add_arguments(tiles)
    tiled = tiles.parse_args([slide, "--out", str(tmp_path / "t"), "--level", "0",
                              "--patch-size", "64", "--quiet"])  # fmt: skip
    assert tile.run(tiled) == 0
    args = parser().parse_args([slide, "--patches", str(tmp_path / "t"), "--out",
                                str(tmp_path / "b"), "--device", "cpu", "--quiet"])  # fmt: skip
    assert extract.run(args) == 0
    with h5py.File(tmp_path / "b" / "boxes-4-level.h5") as f:
        assert f["features"].shape == (9, HED_TEXTURE_DIM)
        assert f["coords"].shape == (9, 2)
    assert extract.run(args) == 0  # the bag exists: skipped
