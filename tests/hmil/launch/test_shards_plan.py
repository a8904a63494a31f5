"""Planning ``hmil extract --shards K`` without running a shard: slides are dealt round-robin,
problems every shard would hit are raised before anything is submitted, and slides whose bags
exist are not submitted at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from hmil.config import LauncherConfig
from hmil.errors import ConfigError, TilingError
from hmil.launch.shards import launch_extraction, shard_slides
from hmil.slides.extract import ExtractConfig

LOCAL = LauncherConfig(kind="local")


def test_slides_are_dealt_round_robin() -> None:
    slides = [Path(f"s{i}.tiff") for i in range(7)]
    shards = shard_slides(slides, 3)
    assert [[p.stem for p in shard] for shard in shards] == [
        ["s0", "s3", "s6"],
        ["s1", "s4"],
        ["s2", "s5"],
    ]
    assert sorted(p for shard in shards for p in shard) == sorted(slides)


def test_never_more_shards_than_slides() -> None:
    assert shard_slides([Path("a.svs"), Path("b.svs")], 5) == [[Path("a.svs")], [Path("b.svs")]]
    assert shard_slides([], 4) == []


def test_shard_count_below_one_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        shard_slides([Path("a.svs")], 0)
    assert (info.value.where, info.value.problem) == ("shards", "must be ≥ 1, got 0")


def test_unknown_encoder_is_refused_before_submitting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        launch_extraction(["a.svs"], tmp_path, tmp_path / "out", launcher=LOCAL, shards=2,
                          encoder="no-such-encoder")  # fmt: skip
    assert info.value.where == "encoder" and "hed-texture" in info.value.problem
    assert not (tmp_path / "out").exists()


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        launch_extraction(["a.svs"], tmp_path, tmp_path / "out", launcher=LOCAL, shards=1,
                          weights=tmp_path / "w.pt")  # fmt: skip
    assert info.value.where == "weights" and info.value.problem.endswith("file not found")


def test_inline_runs_no_shards(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        launch_extraction(["a.svs"], tmp_path, tmp_path, launcher=LauncherConfig(), shards=1)
    assert info.value.where == "launcher.kind"


def test_missing_patches_folder(tmp_path: Path) -> None:
    with pytest.raises(TilingError, match="patches folder not found"):
        launch_extraction(["a.svs"], tmp_path / "nope", tmp_path, launcher=LOCAL, shards=1)


def test_slides_with_bags_are_not_submitted(tmp_path: Path) -> None:
    out = tmp_path / "bags"
    out.mkdir()
    for name in ("a", "b"):
        (out / f"{name}.h5").write_bytes(b"")
    slides = [tmp_path / "a.svs", tmp_path / "b.svs"]
    config = ExtractConfig(formats=("h5",))
    launch = launch_extraction(slides, tmp_path, out, launcher=LOCAL, shards=2, config=config)
    assert launch.already == ["a", "b"]
    assert launch.submitted == [] and launch.results == []
    assert not (out / "jobs").exists()
