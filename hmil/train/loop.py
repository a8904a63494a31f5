"""Training one fold of HMIL: epochs, gradient accumulation, selection, resume.

Determinism: the model is initialised from ``seed``; the order of training bags in epoch e and
any instance subsampling come from generators seeded by (seed, epoch), not from a running
global state, and the SupCon memory is emptied at each epoch start. Together with the saved
optimiser/scheduler/RNG state this makes ``--resume`` after an interruption end with exactly
the same result as an uninterrupted run (on CPU; CUDA kernels may differ in the last bits).

Crash safety, in order per epoch: best checkpoint (if improved) → metrics line → resume state.
A crash between them at worst repeats the epoch; on resume, metric lines beyond the saved
state are dropped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.config import Config
from hmil.data.splits import Split
from hmil.device import resolve_device
from hmil.errors import RunError
from hmil.hierarchy import Hierarchy
from hmil.io import append_jsonl, atomic_path, read_jsonl, write_text_atomic
from hmil.model import HMIL
from hmil.model.losses import HMILLoss, SupConMemory
from hmil.progress import Progress
from hmil.train.cohort import BagStore, CohortItem, FoldCohort, SkipHandler, gather_fold
from hmil.train.evaluate import evaluation_report, predictions_frame, write_fold_evaluation
from hmil.train.runs import FoldLock, FoldPaths, fold_paths, write_status

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
) -> FoldResult:
    """Train, select on validation and test one fold; write its files into ``run_dir``.

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

    Raises:
        RunError: the fold already has results and ``resume`` is False, or another process
            is training it.
    """
    paths = fold_paths(run_dir, fold)
    if paths.finished():
        if resume:
            return FoldResult(fold=fold, state="already-finished")
        raise RunError(
            paths.root, "fold already finished; choose a new --out (or --resume to skip it)"
        )
    if paths.started() and not resume:
        raise RunError(
            paths.root,
            "fold already has training files; pass --resume to continue it or choose a new --out",
        )
    with FoldLock(paths):
        if stop_check is None:
            paths.stop_request.unlink(missing_ok=True)  # a stale request must not stop us
            stop_check = paths.stop_request.exists
        return _train_locked(
            config, hierarchy, labels, split, fold, paths, resume, strict, on_skip, verbose,
            stop_check,
        )  # fmt: skip


def _train_locked(
    config: Config,
    hierarchy: Hierarchy,
    labels: pd.DataFrame,
    split: Split,
    fold: int,
    paths: FoldPaths,
    resume: bool,
    strict: bool,
    on_skip: SkipHandler | None,
    verbose: bool,
    stop_check: Callable[[], bool],
) -> FoldResult:
    tc = config.train
    device = resolve_device(tc.device)
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
    model = HMIL(cohort.in_dim, hierarchy.n_coarse, hierarchy.n_fine, config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=tc.plateau_factor, patience=tc.plateau_patience
    )
    criterion = HMILLoss(config.loss, torch.from_numpy(hierarchy.mapping))
    tracker = _Selection()
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
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
        encoder=config.data.encoder,
        config=config.to_dict(),
        fold=fold,
    )
    memory = SupConMemory(config.loss.supcon_memory)
    progress = Progress(tc.epochs, f"fold {fold}", enabled=verbose, initial=start_epoch)
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.monotonic()
            train_stats = _train_epoch(
                model, optimizer, criterion, memory, cohort.parts["train"], store, epoch, config,
                device,
            )  # fmt: skip
            val_record, score, val_loss = _validate(
                model, cohort.parts.get("val", []), store, hierarchy, device, config
            )
            improved = tracker.update(score, val_loss, epoch)
            if improved:
                info.epoch = epoch
                info.val_metrics = val_record
                save_checkpoint(paths.checkpoint, model, info)
            scheduler.step(score if math.isfinite(score) else -val_loss)
            record = {
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "beta": train_stats.pop("beta"),
                "train": train_stats,
                "val": val_record,
                "select": {"metric": tc.select_metric, "value": score, "best": improved},
                "time_s": round(time.monotonic() - t0, 3),
            }
            append_jsonl(paths.metrics, record)
            _save_state(paths, model, optimizer, scheduler, tracker, epoch, cohort.in_dim)
            progress.update(1, loss=train_stats["loss"], val=score, best=tracker.best_epoch)
            write_status(
                paths,
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
                write_status(paths, state="stopping", epoch=epoch)
                break
    except BaseException:
        write_status(paths, state="interrupted", epoch=epoch)
        raise
    finally:
        progress.close()
    report = _test(
        paths, cohort, store, hierarchy, device, config,
        extra={
            "fold": fold,
            "best_epoch": tracker.best_epoch,
            "skipped": [{"where": w, "problem": p} for w, p in cohort.skipped],
        },
    )  # fmt: skip
    write_status(paths, state="finished", epoch=epoch, best_epoch=tracker.best_epoch, eta_s=0)
    return FoldResult(
        fold=fold,
        state="finished",
        best_epoch=tracker.best_epoch,
        test_metrics=report,
        skipped=cohort.skipped,
    )


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
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_epoch(
    model: HMIL,
    optimizer: torch.optim.Optimizer,
    criterion: HMILLoss,
    memory: SupConMemory,
    items: list[CohortItem],
    store: BagStore,
    epoch: int,
    config: Config,
    device: torch.device,
) -> dict[str, Any]:
    """One pass over the training bags; the mean loss of each ``bags_per_step`` group is one
    optimiser step (the last group may be smaller and is averaged over its own size)."""
    tc = config.train
    model.train()
    memory.clear()
    gen = _epoch_generator(tc.seed, epoch)
    order = torch.randperm(len(items), generator=gen).tolist()
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
            out = model(x.to(device, non_blocking=True))
        result = criterion(out, item.fine, epoch, tc.epochs, memory)
        (result.total / group_size).backward()
        memory.push(out.fine_embeddings, item.fine)
        if position == group_start + group_size - 1:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += float(result.total.detach())
        for name, value in result.terms.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        beta = result.beta
    n = max(len(items), 1)
    return {
        "loss": loss_sum / n,
        "terms": {k: v / n for k, v in totals.items()},
        "beta": beta,
        "n_bags": len(items),
    }


@torch.no_grad()
def predict_items(
    model: HMIL,
    items: list[CohortItem],
    store: BagStore,
    device: torch.device,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(S, Kf)`` fine and ``(S, Kc)`` coarse-head probabilities of the given items."""
    model.eval()
    fine, coarse = [], []
    for item in items:
        with _autocast(device, amp):
            out = model(store.get(item.path).to(device, non_blocking=True))
        fine.append(torch.softmax(out.fine_logits.float(), -1).cpu())
        coarse.append(torch.softmax(out.coarse_logits.float(), -1).cpu())
    if not items:
        return np.zeros((0, model.n_fine)), np.zeros((0, model.n_coarse))
    return torch.stack(fine).double().numpy(), torch.stack(coarse).double().numpy()


