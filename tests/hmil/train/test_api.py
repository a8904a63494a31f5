"""The training recipe's guarantees: it cannot silently fail, refused runs change nothing,
presets reproduce the published recipe, and a small cohort is learnt (SYNTHETIC bags)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hmil.checkpoint import CheckpointInfo, load_checkpoint_file, save_checkpoint
from hmil.cli import main
from hmil.config import Config, ModelConfig
from hmil.data.labels import read_labels
from hmil.data.splits import make_splits, write_splits
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.model.heads import PerClassHead, SharedHead
from hmil.synthetic import CohortSpec, make_cohort, write_cohort
from hmil.train.api import train
from hmil.train.runs import fold_paths, load_run_config


def _args(cohort: Path, splits: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--labels", str(cohort / "labels.csv"), "--features",
            str(cohort / "features"), "--splits", str(splits), "--hierarchy", "bracs",
            "--out", str(run), "--device", "cpu", "--quiet", *extra]  # fmt: skip


def _splits(cohort: Path, out: Path, val_frac: float) -> Path:
    labels = read_labels(cohort / "labels.csv", Hierarchy.preset("bracs"))
    splits = make_splits(labels, k=1, seed=0, val_frac=val_frac, test_frac=0.3)
    write_splits(splits, out)
    return out


def test_training_without_validation_is_an_error_unless_asked_for(small_cohort, tmp_path,
                                                                  capsys):  # fmt: skip
    splits = _splits(small_cohort, tmp_path / "splits", val_frac=0.0)
    run = tmp_path / "run"
    assert main(_args(small_cohort, splits, run, "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: fold 0: has no validation slides")
        and "train.select_metric to last" in err
    )
    assert not run.exists()  # nothing written
    assert main(_args(small_cohort, splits, run, "--epochs", "3", "--select-metric", "last")) == 0
    out = capsys.readouterr().out
    assert "no validation-based selection; kept the last epoch" in out
    test = json.loads(fold_paths(run, 0).test_metrics.read_text())
    assert test["best_epoch"] == 2 and test["selection"].startswith("last epoch")


def test_a_refused_run_changes_nothing(small_cohort, tmp_path, capsys):
    splits = _splits(small_cohort, tmp_path / "splits", val_frac=0.15)
    run = tmp_path / "run"
    assert main(_args(small_cohort, splits, run, "--epochs", "1")) == 0
    config = run / "config.yaml"
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    capsys.readouterr()
    # finished fold, other flags: refused, and the run's config still describes its checkpoint
    assert main(_args(small_cohort, splits, run, "--epochs", "5", "--lr", "0.1")) == 2
    assert "fold already finished" in capsys.readouterr().err
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    # an unknown fold on a new run: refused before the run directory exists
    fresh = tmp_path / "fresh"
    assert main(_args(small_cohort, splits, fresh, "--folds", "7")) == 2
    assert "no split for fold(s) [7]" in capsys.readouterr().err
    assert not fresh.exists()


def test_training_leaves_the_callers_random_state_alone(small_cohort, tmp_path):
    splits = _splits(small_cohort, tmp_path / "splits", val_frac=0.15)
    config = Config().override({
        "data.labels": str(small_cohort / "labels.csv"), "data.features":
        str(small_cohort / "features"), "data.splits": str(splits), "data.hierarchy": "bracs",
        "train.epochs": 1, "train.device": "cpu", "train.seed": 5,
    })  # fmt: skip
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    train(config, tmp_path / "run", verbose=False)
    assert torch.equal(torch.rand(4), expected)


def test_presets_reproduce_the_published_and_released_recipes(small_cohort, tmp_path):
    splits = _splits(small_cohort, tmp_path / "splits", val_frac=0.15)
    run = tmp_path / "paper"
    assert main(_args(small_cohort, splits, run, "--preset", "paper", "--epochs", "1")) == 0
    paper = load_run_config(run)
    assert paper.model.head == "shared" and paper.train.bags_per_step == 64
    assert (paper.train.lr_schedule, paper.train.select_metric) == ("plateau", "fine_auc")
    assert paper.train.epochs == 1  # flags override the preset
    assert paper.train.ema_epochs == 0.0 and paper.train.ema_decay == 0.0  # no weight average
    released = Config.from_preset("released")
    assert released.train.ema_epochs == 0.0
    assert (released.loss.schedule, released.loss.temperature_schedule) == ("quadratic", "cosine")
    assert not released.loss.inst_align.enabled and released.loss.supcon_normalisation == "step"
    assert Config().model.head != paper.model.head  # the defaults are not the paper's


def test_runs_and_checkpoints_of_older_versions_keep_their_recipe(tmp_path):
    # a config.yaml written before the recipe options existed: missing keys take the values
    # that reproduce the run (the paper recipe was the default then), not today's defaults
    config = Config().to_dict()
    for section, key in (("model", "head"), ("train", "lr_schedule"), ("train", "ema_epochs"),
                         ("train", "class_balance"), ("loss", "supcon_normalisation")):  # fmt: skip
        del config[section][key]
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    old = load_run_config(tmp_path)
    assert (old.model.head, old.train.lr_schedule) == ("shared", "plateau")
    assert (old.train.class_balance, old.loss.supcon_normalisation) == ("none", "bag")
    assert old.train.ema_epochs == 0.0  # runs before the EMA default had none
    # a checkpoint without model_config.head is a shared-head model
    h = Hierarchy.preset("bracs")
    shared = ModelConfig(head="shared")
    model = HMIL(6, h.n_coarse, h.n_fine, shared)
    path = save_checkpoint(tmp_path / "old.pt", model, CheckpointInfo(h, 6, shared))
    payload = torch.load(path, weights_only=True)
    del payload["model_config"]["head"]
    del payload["content_sha256"]  # a checkpoint that old predates the content hash too
    torch.save(payload, path)
    loaded, info = load_checkpoint_file(path)
    assert isinstance(loaded.fine_head, SharedHead) and info.model_config.head == "shared"
    assert not isinstance(loaded.fine_head, PerClassHead)


def test_the_defaults_learn_a_small_cohort_well_above_chance(tmp_path):
    """Fine balanced accuracy on held-out bags of a small SYNTHETIC cohort (chance 1/7)."""
    h = Hierarchy.preset("bracs")
    spec = CohortSpec(n_slides=84, dim=16, grid_min=6, grid_max=8, key_fraction=0.1, noise=0.4)
    cohort = write_cohort(make_cohort(h, spec, seed=3), h, tmp_path / "cohort")
    splits = _splits(cohort, tmp_path / "splits", val_frac=0.15)
    config = Config().override({
        "data.labels": str(cohort / "labels.csv"), "data.features": str(cohort / "features"),
        "data.splits": str(splits), "data.hierarchy": "bracs", "train.epochs": 8,
        "train.device": "cpu",
    })  # fmt: skip
    result = train(config, tmp_path / "run", verbose=False)
    fine = result.folds[0].test_metrics["fine"]
    assert fine["balanced_accuracy"] > 0.5, fine["balanced_accuracy"]
    preds = pd.read_csv(fold_paths(tmp_path / "run", 0).predictions)
    assert len(preds) == result.folds[0].test_metrics["n"] and np.isfinite(fine["macro_auc"])


def test_deterministic_mode_is_scoped_to_the_fold(monkeypatch):
    from hmil.train.loop import deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(torch.device("cuda"), enabled=True):  # no kernel runs here
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with deterministic_kernels(torch.device("cpu"), enabled=True):  # CPU: nothing to change
        assert torch.are_deterministic_algorithms_enabled() == before


def test_evaluation_does_not_import_the_training_loop():
    """No cycle train.api → loop → evaluate → api: evaluation stands on its own."""
    code = (
        "import sys, hmil.train.evaluate; "
        "print(sorted(m for m in ('hmil.train.api', 'hmil.train.loop') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ema_epochs_flag_overrides_the_default_and_a_preset():
    import argparse

    from hmil.cli.train import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert build_config(parser.parse_args(["--out", "r"])).train.ema_epochs == 0.5
    assert (
        build_config(parser.parse_args(["--out", "r", "--ema-epochs", "0"])).train.ema_epochs == 0
    )
    paper = parser.parse_args(["--out", "r", "--preset", "paper", "--ema-epochs", "2"])
    assert build_config(paper).train.ema_epochs == 2.0
