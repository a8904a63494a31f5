"""Experiment logs beside ``metrics.jsonl``: TensorBoard event files and an MLflow file store.

``train.experiment_log`` names the tools (comma-separated, see :data:`WRITERS`); each fold then
also sends what it writes to ``metrics.jsonl`` (every number of each epoch's record, under the
record's own keys joined by ``/``: ``train/loss``, ``val/fine/macro_auc``, ``lr``), the config
and, when it finishes, its test metrics (``test/fine/balanced_accuracy``, …) to those tools.
``metrics.jsonl`` stays what hmil and the viewer read; these logs are for the tools people
already browse runs with (docs/training.md).

Both packages are optional extras (``[logs]``): nothing here imports them until a fold opens
its logs, and :func:`check_installed` refuses a launch whose tools are missing before anything
is written. Numbers that ``metrics.jsonl`` stores as ``null`` (NaN, ±inf: e.g. an AUC with one
class present) are left out, as there.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from hmil.config import Config
from hmil.errors import ConfigError

#: the headline test metrics that TensorBoard's HParams table shows per fold
HPARAM_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


@dataclass(frozen=True)
class LogTarget:
    """Where one fold's logs go and what they describe.

    Attributes:
        run_dir: the run directory (the MLflow store is ``run_dir/mlruns``, its experiment is
            named after ``run_dir``).
        fold: fold index k (TensorBoard writes to ``run_dir/fold_<k>/tensorboard``).
        config: the run's resolved config (logged as parameters / text).
        start_epoch: the first epoch this process trains (> 0 when a fold resumes).
    """

    run_dir: Path
    fold: int
    config: Config
    start_epoch: int


class ExperimentWriter(ABC):
    """One tool's log of one fold. Subclasses import their package in ``__init__`` only."""

    #: the importable module the tool needs, and the pip package that provides it
    module: ClassVar[str]
    package: ClassVar[str]

    @abstractmethod
    def __init__(self, target: LogTarget) -> None:
        """Open the tool's log of ``target``'s fold (the only place that imports the tool)."""

    @abstractmethod
    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Log one ``metrics.jsonl`` record at step ``record["epoch"]``."""

    @abstractmethod
    def log_test(self, report: Mapping[str, Any], step: int) -> None:
        """Log the fold's test report (``test_metrics.json``) at ``step`` (the tested epoch)."""

    @abstractmethod
    def close(self, finished: bool) -> None:
        """Flush and close; ``finished`` is False when training ended by an exception."""


