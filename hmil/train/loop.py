"""Training one fold of HMIL: epochs, gradient accumulation, selection, resume.

Determinism: the model is initialised from ``seed``; the order of training bags in epoch e and
any instance subsampling come from generators seeded by (seed, epoch), not from a running
global state, and the SupCon memory is emptied at each epoch start. Together with the saved
optimiser/schedule/RNG state this makes ``--resume`` after an interruption end with exactly
the same result as an uninterrupted run (on CPU; CUDA kernels may differ in the last bits).

Crash safety, in order per epoch: best checkpoint (if improved) → metrics line → resume state.
A crash between them at worst repeats the epoch; on resume, metric lines beyond the saved
state are dropped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hmil.calibration import Calibration, calibration_report, fit_calibration
from hmil.checkpoint import CheckpointInfo
from hmil.config import Config
from hmil.data.splits import Split
from hmil.device import resolve_device
from hmil.errors import ConfigError, RunError
from hmil.hierarchy import Hierarchy
from hmil.io import append_jsonl, atomic_path, read_jsonl, write_text_atomic
from hmil.model.losses import SupConMemory
from hmil.progress import Progress
from hmil.train.balance import epoch_order, inverse_frequency_weights, resolve_class_balance
from hmil.train.cohort import (
    BagStore,
    CohortItem,
    FoldCohort,
    SkipHandler,
    checkpoint_encoder,
    gather_fold,
)
from hmil.train.evaluate import (
    evaluation_report,
    predictions_frame,
    selection_description,
    write_fold_evaluation,
)
from hmil.train.experiment_log import ExperimentLogs, LogTarget, open_logs
from hmil.train.runs import FoldLock, FoldPaths, fold_paths, write_status
from hmil.train.schedules import Schedule, make_schedule
from hmil.train.trainee import HMILTrainee, Objective, Trainee
from hmil.train.weight_average import (
    WeightAverage,
    average_decay,
    make_weight_average,
    steps_per_epoch,
)

#: metrics of each level written per epoch to metrics.jsonl (the full report goes to test)
EPOCH_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


@dataclass
class FoldResult:
    """How a fold ended."""

    fold: int
    state: str  # "finished" or "already-finished"
    best_epoch: int | None = None
    test_metrics: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def train_fold(
    config: Config,
    hierarchy: Hierarchy,
    labels: pd.DataFrame,
    split: Split,
    fold: int,
    run_dir: str | Path,
    resume: bool = False,
    strict: bool = False,
    on_skip: SkipHandler | None = None,
    verbose: bool = True,
    stop_check: Callable[[], bool] | None = None,
    trainee: Trainee | None = None,
) -> FoldResult:
    """Train, select on validation and test one fold; write its files into ``run_dir``.

    The caller's global RNG state is left as it was (training seeds and consumes a forked
    copy), so training a fold in the middle of a script does not change what the script's own
    random draws give.

    Args:
        config: resolved run config (``data.features`` must point at the bags).
        hierarchy: label tree; ``labels`` must come from it.
        labels: label table (:func:`hmil.data.labels.read_labels`).
        split: this fold's train/val/test slide ids.
        fold: fold index k (files go to ``run_dir/fold_<k>``).
        run_dir: the run directory.
        resume: continue from the last finished epoch if the fold was interrupted.
        strict: stop at the first bad bag instead of skipping it.
        on_skip: called with ``(where, problem)`` for each skipped item.
        verbose: show progress.
        stop_check: polled after each epoch; returning True ends training early (as if the
            last epoch were reached). Default: the fold's ``STOP`` file exists (see
            :attr:`hmil.train.runs.FoldPaths.stop_request`).
        trainee: the model family trained under this recipe (default: HMIL,
            :class:`hmil.train.trainee.HMILTrainee`).

    Raises:
        RunError: the fold already has results and ``resume`` is False, or another process
            is training it.
        ConfigError: the fold has no validation slides and ``train.select_metric`` is not
            ``last``.
    """
    paths = fold_paths(run_dir, fold)
    if paths.finished():
        if resume:
            return FoldResult(fold=fold, state="already-finished")
        raise RunError(
            paths.root,
            "fold already finished; train into a new run directory (or resume to skip it)",
        )
    if paths.started() and not resume:
        raise RunError(
            paths.root,
            "fold already has training files; resume it or train into a new run directory",
        )
    check_validation(config, split, fold)
    device = resolve_device(config.train.device)
    with (
        FoldLock(paths),
        torch.random.fork_rng(devices=_cuda_devices(device)),
        deterministic_kernels(device, config.train.deterministic),
    ):
        if stop_check is None:
            paths.stop_request.unlink(missing_ok=True)  # a stale request must not stop us
            stop_check = paths.stop_request.exists
        session = _start_fold(config, hierarchy, labels, split, fold, paths, device, resume,
                              strict, on_skip, verbose,
                              trainee or HMILTrainee(config, hierarchy))  # fmt: skip
        session.logs = open_logs(LogTarget(Path(run_dir), fold, config, session.start_epoch))
        with session.logs:  # train.experiment_log: closed as finished, or failed on an error
            last_epoch = _train_epochs(session, stop_check, verbose)
            return _finish_fold(session, last_epoch)


def check_validation(config: Config, split: Split, fold: int) -> None:
    """A fold without validation slides would silently keep its epoch-0 weights under any
    validation-based selection: refuse it unless the run asks to keep the last epoch."""
    if not split.val and config.train.select_metric != "last":
        raise ConfigError(
            f"fold {fold}",
            "has no validation slides, so no epoch can be selected on validation; make splits "
            "with a validation fraction > 0, or set train.select_metric to last to keep the "
            "last epoch",
        )


def _cuda_devices(device: torch.device) -> list[int]:
    """Devices whose RNG ``fork_rng`` must save: the fold's CUDA device, if any."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def deterministic_kernels(device: torch.device, enabled: bool) -> Iterator[None]:
    """``train.deterministic`` on CUDA: deterministic algorithms (and the cuBLAS workspace they
    need) for the block, the previous global settings restored afterwards."""
    if not (enabled and device.type == "cuda"):
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark = previous[1]
        if previous[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@dataclass
class _FoldSession:
    """Everything one fold's training loop works with (built by :func:`_start_fold`)."""

    config: Config
    hierarchy: Hierarchy
    paths: FoldPaths
    fold: int
    device: torch.device
    cohort: FoldCohort
    store: BagStore
    trainee: Trainee
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    average: WeightAverage | None  # train.ema_decay / ema_epochs: the weights validated and kept
    criterion: Objective
    memory: SupConMemory
    tracker: _Selection
    info: CheckpointInfo
    start_epoch: int
    class_balance: str  # train.class_balance with 'auto' resolved for this fold's training part
    logs: ExperimentLogs = field(default_factory=lambda: ExperimentLogs([]))


def _start_fold(
    config: Config,
    hierarchy: Hierarchy,
    labels: pd.DataFrame,
    split: Split,
    fold: int,
    paths: FoldPaths,
    device: torch.device,
    resume: bool,
    strict: bool,
    on_skip: SkipHandler | None,
    verbose: bool,
    trainee: Trainee,
) -> _FoldSession:
    """Load the fold's bags, build model/optimiser/schedule/loss, and restore the resume state
    when there is one."""
    tc = config.train
    state = _load_state(paths) if resume else None
    write_status(paths, state="loading", fold=fold, epoch=None, epochs=tc.epochs)
    cohort, store = gather_fold(
        labels,
        split,
        config.data.features,
        store_budget_bytes=int(tc.cache_bags_gb * (1 << 30)),
        strict=strict,
        on_skip=on_skip,
        expected_dim=None if state is None else int(state["in_dim"]),
        verbose=verbose,
    )
    torch.manual_seed(tc.seed)
    model = trainee.build(cohort.in_dim).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=True
    )
    schedule = make_schedule(optimizer, tc)
    train_items = cohort.parts["train"]
    steps = steps_per_epoch(len(train_items), tc.bags_per_step)
    average = make_weight_average(model, average_decay(tc.ema_decay, tc.ema_epochs, steps))
    fine_y = np.array([it.fine for it in train_items], dtype=int)
    class_balance, balance_note = resolve_class_balance(tc.class_balance, fine_y, hierarchy.n_fine)
    if verbose:
        print(f"fold {fold}: {balance_note}", file=sys.stderr)
    fine_w = coarse_w = None
    if class_balance == "loss":
        fine_w = torch.from_numpy(inverse_frequency_weights(fine_y, hierarchy.n_fine))
        coarse_y = np.asarray(hierarchy.parent)[fine_y]
        coarse_w = torch.from_numpy(inverse_frequency_weights(coarse_y, hierarchy.n_coarse))
    criterion = trainee.objective(fine_w, coarse_w)
    tracker = _Selection()
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        if average is not None:
            average.load_state_dict(state["weight_average"])
        torch.set_rng_state(state["torch_rng"])
        tracker = _Selection(**state["selection"])
        start_epoch = int(state["epoch"]) + 1
        _truncate_metrics(paths, last_epoch=int(state["epoch"]))
    else:
        paths.metrics.unlink(missing_ok=True)
    info = CheckpointInfo(
        hierarchy=hierarchy,
        in_dim=cohort.in_dim,
        model_config=config.model,
        encoder=checkpoint_encoder(config.data.encoder, cohort.encoder),
        config=config.to_dict(),
        fold=fold,
    )
    return _FoldSession(
        config=config, hierarchy=hierarchy, paths=paths, fold=fold, device=device,
        cohort=cohort, store=store, trainee=trainee, model=model, optimizer=optimizer,
        schedule=schedule, average=average, criterion=criterion,
        memory=SupConMemory(config.loss.supcon_memory), tracker=tracker, info=info,
        start_epoch=start_epoch, class_balance=class_balance,
    )  # fmt: skip


