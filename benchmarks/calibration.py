"""Calibrated confidence and the hierarchical call of the HMIL defaults, measured per cohort.

The product fits one temperature per level on the validation part after training and a
split-conformal hierarchical call on the same part (:mod:`hmil.calibration`,
:mod:`hmil.conformal`). Whether that works is a property of the cohorts, so it is measured on
the benchmark cohorts (:mod:`benchmarks.cohorts`, SYNTHETIC bags), with the ``HMIL defaults``
row of :mod:`benchmarks.accuracy` trained through the same code (its ``prepare_cohort``,
``hmil_config`` and ``run_hmil``: one cohort draw and split per seed, ``hmil.train.api.train``,
the selected checkpoint and its stored ``calibration``).

Reported on the TEST part, per level (``fine``; ``coarse`` = Mᵀ p_f; ``coarse_head``): ECE (15
equal-mass bins), Brier and NLL before / after temperature scaling, the fitted T, balanced
accuracy before / after (identical: the argmax does not move); the call at coverage targets
0.8 / 0.9 / 0.95 (empirical coverage with its binomial standard error, share answered at the
fine / coarse level or not at all, accuracy of the fine answers); the risk–coverage curve per
level (answering the most confident bags first). One diagnostic of the benchmark's own: the ECE
a perfectly calibrated model with the same confidences would show on this many test bags (the
floor the 15-bin estimate cannot go below on average).

The stated goal is fine-level ECE ≤ 0.05 on every cohort with no loss of balanced accuracy;
the Markdown says per cohort whether it holds.

Usage (from the repository root)::

    python -m benchmarks.calibration --resume          # all cohorts, seeds 0-4 (resumable)
    python -m benchmarks.calibration --cohorts digits --seeds 2
    python -m benchmarks.calibration --quick           # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.accuracy import (
    COHORT_EPOCHS,
    HMIL_DEFAULT,
    VARIANTS,
    Prepared,
    prepare_cohort,
    run_hmil,
)
from benchmarks.cohorts import COHORTS, IMBALANCED, LARGE, SMALL
from benchmarks.common import (
    RESULTS,
    clean,
    machine,
    machine_line,
    option_names,
    resumed_runs,
    seed_list,
)
from benchmarks.peers import TrainSettings
from hmil.calibration import Calibration, calibration_report, ece
from hmil.checkpoint import load_checkpoint_file
from hmil.conformal import parent_mapping, prediction_sets
from hmil.hierarchy import Hierarchy
from hmil.io import append_jsonl, write_json_atomic, write_text_atomic
from hmil.predict import Predictor, load_checkpoint
from hmil.synthetic import CohortSpec, SyntheticBag, make_cohort
from hmil.train.metrics import level_metrics

#: cheapest first, so that a run cut short still has whole cohorts
COHORT_ORDER = ("digits", "gen-small", "textures", "gen-imbalanced", "gen-large")
COVERAGES = (0.8, 0.9, 0.95)
LEVELS = ("fine", "coarse", "coarse_head")
#: the levels whose label the product could take from calibrated probabilities: the heads'
#: argmax. The product's coarse label is argmax Mᵀ p_f of the RAW fine probabilities
#: (``hmil.predict``), so the reordering of the calibrated sums Mᵀ p̂_f is a diagnostic only
LABEL_LEVELS = ("fine", "coarse_head")
#: the product's goal for the fine level (after temperature scaling)
ECE_GOAL = 0.05
#: draws of the perfectly calibrated reference behind the ECE floor
FLOOR_DRAWS = 200
#: test-part sizes at which the floor is also estimated (resampling the measured confidences)
FLOOR_SIZES = (100, 300, 1000, 3000)
#: the generator settings of the generated cohorts (a further draw needs them; digits and
#: textures are assembled from a fixed pool of real images and have none)
GENERATED_SPECS: dict[str, CohortSpec] = {"gen-small": SMALL, "gen-large": LARGE,
                                          "gen-imbalanced": IMBALANCED}  # fmt: skip
#: a further draw leaves out its first ceil(factor · n) bags: with the same seed the generator
#: reads the same random stream, so a draw's first bags reuse the numbers (shifted) of the
#: cohort's own n bags. Measured on gen-small and gen-imbalanced, seeds 0-4: the overlap ends
#: by bag 1.02 · n; 1.25 leaves a margin.
DRAW_SKIP_FACTOR = 1.25
#: what a further draw records per seed (the measure() keys, stored as ``draw.<key>``)
DRAW_KEYS = ("fine.ece_before", "fine.ece_after", "fine.brier_before", "fine.brier_after",
             "fine.nll_before", "fine.nll_after", "fine.bacc_before", "fine.bacc_after",
             "coarse.bacc_before", "coarse.bacc_after", "coarse_head.bacc_before",
             "coarse_head.bacc_after", "fine.ece_floor", "call0.9.coverage",
             "call0.9.coverage_se", "call0.9.share_fine")  # fmt: skip
CALL_KEYS = ("coverage", "coverage_se", "share_fine", "share_coarse", "share_none",
             "accuracy_fine", "accuracy_coarse")  # fmt: skip


def defaults_variant() -> Any:
    """The ``HMIL defaults`` row of :mod:`benchmarks.accuracy` (what ``hmil train`` gives)."""
    return next(v for v in VARIANTS if v.name == HMIL_DEFAULT)


# ---- measurement of one trained run -------------------------------------------------------
def ece_floor(probs: np.ndarray, seed: int, draws: int = FLOOR_DRAWS) -> float:
    """Mean ECE of a perfectly calibrated model with the top-label confidences of ``(S, K)``
    ``probs``: per draw each bag is right with probability ``max_k p_k`` (else labelled with
    another class), scored with :func:`hmil.calibration.ece`. The 15-bin estimate on S bags is
    biased upwards; this is the value it shows when there is nothing to correct."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[0] == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    top = p.argmax(axis=1)
    other = (top + 1) % p.shape[1]  # any class but the argmax
    values = []
    for _ in range(draws):
        right = rng.random(p.shape[0]) < p.max(axis=1)
        values.append(ece(p, np.where(right, top, other)))
    return float(np.mean(values))


