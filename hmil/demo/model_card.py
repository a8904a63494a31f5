"""The shipped demo checkpoint: copy one fold's checkpoint and write its model card.

``hmil demo --update-checkpoint`` calls :func:`update_demo_checkpoint`. Which fold is copied is
decided on *validation* (the run's selection metric at each fold's best epoch), never on test
metrics, so the numbers on the card are honest held-out results; the card reports the copied
fold's test metrics and the mean ± std over all folds, read from the run's files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from hmil.conformal import min_calibration_size
from hmil.data.provenance import parse_encoder
from hmil.demo.classes import DEMO_CLASSES
from hmil.demo.pipeline import DemoResult
from hmil.errors import ConfigError, RunError
from hmil.io import atomic_path, read_jsonl, write_text_atomic
from hmil.train.attention_metrics import RowLocalisation, bag_localisation, mean_localisation
from hmil.train.runs import fold_paths, list_folds, load_run_config
from hmil.version import __version__

#: metrics shown on the card, per level
CARD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


@dataclass(frozen=True)
class FoldChoice:
    """The fold whose checkpoint ships, and why.

    Attributes:
        fold: fold index.
        metric: validation metric used (the run's ``train.select_metric``).
        value: its value at the fold's best epoch.
        epoch: that epoch.
    """

    fold: int
    metric: str
    value: float
    epoch: int


def default_checkpoint_dir() -> Path:
    """``checkpoints/demo`` of the source checkout ``hmil`` was imported from.

    Raises:
        HMILError: when ``hmil`` is not imported from a source checkout (no pyproject.toml
            beside the package), where the repository's folder cannot be found.
    """
    repo = Path(__file__).resolve().parents[2]  # hmil/demo/model_card.py → the checkout
    if not (repo / "pyproject.toml").is_file():
        raise ConfigError(
            "checkpoint_dir", "hmil is not running from a source checkout; name the folder"
        )
    return repo / "checkpoints" / "demo"


def choose_fold(run_dir: Path) -> FoldChoice:
    """The finished fold whose checkpoint had the best validation score.

    The score is the trainer's own (``select.value`` in ``metrics.jsonl`` at the epoch it
    saved as best: the run's ``train.select_metric``, with its fallback when AUC is undefined);
    ties go to the lower validation loss, then the lower fold index.
    """
    best: tuple[float, float, int] | None = None
    choice: FoldChoice | None = None
    for fold in list_folds(run_dir):
        paths = fold_paths(run_dir, fold)
        if not (paths.checkpoint.is_file() and paths.test_metrics.is_file()):
            continue
        saved = [r for r in read_jsonl(paths.metrics) if (r.get("select") or {}).get("best")]
        if not saved:
            continue
        record = saved[-1]
        value = _finite((record.get("select") or {}).get("value"), -math.inf)
        loss = _finite((record.get("val") or {}).get("loss"), math.inf)
        key = (value, -loss, -fold)
        if best is None or key > best:
            best = key
            choice = FoldChoice(
                fold=fold,
                metric=str(record["select"].get("metric", "")),
                value=value,
                epoch=int(record.get("epoch", -1)),
            )
    if choice is None:
        raise RunError(run_dir, "no finished fold with a checkpoint and validation metrics")
    return choice


@dataclass(frozen=True)
class AttentionCheck:
    """The demo's promise, measured on the held-out test slides of every fold (each slide
    scored by the checkpoint of the fold that held it out).

    Attributes:
        n_slides: test slides over all folds.
        fine_balanced_accuracy: of the pooled test predictions.
        localisation: mean true-row / other-rows AUROC against the planted lesion and mean row
            correlation of the fine attention (:mod:`hmil.train.attention_metrics`).
    """

    n_slides: int
    fine_balanced_accuracy: float
    localisation: RowLocalisation


def attention_check(run_dir: Path, cohort_root: Path) -> AttentionCheck:
    """Fine balanced accuracy and fine-attention localisation over all folds' test slides."""
    from sklearn.metrics import balanced_accuracy_score

    from hmil.checkpoint import load_checkpoint_file
    from hmil.data.bags import find_bag, load_bag
    from hmil.demo.cohort import lesion_key_mask

    config = load_run_config(run_dir)
    bags: list[RowLocalisation] = []
    y_true: list[str] = []
    y_pred: list[str] = []
    for fold in list_folds(run_dir):
        paths = fold_paths(run_dir, fold)
        if not paths.finished():
            continue
        model, info = load_checkpoint_file(paths.checkpoint)
        predictions = pd.read_csv(paths.predictions)
        y_true += predictions["true_fine"].astype(str).tolist()
        y_pred += predictions["pred_fine"].astype(str).tolist()
        for slide_id, truth in zip(predictions["slide_id"], predictions["true_fine"], strict=True):
            path = find_bag(config.data.features, str(slide_id))
            if path is None:
                continue
            bag = load_bag(path)
            with torch.no_grad():
                rows = model(bag.features).fine_attention.numpy()
            mask = (
                lesion_key_mask(cohort_root, str(slide_id), bag.coords, bag.attrs)
                if bag.coords is not None
                else None
            )
            bags.append(bag_localisation(rows, mask, info.hierarchy.fine.index(str(truth))))
    bacc = float(balanced_accuracy_score(y_true, y_pred)) if y_true else float("nan")
    return AttentionCheck(len(y_true), bacc, mean_localisation(bags))