def _train_epochs(session: _FoldSession, stop_check: Callable[[], bool], verbose: bool) -> int:
    """Run the remaining epochs (or until early stopping / a stop request); the last epoch
    run, or ``start_epoch − 1`` when none was left."""
    tc = session.config.train
    progress = Progress(tc.epochs, f"fold {session.fold}", enabled=verbose,
                        initial=session.start_epoch)  # fmt: skip
    epoch = session.start_epoch - 1
    try:
        for epoch in range(session.start_epoch, tc.epochs):
            record = _epoch_step(session, epoch)
            tracker = session.tracker
            progress.update(1, loss=record["train"]["loss"], val=record["select"]["value"],
                            best=tracker.best_epoch)  # fmt: skip
            write_status(
                session.paths,
                state="running",
                epoch=epoch,
                epochs=tc.epochs,
                best_epoch=tracker.best_epoch,
                best_value=tracker.best_score,
                select_metric=tc.select_metric,
                eta_s=progress.eta_seconds(),
            )
            if tc.early_stop_patience and epoch - tracker.best_epoch >= tc.early_stop_patience:
                break
            if stop_check():
                write_status(session.paths, state="stopping", epoch=epoch)
                break
    except BaseException:
        write_status(session.paths, state="interrupted", epoch=epoch)
        raise
    finally:
        progress.close()
    return epoch


