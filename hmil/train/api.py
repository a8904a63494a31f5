"""Run-level training: resolve the config, write ``RUN/config.yaml``, train the chosen folds.

Every fold job is :func:`run_fold_job`, which rebuilds everything from ``RUN/config.yaml``; the
inline launcher calls it in this process, the local/SLURM launchers in other processes, so a
fold behaves the same wherever it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmil import yamlsafe
from hmil.config import Config
from hmil.data.labels import read_labels
from hmil.data.splits import check_cases, list_split_files, read_split
from hmil.errors import ConfigError, RunError
from hmil.hierarchy import Hierarchy
from hmil.io import write_text_atomic
from hmil.train.cohort import SkipHandler
from hmil.train.experiment_log import check_installed
from hmil.train.loop import FoldResult, check_validation, train_fold
from hmil.train.runs import (
    CONFIG_NAME,
    fold_paths,
    load_run_config,
    resolve_folds,
    summarise_run,
)
from hmil.train.status import fold_view

__all__ = [
    "RunPlan",
    "RunResult",
    "check_run",
    "load_run_config",
    "plan_folds",
    "prepare_run",
    "run_fold_job",
    "train",
]


@dataclass
class RunResult:
    """What ``hmil train`` did: per-fold results and the summary over finished folds."""

    run_dir: Path
    folds: list[FoldResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for fold in self.folds:
            for item in fold.skipped:
                seen.setdefault(item, None)
        return list(seen)


def absolute_paths(config: Config) -> Config:
    """A copy whose data paths are absolute (a run must not depend on the working dir)."""
    data = config.data
    resolved = {
        key: str(Path(getattr(data, key)).resolve()) if getattr(data, key) else ""
        for key in ("labels", "features", "splits")
    }
    hierarchy = data.hierarchy
    if hierarchy and Path(hierarchy).is_file():
        resolved["hierarchy"] = str(Path(hierarchy).resolve())
    return config.override({f"data.{k}": v for k, v in resolved.items()})


@dataclass(frozen=True)
class RunPlan:
    """What a launch will do, decided before anything is written.

    Attributes:
        run_dir: the run directory.
        to_run: folds to train (or resume).
        already: folds already finished (skipped with ``resume``).
    """

    run_dir: Path
    to_run: list[int]
    already: list[FoldResult]


def check_run(config: Config, out: str | Path, resume: bool = False) -> RunPlan:
    """Every check that can refuse a launch, with nothing written: required data paths, the
    folds asked for, each fold's split (readable, with validation slides unless
    ``select_metric: last``), a resumed run's stored config, and each fold's state (finished,
    started, or being trained by another process or job).

    A refused ``hmil train`` therefore leaves the run directory exactly as it was (its
    ``config.yaml`` still describes its checkpoints).

    Raises:
        ConfigError: a required data path or split is missing, a fold has no validation
            slides, or an experiment log's package is not installed.
        RunError: resuming with a different config; a fold finished or started (without
            ``resume``) or in use.
    """
    for key in ("labels", "features", "splits", "hierarchy"):
        if not getattr(config.data, key):
            raise ConfigError(f"data.{key}", f"is required (--{key} or data.{key} in the config)")
    check_installed(config.train.experiment_log)  # a missing log package: now, not at epoch 1
    split_files = list_split_files(config.data.splits)
    folds = resolve_folds(config.data.folds, list(split_files))
    hierarchy = Hierarchy.resolve(config.data.hierarchy)
    labels = read_labels(config.data.labels, hierarchy)
    known = set(labels["slide_id"])
    cases = dict(zip(labels["slide_id"], labels["case_id"], strict=True))
    for fold in folds:
        split = read_split(split_files[fold], known_ids=known)
        check_cases(split, cases)  # a leaking split is the first thing to hear about
        check_validation(config, split, fold)
    run = Path(out)
    stored_path = run / CONFIG_NAME
    if resume and stored_path.is_file():
        stored = Config.from_run_file(stored_path)
        if _without_launcher(stored) != _without_launcher(config):
            raise RunError(
                stored_path, "resuming with a config different from the run's; resume with the "
                "same settings or with none (the run's stored config is then used)",
            )  # fmt: skip
    to_run, already = plan_folds(run, folds, resume)
    return RunPlan(run_dir=run, to_run=to_run, already=already)


def plan_folds(run: Path, folds: list[int], resume: bool) -> tuple[list[int], list[FoldResult]]:
    """Split ``folds`` into those to train and those already finished (``resume``).

    Every fold is checked before any is trained or submitted, so a refused launch starts
    nothing. The checks are the training loop's own (finished, started, locked) plus a live
    job: a fold queued by an earlier launch is refused as well.
    """
    to_run: list[int] = []
    already: list[FoldResult] = []
    for fold in folds:
        paths = fold_paths(run, fold)
        view = fold_view(run, fold)
        if view.state == "finished":
            if not resume:
                raise RunError(
                    paths.root,
                    "fold already finished; train into a new run directory (or resume to skip it)",
                )
            already.append(FoldResult(fold=fold, state="already-finished"))
            continue
        if view.state in ("running", "queued"):
            who = f"{view.launcher} job {view.job_id}" if view.job_id else "another process"
            raise RunError(
                paths.root,
                f"already {view.state} ({who}); wait for it or cancel it first",
            )
        if paths.started() and not resume:
            raise RunError(
                paths.root,
                "fold already has training files; resume it or train into a new run directory",
            )
        to_run.append(fold)
    return to_run, already


def prepare_run(config: Config, out: str | Path, resume: bool = False) -> Path:
    """Check the launch (:func:`check_run`), then write ``RUN/config.yaml`` (kept as is when
    resuming, but for its ``launcher`` section: where folds run may change between launches).
    """
    check_run(config, out, resume)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    path = run / CONFIG_NAME
    text = config.to_yaml()
    if path.is_file() and resume:
        if Config.from_run_file(path).launcher != config.launcher:
            write_text_atomic(path, text)
        return run
    write_text_atomic(path, text)
    return run


def _without_launcher(config: Config) -> dict[str, Any]:
    """The parts of a config that decide results (the launcher only decides where they run)."""
    data = config.to_dict()
    data.pop("launcher")
    return data


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (0: leave the count as it is).

    CPU kernels split reductions by thread count, so the same fold trained with 1 and with 2
    threads differs in the last bits; every launcher pins the count through this one place so
    that a fold gives the same numbers inline, in a local worker or in a SLURM job.
    """
    if threads <= 0:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_fold_job(
    run_dir: str | Path,
    fold: int,
    resume: bool = False,
    strict: bool = False,
    verbose: bool = True,
    on_skip: SkipHandler | None = None,
    device: str | None = None,
    threads: int = 0,
) -> FoldResult:
    """Train one fold of a prepared run; everything comes from ``RUN/config.yaml``.

    ``device`` overrides the config's device (the local launcher assigns GPUs round-robin);
    ``threads`` pins torch's intra-op threads for this fold (0: unchanged, see
    :func:`pinned_threads`).
    """
    config = load_run_config(run_dir)
    if device:
        config = config.override({"train.device": device})
    hierarchy = Hierarchy.resolve(config.data.hierarchy)
    labels = read_labels(config.data.labels, hierarchy)
    split_path = list_split_files(config.data.splits).get(fold)
    if split_path is None:
        raise RunError(config.data.splits, f"no splits_{fold}.csv")
    split = read_split(split_path, known_ids=set(labels["slide_id"]))
    with pinned_threads(threads):
        return train_fold(
            config, hierarchy, labels, split, fold, run_dir,
            resume=resume, strict=strict, on_skip=on_skip, verbose=verbose,
        )  # fmt: skip


def train(
    config: Config,
    out: str | Path,
    resume: bool = False,
    strict: bool = False,
    verbose: bool = True,
    on_skip: SkipHandler | None = None,
) -> RunResult:
    """Train ``config.data.folds`` one after another in this process (the inline launcher)."""
    config = absolute_paths(config)
    run = prepare_run(config, out, resume)  # checks everything, then writes
    folds = resolve_folds(config.data.folds, list(list_split_files(config.data.splits)))
    to_run, already = plan_folds(run, folds, resume)
    result = RunResult(run_dir=run, folds=list(already))
    for fold in to_run:
        fold_result = run_fold_job(
            run, fold, resume=resume, strict=strict, verbose=verbose, on_skip=on_skip,
            threads=config.launcher.threads,
        )  # fmt: skip
        result.folds.append(fold_result)
    result.summary = summarise_run(run)
    return result


def config_from_yaml_text(text: str) -> Config:
    """Parse a config given as YAML text (the viewer's training form)."""
    return Config.from_dict(yamlsafe.load(text) or {}, source="config text")