def update_demo_checkpoint(result: DemoResult, dest: Path, command: str) -> Path:
    """Copy the chosen fold's checkpoint to ``dest/checkpoint.pt``, write ``dest/MODEL_CARD.md``.

    Returns:
        The checkpoint path.
    """
    choice = choose_fold(result.run_dir)
    source = fold_paths(result.run_dir, choice.fold).checkpoint
    target = Path(dest) / "checkpoint.pt"
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    card = model_card(result, choice, command, checkpoint_bytes=target.stat().st_size)
    write_text_atomic(Path(dest) / "MODEL_CARD.md", card)
    return target


def model_card(result: DemoResult, choice: FoldChoice, command: str, checkpoint_bytes: int) -> str:
    """The Markdown model card: data, config, measured metrics, provenance."""
    run = result.run_dir
    config = load_run_config(run)
    fold_test = json.loads(fold_paths(run, choice.fold).test_metrics.read_text(encoding="utf-8"))
    cohort = result.cohort
    n_params = _parameter_count(fold_paths(run, choice.fold).checkpoint)
    counts: dict[str, int] = {}
    for slide in cohort.slides:
        counts[slide.label] = counts.get(slide.label, 0) + 1
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# HMIL demo checkpoint — trained on SYNTHETIC slides",
        "",
        "> **Synthetic data only.** This model was trained by `hmil demo` on procedurally",
        "> generated slides. It has never seen a real patient slide and must not be used on",
        "> one; it exists so the viewer has a model to show on the demo cohort.",
        "",
        "## Data",
        f"- {len(cohort.slides)} synthetic slides in "
        f"{len({s.case_id for s in cohort.slides})} synthetic cases "
        f"(generator seed {cohort.config.seed}), level 0 at {cohort.config.mpp:g} µm/px "
        f"({cohort.config.magnification:g}x), {cohort.config.min_size}–{cohort.config.max_size}"
        " px a side.",
        f"- {result.n_patches} tissue patches of {_patch_size(result)} px at 20x, encoded by "
        f"the weight-free `{config.data.encoder}` descriptor.",
        "- Each slide except `normal` has one planted lesion covering "
        f"{cohort.config.lesion_fraction[0]:.0%}–{cohort.config.lesion_fraction[1]:.0%} of the "
        "tissue; its appearance defines the label:",
        "",
        "| coarse | fine | slides | lesion appearance |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c.coarse} | {c.name} | {counts.get(c.name, 0)} | {c.summary} |" for c in DEMO_CLASSES
    ]
    lines += [
        "",
        "## Model and training",
        f"- HMIL (class-wise gated attention, coarse and fine heads), input dimension "
        f"{_in_dim(fold_paths(run, choice.fold).checkpoint)}, {n_params:,} parameters, "
        f"checkpoint {checkpoint_bytes / 1e6:.1f} MB.",
        encoder_line(fold_paths(run, choice.fold).checkpoint),
        f"- {result.summary.get('n_folds', 0)}-fold cross-validation (case-grouped, stratified), "
        f"{config.train.epochs} epochs per fold, Adam lr {config.train.lr:g}, "
        f"{_bags(config.train.bags_per_step)} per optimiser step, seed {config.train.seed}; "
        f"{_averaging(config.train.ema_decay, config.train.ema_epochs)}.",
        f"- Shipped: fold {choice.fold}, chosen on validation `{choice.metric}` = "
        f"{_fmt(choice.value)} (best epoch {choice.epoch}); test metrics were not used to choose.",
        "",
        "Full config (`run/config.yaml`, data paths omitted):",
        "",
        "```yaml",
        yaml.safe_dump(
            {k: v for k, v in config.to_dict().items() if k in ("model", "loss", "train")},
            sort_keys=False,
        ).rstrip(),
        "```",
        "",
        "## Measured metrics (held-out test slides, synthetic)",
        "",
        f"Mean ± std over {result.summary.get('n_folds', 0)} folds (`run/summary.json`), and the "
        f"shipped fold {choice.fold} (`run/fold_{choice.fold}/test_metrics.json`):",
        "",
        "| level | metric | mean ± std over folds | shipped fold |",
        "|---|---|---|---|",
    ]
    for level in ("coarse", "fine"):
        stats = result.summary.get(level, {})
        for metric in CARD_METRICS:
            summary = stats.get(metric)
            mean = f"{summary['mean']:.3f} ± {summary['std']:.3f}" if summary else "n/a"
            single = _fmt(fold_test.get(level, {}).get(metric))
            lines.append(f"| {level} | {metric} | {mean} | {single} |")
    check = attention_check(run, cohort.root)
    loc = check.localisation
    lines += [
        "",
        "## Can its class-wise attention be trusted? (held-out test slides of all folds)",
        "",
        f"Every one of the {check.n_slides} slides scored by the fold that held it out; "
        "attention = the fine class-wise rows, key instances = patches whose centre lies in the "
        "planted lesion (`hmil.train.attention_metrics`):",
        "",
        "| measure | value |",
        "|---|---|",
        f"| fine balanced accuracy (pooled test predictions) | "
        f"{_fmt(check.fine_balanced_accuracy)} |",
        f"| true class's row: AUROC against the lesion | {_fmt(loc.true_row_auroc)} |",
        f"| other classes' rows: mean AUROC against the lesion | {_fmt(loc.other_rows_auroc)} |",
        f"| mean pairwise correlation of the fine rows | {_fmt(loc.row_correlation)} |",
        "",
        f"These numbers come from {len(cohort.slides)} synthetic slides and describe this demo",
        "only, not how HMIL performs on real data.",
        "",
        *calibration_section(*read_calibration(run), shipped=choice.fold),
        "## Provenance",
        f"- Created: {today}",
        f"- Command: `{command}`",
        f"- hmil {__version__}, torch {torch.__version__}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPU core(s).",
        "- Wall time per step (s): "
        + ", ".join(f"{step} {secs:g}" for step, secs in result.seconds.items())
        + f" (machine load average over the last 5 min when done: {_load():.1f}).",
        "",
    ]
    return "\n".join(lines)