def _epoch_step(session: _FoldSession, epoch: int) -> dict[str, Any]:
    """Train one epoch, validate, keep the checkpoint if selected, step the schedule, and
    write the metrics line and the resume state (in that order: see the module docstring)."""
    s = session
    tc = s.config.train
    t0 = time.monotonic()
    train_stats = _train_epoch(
        s.trainee, s.model, s.optimizer, s.criterion, s.memory, s.cohort.parts["train"], s.store,
        epoch, s.config, s.device, s.hierarchy.n_fine, s.class_balance, s.average,
    )  # fmt: skip
    # what is validated and saved: the live weights, or their average (train.ema_*)
    kept = s.model if s.average is None else s.average.model
    val_record, val_loss = _validate(
        s.trainee, kept, s.cohort.parts.get("val", []), s.store, s.hierarchy, s.device
    )
    score = selection_score(val_record, val_loss, tc.select_metric, epoch)
    improved = s.tracker.update(score, val_loss, epoch)
    if improved:
        s.info.epoch = epoch
        s.info.val_metrics = val_record
        s.trainee.save(s.paths.checkpoint, kept, s.info)
    # plateau watches the selection score; with select_metric 'last' (the epoch index, which
    # always improves) it watches the validation loss instead
    monitor = -val_loss if tc.select_metric == "last" else score
    s.schedule.step(monitor if math.isfinite(monitor) else -val_loss)
    record = {
        "epoch": epoch,
        "lr": train_stats.pop("lr"),
        "beta": train_stats.pop("beta"),
        "train": train_stats,
        "val": val_record,
        "select": {"metric": tc.select_metric, "value": score, "best": improved},
        "time_s": round(time.monotonic() - t0, 3),
    }
    append_jsonl(s.paths.metrics, record)
    s.logs.log_epoch(record)
    _save_state(s, epoch)
    return record