def flat_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested record, keyed by their path joined with ``/``.

    Booleans count as 0/1; strings, lists (confusion matrices), None and non-finite numbers
    are left out.
    """
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_numbers(value, f"{name}/"))
        elif isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def flat_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Every leaf of a nested config, keyed by its dotted path (``train.lr``); values that are
    not scalars are written as text."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, str | int | float | bool):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def _epoch_numbers(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in flat_numbers(record).items() if k != "epoch"}


class TensorBoardWriter(ExperimentWriter):
    """Event files in ``RUN/fold_<k>/tensorboard`` (``tensorboard --logdir RUN``).

    Scalars per epoch; the config as text (step 0) and as HParams with the headline test
    metrics. A resumed fold purges the events of epochs it trains again.
    """

    module = "tensorboard"
    package = "tensorboard"

    def __init__(self, target: LogTarget) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._params = flat_params(target.config.to_dict())
        log_dir = target.run_dir / f"fold_{target.fold}" / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=target.start_epoch)
        if target.start_epoch == 0:
            text = "\n".join("    " + line for line in target.config.to_yaml().splitlines())
            self._writer.add_text("config", text, global_step=0)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        step = int(record["epoch"])
        for tag, value in _epoch_numbers(record).items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def log_test(self, report: Mapping[str, Any], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        numbers = flat_numbers(report, "test/")
        for tag, value in numbers.items():
            self._writer.add_scalar(tag, value, global_step=step)
        headline = {
            tag: value
            for tag, value in numbers.items()
            if tag.rsplit("/", 1)[-1] in HPARAM_METRICS and tag.count("/") == 2
        }
        writer = self._writer.file_writer
        assert writer is not None  # the SummaryWriter above is open
        for summary in hparams(self._params, headline):
            writer.add_summary(summary, global_step=step)
        self._writer.flush()

    def close(self, finished: bool) -> None:
        self._writer.close()


#: MLflow's allowed characters in metric and parameter names; others become ``_``
_MLFLOW_NAME = re.compile(r"[^\w./\- :]")
#: MLflow's limit on entries per log_batch call
_MLFLOW_BATCH = 100


class MlflowWriter(ExperimentWriter):
    """One MLflow run per fold in the local file store ``RUN/mlruns`` (no server, no network).

    The experiment is named after the run directory; the run is ``fold_<k>`` (tag
    ``hmil.fold``), a resumed fold continues its run. Parameters: the config with dotted keys.
    MLflow keeps the file store in maintenance mode and sends usage telemetry by default, so
    this process sets ``MLFLOW_ALLOW_FILE_STORE=true`` and ``MLFLOW_DISABLE_TELEMETRY=true``
    unless they are set already.
    """

    module = "mlflow"
    package = "mlflow-skinny"

    def __init__(self, target: LogTarget) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.entities import Metric, Param, RunStatus
        from mlflow.tracking import MlflowClient

        self._metric, self._status = Metric, RunStatus
        store = (target.run_dir / "mlruns").resolve()
        self._client = MlflowClient(tracking_uri=store.as_uri())
        experiment = self._experiment(target.run_dir.resolve().name)
        fold_tag = str(target.fold)
        earlier = self._client.search_runs(
            [experiment], filter_string=f"tags.`hmil.fold` = '{fold_tag}'", max_results=1
        )
        if target.start_epoch > 0 and earlier:
            self._run_id = earlier[0].info.run_id
            self._client.update_run(self._run_id, status="RUNNING")
            return
        run = self._client.create_run(
            experiment,
            run_name=f"fold_{target.fold}",
            tags={"hmil.fold": fold_tag, "hmil.run_dir": str(target.run_dir.resolve())},
        )
        self._run_id = run.info.run_id
        params = [
            Param(_MLFLOW_NAME.sub("_", key), str(value))
            for key, value in flat_params(target.config.to_dict()).items()
        ]
        for start in range(0, len(params), _MLFLOW_BATCH):
            self._client.log_batch(self._run_id, params=params[start : start + _MLFLOW_BATCH])

    def _experiment(self, name: str) -> str:
        """The experiment's id, created when missing (folds of a run may race to create it)."""
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self._client.create_experiment(name))
        except MlflowException:  # another fold's process created it just now
            again = self._client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def _log(self, numbers: Mapping[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        metrics = [
            self._metric(_MLFLOW_NAME.sub("_", key), value, stamp, step)
            for key, value in numbers.items()
        ]
        for start in range(0, len(metrics), _MLFLOW_BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[start : start + _MLFLOW_BATCH])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._log(_epoch_numbers(record), int(record["epoch"]))

    def log_test(self, report: Mapping[str, Any], step: int) -> None:
        self._log(flat_numbers(report, "test/"), step)

    def close(self, finished: bool) -> None:
        status = self._status.FINISHED if finished else self._status.FAILED
        self._client.set_terminated(self._run_id, status=self._status.to_string(status))


#: ``train.experiment_log`` name → the writer class (the config's choices are these names)
WRITERS: dict[str, type[ExperimentWriter]] = {
    "tensorboard": TensorBoardWriter,
    "mlflow": MlflowWriter,
}


def requested(spec: str) -> list[str]:
    """``"tensorboard, mlflow"`` → ``["tensorboard", "mlflow"]`` (duplicates dropped)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    return list(dict.fromkeys(names))


def check_installed(spec: str) -> None:
    """Refuse experiment logs whose package is not installed, without importing it.

    Raises:
        ConfigError: a named tool is unknown or its package is missing; the message names
            the package and the ``[logs]`` extra that installs it.
    """
    for name in requested(spec):
        writer = WRITERS.get(name)
        if writer is None:
            raise ConfigError(
                "train.experiment_log", f"unknown log '{name}' (known: {', '.join(WRITERS)})"
            )
        if importlib.util.find_spec(writer.module) is None:
            raise ConfigError(
                "train.experiment_log",
                f"{name} needs the {writer.package} package, which is not installed: "
                f"pip install {writer.package} (or install hmil with its [logs] extra)",
            )


class ExperimentLogs:
    """The writers one fold opened, used as a context manager around its training.

    Leaving the block closes every writer: finished on a normal exit, failed when an
    exception (an interrupt included) ends training.
    """

    def __init__(self, writers: list[ExperimentWriter]) -> None:
        self.writers = writers

    def __iter__(self) -> Iterator[ExperimentWriter]:
        return iter(self.writers)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Send one ``metrics.jsonl`` record to every writer."""
        for writer in self.writers:
            writer.log_epoch(record)

    def log_test(self, report: Mapping[str, Any], step: int) -> None:
        """Send the fold's test report to every writer."""
        for writer in self.writers:
            writer.log_test(report, step)

    def __enter__(self) -> ExperimentLogs:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for writer in self.writers:
            writer.close(finished=kind is None)


def open_logs(target: LogTarget) -> ExperimentLogs:
    """Open the writers ``target.config.train.experiment_log`` names (none: an empty set)."""
    spec = target.config.train.experiment_log
    check_installed(spec)
    return ExperimentLogs([WRITERS[name](target) for name in requested(spec)])