#: the levels of a ``calibration`` section and how the card names them
CALIBRATION_LEVELS = (
    ("fine", "fine"),
    ("coarse", "coarse (fine probabilities summed)"),
    ("coarse_head", "coarse classifier"),
)


def read_calibration(run_dir: Path) -> tuple[dict[int, dict[str, Any]], dict[int, int]]:
    """Each finished fold's ``calibration`` section of ``test_metrics.json`` and the number of
    validation slides its checkpoint's call was fitted on (``calibration.conformal.n``)."""
    sections: dict[int, dict[str, Any]] = {}
    validation_n: dict[int, int] = {}
    for fold in list_folds(run_dir):
        paths = fold_paths(run_dir, fold)
        if not paths.finished():
            continue
        report = json.loads(paths.test_metrics.read_text(encoding="utf-8"))
        if isinstance(report.get("calibration"), dict):
            sections[fold] = report["calibration"]
        conformal = (_checkpoint(paths.checkpoint).get("calibration") or {}).get("conformal")
        if isinstance(conformal, dict) and isinstance(conformal.get("n"), int):
            validation_n[fold] = int(conformal["n"])
    return sections, validation_n


def calibration_section(
    sections: dict[int, dict[str, Any]], validation_n: dict[int, int], shipped: int
) -> list[str]:
    """The card's lines on calibrated confidence: ECE before → after per level (mean over the
    folds), the temperatures, and the call's empirical coverage and fine share on the test
    slides pooled over the folds (each fold weighted by its slides). No lines without
    sections (a run trained before calibration)."""
    if not sections:
        return []
    folds = sorted(sections)
    lines = [
        "## Calibrated confidence (held-out test slides of all folds)",
        "",
        "Temperatures fitted per fold on its validation slides (`hmil.calibration`); ECE with "
        f"15 equal-mass bins, mean over the {len(folds)} folds' test slides:",
        "",
        "| level | ECE raw | ECE calibrated |",
        "|---|---|---|",
    ]
    for level, name in CALIBRATION_LEVELS:
        before = [_ece(sections[f], level, "before") for f in folds]
        after = [_ece(sections[f], level, "after") for f in folds]
        if all(math.isfinite(v) for v in before + after):
            lines.append(f"| {name} | {_fmt(_mean(before))} | {_fmt(_mean(after))} |")
    temps = [sections[f].get("temperature") or {} for f in folds]
    shipped_t = sections.get(shipped, {}).get("temperature") or {}
    lines += [
        "",
        f"- Temperatures: fine T = {_fmt(shipped_t.get('fine'), 2)}, coarse classifier T = "
        f"{_fmt(shipped_t.get('coarse'), 2)} in the shipped fold {shipped} (per fold: fine "
        + ", ".join(_fmt(t.get("fine"), 2) for t in temps)
        + "; coarse classifier "
        + ", ".join(_fmt(t.get("coarse"), 2) for t in temps)
        + ").",
    ]
    calls = {f: sections[f]["call"] for f in folds if isinstance(sections[f].get("call"), dict)}
    n = sum(int(c.get("n") or 0) for c in calls.values())
    if n:
        target = float(next(iter(calls.values()))["coverage_target"])

        def pooled(key: str) -> float:
            return sum(float(c.get(key) or 0.0) * int(c.get("n") or 0) for c in calls.values()) / n

        lines.append(
            f"- Call at {100 * target:.0f} % target coverage (`hmil.conformal`): right on "
            f"{_fmt(pooled('coverage'), 2)} of the {n} test slides; fine answer on "
            f"{_percent(pooled('share_fine'))}, coarse only on "
            f"{_percent(pooled('share_coarse'))}, no call on {_percent(pooled('share_none'))}."
        )
        needed = min_calibration_size(target)
        fitted = sorted({validation_n[f] for f in calls if f in validation_n})
        if fitted and max(fitted) < needed:
            lines.append(
                f"- Each fold fitted its call on {' or '.join(map(str, fitted))} validation "
                f"slides; a {100 * target:.0f} % guarantee needs at least {needed}, so the "
                "call withholds every answer here (a larger cohort, or a lower target such "
                "as `hmil predict --coverage`, gives calls)."
            )
    return [*lines, ""]