def _validate(
    model: HMIL,
    items: list[CohortItem],
    store: BagStore,
    hierarchy: Hierarchy,
    device: torch.device,
    config: Config,
) -> tuple[dict[str, Any], float, float]:
    """Validation record for metrics.jsonl, the selection score, and the val loss (fine CE)."""
    if not items:
        return {"n": 0}, -math.inf, math.inf
    fine, head = predict_items(model, items, store, device, config.train.amp)
    y = np.array([it.fine for it in items])
    report, _ = evaluation_report(hierarchy, y, fine, head)
    val_loss = float(-np.log(np.clip(fine[np.arange(len(y)), y], 1e-12, None)).mean())
    record: dict[str, Any] = {"n": len(items), "loss": val_loss}
    for level in ("fine", "coarse", "coarse_head"):
        record[level] = {m: report[level][m] for m in EPOCH_METRICS}
    record["consistency"] = report["consistency"]
    metric = config.train.select_metric
    if metric == "val_loss":
        score = -val_loss
    else:
        key = metric.removeprefix("fine_").replace("auc", "macro_auc")
        score = record["fine"][key]
        if not math.isfinite(score):  # AUC undefined (a class missing): fall back
            score = record["fine"]["balanced_accuracy"]
    return record, float(score), val_loss


def _test(
    paths: FoldPaths,
    cohort: FoldCohort,
    store: BagStore,
    hierarchy: Hierarchy,
    device: torch.device,
    config: Config,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate the best checkpoint on the test part; write the fold's result files with
    ``extra`` (fold, best epoch, skipped items) merged into test_metrics.json."""
    from hmil.checkpoint import load_checkpoint_file

    model, _ = load_checkpoint_file(paths.checkpoint)
    model.to(device)
    items = cohort.parts.get("test", [])
    fine, head = predict_items(model, items, store, device, config.train.amp)
    y = np.array([it.fine for it in items], dtype=int)
    report, dec = evaluation_report(hierarchy, y, fine, head)
    report.update(extra)
    frame = predictions_frame([it.slide_id for it in items], y, dec, hierarchy)
    write_fold_evaluation(paths, report, frame)
    return report


def _save_state(
    paths: FoldPaths,
    model: HMIL,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    tracker: _Selection,
    epoch: int,
    in_dim: int,
) -> None:
    state = {
        "epoch": epoch,
        "in_dim": in_dim,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "selection": {
            "best_score": tracker.best_score,
            "best_loss": tracker.best_loss,
            "best_epoch": tracker.best_epoch,
        },
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(paths.state) as tmp:
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