def _finish_fold(session: _FoldSession, last_epoch: int) -> FoldResult:
    """Calibrate the selected checkpoint on the validation part (its stored ``calibration``),
    test it and write the fold's result files."""
    s = session
    tc = s.config.train
    model = s.trainee.load(s.paths.checkpoint).to(s.device)
    calibration = _calibrate(s, model)
    items = s.cohort.parts.get("test", [])
    fine, head = s.trainee.predict(model, items, s.store, s.device)
    y = np.array([it.fine for it in items], dtype=int)
    report, decoded = evaluation_report(s.hierarchy, y, fine, head)
    report["calibration"] = calibration_report(
        calibration, fine, head, y, np.asarray(s.hierarchy.parent)
    )
    report.update({
        "fold": s.fold,
        "best_epoch": s.tracker.best_epoch,
        "selection": selection_description(tc.select_metric),
        "skipped": [{"where": w, "problem": p} for w, p in s.cohort.skipped],
    })  # fmt: skip
    ids = [it.slide_id for it in items]
    frame = predictions_frame(ids, y, decoded, s.hierarchy, calibration)
    write_fold_evaluation(s.paths, report, frame)
    s.logs.log_test(report, step=s.tracker.best_epoch)
    write_status(s.paths, state="finished", epoch=last_epoch, best_epoch=s.tracker.best_epoch,
                 eta_s=0)  # fmt: skip
    return FoldResult(
        fold=s.fold,
        state="finished",
        best_epoch=s.tracker.best_epoch,
        test_metrics=report,
        skipped=s.cohort.skipped,
    )


def _calibrate(session: _FoldSession, model: torch.nn.Module) -> Calibration:
    """Fit the temperatures and the call on the validation part's raw probabilities and store
    them in the checkpoint (the same numbers whenever it runs: a resumed fold refits the same).
    """
    s = session
    items = s.cohort.parts.get("val", [])
    fine, head = s.trainee.predict(model, items, s.store, s.device)
    y = np.array([it.fine for it in items], dtype=int)
    calibration = fit_calibration(fine, head, y, np.asarray(s.hierarchy.parent))
    if items:
        # a resumed fold whose best epoch ran in an earlier process: its record from the log
        if s.info.epoch != s.tracker.best_epoch:
            s.info.epoch = s.tracker.best_epoch
            best = [r for r in read_jsonl(s.paths.metrics) if r.get("epoch") == s.info.epoch]
            s.info.val_metrics = best[-1].get("val", {}) if best else {}
        s.info.calibration = calibration.to_dict()
        s.trainee.save(s.paths.checkpoint, model, s.info)
    return calibration


