"""Experiment logs (train.experiment_log): a tiny training run read back with TensorBoard's and
MLflow's own readers, and the refusal of a tool whose package is missing (SYNTHETIC bags)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hmil.config import EXPERIMENT_LOGS, Config
from hmil.data.labels import read_labels
from hmil.data.splits import make_splits, read_split, write_splits
from hmil.errors import ConfigError
from hmil.hierarchy import Hierarchy
from hmil.io import read_jsonl
from hmil.synthetic import CohortSpec, make_cohort, write_cohort
from hmil.train import experiment_log
from hmil.train.api import train
from hmil.train.experiment_log import WRITERS, check_installed, flat_numbers, flat_params
from hmil.train.loop import train_fold
from hmil.train.runs import fold_paths

needs_logs = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("mlflow") is None,
    reason="the [logs] extra (tensorboard, mlflow-skinny) is not installed",
)


def _config(cohort: Path, logs: str, epochs: int = 2) -> Config:
    """A tiny model on the tiny cohort, one torch thread (fast on a busy machine)."""
    return Config().override({
        "data.labels": str(cohort / "labels.csv"), "data.features": str(cohort / "features"),
        "data.splits": str(cohort / "splits"), "data.hierarchy": "bracs", "train.epochs": epochs,
        "train.device": "cpu", "train.experiment_log": logs, "launcher.threads": 1,
        "model.hidden_dim": 16, "model.coarse_dim": 32, "model.fine_dim": 16,
        "model.coarse_attention_dim": 16, "model.fine_attention_dim": 8,
    })  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 SYNTHETIC bags (3 per BRACS fine class), D = 8, 4–5 patches a side, one split."""
    out = tmp_path_factory.mktemp("tiny-cohort")
    bracs = Hierarchy.preset("bracs")
    spec = CohortSpec(n_slides=21, dim=8, grid_min=4, grid_max=5, key_fraction=0.1)
    write_cohort(make_cohort(bracs, spec, seed=1), bracs, out)
    labels = read_labels(out / "labels.csv", bracs)
    write_splits(make_splits(labels, k=1, seed=0, val_frac=0.2, test_frac=0.3), out / "splits")
    return out


@pytest.fixture(scope="module")
def logged_run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny-run"
    train(_config(cohort, "tensorboard,mlflow"), run, verbose=False)
    return run


def test_the_configs_choices_are_the_registrys_names():
    assert EXPERIMENT_LOGS.values() == tuple(WRITERS) == ("tensorboard", "mlflow")


def test_records_flatten_to_slash_paths_and_configs_to_dotted_keys():
    record = {"epoch": 3, "lr": 1e-4, "train": {"loss": 0.5, "terms": {"fine": 0.25}},
              "val": {"fine": {"macro_auc": float("nan")}, "n": 4},
              "select": {"metric": "fine_auc", "value": -float("inf"), "best": True}}  # fmt: skip
    assert flat_numbers(record) == {"epoch": 3.0, "lr": 1e-4, "train/loss": 0.5,
                                    "train/terms/fine": 0.25, "val/n": 4.0,
                                    "select/best": 1.0}  # fmt: skip
    params = flat_params(Config().to_dict())
    assert params["train.lr"] == 1e-4 and params["loss.inst_align.enabled"] is True
    assert params["train.experiment_log"] == ""


@needs_logs
def test_tensorboard_holds_every_epoch_number_the_config_and_the_test_metrics(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths = fold_paths(logged_run, 0)
    records = read_jsonl(paths.metrics)
    test = json.loads(paths.test_metrics.read_text())
    events = EventAccumulator(str(paths.root / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for record in records:
        for tag, value in flat_numbers(record).items():
            if tag == "epoch":
                continue
            logged = {e.step: e.value for e in events.Scalars(tag)}
            assert logged[record["epoch"]] == pytest.approx(value, rel=1e-6), tag
    assert {"train/loss", "lr", "val/fine/balanced_accuracy", "time_s"} <= tags
    step = test["best_epoch"]
    bacc = events.Scalars("test/fine/balanced_accuracy")
    assert [(e.step, e.value) for e in bacc] == [
        (step, pytest.approx(test["fine"]["balanced_accuracy"], rel=1e-6))
    ]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "experiment_log: tensorboard,mlflow" in text and "epochs: 2" in text
    assert "_hparams_/experiment" in events.summary_metadata


@needs_logs
def test_mlflow_has_one_run_per_fold_with_params_metrics_and_test_metrics(logged_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(logged_run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tiny-run")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "fold_0" and run.info.status == "FINISHED"
    assert run.data.tags["hmil.fold"] == "0"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["model.head"] == Config().model.head
    assert run.data.params["data.hierarchy"] == "bracs"
    paths = fold_paths(logged_run, 0)
    records = read_jsonl(paths.metrics)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [
        (r["epoch"], pytest.approx(r["train"]["loss"])) for r in records
    ]
    lr = client.get_metric_history(run.info.run_id, "lr")
    assert [m.value for m in sorted(lr, key=lambda m: m.step)] == [r["lr"] for r in records]
    test = json.loads(paths.test_metrics.read_text())
    assert run.data.metrics["test/coarse/macro_f1"] == pytest.approx(test["coarse"]["macro_f1"])
    assert run.data.metrics["test/consistency"] == pytest.approx(test["consistency"])


@needs_logs
def test_a_resumed_fold_continues_its_logs_without_repeating_epochs(cohort, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(cohort, "tensorboard,mlflow", epochs=3)
    bracs = Hierarchy.preset("bracs")
    labels = read_labels(cohort / "labels.csv", bracs)
    split = read_split(cohort / "splits" / "splits_0.csv", known_ids=set(labels["slide_id"]))
    run = tmp_path / "resumed"

    def crash() -> bool:
        raise KeyboardInterrupt  # after epoch 0's metrics line and resume state

    with pytest.raises(KeyboardInterrupt):
        train_fold(config, bracs, labels, split, 0, run, verbose=False, stop_check=crash)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (interrupted,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert interrupted.info.status == "FAILED"
    train_fold(config, bracs, labels, split, 0, run, resume=True, verbose=False)
    (resumed,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert resumed.info.run_id == interrupted.info.run_id and resumed.info.status == "FINISHED"
    records = read_jsonl(fold_paths(run, 0).metrics)
    history = client.get_metric_history(resumed.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [r["epoch"] for r in records] == [0, 1, 2]
    events = EventAccumulator(str(run / "fold_0" / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (r["epoch"], pytest.approx(r["train"]["loss"])) for r in records
    ]


def test_no_logs_by_default(cohort, tmp_path):
    train(_config(cohort, "", epochs=1), tmp_path / "run", verbose=False)
    fold = tmp_path / "run" / "fold_0"
    assert (fold / "test_metrics.json").is_file()
    assert not (fold / "tensorboard").exists() and not (tmp_path / "run" / "mlruns").exists()


def test_training_code_imports_no_log_package():
    code = (
        "import sys, hmil.train.api\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_package_is_refused_before_anything_is_written(cohort, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        experiment_log.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real(name, *a),
    )
    with pytest.raises(ConfigError) as caught:
        check_installed("tensorboard, mlflow")
    assert str(caught.value) == (
        "train.experiment_log: mlflow needs the mlflow-skinny package, which is not installed: "
        "pip install mlflow-skinny (or install hmil with its [logs] extra)"
    )
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="mlflow needs the mlflow-skinny package"):
        train(_config(cohort, "mlflow", epochs=1), run, verbose=False)
    assert not run.exists()
