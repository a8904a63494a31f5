"""Fixtures of the library's tests: one small trained run over the SYNTHETIC cohort."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hmil.cli import main

#: a small model, so the fold trains in seconds on a shared CPU
SMALL_MODEL = {
    "model": {
        "hidden_dim": 16,
        "coarse_dim": 32,
        "fine_dim": 16,
        "coarse_attention_dim": 8,
        "fine_attention_dim": 8,
    },
    "train": {"bags_per_step": 8, "device": "cpu"},
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, small_cohort: Path) -> Path:
    """``RUN`` of one epoch of fold 0 (of 2) over ``small_cohort``; fold 1 has a split only.

    Read-only for the tests: copy it before changing anything in it.
    """
    root = tmp_path_factory.mktemp("tiny_run")
    labels = small_cohort / "labels.csv"
    splits = root / "splits"
    split = ["split", "--labels", str(labels), "--k", "2", "--out", str(splits)]
    assert main([*split, "--hierarchy", "bracs", "--val-frac", "0.25"]) == 0
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_MODEL), encoding="utf-8")
    run = root / "run"
    train = ["train", "--config", str(config), "--labels", str(labels), "--splits", str(splits)]
    train += ["--features", str(small_cohort / "features"), "--hierarchy", "bracs"]
    assert main([*train, "--out", str(run), "--folds", "0", "--epochs", "1", "--quiet"]) == 0
    return run
