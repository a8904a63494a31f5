"""Evaluation of a fold: probabilities of its bags, metrics per level, the predictions table.

One path for every evaluation: validation during training, the test part at the end of
training and ``hmil evaluate`` (which recomputes from checkpoints) all predict through
:func:`predict_items` in fp32 (no autocast: metrics must not depend on the training precision)
and write results through :func:`evaluate_fold`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hmil.calibration import Calibration, calibration_report
from hmil.checkpoint import load_checkpoint_file
from hmil.conformal import check_coverage
from hmil.data.labels import read_labels
from hmil.data.splits import Split, list_split_files, read_split
from hmil.decoding import Decoded, decode
from hmil.device import resolve_device
from hmil.errors import CheckpointError, RunError
from hmil.hierarchy import Hierarchy
from hmil.io import atomic_path, write_json_atomic
from hmil.model import HMIL
from hmil.train.cohort import BagStore, CohortItem, SkipHandler, gather_fold
from hmil.train.metrics import level_metrics, specificity
from hmil.train.runs import FoldPaths, fold_paths, list_folds, load_run_config


@torch.no_grad()
def predict_items(
    model: HMIL, items: list[CohortItem], store: BagStore, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """``(S, Kf)`` fine and ``(S, Kc)`` coarse-head probabilities of the given items (fp32)."""
    model.eval()
    if not items:
        return np.zeros((0, model.n_fine)), np.zeros((0, model.n_coarse))
    fine, coarse = [], []
    for item in items:
        out = model(store.get(item.path).to(device, non_blocking=True))
        fine.append(torch.softmax(out.fine_logits.float(), -1).cpu())
        coarse.append(torch.softmax(out.coarse_logits.float(), -1).cpu())
    return torch.stack(fine).double().numpy(), torch.stack(coarse).double().numpy()


def selection_description(select_metric: str) -> str:
    """How the evaluated checkpoint was chosen, in words (kept in ``test_metrics.json``)."""
    if select_metric == "last":
        return "last epoch (train.select_metric: last; no validation-based selection)"
    return f"best validation {select_metric}"


def evaluate_fold(
    paths: FoldPaths,
    model: HMIL,
    items: list[CohortItem],
    store: BagStore,
    hierarchy: Hierarchy,
    device: torch.device,
    decoding: str = "fine_sum",
    extra: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
    coverage: float | None = None,
) -> dict[str, Any]:
    """Predict ``items`` with ``model``, write the fold's ``test_metrics.json`` (the report with
    ``extra`` merged in) and ``predictions.csv``; return the report.

    The level metrics are of the raw probabilities (a head's argmax does not depend on its
    temperature); with ``calibration`` the report gains its ``calibration`` section
    (:func:`hmil.calibration.calibration_report`, the call at target ``coverage``)."""
    fine, head = predict_items(model.to(device), items, store, device)
    y = np.array([it.fine for it in items], dtype=int)
    report, dec = evaluation_report(hierarchy, y, fine, head, decoding)
    if calibration is not None:
        parent = np.asarray(hierarchy.parent)
        report["calibration"] = calibration_report(calibration, fine, head, y, parent, coverage)
    report.update(extra or {})
    ids = [it.slide_id for it in items]
    frame = predictions_frame(ids, y, dec, hierarchy, calibration, coverage)
    write_fold_evaluation(paths, report, frame)
    return report


def evaluation_report(
    hierarchy: Hierarchy,
    y_fine: np.ndarray,
    fine_probs: np.ndarray,
    coarse_head_probs: np.ndarray | None,
    decoding: str = "fine_sum",
) -> tuple[dict[str, Any], Decoded]:
    """Metrics of all levels for S slides.

    Args:
        hierarchy: the label tree.
        y_fine: ``(S,)`` true fine indices.
        fine_probs: ``(S, Kf)``.
        coarse_head_probs: ``(S, Kc)``, or None for a model without a coarse head.
        decoding: ``fine_sum`` (default: coarse = argmax Mᵀ p_f) or ``top_down``.

    Returns:
        ``(report, decoded)``; the report has ``fine``, ``coarse`` (from the fine head, Mᵀ p_f)
        and ``coarse_head`` (the coarse head's own probabilities) level metrics, the coarse
        levels with ``specificity`` of the first coarse class, plus ``consistency`` (fraction of
        slides whose coarse prediction is the parent of the fine one) and ``decoding``.
    """
    y_fine = np.asarray(y_fine, dtype=int)
    y_coarse = np.asarray(hierarchy.parent)[y_fine]
    dec = decode(fine_probs, hierarchy, coarse_head_probs, decoding)
    report: dict[str, Any] = {
        "decoding": decoding,
        "n": int(y_fine.size),
        "fine": level_metrics(y_fine, dec.fine_probs, hierarchy.fine, dec.fine_pred),
        "coarse": level_metrics(y_coarse, dec.coarse_probs, hierarchy.coarse, dec.coarse_pred),
    }
    report["coarse"]["specificity"] = specificity(y_coarse, dec.coarse_pred, 0)
    if dec.coarse_head_probs is not None and dec.coarse_head_pred is not None:
        report["coarse_head"] = level_metrics(
            y_coarse, dec.coarse_head_probs, hierarchy.coarse, dec.coarse_head_pred
        )
        report["coarse_head"]["specificity"] = specificity(y_coarse, dec.coarse_head_pred, 0)
    report["consistency"] = float(dec.consistent.mean()) if y_fine.size else float("nan")
    report["n_inconsistent"] = int((~dec.consistent).sum())
    return report, dec


def predictions_frame(
    slide_ids: list[str],
    y_fine: np.ndarray,
    dec: Decoded,
    hierarchy: Hierarchy,
    calibration: Calibration | None = None,
    coverage: float | None = None,
) -> pd.DataFrame:
    """One row per slide: ids, true and predicted labels per level, flags and probabilities.

    Columns: ``slide_id, true_coarse, true_fine, pred_coarse, pred_fine, pred_coarse_head,
    consistent, correct_fine, correct_coarse, confidence`` then ``p_fine_<name>``,
    ``p_coarse_<name>`` (Mᵀ p_f) and ``p_coarse_head_<name>``. ``confidence`` is the
    probability of the predicted fine class.

    With a ``calibration`` that changes something (:func:`calibrates`) the probabilities and
    ``confidence`` are the calibrated ones (what ``hmil predict`` and the viewer show) and the
    raw ones follow as ``raw_confidence``, ``raw_p_fine_<name>``, ``raw_p_coarse_<name>``,
    ``raw_p_coarse_head_<name>``; with conformal scores, ``call_level`` (``fine``, ``coarse``
    or ``none``), ``call_label`` (empty for ``none``) and ``coverage_target`` (``coverage``,
    default the checkpoint's) follow ``confidence``. The predicted labels and ``correct_*``
    stay those of the raw probabilities ``dec``, like the metrics of ``test_metrics.json``
    (temperature scaling keeps each head's argmax; Mᵀ p_f's may move where two coarse classes
    are close).
    """
    y_fine = np.asarray(y_fine, dtype=int)
    parent = np.asarray(hierarchy.parent)
    frame: dict[str, Any] = {
        "slide_id": list(slide_ids),
        "true_coarse": [hierarchy.coarse[parent[j]] for j in y_fine],
        "true_fine": [hierarchy.fine[j] for j in y_fine],
        "pred_coarse": [hierarchy.coarse[c] for c in dec.coarse_pred],
        "pred_fine": [hierarchy.fine[j] for j in dec.fine_pred],
    }
    if dec.coarse_head_pred is not None:
        frame["pred_coarse_head"] = [hierarchy.coarse[c] for c in dec.coarse_head_pred]
    frame["consistent"] = dec.consistent.tolist()
    frame["correct_fine"] = (dec.fine_pred == y_fine).tolist()
    frame["correct_coarse"] = (dec.coarse_pred == parent[y_fine]).tolist()
    raw = _probability_columns(dec, hierarchy)
    if calibration is None or not calibrates(calibration):
        return pd.DataFrame(frame | raw)
    fine, head = calibration.apply(dec.fine_probs, dec.coarse_head_probs)
    mapping = hierarchy.mapping.astype(np.float64)
    shown = replace(dec, fine_probs=fine, coarse_probs=fine @ mapping, coarse_head_probs=head)
    calibrated = _probability_columns(shown, hierarchy)
    frame["confidence"] = calibrated.pop("confidence")
    calls = calibration.calls(fine, parent, coverage)
    if calls is not None:
        names = {"fine": hierarchy.fine, "coarse": hierarchy.coarse}
        frame["call_level"] = [str(level) for level in calls.level]
        frame["call_label"] = [
            names[str(level)][i] if str(level) in names else ""
            for level, i in zip(calls.level, calls.label, strict=True)
        ]
        target = calibration.coverage_target if coverage is None else coverage
        frame["coverage_target"] = [float(target)] * len(y_fine)
    return pd.DataFrame(frame | calibrated | {f"raw_{k}": v for k, v in raw.items()})


def _probability_columns(dec: Decoded, hierarchy: Hierarchy) -> dict[str, Any]:
    """``confidence`` and the ``p_<level>_<name>`` columns of ``dec`` (rounded to 6 digits)."""
    rows = np.arange(len(dec.fine_pred))
    out: dict[str, Any] = {"confidence": dec.fine_probs[rows, dec.fine_pred].round(6).tolist()}
    for i, name in enumerate(hierarchy.fine):
        out[f"p_fine_{name}"] = dec.fine_probs[:, i].round(6)
    for i, name in enumerate(hierarchy.coarse):
        out[f"p_coarse_{name}"] = dec.coarse_probs[:, i].round(6)
    if dec.coarse_head_probs is not None:
        for i, name in enumerate(hierarchy.coarse):
            out[f"p_coarse_head_{name}"] = dec.coarse_head_probs[:, i].round(6)
    return out


def calibrates(calibration: Calibration) -> bool:
    """True when ``calibration`` changes a prediction: a temperature other than 1 or a call
    (``Calibration()``, what a checkpoint without calibration reads as, changes nothing)."""
    temperatures = (calibration.fine_temperature, calibration.coarse_temperature)
    return calibration.fitted or any(t != 1.0 for t in temperatures)


def write_fold_evaluation(
    paths: FoldPaths, report: dict[str, Any], predictions: pd.DataFrame
) -> None:
    """Write ``test_metrics.json`` and ``predictions.csv`` atomically (predictions first, so a
    fold counts as finished only when both exist), and ``reliability.csv`` beside them when the
    report has a ``calibration`` section (:func:`reliability_frame`)."""
    with atomic_path(paths.predictions) as tmp:
        predictions.to_csv(tmp, index=False)
    if "calibration" in report:
        with atomic_path(paths.root / RELIABILITY_NAME) as tmp:
            reliability_frame(report["calibration"]).to_csv(tmp, index=False)
    write_json_atomic(paths.test_metrics, report)


#: the reliability-diagram data of a fold's test part, beside its ``test_metrics.json``
RELIABILITY_NAME = "reliability.csv"
#: the columns of ``reliability.csv`` (:func:`reliability_frame`)
RELIABILITY_COLUMNS = ("level", "calibration", "bin", "confidence", "accuracy", "count")
#: reliability.csv files larger than this are not read (a fold's holds 3 levels × 2 × 15 rows)
RELIABILITY_MAX_BYTES = 1 << 20


def reliability_frame(section: dict[str, Any]) -> pd.DataFrame:
    """The reliability-diagram data of a report's ``calibration`` section as a table: one row
    per level (``fine``, ``coarse``, ``coarse_head``), ``before`` / ``after`` calibration and
    equal-mass bin, with the bin's mean ``confidence``, ``accuracy`` and ``count``."""
    rows = []
    for level in ("fine", "coarse", "coarse_head"):
        for when in ("before", "after"):
            if level not in section:
                continue
            data = section[level][when]["reliability"]
            for i, (conf, acc, count) in enumerate(
                zip(data["confidence"], data["accuracy"], data["count"], strict=True)
            ):
                rows.append((level, when, i, conf, acc, count))
    return pd.DataFrame(rows, columns=list(RELIABILITY_COLUMNS))


def read_reliability(run_dir: str | Path) -> pd.DataFrame:
    """Every fold's ``reliability.csv`` stacked with a ``fold`` column: ``level, calibration
    (before | after), bin, confidence, accuracy, count, fold``; empty when no fold has one.

    One reader for the cohort page and ``hmil evaluate``'s ``reliability.html``. A file that
    leads out of the run (a symlink), is over :data:`RELIABILITY_MAX_BYTES`, does not parse,
    lacks a column or holds a number that is not one is skipped: the diagrams show the folds
    whose data can be drawn, and a damaged fold must not hide the others."""
    run = Path(run_dir).resolve()
    frames = []
    for fold in list_folds(run):
        try:
            path = (fold_paths(run, fold).root / RELIABILITY_NAME).resolve()
            if not (path.is_relative_to(run) and path.is_file()):
                continue
            if path.stat().st_size > RELIABILITY_MAX_BYTES:
                continue
            frame = pd.read_csv(path, dtype={"level": str, "calibration": str})
        except (OSError, RuntimeError, ValueError):  # RuntimeError: a symlink loop
            continue
        if not set(RELIABILITY_COLUMNS) <= set(frame.columns):
            continue
        numbers = ["bin", "confidence", "accuracy", "count"]
        values = frame[numbers].apply(pd.to_numeric, errors="coerce")
        if values.isna().any().any():
            continue
        frame = frame[list(RELIABILITY_COLUMNS)].copy()
        frame[numbers] = values
        frames.append(frame.assign(fold=fold))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def evaluate_run_fold(
    run_dir: str | Path,
    fold: int,
    device: str = "auto",
    decoding: str = "fine_sum",
    strict: bool = False,
    on_skip: SkipHandler | None = None,
    coverage: float | None = None,
) -> dict[str, Any]:
    """Recompute a fold's test metrics and predictions from its best checkpoint.

    The run's stored config names the labels, features and splits; the checkpoint's stored
    calibration (T = 1 and no call for one without) gives the ``calibration`` section, with
    the call at target ``coverage`` (default: the checkpoint's). Raises
    :class:`~hmil.errors.CheckpointError` when the checkpoint's hierarchy differs from the
    run's (a checkpoint from another hierarchy) or its input dimension from the bags', and
    :class:`~hmil.errors.ConfigError` for a ``coverage`` outside (0, 1).
    """
    if coverage is not None:
        check_coverage(coverage)
    config = load_run_config(run_dir)
    hierarchy = Hierarchy.resolve(config.data.hierarchy)
    paths = fold_paths(run_dir, fold)
    model, info = load_checkpoint_file(paths.checkpoint)
    if not info.hierarchy.same_as(hierarchy):
        raise CheckpointError(
            paths.checkpoint,
            f"checkpoint hierarchy ({', '.join(info.hierarchy.fine)}) differs from the run's "
            f"({', '.join(hierarchy.fine)})",
        )
    labels = read_labels(config.data.labels, hierarchy)
    split_file = list_split_files(config.data.splits).get(fold)
    if split_file is None:
        raise RunError(config.data.splits, f"no splits_{fold}.csv")
    split = read_split(split_file, known_ids=set(labels["slide_id"]))
    test_only = Split(train=split.test, val=(), test=split.test)
    cohort, store = gather_fold(
        labels, test_only, config.data.features, store_budget_bytes=0, strict=strict,
        on_skip=on_skip, expected_dim=info.in_dim, verbose=False,
    )  # fmt: skip
    extra = {
        "fold": fold,
        "best_epoch": info.epoch,
        "selection": selection_description(config.train.select_metric),
        "skipped": [{"where": w, "problem": p} for w, p in cohort.skipped],
    }
    return evaluate_fold(
        paths, model, cohort.parts["test"], store, hierarchy, resolve_device(device), decoding,
        extra, Calibration.from_dict(info.calibration), coverage,
    )  # fmt: skip