@dataclass
class _Selection:
    """Best validation score so far (higher is better; ties go to the lower val loss)."""

    best_score: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = -1

    def update(self, score: float, loss: float, epoch: int) -> bool:
        score = score if math.isfinite(score) else -math.inf
        better = score > self.best_score or (score == self.best_score and loss < self.best_loss)
        if better or self.best_epoch < 0:
            self.best_score, self.best_loss, self.best_epoch = score, loss, epoch
            return True
        return False


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for *training* on CUDA; evaluation always runs in fp32."""
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_epoch(
    trainee: Trainee,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Objective,
    memory: SupConMemory,
    items: list[CohortItem],
    store: BagStore,
    epoch: int,
    config: Config,
    device: torch.device,
    n_fine: int,
    class_balance: str,
    average: WeightAverage | None = None,
) -> dict[str, Any]:
    """One pass over the training bags; the mean loss of each ``bags_per_step`` group is one
    optimiser step (the last group may be smaller and is averaged over its own size), after
    which ``average`` (if any) takes in the new weights."""
    tc = config.train
    model.train()
    memory.clear()
    lr = float(optimizer.param_groups[0]["lr"])
    gen = _epoch_generator(tc.seed, epoch)
    fine = np.array([it.fine for it in items], dtype=int)
    order = epoch_order(fine, n_fine, class_balance, gen)
    totals: dict[str, float] = {}
    loss_sum = 0.0
    beta = 0.0
    optimizer.zero_grad(set_to_none=True)
    for position, index in enumerate(order):
        group_start = position - position % tc.bags_per_step
        group_size = min(tc.bags_per_step, len(order) - group_start)
        item = items[index]
        x = store.get(item.path)
        if tc.max_instances and x.shape[0] > tc.max_instances:
            keep = torch.randperm(x.shape[0], generator=gen)[: tc.max_instances]
            x = x[keep.sort().values]
        with _autocast(device, tc.amp):
            out = trainee.forward(model, x.to(device, non_blocking=True), item.fine)
        result = criterion(out, item.fine, epoch, memory)
        (result.total / group_size).backward()
        if position == group_start + group_size - 1:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update(model)
        loss_sum += float(result.total.detach())
        for name, value in result.terms.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        beta = result.beta
    n = max(len(order), 1)
    return {
        "loss": loss_sum / n,
        "terms": {k: v / n for k, v in totals.items()},
        "beta": beta,
        "lr": lr,
        "n_bags": len(order),
    }


def _validate(
    trainee: Trainee,
    model: torch.nn.Module,
    items: list[CohortItem],
    store: BagStore,
    hierarchy: Hierarchy,
    device: torch.device,
) -> tuple[dict[str, Any], float]:
    """Validation record for metrics.jsonl and the validation loss (fine cross-entropy)."""
    if not items:
        return {"n": 0}, math.inf
    fine, head = trainee.predict(model, items, store, device)
    y = np.array([it.fine for it in items])
    report, _ = evaluation_report(hierarchy, y, fine, head)
    val_loss = float(-np.log(np.clip(fine[np.arange(len(y)), y], 1e-12, None)).mean())
    record: dict[str, Any] = {"n": len(items), "loss": val_loss}
    for level in ("fine", "coarse", "coarse_head"):  # no coarse_head: a model without one
        if level in report:
            record[level] = {m: report[level][m] for m in EPOCH_METRICS}
    record["consistency"] = report["consistency"]
    return record, val_loss


def selection_score(record: dict[str, Any], val_loss: float, metric: str, epoch: int) -> float:
    """The number ``train.select_metric`` ranks epochs by (higher is better).

    ``last``: the epoch index, so every epoch beats the one before and the last is kept;
    ``val_loss``: minus the loss; otherwise the fine-level metric, falling back to balanced
    accuracy where the AUC is undefined (a class absent from the validation part); −inf
    without validation slides.
    """
    if metric == "last":
        return float(epoch)
    if record.get("n", 0) == 0:
        return -math.inf
    if metric == "val_loss":
        return -val_loss
    key = metric.removeprefix("fine_").replace("auc", "macro_auc")
    score = float(record["fine"][key])
    if not math.isfinite(score):
        score = float(record["fine"]["balanced_accuracy"])
    return score


def _save_state(session: _FoldSession, epoch: int) -> None:
    s = session
    state = {
        "epoch": epoch,
        "in_dim": s.cohort.in_dim,
        "model": s.model.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.schedule.state_dict(),
        "selection": {
            "best_score": s.tracker.best_score,
            "best_loss": s.tracker.best_loss,
            "best_epoch": s.tracker.best_epoch,
        },
        "torch_rng": torch.get_rng_state(),
    }
    if s.average is not None:
        state["weight_average"] = s.average.state_dict()
    with atomic_path(s.paths.state) as tmp:
        torch.save(state, tmp)


def _load_state(paths: FoldPaths) -> dict[str, Any] | None:
    if not paths.state.is_file():
        return None
    try:
        return torch.load(paths.state, map_location="cpu", weights_only=True)
    except Exception as exc:  # a state we cannot read means starting the fold over
        raise RunError(
            paths.state, f"unreadable resume state ({exc}); delete it to restart"
        ) from None


def _truncate_metrics(paths: FoldPaths, last_epoch: int) -> None:
    """Drop metric lines of epochs after the saved state (written just before a crash)."""
    records = [r for r in read_jsonl(paths.metrics) if int(r.get("epoch", -1)) <= last_epoch]
    write_text_atomic(paths.metrics, "".join(json.dumps(r) + "\n" for r in records))
