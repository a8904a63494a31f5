"""``hmil tile``'s arguments: TilingConfig fields as plain flags with their defaults, tissue
fields as ``--tissue.<field>``, and :func:`run` on one small real slide."""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import pytest

from hmil.cli import tile
from hmil.errors import ConfigError
from hmil.slides.tissue import TilingConfig


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="hmil tile")
    tile.add_arguments(out)
    return out


def test_defaults_are_the_tiling_config_defaults() -> None:
    args = parser().parse_args(["a.svs", "--out", "tiles"])
    assert args.slides == ["a.svs"] and args.out == "tiles"
    assert (args.patch_size, args.magnification, args.level) == (256, 20.0, None)
    assert getattr(args, "tissue.closing_radius") == TilingConfig().tissue.closing_radius
    assert not args.strict and not args.quiet and args.tissue_geojson is None


def test_typical_flags_are_parsed_with_their_types() -> None:
    args = parser().parse_args(
        ["--out", "t", "--patch-size", "512", "--level", "1", "--tissue.saturation_range",
         "0.1", "0.3", "--no-overwrite", "--slide-list", "s.csv"]
    )  # fmt: skip
    assert (args.patch_size, args.level, args.overwrite) == (512, 1, False)
    assert getattr(args, "tissue.saturation_range") == [0.1, 0.3]
    assert args.slides == [] and args.slide_list == "s.csv"


def test_help_states_each_fields_range_and_default() -> None:
    text = " ".join(parser().format_help().split())
    assert "--patch-size N" in text and "default 256" in text
    assert "--tissue.saturation_range LOW HIGH" in text
    assert "--trident-names" not in text  # hmil tile always writes TRIDENT's names
    assert "--out" in parser().format_usage() and tile.OUTPUTS == {"out": "folder"}


def test_no_slides_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        tile.run(parser().parse_args(["--out", str(tmp_path)]))
    assert info.value.where == "SLIDE"


def test_run_tiles_a_small_slide(slides_dir: Path, tmp_path: Path) -> None:
    args = parser().parse_args(
        [str(slides_dir / "boxes-4-level.tiff"), "--out", str(tmp_path), "--level", "0",
         "--patch-size", "64", "--quiet"]
    )  # fmt: skip
    assert tile.run(args) == 0
    with h5py.File(tmp_path / "patches" / "boxes-4-level.h5") as f:
        coords = f["coords"][:]
        assert coords.shape == (9, 2) and f["coords"].attrs["patch_size"] == 64
    assert (tmp_path / "patches" / "boxes-4-level_patches.h5").is_file()
    assert (tmp_path / "masks" / "boxes-4-level.png").is_file()
