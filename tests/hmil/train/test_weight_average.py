"""The EMA of the weights (``train.ema_decay``): its arithmetic, what training keeps, resume."""

from __future__ import annotations

import json

import pytest
import torch

from hmil.config import Config, ConfigError, TrainConfig
from hmil.data.labels import read_labels
from hmil.data.splits import make_splits, write_splits
from hmil.hierarchy import Hierarchy
from hmil.io import read_jsonl
from hmil.synthetic import CohortSpec, make_cohort, write_cohort
from hmil.train.loop import train_fold
from hmil.train.runs import fold_paths
from hmil.train.weight_average import (
    WeightAverage,
    average_decay,
    make_weight_average,
    steps_per_epoch,
)


def test_the_average_follows_decay_times_average_plus_the_rest_times_weights():
    model = torch.nn.Linear(2, 1, bias=False)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model)
    assert average.n_updates == 2
    assert torch.allclose(average.model.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))
    assert model.weight[0, 0].item() == 3.0  # the live weights are untouched
    assert make_weight_average(model, 0.0) is None


def test_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ConfigError, match=r"train\.ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(1, 1), 0.0)


def test_a_horizon_in_epochs_gives_the_decay_of_that_many_steps():
    assert steps_per_epoch(1155, 1) == 1155
    assert steps_per_epoch(165, 64) == 3  # the last group is short
    assert average_decay(0.0, 0.5, 1155) == pytest.approx(1 - 1 / 577.5)
    assert average_decay(0.0, 0.5, 165) == pytest.approx(1 - 1 / 82.5)
    assert average_decay(0.998, 0.5, 165) == 0.998  # a fixed decay replaces the horizon
    assert average_decay(0.0, 0.0, 165) == 0.0  # off
    assert average_decay(0.0, 0.5, 2) == 0.0  # a horizon of one step is no average


def test_a_negative_horizon_is_refused():
    with pytest.raises(ConfigError, match=r"train\.ema_epochs: must be ≥ 0"):
        TrainConfig(ema_epochs=-1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    h = Hierarchy.preset("bracs")
    spec = CohortSpec(n_slides=28, dim=8, grid_min=4, grid_max=5, key_fraction=0.2, noise=0.4)
    cohort = write_cohort(make_cohort(h, spec, seed=5), h, root / "cohort")
    labels = read_labels(cohort / "labels.csv", h)
    splits = make_splits(labels, k=1, val_frac=0.2, test_frac=0.2, seed=0)
    write_splits(splits, root / "s")
    config = Config().override({
        "data.labels": str(cohort / "labels.csv"), "data.features": str(cohort / "features"),
        "data.splits": str(root / "s"), "data.hierarchy": "bracs", "train.epochs": 4,
        "train.device": "cpu", "train.ema_decay": 0.9, "train.select_metric": "last",
    })  # fmt: skip
    return config, h, labels, splits[0]


def _stop_after(epochs: int):
    calls = {"n": 0}

    def check() -> bool:
        calls["n"] += 1
        if calls["n"] >= epochs:
            raise KeyboardInterrupt  # an interruption: the resume state of that epoch stays
        return False

    return check


def test_training_keeps_and_tests_the_average_and_resumes_it_exactly(tiny, tmp_path):
    config, h, labels, split = tiny
    ref = tmp_path / "ref"
    train_fold(config, h, labels, split, 0, ref, verbose=False)
    state = torch.load(fold_paths(ref, 0).state, weights_only=True)
    kept = torch.load(fold_paths(ref, 0).checkpoint, weights_only=True)["state_dict"]
    averaged = {k.removeprefix("module."): v for k, v in state["weight_average"].items()}
    live = state["model"]
    assert set(kept) == set(live)
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)  # the checkpoint is the EMA
    assert any(not torch.equal(kept[k], live[k]) for k in kept)  # … not the last live weights

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_fold(config, h, labels, split, 0, run, verbose=False, stop_check=_stop_after(2))
    assert len(read_jsonl(fold_paths(run, 0).metrics)) == 2
    train_fold(config, h, labels, split, 0, run, resume=True, verbose=False)
    got = torch.load(fold_paths(run, 0).checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(got[k], kept[k]) for k in kept)
    a = json.loads(fold_paths(run, 0).test_metrics.read_text())["fine"]
    b = json.loads(fold_paths(ref, 0).test_metrics.read_text())["fine"]
    assert a == b
