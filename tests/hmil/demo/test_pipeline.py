"""``hmil.demo.pipeline``: the demo's settings, its split step (reused or refused) and the
training config it hands to ``hmil train`` (the whole pipeline runs in
tests/hmil/demo/test_pipeline_end_to_end.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import h5py
import numpy as np
import pytest

from hmil.demo import defaults
from hmil.demo.cohort import Cohort
from hmil.demo.pipeline import DemoConfig, DemoResult, _count_patches, _split, _train_config
from hmil.errors import HMILError
from hmil.hierarchy import Hierarchy


def fake_cohort(**fields: Any) -> Cohort:
    """The attributes of :class:`Cohort` a step reads, without building slides."""
    return cast(Cohort, SimpleNamespace(**fields))


def test_defaults_and_the_cohort_they_ask_for() -> None:
    config = DemoConfig(n_slides=12, seed=5, min_size=768, max_size=1024)
    assert (config.folds, config.epochs, config.lr) == (defaults.FOLDS, defaults.EPOCHS, 1e-3)
    cohort = config.cohort_config()
    assert (cohort.n_slides, cohort.seed, cohort.min_size, cohort.max_size) == (12, 5, 768, 1024)


@pytest.mark.parametrize(
    ("folds", "epochs", "message"),
    [
        (1, 30, "^folds: need at least 2 folds, got 1$"),
        (3, 0, "^epochs: must be at least 1, got 0$"),
    ],
)
def test_settings_that_cannot_cross_validate_are_refused(
    folds: int, epochs: int, message: str
) -> None:
    with pytest.raises(HMILError, match=message):
        DemoConfig(folds=folds, epochs=epochs)


def test_result_folders_sit_in_the_cohort(tmp_path: Path) -> None:
    result = DemoResult(cohort=fake_cohort(root=tmp_path), run_dir=tmp_path / "run", summary={})
    assert result.tiles_dir == tmp_path / "tiles" and result.features_dir == tmp_path / "features"
    assert result.skipped == [] and result.n_patches == 0


def test_splits_are_written_once_and_another_fold_count_is_refused(
    small_cohort: Path, tmp_path: Path
) -> None:
    cohort = fake_cohort(labels_csv=small_cohort / "labels.csv")
    bracs = Hierarchy.preset("bracs")
    splits = tmp_path / "splits"
    _split(cohort, bracs, splits, DemoConfig(folds=2))
    written = {p.name: p.stat().st_mtime_ns for p in splits.iterdir()}
    assert sorted(written) == ["splits_0.csv", "splits_1.csv"]
    _split(cohort, bracs, splits, DemoConfig(folds=2))  # a rerun reuses them untouched
    assert {p.name: p.stat().st_mtime_ns for p in splits.iterdir()} == written
    with pytest.raises(HMILError, match="holds 2 folds, not 3; use another folder"):
        _split(cohort, bracs, splits, DemoConfig(folds=3))


def test_training_config_names_the_demo_files(tmp_path: Path) -> None:
    cohort = fake_cohort(labels_csv=tmp_path / "labels.csv", hierarchy_yaml=tmp_path / "h.yaml")
    config = _train_config(
        DemoConfig(epochs=4, seed=7, device="cpu"), cohort, tmp_path / "f", tmp_path / "s"
    )
    assert config.data.labels == str(tmp_path / "labels.csv")
    assert config.data.features == str(tmp_path / "f")
    assert config.data.hierarchy == str(tmp_path / "h.yaml")
    assert config.data.folds == "all"
    assert (config.train.epochs, config.train.seed, config.train.lr) == (4, 7, 1e-3)
    assert config.train.device == "cpu" and config.launcher.threads == 1


def test_patches_are_counted_over_every_patch_file(tmp_path: Path) -> None:
    assert _count_patches(tmp_path) == 0
    for name, n in (("a", 3), ("b", 5)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as handle:
            handle["coords"] = np.zeros((n, 2), dtype=np.int64)
    assert _count_patches(tmp_path) == 8