def floor_by_size(
    work: Path, cohort: str, seeds: list[int], sizes: tuple[int, ...] = FLOOR_SIZES
) -> dict[str, float]:
    """The fine ECE floor (:func:`ece_floor`) on larger test parts with the same confidences:
    the calibrated fine probabilities of the cohort's saved test parts (``WORK/<cohort>-s<seed>
    -test.npz``), pooled over seeds and resampled to each size (50 draws per size). Says how
    many test bags the 15-bin ECE needs before the goal can be told apart from noise."""
    pooled = []
    for seed in seeds:
        path = work / f"{cohort}-s{seed}-test.npz"
        if not path.is_file():
            continue
        with np.load(path) as data:
            calibration = Calibration.from_dict(json.loads(str(data["calibration"])))
            pooled.append(calibration.apply(np.asarray(data["fine"]), None)[0])
    if not pooled:
        return {}
    probs = np.concatenate(pooled)
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        draws = [ece_floor(probs[rng.integers(0, len(probs), size)], seed=i, draws=1)
                 for i in range(50)]  # fmt: skip
        out[str(size)] = float(np.mean(draws))
    return out


def measure(
    calibration: Calibration,
    fine_probs: np.ndarray,
    head_probs: np.ndarray,
    y_fine: np.ndarray,
    prepared: Prepared,
) -> dict[str, Any]:
    """The record of one run from its TEST part's raw ``(S, Kf)`` fine and ``(S, Kc)``
    coarse-head probabilities and the checkpoint's ``calibration`` (library functions only)."""
    h = prepared.hierarchy
    parent = np.asarray(h.parent)
    y_coarse = parent[y_fine]
    reports = {c: calibration_report(calibration, fine_probs, head_probs, y_fine, parent, c)
               for c in COVERAGES}  # fmt: skip
    report = reports[COVERAGES[0]]
    fine_after, head_after = calibration.apply(fine_probs, head_probs)
    assert head_after is not None
    mapping = parent_mapping(parent)
    probs = {
        "fine": (fine_probs, fine_after, y_fine, h.fine),
        "coarse": (fine_probs @ mapping, fine_after @ mapping, y_coarse, h.coarse),
        "coarse_head": (head_probs, head_after, y_coarse, h.coarse),
    }
    record: dict[str, Any] = {
        "T_fine": calibration.fine_temperature,
        "T_coarse_head": calibration.coarse_temperature,
        "n_test": int(y_fine.size),
    }
    for level, (before, after, y, names) in probs.items():
        for stage, p in (("before", before), ("after", after)):
            for m in ("ece", "brier", "nll"):
                record[f"{level}.{m}_{stage}"] = report[level][stage][m]
            bacc = level_metrics(y, p, names)["balanced_accuracy"]
            record[f"{level}.bacc_{stage}"] = bacc
        record[f"{level}.ece_floor"] = ece_floor(after, seed=prepared.seed)
    for c, rep in reports.items():
        call = rep["call"]
        n = call["n"]
        cov = call["coverage"]
        call = {**call, "coverage_se": math.sqrt(cov * (1 - cov) / n) if n else float("nan")}
        for k in CALL_KEYS:
            record[f"call{c}.{k}"] = call[k]
        thresholds = (call_thr(rep, "fine"), call_thr(rep, "coarse"))
        record[f"call{c}.thresholds"] = list(thresholds)
        record.update({f"call{c}.{k}": v for k, v in
                       set_sizes(fine_after, parent, *thresholds).items()})  # fmt: skip
    record["risk_coverage"] = report["risk_coverage"]
    record["reliability_fine"] = {s: report["fine"][s]["reliability"] for s in ("before", "after")}
    val_counts = Counter(it.fine for it in prepared.items["val"])
    record["n_val"] = len(prepared.items["val"])
    record["val_per_class"] = [val_counts.get(j, 0) for j in range(h.n_fine)]
    return record


def set_sizes(
    fine_after: np.ndarray, parent: np.ndarray, fine_threshold: float, coarse_threshold: float
) -> dict[str, float]:
    """Why bags get no call: the share of ``(S, Kf)`` calibrated bags whose fine prediction set
    is empty, and of those whose coarse set (with the fine set's parents, as the call builds
    it) is empty (``none_empty``: no label is plausible enough, typically a confident bag
    above a very small threshold) or holds several labels (``none_ambiguous``)."""
    mapping = parent_mapping(parent)
    fine_set = prediction_sets(fine_after, fine_threshold)
    coarse_set = prediction_sets(fine_after @ mapping, coarse_threshold)
    coarse_set |= (fine_set.astype(np.float64) @ mapping) > 0
    n_fine, n_coarse = fine_set.sum(axis=1), coarse_set.sum(axis=1)
    none = (n_fine != 1) & (n_coarse != 1)
    return {
        "fine_set_empty": float((n_fine == 0).mean()),
        "none_empty": float((none & (n_coarse == 0)).mean()),
        "none_ambiguous": float((none & (n_coarse > 1)).mean()),
        "fine_set_size": float(n_fine.mean()),
    }


def call_thr(report: dict[str, Any], level: str) -> float:
    """The call's conformal threshold at ``level`` in a calibration report."""
    return float(report["call"][f"{level}_threshold"])