def _ece(section: dict[str, Any], level: str, when: str) -> float:
    value = ((section.get(level) or {}).get(when) or {}).get("ece")
    return float(value) if isinstance(value, int | float) else float("nan")


def _percent(share: float) -> str:
    """``71 %`` of a share in [0, 1]."""
    return f"{100 * share:.0f} %"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _finite(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else default


def _load() -> float:
    """5-minute load average (NaN where the OS does not report one)."""
    try:
        return os.getloadavg()[1]
    except (AttributeError, OSError):
        return float("nan")


def _fmt(value: Any, digits: int = 3) -> str:
    ok = isinstance(value, int | float) and math.isfinite(value)
    return f"{value:.{digits}f}" if ok else "n/a"


def _checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def encoder_line(checkpoint: Path) -> str:
    """The card's line on the features' encoder, as the checkpoint records it (training takes
    it from the bags; see docs/formats.md)."""
    ref = parse_encoder(str(_checkpoint(checkpoint).get("encoder") or ""))
    if not ref.known:
        return "- Encoder: not recorded in the checkpoint (no warning on another encoder's bags)."
    weights = f", weights SHA-256 `{ref.weights_sha256}`" if ref.weights_sha256 else ""
    return (
        f"- Encoder: `{ref.name}`{weights}, recorded in the checkpoint: `hmil predict`, "
        "`hmil heatmap` and the viewer warn on bags of another encoder."
    )


def _parameter_count(path: Path) -> int:
    return sum(int(t.numel()) for t in _checkpoint(path)["state_dict"].values())


def _in_dim(path: Path) -> int:
    return int(_checkpoint(path)["in_dim"])


def _patch_size(result: DemoResult) -> int:
    import h5py

    for path in sorted((result.tiles_dir / "patches").glob("*.h5")):
        with h5py.File(path, "r") as handle:
            return int(handle["coords"].attrs.get("patch_size", 256))
    return 256


def _bags(n: int) -> str:
    """``1 bag`` / ``64 bags``."""
    return f"{n} bag" if n == 1 else f"{n} bags"


def _averaging(ema_decay: float, ema_epochs: float) -> str:
    """What the kept weights are: the live ones, or their moving average (``train.ema_*``)."""
    if ema_decay > 0:
        return f"the kept weights are an exponential moving average (decay {ema_decay:g})"
    if ema_epochs > 0:
        unit = "epoch" if ema_epochs == 1 else "epochs"
        return f"the kept weights are an exponential moving average over {ema_epochs:g} {unit}"
    return "the kept weights are the live ones (no average)"
