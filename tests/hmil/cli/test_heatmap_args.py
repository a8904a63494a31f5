"""``hmil heatmap``'s arguments: HeatmapStyle fields as plain flags (the colormap offered as a
choice), the required ones, and :func:`run` on a tiny SYNTHETIC bag with an untrained model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import heatmap
from hmil.config import ModelConfig
from hmil.data.bags import save_bag
from hmil.errors import ConfigError
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.overlay import HeatmapStyle

REQUIRED = ["--checkpoint", "c.pt", "--bag", "b.h5", "--level", "fine", "--label", "x",
            "--out", "o.png"]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog="hmil heatmap")
    heatmap.add_arguments(out)
    return out


def test_style_defaults_are_heatmap_style_defaults() -> None:
    args = parser().parse_args(REQUIRED)
    style = HeatmapStyle()
    assert (args.cmap, args.alpha, args.normalize, args.smooth, args.per_label) == (
        style.cmap, style.alpha, style.normalize, style.smooth, style.per_label
    )  # fmt: skip
    assert (args.max_size, args.topk, args.device, args.no_legend) == (2048, 0, "auto", False)


def test_style_flags_and_choices() -> None:
    args = parser().parse_args([*REQUIRED, "--cmap", "magma", "--alpha", "0.8", "--per-label"])
    assert (args.cmap, args.alpha, args.per_label) == ("magma", 0.8, True)
    with pytest.raises(SystemExit):
        parser().parse_args([*REQUIRED, "--cmap", "rainbow"])
    with pytest.raises(SystemExit):
        parser().parse_args([*REQUIRED, "--level", "middle"])
    text = " ".join(parser().format_help().split())
    assert "--cmap NAME" in text and "--per-label | --no-per-label" in parser().format_usage()


def test_topk_without_crops_is_refused() -> None:
    args = parser().parse_args([*REQUIRED, "--topk", "3"])
    with pytest.raises(ConfigError) as info:
        heatmap.run(args)
    assert info.value.where == "--topk" and "--crops" in info.value.problem


def test_run_draws_a_png(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hierarchy = Hierarchy.preset("bracs")
    config = ModelConfig(hidden_dim=8, coarse_dim=8, fine_dim=8, coarse_attention_dim=4,
                         fine_attention_dim=4)  # fmt: skip
    model = HMIL(6, len(hierarchy.coarse), len(hierarchy.fine), config)
    info = CheckpointInfo(hierarchy=hierarchy, in_dim=6, model_config=config)
    save_checkpoint(tmp_path / "c.pt", model, info)
    coords = np.array([[x * 256, y * 256] for y in range(3) for x in range(4)], dtype=np.int64)
    features = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    save_bag(tmp_path / "b.h5", features, coords, coords_attrs={"patch_size_level0": 256})
    label = hierarchy.fine[0]
    args = parser().parse_args(
        ["--checkpoint", str(tmp_path / "c.pt"), "--bag", str(tmp_path / "b.h5"), "--level",
         "fine", "--label", label, "--out", str(tmp_path / "h.png"), "--max-size", "64",
         "--device", "cpu"]
    )  # fmt: skip
    assert heatmap.run(args) == 0
    assert max(Image.open(tmp_path / "h.png").size) <= 64
    args.label = "no-such-class"
    with pytest.raises(ConfigError) as err:
        heatmap.run(args)
    assert err.value.where == "--label" and label in err.value.problem