def draw_spec(spec: CohortSpec, n_bags: int) -> CohortSpec:
    """``spec`` with ``n_bags`` slides; ``class_counts`` all scaled by the same factor (rounded),
    so an imbalanced cohort keeps its imbalance (the total may differ from ``n_bags`` by the
    rounding)."""
    if not spec.class_counts:
        return dataclasses.replace(spec, n_slides=n_bags)
    factor = n_bags / spec.n_slides
    counts = tuple(max(1, round(c * factor)) for c in spec.class_counts)
    return dataclasses.replace(spec, n_slides=sum(counts), class_counts=counts)


def further_draw(cohort: str, seed: int, n_bags: int) -> tuple[list[SyntheticBag], int] | None:
    """About ``n_bags`` further bags of a generated cohort: :func:`hmil.synthetic.make_cohort`
    with the cohort's seed (the class and background directions are the generator's first
    draw, so they are the cohort's own) and more slides, less the first
    ``ceil(DRAW_SKIP_FACTOR · n)`` bags, whose random numbers overlap those of the cohort's n
    bags. Returns ``(bags, skipped)``, or None for a cohort without a generator."""
    spec = GENERATED_SPECS.get(cohort)
    if spec is None:
        return None
    skip = math.ceil(DRAW_SKIP_FACTOR * spec.n_slides)
    bags = make_cohort(Hierarchy.preset("bracs"), draw_spec(spec, skip + n_bags), seed=seed)
    return bags[skip:], skip


def raw_probs(
    predictor: Predictor, features: list[np.ndarray] | list[torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """``(S, Kf)`` fine and ``(S, Kc)`` coarse-head probabilities before temperature scaling
    of ``S`` bags of ``(N, D)`` features, through the product's ``predictor``
    (:func:`hmil.predict.load_checkpoint`, CPU, ``calibrated=False``)."""
    preds = [predictor.predict(x) for x in features]
    return np.stack([p.fine_probs for p in preds]), np.stack([p.coarse_head_probs for p in preds])


def measure_draw(
    checkpoint: Path,
    calibration: Calibration,
    prepared: Prepared,
    n_bags: int,
    test_fine: np.ndarray,
) -> dict[str, Any]:
    """``draw.*`` keys (:data:`DRAW_KEYS`) of a further draw of about ``n_bags`` bags
    (:func:`further_draw`), measured exactly as the test part (:func:`measure`, the raw
    probabilities then the checkpoint's ``calibration``); empty for a cohort without a
    generator. The predictor must give the test part's ``(S, Kf)`` raw ``test_fine``
    probabilities again (else the draw would not be measured as the test part is)."""
    drawn = further_draw(prepared.cohort, prepared.seed, n_bags)
    if drawn is None or n_bags <= 0:
        return {}
    bags, skipped = drawn
    predictor = load_checkpoint(checkpoint, device="cpu", calibrated=False)
    again, _ = raw_probs(predictor, [it.features for it in prepared.items["test"]])
    if not np.allclose(again, test_fine, atol=1e-6):
        raise RuntimeError("the predictor's test-part probabilities differ from the run's")
    fine, head = raw_probs(predictor, [b.features for b in bags])
    y = np.array([b.fine for b in bags], dtype=int)
    record = measure(calibration, fine, head, y, prepared)
    return {"draw.n": len(bags), "draw.skipped": skipped,
            **{f"draw.{k}": record[k] for k in DRAW_KEYS}}  # fmt: skip


def run_one(
    prepared: Prepared, seed: int, epochs: int, lr: float, work: Path, extra_test: int = 0
) -> dict[str, Any]:
    """Train the defaults on one prepared cohort (``benchmarks.accuracy.run_hmil``: the real
    training path, checkpoint calibrated on the validation part), measure its test part and,
    with ``extra_test`` > 0, a further draw of that many bags (:func:`measure_draw`)."""
    run_dir = work / "runs" / f"{prepared.cohort}-s{seed}"
    settings = TrainSettings(epochs=epochs, lr=lr, seed=seed)
    t0 = time.monotonic()
    metrics, extra = run_hmil(prepared, defaults_variant(), settings, run_dir)
    train_s = time.monotonic() - t0
    model, info = load_checkpoint_file(run_dir / "fold_0" / "checkpoint.pt")
    calibration = Calibration.from_dict(info.calibration)
    val = validation_fit(model, calibration, prepared)
    npz = run_dir.parent / f"{run_dir.name}-probs.npz"
    with np.load(npz) as data:
        y_fine = np.asarray(data["y_fine"], dtype=int)
        fine, head = np.asarray(data["fine"]), np.asarray(data["coarse_head"])
    own = json.loads((run_dir / "fold_0" / "test_metrics.json").read_text(encoding="utf-8"))
    record = measure(calibration, fine, head, y_fine, prepared)
    # the test part's raw probabilities and the calibration stay in WORK for later questions
    np.savez(work / f"{prepared.cohort}-s{seed}-test.npz", y_fine=y_fine, fine=fine,
             coarse_head=head, calibration=json.dumps(info.calibration))  # fmt: skip
    # the run's own report (target 0.9, float32 probabilities) must tell the same story
    own_ece = own["calibration"]["fine"]["after"]["ece"]
    if not math.isclose(own_ece, record["fine.ece_after"], abs_tol=1e-4):
        raise RuntimeError(f"fine ECE {record['fine.ece_after']} differs from the run's {own_ece}")
    checkpoint = run_dir / "fold_0" / "checkpoint.pt"
    record.update(measure_draw(checkpoint, calibration, prepared, extra_test, fine))
    shutil.rmtree(run_dir, ignore_errors=True)
    npz.unlink(missing_ok=True)
    record.update(
        **val,
        fine_balanced_accuracy_run=metrics["fine_balanced_accuracy"],
        best_epoch=extra["best_epoch"],
        train_time_s=round(train_s, 1),
    )
    return record


def validation_fit(
    model: torch.nn.Module, calibration: Calibration, prepared: Prepared
) -> dict[str, float]:
    """Fine ECE of the validation part (the one T_f was fitted on) before / after scaling:
    how well one temperature can do in-sample, beside the test part's out-of-sample ECE."""
    items = prepared.items["val"]
    if not items:
        return {}
    model.eval()
    with torch.no_grad():
        probs = np.stack([torch.softmax(model(it.features).fine_logits, -1).double().numpy()
                          for it in items])  # fmt: skip
    y = np.array([it.fine for it in items], dtype=int)
    after, _ = calibration.apply(probs, None)
    return {"val.fine.ece_before": ece(probs, y), "val.fine.ece_after": ece(after, y)}


# ---- aggregation --------------------------------------------------------------------------
def scalar_keys(runs: list[dict[str, Any]]) -> list[str]:
    """The numeric keys of the records, in first-seen order."""
    keys: dict[str, None] = {}
    for r in runs:
        for k, v in r.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "seed":
                keys.setdefault(k, None)
    return list(keys)


def mean_curve(curves: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Risk–coverage curves of several seeds averaged point by point (each has one point per
    answered share i / 20 when the test part holds ≥ 20 bags; curves of another length than
    the commonest, which only a tiny test part gives, are left out)."""
    lengths = Counter(len(c["coverage"]) for c in curves)
    usable = [c for c in curves if lengths and len(c["coverage"]) == lengths.most_common(1)[0][0]]
    if not usable:
        return {"coverage": [], "risk": [], "risk_std": []}
    risk = np.array([c["risk"] for c in usable])
    return {
        "coverage": [round(float(v), 6) for v in np.mean([c["coverage"] for c in usable], 0)],
        "risk": [round(float(v), 6) for v in risk.mean(0)],
        "risk_std": [round(float(v), 6) for v in
                     (risk.std(0, ddof=1) if len(usable) > 1 else np.zeros(risk.shape[1]))],
    }  # fmt: skip


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{cohort: {metric: {mean, std, n}, ..., "risk_coverage": {level: curve}, "goal":
    {...}}}``, std the sample std over seeds."""
    out: dict[str, dict[str, Any]] = {}
    cohorts = [c for c in COHORT_ORDER if any(r["cohort"] == c for r in runs)]
    cohorts += sorted({r["cohort"] for r in runs} - set(cohorts))
    for cohort in cohorts:
        rows = [r for r in runs if r["cohort"] == cohort]
        stats: dict[str, Any] = {}
        for key in scalar_keys(rows):
            values = np.array([r[key] for r in rows if r.get(key) is not None], float)
            values = values[np.isfinite(values)]
            if values.size:
                std = float(values.std(ddof=1)) if values.size > 1 else 0.0
                stats[key] = {"mean": float(values.mean()), "std": std, "n": int(values.size)}
        stats["risk_coverage"] = {lv: mean_curve([r["risk_coverage"][lv] for r in rows])
                                  for lv in LEVELS}  # fmt: skip
        stats["seeds"] = sorted(r["seed"] for r in rows)
        stats["val_per_class"] = [r["val_per_class"] for r in rows]
        stats["goal"] = goal(rows)
        out[cohort] = stats
    return out


def product_losses(moved: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of a goal's ``moved`` list that fail it: balanced accuracy lost on a level
    whose label the product shows (:data:`LABEL_LEVELS`)."""
    return [m for m in moved if m["after"] < m["before"] and m["level"] in LABEL_LEVELS]


def goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Does fine ECE ≤ :data:`ECE_GOAL` (mean over seeds, after scaling) hold with no loss of
    the product's balanced accuracy (:data:`LABEL_LEVELS`) in any seed? Judged on the further
    draw (``draw.*``) when every seed has one (``on_draw``; its N bags resolve what a small
    test part cannot), else on the test part; ``test_*`` keep the test part's figures either
    way. ``moved`` lists every seed, part and level whose balanced accuracy changed at all:
    the heads' argmax cannot move, but coarse = Mᵀ p̂_f sums the calibrated fine
    probabilities per parent, and T_f can reorder those sums (a diagnostic: the product's
    coarse label sums the raw ones)."""
    on_draw = all("draw.fine.ece_after" in r for r in rows)
    parts = {"test": ""} | ({"draw": "draw."} if on_draw else {})
    moved = [{"seed": r["seed"], "part": part, "level": lv, "before": r[f"{pre}{lv}.bacc_before"],
              "after": r[f"{pre}{lv}.bacc_after"], "T_fine": r["T_fine"]}
             for r in rows for part, pre in parts.items() for lv in LEVELS
             if r[f"{pre}{lv}.bacc_before"] != r[f"{pre}{lv}.bacc_after"]]  # fmt: skip
    no_loss = not product_losses(moved)
    test = [r["fine.ece_after"] for r in rows]
    judged = [r["draw.fine.ece_after"] for r in rows] if on_draw else test
    mean_ece = float(np.mean(judged))
    return {"holds": bool(mean_ece <= ECE_GOAL and no_loss), "fine_ece_after": mean_ece,
            "excess": max(0.0, mean_ece - ECE_GOAL), "no_bacc_loss": no_loss, "moved": moved,
            "seeds_meeting": int(sum(v <= ECE_GOAL for v in judged)), "n_seeds": len(rows),
            "on_draw": on_draw,
            "draw_n": int(round(np.mean([r["draw.n"] for r in rows]))) if on_draw else 0,
            "test_fine_ece_after": float(np.mean(test)),
            "test_seeds_meeting": int(sum(v <= ECE_GOAL for v in test))}  # fmt: skip


# ---- report -------------------------------------------------------------------------------
def _ms(stats: dict[str, Any], key: str, digits: int = 3) -> str:
    s = stats.get(key)
    return "–" if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _m(stats: dict[str, Any], key: str, digits: int = 3) -> str:
    s = stats.get(key)
    return "–" if s is None else f"{s['mean']:.{digits}f}"


LEVEL_NAMES = {"fine": "fine (T_f)", "coarse": "coarse = Mᵀ p_f (T_f)",
               "coarse_head": "coarse head (T_c)"}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a result (:func:`main`'s JSON)."""
    summary = result["summary"]
    s = result["settings"]
    load = result["load"]
    missing = [c for c in s["cohorts"] if c not in summary or
               len(summary[c]["seeds"]) < len(s["seeds"])]  # fmt: skip
    lines = [
        "# Calibration and the hierarchical call of the HMIL defaults",
        "",
        machine_line(result["machine"]) + ".",
        _load_line(load),
        "",
        "All bags and labels are **SYNTHETIC** (`benchmarks/cohorts.py`; `digits` and "
        "`textures` are assembled from real images bundled with scikit-learn and "
        "scikit-image). Per seed one cohort draw and one stratified split (val "
        f"{s['val_frac']}, test {s['test_frac']}), the `HMIL defaults` row of "
        "`benchmarks/accuracy.py` trained through `hmil.train.api.train` (epochs: "
        + ", ".join(f"{c} {e}" for c, e in s["epochs"].items())
        + f"; lr {s['lr']}). The temperatures and the call are the checkpoint's own, fitted on "
        "the validation part; everything below is measured on the TEST part (and, for the "
        "generated cohorts, on a further draw where there is one: see below), mean ± sample "
        "std over seeds. ECE: top-label, 15 equal-mass bins. Coarse = Mᵀ p_f (calibrated "
        "through T_f); coarse head: its own T_c.",
        "",
        f"## The goal: fine ECE ≤ {ECE_GOAL} after scaling, no loss of balanced accuracy",
        "",
        "| cohort | seeds | fine ECE before | fine ECE after | seeds ≤ 0.05 | ECE floor | "
        f"fine ECE after, {_draw_size(summary)}-bag draw | floor at {_draw_size(summary)} | "
        "fine bacc before → after | verdict |",
        "|---" * 10 + "|",
    ]
    for cohort, st in summary.items():
        g = st["goal"]
        lines.append(
            f"| {cohort} | {g['n_seeds']} | {_ms(st, 'fine.ece_before')} | "
            f"{_ms(st, 'fine.ece_after')} | {g['test_seeds_meeting']}/{g['n_seeds']} | "
            f"{_m(st, 'fine.ece_floor')} | {_ms(st, 'draw.fine.ece_after')} | "
            f"{_m(st, 'draw.fine.ece_floor')} | {_m(st, 'fine.bacc_before')} → "
            f"{_m(st, 'fine.bacc_after')} | {_verdict(g)} |"
        )
    lines += [
        "",
        "ECE floor: the mean ECE of a perfectly calibrated model with the same calibrated "
        "confidences on the same number of bags (labels drawn from the confidences, "
        f"{FLOOR_DRAWS} draws): the 15-bin estimate's upward bias on a test part this size. "
        "The verdict is judged on the further draw where a cohort has one, else on the test "
        "part. Balanced accuracy is compared per seed and per level (fine, coarse, coarse "
        "head) for exact equality; a loss fails the goal on the levels whose labels the "
        "product shows (the fine and the coarse head's argmax; its coarse label sums the raw "
        "fine probabilities).",
        "",
        *_moved_lines(summary),
    ]
    lines += _why_lines(summary)
    lines += _draw_lines(summary)
    lines += ["## Per level", ""]
    for cohort, st in summary.items():
        n_test = _m(st, "n_test", 0)
        lines += [
            f"### {cohort} (n = {len(st['seeds'])} seeds, {n_test} test bags; T_f "
            f"{_ms(st, 'T_fine', 2)}, T_c {_ms(st, 'T_coarse_head', 2)}; "
            f"training {_m(st, 'train_time_s', 0)} s per seed)",
            "",
            "| level | ECE before | ECE after | Brier before | Brier after | NLL before | "
            "NLL after | bacc before | bacc after |",
            "|---" * 9 + "|",
        ]
        for lv in LEVELS:
            cells = [_ms(st, f"{lv}.{m}_{stage}") for m in ("ece", "brier", "nll")
                     for stage in ("before", "after")]  # fmt: skip
            cells += [_ms(st, f"{lv}.bacc_before"), _ms(st, f"{lv}.bacc_after")]
            lines.append(f"| {LEVEL_NAMES[lv]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## The call",
        "",
        "Split-conformal hierarchical call at each target coverage (the deepest label whose "
        "prediction set is one label: fine, else coarse, else none). Coverage = share of "
        "test bags whose call is right (none counts as right), ± its binomial standard error "
        "√(c(1−c)/n) averaged over seeds; then the std over seeds. Fine accuracy: share right "
        "among the fine answers.",
        "",
        "| cohort | target | coverage | binomial SE | answered fine | coarse | none | "
        "none: empty set | none: several labels | fine accuracy | coarse accuracy |",
        "|---" * 11 + "|",
    ]
    for cohort, st in summary.items():
        for c in COVERAGES:
            p = f"call{c}."
            lines.append(
                f"| {cohort} | {c} | {_ms(st, p + 'coverage')} | {_m(st, p + 'coverage_se')} | "
                f"{_ms(st, p + 'share_fine')} | {_ms(st, p + 'share_coarse')} | "
                f"{_ms(st, p + 'share_none')} | {_m(st, p + 'none_empty')} | "
                f"{_m(st, p + 'none_ambiguous')} | {_ms(st, p + 'accuracy_fine')} | "
                f"{_ms(st, p + 'accuracy_coarse')} |"
            )
    lines += [
        "",
        "No call has two causes: no label is plausible enough at either level (empty set: the "
        "threshold 1 − p̂ ≤ q is below even the top label's score, which happens to confident "
        "bags when the validation scores, hence q, are tiny) or several labels are (an "
        "ambiguous bag).",
        "",
        *_call_notes(summary),
    ]
    lines += [
        "",
        "## Risk–coverage",
        "",
        "Answering the most confident test bags first (calibrated top-label confidence): "
        "error rate among the answered at 50 % / 80 % / 100 % answered, mean over seeds. "
        "The curves are in the JSON (`summary.<cohort>.risk_coverage`, per seed in `runs`) "
        "and in `calibration_risk.png`.",
        "",
        "| cohort | level | risk at 50 % | at 80 % | at 100 % |",
        "|---|---|---|---|---|",
    ]
    for cohort, st in summary.items():
        for lv in LEVELS:
            curve = st["risk_coverage"][lv]
            if not curve["risk"]:
                continue
            cov, risk = np.array(curve["coverage"]), np.array(curve["risk"])
            cells = [f"{risk[np.abs(cov - x).argmin()]:.3f}" for x in (0.5, 0.8, 1.0)]
            lines.append(f"| {cohort} | {LEVEL_NAMES[lv]} | " + " | ".join(cells) + " |")
    lines += ["", "## Reproduce", "", "```bash", result["command"], "```", ""]
    if missing:
        lines += [
            f"Not finished in this run: {', '.join(missing)}. The command above (with "
            "`--resume` and the same `--work`) keeps the finished seeds and runs the rest.",
            "",
        ]
    return "\n".join(lines)


def _draw_size(summary: dict[str, Any]) -> str:
    """The draws' bag count for the goal table's header (``N`` when there is none)."""
    sizes = sorted({st["goal"]["draw_n"] for st in summary.values() if st["goal"]["on_draw"]})
    if not sizes:
        return "N"
    return f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}–{sizes[-1]:,}"


def _verdict(g: dict[str, Any]) -> str:
    """``HOLDS`` / ``DOES NOT HOLD: why``, naming the draw when it was judged on one."""
    on = f" on the {g['draw_n']:,}-bag draw" if g["on_draw"] else ""
    seeds = f" ({g['seeds_meeting']}/{g['n_seeds']} seeds ≤ {ECE_GOAL})" if g["on_draw"] else ""
    if g["holds"]:
        return f"HOLDS{on}{seeds}"
    why = []
    if g["fine_ece_after"] > ECE_GOAL:
        why.append(f"ECE {g['excess']:.3f} above the goal")
    losses = product_losses(g["moved"])
    if losses:
        worst = max(losses, key=lambda m: m["before"] - m["after"])
        drop = worst["before"] - worst["after"]
        levels = ", ".join(sorted({LEVEL_NAMES[m["level"]] for m in losses}))
        why.append(f"balanced accuracy lost ({levels}; at most {drop:.4f}, seed "
                   f"{worst['seed']}, {worst.get('part', 'test')} part)")  # fmt: skip
    return f"DOES NOT HOLD{on}{seeds}: " + "; ".join(why)


def _draw_lines(summary: dict[str, Any]) -> list[str]:
    """The further draws: what they are, their table, and which cohorts have none and why."""
    drawn = {c: st for c, st in summary.items() if st["goal"]["on_draw"]}
    if not drawn:
        return []
    n = _draw_size(summary)
    lines = [
        f"## A further draw of {n} SYNTHETIC bags per seed",
        "",
        f"For the generated cohorts each seed's trained checkpoint is also measured on a further "
        f"draw of {n} SYNTHETIC bags from the same generator (same class directions, new bags): "
        "`hmil.synthetic.make_cohort` with the cohort's seed and more slides (class counts "
        "scaled by one factor, so gen-imbalanced keeps its imbalance), less the draw's first "
        f"⌈{DRAW_SKIP_FACTOR} · n⌉ bags (n: the cohort's own bags), whose random numbers "
        "overlap those of the cohort's bags (same seed, same random stream). None of these "
        "bags was trained, validated or tested on, so this is a clean held-out estimate, on "
        "more bags than the test part holds when N is larger (a lower ECE floor). Raw "
        "probabilities through `hmil.predict` (checked to give the test part's again), then "
        "the checkpoint's own temperatures and call (target 0.9), mean ± sample std over "
        "seeds.",
        "",
        "| cohort | bags | fine ECE before | fine ECE after | floor | Brier before | Brier "
        "after | NLL before | NLL after | fine bacc | call@0.9 coverage | answered fine |",
        "|---" * 12 + "|",
    ]
    for cohort, st in drawn.items():
        cells = [_m(st, "draw.n", 0)]
        cells += [_ms(st, f"draw.fine.{m}_{stage}") for m in ("ece",)
                  for stage in ("before", "after")]  # fmt: skip
        cells.append(_m(st, "draw.fine.ece_floor"))
        cells += [_ms(st, f"draw.fine.{m}_{stage}") for m in ("brier", "nll")
                  for stage in ("before", "after")]  # fmt: skip
        cells += [_ms(st, "draw.fine.bacc_after"), _ms(st, "draw.call0.9.coverage"),
                  _ms(st, "draw.call0.9.share_fine")]  # fmt: skip
        lines.append(f"| {cohort} | " + " | ".join(cells) + " |")
    lines.append("")
    for cohort, st in summary.items():
        if cohort in drawn:
            continue
        if cohort in GENERATED_SPECS:
            why = ("its seeds were finished by an earlier invocation without a draw (its "
                   f"{_m(st, 'n_test', 0)}-bag test part has an ECE floor of "
                   f"{_m(st, 'fine.ece_floor')})")  # fmt: skip
        else:
            why = "assembled from a fixed pool of real images, it has no generator to draw from"
        lines.append(f"- {cohort}: no further draw; {why}.")
    return [*lines, ""]


def _call_notes(summary: dict[str, Any]) -> list[str]:
    """Facts worth a sentence: coverage below its target by more than two binomial standard
    errors, and a share without a call that grows as the target falls."""
    notes = []
    for cohort, st in summary.items():
        for c in COVERAGES:
            cov, se = st.get(f"call{c}.coverage"), st.get(f"call{c}.coverage_se")
            if cov and se and cov["mean"] < c - 2 * se["mean"]:
                notes.append(f"- {cohort}: coverage {cov['mean']:.3f} at target {c}, more "
                             f"than two binomial standard errors ({se['mean']:.3f}) below "
                             "it.")  # fmt: skip
        none = [st.get(f"call{c}.share_none", {}).get("mean") for c in COVERAGES]
        empty = st.get(f"call{COVERAGES[0]}.none_empty", {}).get("mean")
        if None not in none and none[0] > none[-1] and empty is not None:
            notes.append(
                f"- {cohort}: more bags get no call at target {COVERAGES[0]} ({none[0]:.3f}) "
                f"than at {COVERAGES[-1]} ({none[-1]:.3f}); at {COVERAGES[0]} {empty:.3f} of "
                "the bags have an empty set (a confident bag whose top label still scores above "
                "the small threshold)."
            )
    return [*notes, ""] if notes else []


def _moved_lines(summary: dict[str, Any]) -> list[str]:
    """Every seed and level whose balanced accuracy changed with the temperature."""
    moved = [(cohort, m) for cohort, st in summary.items() for m in st["goal"]["moved"]]
    if not moved:
        return ["Balanced accuracy is identical before and after at every level in every seed.",
                ""]  # fmt: skip
    lines = [
        "Balanced accuracy changed with the temperature only here (the fine and coarse heads' "
        "argmax cannot move; coarse = Mᵀ p̂_f sums the calibrated fine probabilities per parent "
        "and T_f can reorder those sums; the product names its labels from the raw "
        "probabilities, so none of its labels moves and the goal does not count the "
        "reordering; it shows what labels taken from the calibrated sums would do):",
        "",
    ]
    lines += [f"- {cohort} seed {m['seed']}, {m.get('part', 'test')} part, "
              f"{LEVEL_NAMES[m['level']]}: {m['before']:.4f} → {m['after']:.4f} "
              f"(T_f {m['T_fine']:.2f})" for cohort, m in moved]  # fmt: skip
    return [*lines, ""]


def _sizes_text(by_size: dict[str, float]) -> str:
    if not by_size:
        return ""
    parts = ", ".join(f"{v:.3f} at {int(k):,}" for k, v in by_size.items())
    return f" With the same confidences the floor would be {parts} test bags."


def _span(values: np.ndarray) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _load_line(load: dict[str, Any]) -> str:
    """The header's words on the machine's load (shared machine: train times vary with it)."""
    note = f" {load['note']}" if load.get("note") else ""
    if load.get("trained"):
        return (f"Load average (1 min) at the start of the last invocation {load['start']:.2f}, "
                f"at its end {load['end']:.2f}.{note}")  # fmt: skip
    return f"Load: the last invocation only reported runs finished earlier.{note}"


def _why_lines(summary: dict[str, Any]) -> list[str]:
    """Where the goal fails, per cohort: for the ECE, the validation part the temperature was
    fitted on and the ECE floor of the bags it was judged on (the further draw where there is
    one); for balanced accuracy, which levels lost it in how many seeds."""
    lines = []
    for cohort, st in summary.items():
        g = st["goal"]
        if g["holds"]:
            continue
        bags = f"the {g['draw_n']:,}-bag draw" if g["on_draw"] else ""
        where = f" on {bags}" if bags else ""
        if g["excess"] > 0:
            lines.append(_ece_why(cohort, st, bags, where))
        else:
            lines.append(f"- {cohort}: fine ECE after {g['fine_ece_after']:.3f}{where} meets "
                         f"the goal ({g['seeds_meeting']} of {g['n_seeds']} seeds).")  # fmt: skip
        losses = product_losses(g["moved"])
        if losses:
            levels = ", ".join(sorted({LEVEL_NAMES[m["level"]] for m in losses}))
            parts = " and ".join(sorted({m["part"] for m in losses}))
            lines[-1] += (
                f" Balanced accuracy fell with the temperature in {len(losses)} of "
                f"{g['n_seeds']} seeds ({levels}, {parts} part; listed above)."
            )
    if lines:
        lines = ["### Where it does not hold", "", *lines, ""]
    return lines


def _ece_why(cohort: str, st: dict[str, Any], bags: str, where: str) -> str:
    """One cohort's ECE above the goal: the validation fit and the floor of the judged bags."""
    g = st["goal"]
    per_class = np.array(st["val_per_class"])
    pre = "draw." if bags else ""
    floor = st.get(f"{pre}fine.ece_floor", {}).get("mean", float("nan"))
    return (
        f"- {cohort}: fine ECE after {g['fine_ece_after']:.3f}{where}, {g['excess']:.3f} "
        f"above the goal; {g['seeds_meeting']} of {g['n_seeds']} seeds meet it. T_f was "
        f"fitted on {_m(st, 'n_val', 0)} validation bags, {_span(per_class)} per "
        f"fine class (validation ECE after fitting {_m(st, 'val.fine.ece_after')}, "
        f"before {_m(st, 'val.fine.ece_before')}); the ECE floor of "
        f"{bags or 'the test part'} is {floor:.3f}, so "
        f"{max(0.0, g['fine_ece_after'] - floor):.3f} of the ECE is above what a perfectly "
        f"calibrated model would show on this many bags."
        + ("" if bags else _sizes_text(st.get("fine_ece_floor_by_test_size", {})))
    )


def figure(summary: dict[str, Any], path: Path) -> None:
    """One PNG: per cohort the mean risk–coverage curve of each level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cohorts = list(summary)
    fig, axes = plt.subplots(1, max(len(cohorts), 1), figsize=(3.6 * max(len(cohorts), 1), 3.4),
                             squeeze=False)  # fmt: skip
    for ax, cohort in zip(axes[0], cohorts, strict=False):
        for lv in LEVELS:
            curve = summary[cohort]["risk_coverage"][lv]
            if curve["risk"]:
                ax.plot(curve["coverage"], curve["risk"], marker=".", label=LEVEL_NAMES[lv])
        ax.set_title(f"{cohort} (n={len(summary[cohort]['seeds'])})")
        ax.set_xlabel("share answered (most confident first)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("error rate among answered")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "Risk–coverage, calibrated HMIL defaults (SYNTHETIC cohorts, test part)", fontsize=9
    )
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ---- main ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny cohort, 2 epochs")
    p.add_argument("--cohorts", default=",".join(COHORT_ORDER),
                   help=f"comma-separated: {', '.join(COHORTS)}")  # fmt: skip
    p.add_argument("--seeds", default="5", help="number of seeds, or a list such as 0,3,4")
    p.add_argument("--epochs", type=int, default=20, help="epochs (gen-large: 8)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--work", default="/tmp/hmil-bench-calibration", help="scratch directory")
    p.add_argument("--out", default=str(RESULTS), help="where <tag>.{json,md} go")
    p.add_argument("--tag", default="calibration", help="result file stem")
    p.add_argument("--resume", action="store_true", help="keep finished seeds in WORK/runs.jsonl")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--extra-test", type=int, default=0, metavar="N",
                   help="generated cohorts: also measure each seed's model on a further draw "
                        "of about N bags from the same generator (0: off)")  # fmt: skip
    p.add_argument("--load-note", default="", help="what else ran on the machine (for the header)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cohorts = option_names(args.cohorts)
    unknown = [c for c in cohorts if c not in COHORTS]
    if unknown:
        print(f"error: --cohorts: unknown {unknown}", file=sys.stderr)
        return 2
    if args.extra_test < 0:
        print(f"error: --extra-test: {args.extra_test} is below 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    seeds = seed_list(args.seeds)
    epochs = {c: COHORT_EPOCHS.get(c, args.epochs) for c in cohorts}
    if args.quick:
        cohorts, seeds = cohorts[:1], [0]
        epochs = dict.fromkeys(cohorts, 2)
    fracs = (0.15, 0.3)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "runs.jsonl"
    runs = resumed_runs(log, args.resume)
    runs = [r for r in runs if r["cohort"] in cohorts and r["seed"] in seeds]
    done = {(r["cohort"], r["seed"]) for r in runs}
    settings = {"cohorts": cohorts, "seeds": seeds, "epochs": epochs, "lr": args.lr,
                "val_frac": fracs[0], "test_frac": fracs[1], "quick": args.quick,
                "extra_test": args.extra_test}  # fmt: skip
    command = shlex.join(["python", "-m", "benchmarks.calibration",
                          *(argv if argv is not None else sys.argv[1:])])  # fmt: skip
    t_start = time.monotonic()
    load = {"start": os.getloadavg()[0], "trained": False, "note": args.load_note}
    for cohort in cohorts:
        for seed in seeds:
            if (cohort, seed) in done:
                continue
            prepared = prepare_cohort(cohort, seed, work, fracs, quick=args.quick)
            record = {"cohort": cohort, "seed": seed,
                      **run_one(prepared, seed, epochs[cohort], args.lr, work,
                                args.extra_test)}  # fmt: skip
            shutil.rmtree(prepared.root, ignore_errors=True)
            load["trained"] = True
            runs.append(record)
            append_jsonl(log, clean(record))
            print(f"[{time.monotonic() - t_start:6.0f}s] {cohort} seed {seed}: fine ECE "
                  f"{record['fine.ece_before']:.3f} → {record['fine.ece_after']:.3f} "
                  f"(T_f {record['T_fine']:.2f}), call@0.9 coverage "
                  f"{record['call0.9.coverage']:.3f} ({record['train_time_s']:.0f}s)",
                  flush=True)  # fmt: skip
            write_results(runs, settings, command, load, work, out, args.tag)
    write_results(runs, settings, command, load, work, out, args.tag)
    print(f"wrote {out / (args.tag + '.md')}")
    return 0


def write_results(runs: list[dict[str, Any]], settings: dict[str, Any], command: str,
                  load: dict[str, Any], work: Path, out: Path, tag: str) -> None:  # fmt: skip
    """Write ``<tag>.json``, ``<tag>.md`` and ``<tag>_risk.png`` (after every seed, so a run
    cut short leaves its finished cohorts reported)."""
    summary = summarise(runs)
    for cohort, stats in summary.items():
        stats["fine_ece_floor_by_test_size"] = floor_by_size(work, cohort, stats["seeds"])
    result = {
        "machine": machine(),
        "load": {**load, "end": os.getloadavg()[0]},
        "synthetic": True,
        "settings": settings,
        "command": command,
        "ece_goal": ECE_GOAL,
        "summary": summary,
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{tag}.json", clean(result))
    write_text_atomic(out / f"{tag}.md", markdown(result))
    if summary:
        figure(summary, out / f"{tag}_risk.png")


if __name__ == "__main__":
    sys.exit(main())
