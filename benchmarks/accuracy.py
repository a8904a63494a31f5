"""Accuracy and attention of HMIL vs flat MIL peers on hierarchical benchmark cohorts.

For every cohort (:mod:`benchmarks.cohorts`: generated vectors small/large/imbalanced, and two
cohorts of real images bundled with scikit-learn and scikit-image) and seed, one cohort is
drawn, one stratified train/val/test split is made, and every model is trained on it with the
same epochs and learning rate:

* HMIL through the real training code path (``hmil.train.api.train`` → checkpoint): the
  project's defaults, the named presets (``paper``, ``released``), candidate recipes
  (head, bags per step, learning-rate schedule, SupCon scale, class balancing) and ablations
  (each loss term off once);
* flat peers (:mod:`benchmarks.peers`): the project's flat gated baseline, CLAM-MB (class-wise
  attention), torchmil's gated ABMIL, CLAM-SB, TransMIL and DSMIL, each with one bag per
  optimiser step and the default schedule.

Reported per model, mean ± sample std over seeds, on the test part: fine and coarse (Mᵀ p_f)
balanced accuracy, macro-F1 and macro one-vs-rest AUC; attention localisation: per test bag the
ROC AUC of the true class's fine attention row against the key instances (flat single-attention
models: their one map), the same for the other rows (class-wise models), and the mean pairwise
Pearson correlation between the fine rows; an "oracle" row gives the ceiling of any
per-instance scorer.

Usage (from the repository root)::

    python -m benchmarks.accuracy --cohorts gen-small,digits --variants main --seeds 5
    python -m benchmarks.accuracy --list                     # cohorts and variants
    python -m benchmarks.accuracy --quick                    # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from benchmarks.accuracy_verdicts import PeerRow
from benchmarks.accuracy_verdicts import verdicts as cohort_verdicts
from benchmarks.cohorts import COHORTS, BenchCohort
from benchmarks.common import (
    RESULTS,
    machine,
    machine_line,
    option_names,
    resumed_runs,
    seed_list,
    write_json,
)
from benchmarks.peers import (
    BagItem,
    TrainSettings,
    predict_peer_maps,
    recipe_overrides,
    train_peer,
)
from hmil.checkpoint import load_checkpoint_file
from hmil.config import Config
from hmil.data.bags import find_bag, load_bag
from hmil.data.labels import read_labels
from hmil.data.splits import Split, make_splits, read_split, write_splits
from hmil.hierarchy import Hierarchy
from hmil.synthetic import write_cohort
from hmil.train.api import train as hmil_train
from hmil.train.attention_metrics import bag_localisation, mean_localisation
from hmil.train.attention_metrics import row_correlation as attention_row_correlation
from hmil.train.metrics import level_metrics

#: epochs per cohort (the same for every model of a cohort); others get ``--epochs``
COHORT_EPOCHS = {"gen-large": 8}


@dataclass(frozen=True)
class Variant:
    """One row of the table: an HMIL recipe (a preset and dotted overrides) or a flat peer.

    ``groups`` say which runs include the row (``--variants GROUP``: main, search, ablation,
    balance). HMIL rows start from the project's defaults (``Config()``) or a preset, so the
    ``HMIL defaults`` row is always what ``hmil train`` gives with no config.
    """

    name: str
    kind: str  # "hmil" or "peer"
    overrides: tuple[tuple[str, Any], ...] = ()
    preset: str = ""
    peer: str = ""
    groups: tuple[str, ...] = ("main",)
    recipe: str = "plain"  # a peer's training recipe (benchmarks.peers.RECIPES)


HMIL_DEFAULT = "HMIL defaults (hmil train with no config)"
HMIL_PAPER = "HMIL --preset paper"
HMIL_RELEASED = "HMIL --preset released"
# (the row names of the recorded results: benchmarks/baselines.py was hmil/model/baselines.py)
FLAT = "flat gated attention (hmil.model.baselines)"
ABMIL = "ABMIL gated (torchmil)"
CLAM_MB = "CLAM-MB (hmil.model.baselines)"

_SH = ("model.head", "shared")
#: the rows below the main ones were measured around the earlier defaults, before the EMA of
#: the weights became the default: they pin it off so that they reproduce
_NO_EMA = ("train.ema_epochs", 0.0)
HMIL_NO_EMA = "defaults without EMA (train.ema_epochs 0; the earlier defaults)"
HMIL_DROPOUT = "no-EMA defaults with dropout 0.25"
#: what a peer row trained under the HMIL defaults' recipe (:data:`benchmarks.peers.RECIPES`
#: ``hmil``) adds to its name: ``auto`` class balancing turns the sampler on only where the
#: training part's largest fine class has at least twice the bags of its smallest
HMIL_RECIPE = "hmil recipe: EMA + constant lr + sampler if imbalanced"

VARIANTS: tuple[Variant, ...] = (
    Variant(HMIL_DEFAULT, "hmil", groups=("main", "ablation", "balance")),
    Variant(HMIL_PAPER, "hmil", preset="paper"),
    Variant(HMIL_RELEASED, "hmil", preset="released"),
    Variant(HMIL_NO_EMA, "hmil", (_NO_EMA,), groups=("main", "ema")),
    # CLAM's dropout on top of the no-EMA defaults: better on three cohorts, worse on two
    Variant(HMIL_DROPOUT, "hmil", (_NO_EMA, ("model.dropout", 0.25)), groups=("dropout",)),
    Variant(FLAT, "peer", peer="flat_gated", groups=("extra",)),
    Variant(ABMIL, "peer", peer="abmil"),
    Variant(CLAM_MB, "peer", peer="clam_mb"),
    Variant("CLAM-SB (torchmil)", "peer", peer="clam_sb"),
    Variant("TransMIL (torchmil)", "peer", peer="transmil"),
    Variant("DSMIL (torchmil K-way)", "peer", peer="dsmil"),
    # ---- the peers under the HMIL defaults' recipe (constant lr, weight average over half an
    # epoch, the class-balanced sampler where the training part is imbalanced, selection)
    # instead of their own; the names say the recipe so a reader never takes them for the above
    Variant(f"flat gated attention ({HMIL_RECIPE})", "peer", peer="flat_gated",
            groups=("recipe",), recipe="hmil"),
    Variant(f"ABMIL gated (torchmil; {HMIL_RECIPE})", "peer", peer="abmil", groups=("recipe",),
            recipe="hmil"),
    Variant(f"CLAM-MB ({HMIL_RECIPE})", "peer", peer="clam_mb", groups=("recipe",),
            recipe="hmil"),
    Variant(f"CLAM-SB (torchmil; {HMIL_RECIPE})", "peer", peer="clam_sb", groups=("recipe",),
            recipe="hmil"),
    Variant(f"TransMIL (torchmil; {HMIL_RECIPE})", "peer", peer="transmil", groups=("recipe",),
            recipe="hmil"),
    Variant(f"DSMIL (torchmil K-way; {HMIL_RECIPE})", "peer", peer="dsmil", groups=("recipe",),
            recipe="hmil"),
    # ---- recipe search around the no-EMA defaults (per-class head, Xavier init, 1 bag per
    # step, constant lr, SupCon on the true row): one choice changed per row; the paper preset
    # (shared head, Kaiming init, 64 per step, plateau, SupCon on all rows) is a main row
    Variant("search: shared head", "hmil", (_NO_EMA, _SH), groups=("search",)),
    Variant("search: Kaiming init (paper)", "hmil", (_NO_EMA, ("model.init", "kaiming")),
            groups=("search",)),
    Variant("search: PyTorch default init", "hmil", (_NO_EMA, ("model.init", "pytorch")),
            groups=("search",)),
    Variant("search: 8 bags/step", "hmil", (_NO_EMA, ("train.bags_per_step", 8)),
            groups=("search",)),
    Variant("search: 64 bags/step with lr×8", "hmil",
            (_NO_EMA, ("train.bags_per_step", 64), ("train.lr", "x8")), groups=("search",)),
    # measured on all five cohorts × 5 seeds: beat CLAM-MB on gen-large at both levels, but
    # 0.002–0.085 lower fine balanced accuracy than the no-EMA defaults on the other four
    Variant("search: cosine schedule", "hmil", (_NO_EMA, ("train.lr_schedule", "cosine")),
            groups=("search", "schedule")),
    Variant("search: plateau schedule", "hmil", (_NO_EMA, ("train.lr_schedule", "plateau")),
            groups=("search",)),
    # an EMA with a fixed decay (horizon ~500 / ~1,000 optimiser steps, whatever the cohort);
    # the default is the horizon in epochs (train.ema_epochs 0.5)
    Variant("EMA of the weights (decay 0.998)", "hmil", (_NO_EMA, ("train.ema_decay", 0.998)),
            groups=("ema",)),
    Variant("EMA of the weights (decay 0.999)", "hmil", (_NO_EMA, ("train.ema_decay", 0.999)),
            groups=("ema",)),
    # cosine only over the last quarter / half of the epochs, the lr held before it
    Variant("schedule: cosine over the last 25%", "hmil",
            (_NO_EMA, ("train.lr_schedule", "cosine_tail"), ("train.lr_decay_fraction", 0.25)),
            groups=("schedule", "tail")),
    Variant("schedule: cosine over the last 50%", "hmil",
            (_NO_EMA, ("train.lr_schedule", "cosine_tail"), ("train.lr_decay_fraction", 0.5)),
            groups=("schedule", "tail")),
    Variant("search: SupCon on all rows (paper)", "hmil",
            (_NO_EMA, ("loss.supcon_views", "all")), groups=("search",)),
    Variant("search: SupCon divided by bags per step (released)", "hmil",
            (_NO_EMA, ("loss.supcon_normalisation", "step")), groups=("search",)),
    # ---- class balancing (measured on the imbalanced cohort; the default 'auto' is the sampler
    # on an imbalanced training part and 'none' on a balanced one)
    Variant("balance: none", "hmil", (_NO_EMA, ("train.class_balance", "none")),
            groups=("balance",)),
    Variant("balance: sampler", "hmil", (_NO_EMA, ("train.class_balance", "sampler")),
            groups=("balance",)),
    Variant("balance: loss weights", "hmil", (_NO_EMA, ("train.class_balance", "loss")),
            groups=("balance",)),
    # ---- ablations of the defaults: each loss term off once
    Variant("defaults − ce_coarse", "hmil", (("loss.ce_coarse.enabled", False),),
            groups=("ablation",)),
    Variant("defaults − bag_align", "hmil", (("loss.bag_align.enabled", False),),
            groups=("ablation",)),
    Variant("defaults − inst_align", "hmil", (("loss.inst_align.enabled", False),),
            groups=("ablation",)),
    Variant("defaults − supcon", "hmil", (("loss.supcon.enabled", False),),
            groups=("ablation",)),
    # ---- the same on the no-EMA defaults, and the other β schedules
    Variant("no-EMA defaults − ce_coarse", "hmil",
            (_NO_EMA, ("loss.ce_coarse.enabled", False)), groups=("ablation-no-ema",)),
    Variant("no-EMA defaults − bag_align", "hmil",
            (_NO_EMA, ("loss.bag_align.enabled", False)), groups=("ablation-no-ema",)),
    Variant("no-EMA defaults − inst_align", "hmil",
            (_NO_EMA, ("loss.inst_align.enabled", False)), groups=("ablation-no-ema",)),
    Variant("no-EMA defaults − supcon", "hmil", (_NO_EMA, ("loss.supcon.enabled", False)),
            groups=("ablation-no-ema",)),
    Variant("no-EMA defaults with β quadratic", "hmil",
            (_NO_EMA, ("loss.schedule", "quadratic")), groups=("ablation-no-ema",)),
    Variant("no-EMA defaults with β constant 0.5", "hmil",
            (_NO_EMA, ("loss.schedule", "constant")), groups=("ablation-no-ema",)),
    Variant("no-EMA defaults with SupCon weight 0.1", "hmil",
            (_NO_EMA, ("loss.supcon.weight", 0.1)), groups=("ablation-no-ema",)),
    # ---- regularisation (gen-large, where the no-EMA defaults were level with CLAM-MB)
    Variant("regularisation: dropout 0.25", "hmil", (_NO_EMA, ("model.dropout", 0.25)),
            groups=("regularisation",)),
    Variant("regularisation: β constant 0.5", "hmil", (_NO_EMA, ("loss.schedule", "constant")),
            groups=("regularisation",)),
    Variant("regularisation: weight decay 1e-4", "hmil", (_NO_EMA, ("train.weight_decay", 1e-4)),
            groups=("regularisation",)),
)  # fmt: skip


METRICS = (
    "fine_balanced_accuracy",
    "fine_macro_f1",
    "fine_macro_auc",
    "coarse_balanced_accuracy",
    "coarse_macro_f1",
    "coarse_macro_auc",
    "attention_auroc",
    "other_rows_auroc",
    "row_correlation",
)
#: diagnostics kept in the JSON (not in the main table): attention mass on key instances, and
#: for HMIL the true coarse class's coarse-attention AUROC and the coarse head's own metrics
#: (``coarse_head_*``; the table's coarse columns are Mᵀ p_f, the product's default decoding)
EXTRA_METRICS = (
    "attention_key_mass",
    "coarse_attention_auroc",
    "best_epoch",
    "coarse_head_balanced_accuracy",
    "coarse_head_macro_f1",
    "coarse_head_macro_auc",
    *(f"{rule}_{level}_{m}" for rule, level in (("mean", "coarse"), ("joint", "fine"),
                                                ("joint", "coarse"))
      for m in ("balanced_accuracy", "macro_f1", "macro_auc")),
)  # fmt: skip


@dataclass
class Prepared:
    """One cohort + split on disk and in memory."""

    cohort: str
    seed: int
    hierarchy: Hierarchy
    root: Path
    split: Split
    items: dict[str, list[BagItem]] = field(default_factory=dict)
    description: str = ""

    @property
    def in_dim(self) -> int:
        return int(self.items["train"][0].features.shape[1])


# ---- cohorts ------------------------------------------------------------------------------
def prepare_cohort(name: str, seed: int, work: Path, fracs: tuple, quick: bool = False) -> Prepared:
    """Draw, write and split one benchmark cohort (cohort seed = split seed = ``seed``)."""
    root = work / name / f"seed{seed}"
    if root.exists():
        shutil.rmtree(root)
    cohort: BenchCohort = COHORTS[name](seed)
    bags = cohort.bags
    if quick:  # smoke test: a few bags per class
        per_class = {
            j: [b for b in bags if b.fine == j][:4] for j in range(cohort.hierarchy.n_fine)
        }
        bags = [b for group in per_class.values() for b in group]
    write_cohort(bags, cohort.hierarchy, root)
    masks = {b.slide_id: b.key_mask for b in bags}
    prepared = _split_and_load(name, seed, cohort.hierarchy, root, masks, fracs)
    prepared.description = cohort.description + (" (REAL images)" if cohort.real_images else "")
    return prepared


def prepare_demo(
    demo_dir: Path, seed: int, work: Path, fracs: tuple
) -> Prepared:  # pragma: no cover - needs the demo cohort
    """Bags extracted from the demo slides; key mask = patch centre inside the lesion mask."""
    from hmil.demo.cohort import lesion_key_mask, load_cohort

    cohort = load_cohort(demo_dir)
    hierarchy = Hierarchy.from_file(cohort.hierarchy_yaml)
    features = _demo_features_dir(demo_dir)
    root = work / "demo" / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    masks: dict[str, np.ndarray] = {}
    for path in sorted(features.glob("*.h5")):
        bag = load_bag(path)
        assert bag.coords is not None
        masks[path.stem] = lesion_key_mask(demo_dir, path.stem, bag.coords, bag.attrs)
    snapshot = root / "features"  # a copy: the demo folder may be rebuilt meanwhile
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(features, snapshot)
    shutil.copy(cohort.labels_csv, root / "labels.csv")
    shutil.copy(cohort.hierarchy_yaml, root / "hierarchy.yaml")
    prepared = _split_and_load("demo", seed, hierarchy, root, masks, fracs)
    prepared.description = (f"bags of the SYNTHETIC demo slides in {demo_dir} (hed-texture); key "
                            "instances = patches whose centre lies in the lesion mask")  # fmt: skip
    return prepared


def _demo_features_dir(demo_dir: Path) -> Path:  # pragma: no cover - needs the demo cohort
    for candidate in (demo_dir / "features", demo_dir / "work" / "features"):
        if candidate.is_dir() and any(candidate.glob("*.h5")):
            return candidate
    raise SystemExit(f"error: {demo_dir}: no extracted bags (features/*.h5) found")


def _split_and_load(
    name: str,
    seed: int,
    hierarchy: Hierarchy,
    root: Path,
    masks: dict[str, np.ndarray],
    fracs: tuple,
) -> Prepared:
    labels = read_labels(root / "labels.csv", hierarchy)
    val_frac, test_frac = fracs
    splits = make_splits(labels, k=1, seed=seed, val_frac=val_frac, test_frac=test_frac)
    write_splits(splits, root / "splits")
    split = read_split(root / "splits" / "splits_0.csv", set(labels["slide_id"]))
    fine = dict(zip(labels["slide_id"], labels["fine_idx"], strict=True))
    prepared = Prepared(cohort=name, seed=seed, hierarchy=hierarchy, root=root, split=split)
    for part, ids in split.parts().items():
        items = []
        for slide_id in ids:
            path = find_bag(root / "features", slide_id)
            assert path is not None, slide_id
            features = load_bag(path).features
            items.append(BagItem(slide_id, features, int(fine[slide_id]), masks.get(slide_id)))
        prepared.items[part] = items
    return prepared


# ---- evaluation ---------------------------------------------------------------------------
def localisation_auroc(attention: list[np.ndarray], items: list[BagItem]) -> float:
    """Mean over bags of ROC AUC(attention, key mask); bags without both kinds are skipped."""
    values = []
    for att, item in zip(attention, items, strict=True):
        mask = item.key_mask
        if mask is None or mask.all() or not mask.any():
            continue
        values.append(roc_auc_score(mask, att))
    return float(np.mean(values)) if values else float("nan")


def key_mass(attention: list[np.ndarray], items: list[BagItem]) -> float:
    """Mean over bags of the attention mass on key instances (chance: the key fraction)."""
    values = []
    for att, item in zip(attention, items, strict=True):
        if item.key_mask is not None and item.key_mask.any():
            total = float(np.sum(att))
            values.append(float(np.sum(att[item.key_mask])) / total if total > 0 else 0.0)
    return float(np.mean(values)) if values else float("nan")


def oracle_auroc(prepared: Prepared) -> float:
    """Localisation ceiling: per class, direction = mean(key) − mean(non-key) over all bags
    (ground truth); score each test instance by its projection on its bag's class direction."""
    k = prepared.hierarchy.n_fine
    all_items = [it for part in prepared.items.values() for it in part]
    if any(it.key_mask is None for it in all_items):
        return float("nan")
    directions = []
    for j in range(k):
        bags = [it for it in all_items if it.fine == j]
        key = torch.cat([it.features[torch.from_numpy(it.key_mask)] for it in bags])
        rest = torch.cat([it.features[torch.from_numpy(~it.key_mask)] for it in bags])
        directions.append(key.mean(0) - rest.mean(0))
    test = prepared.items["test"]
    scores = [(it.features @ directions[it.fine]).numpy() for it in test]
    return localisation_auroc(scores, test)


def other_rows_auroc(maps: list[np.ndarray | None], items: list[BagItem]) -> float:
    """Mean over bags of the other classes' rows' AUROC (:mod:`hmil.train.attention_metrics`)."""
    rows = [bag_localisation(m, it.key_mask, it.fine) for m, it in zip(maps, items, strict=True)
            if m is not None]  # fmt: skip
    return mean_localisation(rows).other_rows_auroc


def row_correlation(maps: list[np.ndarray | None]) -> float:
    """Mean over bags of the mean pairwise Pearson correlation between the fine rows (1: every
    class looks at the same instances; the maps then say nothing class-specific)."""
    values = [attention_row_correlation(m) for m in maps if m is not None]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def score(
    prepared: Prepared,
    fine_probs: np.ndarray,
    attention: list[np.ndarray],
    maps: list[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Fine and coarse (Mᵀ p_f) metrics plus the attention metrics of the test part.

    ``attention``: per bag the map scored against the key mask (true row, or the single map);
    ``maps``: per bag all ``(K, N)`` class-wise rows (None for single-attention models).
    """
    h = prepared.hierarchy
    test = prepared.items["test"]
    y = np.array([it.fine for it in test])
    fine = level_metrics(y, fine_probs, h.fine)
    parent = np.asarray(h.parent)
    coarse = level_metrics(parent[y], fine_probs @ h.mapping, h.coarse)
    out = {f"fine_{m}": fine[m] for m in ("balanced_accuracy", "macro_f1", "macro_auc")}
    out.update({f"coarse_{m}": coarse[m] for m in ("balanced_accuracy", "macro_f1", "macro_auc")})
    out["attention_auroc"] = localisation_auroc(attention, test)
    out["attention_key_mass"] = key_mass(attention, test)
    maps = maps or [None] * len(test)
    out["other_rows_auroc"] = other_rows_auroc(maps, test)
    out["row_correlation"] = row_correlation(maps)
    return out


# ---- training -----------------------------------------------------------------------------
def hmil_config(prepared: Prepared, variant: Variant, settings: TrainSettings) -> Config:
    """The run config of a row: defaults (or the preset), the cohort's data, the shared
    budget (epochs, lr, seed), a peer's recipe (:func:`benchmarks.peers.recipe_overrides`),
    then the row's own overrides (``"x8"`` multiplies the budget)."""
    root = prepared.root
    base = Config.from_preset(variant.preset) if variant.preset else Config()
    overrides: dict[str, Any] = {
        "data.labels": str(root / "labels.csv"),
        "data.features": str(root / "features"),
        "data.splits": str(root / "splits"),
        "data.hierarchy": str(root / "hierarchy.yaml"),
        "data.folds": "0",
        "train.epochs": settings.epochs,
        "train.lr": settings.lr,
        "train.seed": settings.seed,
        "train.device": "cpu",
    }
    if variant.kind == "peer":
        overrides.update(recipe_overrides(variant.recipe, settings))
    for key, value in variant.overrides:
        if isinstance(value, str) and value.startswith("x") and key == "train.lr":
            value = settings.lr * float(value[1:])
        overrides[key] = value
    return base.override(overrides)


def two_head_metrics(
    h: Hierarchy, y_fine: list[int], fine_probs: np.ndarray, head_probs: np.ndarray
) -> dict[str, float]:
    """Level metrics of the decodings that use the coarse head (diagnostics, not the table's
    columns, which are the fine head's and Mᵀ p_f's).

    ``coarse_head``: the coarse head alone; ``mean``: coarse = (Mᵀ p_f + p_c) / 2 (fine
    unchanged); ``joint``: the two heads as a product of experts, q_f ∝ p_f · p_c[parent],
    coarse = Mᵀ q_f. ``fine_probs`` ``(S, Kf)``, ``head_probs`` ``(S, Kc)``.
    """
    y = np.asarray(y_fine, dtype=int)
    parent = np.asarray(h.parent)
    joint = fine_probs * head_probs[:, parent]
    joint = joint / joint.sum(axis=1, keepdims=True)
    levels = {
        "coarse_head": (parent[y], head_probs, h.coarse),
        "mean_coarse": (parent[y], (fine_probs @ h.mapping + head_probs) / 2, h.coarse),
        "joint_fine": (y, joint, h.fine),
        "joint_coarse": (parent[y], joint @ h.mapping, h.coarse),
    }
    out: dict[str, float] = {}
    for prefix, (truth, probs, names) in levels.items():
        m = level_metrics(truth, probs, names)
        out.update({f"{prefix}_{k}": m[k] for k in ("balanced_accuracy", "macro_f1", "macro_auc")})
    return out


def run_hmil(
    prepared: Prepared, variant: Variant, settings: TrainSettings, run_dir: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Train HMIL via ``hmil.train.api.train``; evaluate its best checkpoint on the test bags."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    h = prepared.hierarchy
    config = hmil_config(prepared, variant, settings)
    result = hmil_train(config, run_dir, verbose=False)
    model, _ = load_checkpoint_file(run_dir / "fold_0" / "checkpoint.pt")
    model.eval()
    test = prepared.items["test"]
    probs, head_probs, attention, maps, coarse_attention = [], [], [], [], []
    with torch.no_grad():
        for item in test:
            out = model(item.features)
            probs.append(torch.softmax(out.fine_logits, -1).double().numpy())
            head_probs.append(torch.softmax(out.coarse_logits, -1).double().numpy())
            rows = out.fine_attention.numpy()
            maps.append(rows)
            attention.append(rows[item.fine])
            coarse_attention.append(out.coarse_attention[h.parent[item.fine]].numpy())
    fine_probs, coarse_head_probs = np.stack(probs), np.stack(head_probs)
    y_fine = [it.fine for it in test]
    metrics = score(prepared, fine_probs, attention, maps)
    metrics["coarse_attention_auroc"] = localisation_auroc(coarse_attention, test)
    metrics.update(two_head_metrics(h, y_fine, fine_probs, coarse_head_probs))
    np.savez(run_dir.parent / f"{run_dir.name}-probs.npz", y_fine=y_fine, fine=fine_probs,
             coarse_head=coarse_head_probs)  # fmt: skip
    reported = result.folds[0].test_metrics["fine"]["balanced_accuracy"]
    if not math.isclose(reported, metrics["fine_balanced_accuracy"], abs_tol=1e-9):
        raise RuntimeError(
            f"fine balanced accuracy {metrics['fine_balanced_accuracy']} differs from the run's "
            f"test_metrics.json {reported}"
        )
    return metrics, {"best_epoch": result.folds[0].best_epoch}


def run_peer(
    prepared: Prepared, variant: Variant, settings: TrainSettings, run_dir: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Train a peer through ``hmil train``'s fold loop under its recipe; score the test bags."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = hmil_config(prepared, variant, settings)
    model, result = train_peer(variant.peer, config, prepared.hierarchy, prepared.split, run_dir)
    probs, attention, maps = predict_peer_maps(model, prepared.items["test"])
    return score(prepared, probs, attention, maps), {"best_epoch": result.best_epoch}


# ---- aggregation --------------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{cohort: {variant: {metric: {mean, std, n}}}}`` (std: sample std over seeds); variants
    in table order (:data:`VARIANTS`, then anything else, e.g. the oracle row, last)."""
    order = {v.name: i for i, v in enumerate(VARIANTS)}
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for run in sorted(runs, key=lambda r: order.get(r["variant"], len(order))):
        out.setdefault(run["cohort"], {}).setdefault(run["variant"], {})
    for cohort, variants in out.items():
        for variant in variants:
            rows = [r for r in runs if r["cohort"] == cohort and r["variant"] == variant]
            stats: dict[str, dict[str, float]] = {}
            for metric in (*METRICS, *EXTRA_METRICS, "train_time_s"):
                values = np.array([r[metric] for r in rows if r.get(metric) is not None], float)
                values = values[np.isfinite(values)]
                if values.size:
                    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
                    stats[metric] = {"mean": float(values.mean()), "std": std, "n": values.size}
            variants[variant] = stats
    return out


def markdown(summary: dict, info: dict, settings: dict, specs: dict, verdicts: list[str]) -> str:
    cols = ("fine bacc", "fine F1", "fine AUC", "coarse bacc", "coarse F1", "coarse AUC",
            "attn AUROC true row", "other rows", "row corr")  # fmt: skip
    lines = [
        "# Accuracy and attention: HMIL vs flat MIL peers",
        "",
        machine_line(info),
        "",
        *([f"Load while measuring: {info['load']}.", ""] if info.get("load") else []),
        "Every cohort is assembled by `benchmarks/cohorts.py` (SYNTHETIC bags and labels); "
        "`digits` and `textures` are built from real images bundled with scikit-learn and "
        "scikit-image, the `gen-*` cohorts from generated vectors. Mean ± sample std over seeds "
        "(n = seeds); each seed draws its own cohort and its own stratified train/val/test "
        "split, shared by all models of that seed.",
        _budget_line(settings),
        "Coarse metrics use Mᵀ p_f (fine probabilities summed per parent). Attention, per test "
        "bag with key instances: ROC AUC of the true class's fine attention row against the "
        "key-instance mask (single-attention models: their one map), the mean of the same over "
        "the other classes' rows, and the mean pairwise Pearson correlation of the rows; "
        "averaged over bags. Oracle: projection on the true class's ground-truth signal "
        "direction (the ceiling of any per-instance scorer).",
        "Training time: `timing.md` times every compared row of these tables in one process "
        "under one load; the runs' own wall times (`train_time_s` in the json) were taken "
        "under whatever else ran on the machine and are not compared.",
        "",
    ]
    for cohort, variants in summary.items():
        lines.append(f"## {cohort}")
        if cohort in specs:
            lines.append(f"Cohort: {specs[cohort]}")
        lines.append("")
        lines.append("| model | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for variant, stats in variants.items():
            cells = []
            for metric in METRICS:
                s = stats.get(metric)
                if s is None:
                    cells.append("–")
                else:
                    cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
            n = max((s["n"] for s in stats.values()), default=0)
            lines.append(f"| {variant} (n={n}) | " + " | ".join(cells) + " |")
        lines.append("")
    lines.extend(decoding_lines(summary))
    if verdicts:
        lines.append("## Do the defaults win?")
        lines.extend(f"- {v}" for v in verdicts)
        lines.append("")
    return "\n".join(lines)


#: decodings of one HMIL run's two heads: (name, prefix of the fine metrics, of the coarse ones)
DECODING_ROWS = (
    ("fine head, coarse = Mᵀ p_f (the table's; the product's default)", "fine_", "coarse_"),
    ("fine head, coarse head", "fine_", "coarse_head_"),
    ("fine head, coarse = (Mᵀ p_f + p_c) / 2", "fine_", "mean_coarse_"),
    ("both heads: q_f ∝ p_f · p_c[parent], coarse = Mᵀ q_f", "joint_fine_", "joint_coarse_"),
)


def decoding_lines(summary: dict) -> list[str]:
    """Markdown: the defaults' runs scored under each decoding of their two heads (runs that
    kept the per-bag probabilities, i.e. have the ``joint_*`` metrics)."""
    lines: list[str] = []
    for cohort, variants in summary.items():
        stats = variants.get(HMIL_DEFAULT, {})
        if "joint_fine_balanced_accuracy" not in stats:
            continue
        if not lines:
            lines += [
                "## Decodings of the defaults' two heads",
                "",
                "The same runs as the `HMIL defaults` rows, their test bags decoded four ways "
                "(mean ± std over seeds).",
                "",
            ]
        n = stats["joint_fine_balanced_accuracy"]["n"]
        header = (
            "| decoding | fine bacc | fine F1 | fine AUC | coarse bacc | coarse F1 | coarse AUC |"
        )
        lines += [f"### {cohort} (n={n})", "", header, "|---" * 7 + "|"]
        for name, fine, coarse in DECODING_ROWS:
            cells = []
            for prefix in (fine, coarse):
                for m in ("balanced_accuracy", "macro_f1", "macro_auc"):
                    v = stats.get(prefix + m)
                    cells.append("–" if v is None else f"{v['mean']:.4f} ± {v['std']:.4f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _budget_line(settings: dict) -> str:
    if settings and all(isinstance(v, dict) for v in settings.values()):
        per = "; ".join(f"{c}: {_budget(v)}" for c, v in settings.items())
        return f"Budget (the same for every model of a cohort): {per}."
    return f"Budget (the same for every model): {_budget(settings)}."


def _budget(s: dict) -> str:
    keys = ("epochs", "lr", "seeds", "val_frac", "test_frac")
    return ", ".join(f"{k} {s[k]}" for k in keys if k in s)


#: how the verdicts name each peer (its plain and hmil-recipe rows are one peer)
PEER_LABELS = {"flat_gated": "flat gated", "abmil": "ABMIL", "clam_mb": "CLAM-MB",
               "clam_sb": "CLAM-SB", "transmil": "TransMIL", "dsmil": "DSMIL"}  # fmt: skip
#: every peer row of the table → its peer and recipe (the verdicts pair the rows by peer)
PEER_ROWS = {v.name: PeerRow(PEER_LABELS[v.peer], v.recipe) for v in VARIANTS if v.kind == "peer"}


def verdicts(summary: dict) -> list[str]:
    """Per cohort: are the HMIL defaults ahead of every peer, each at its stronger recipe, on
    every level metric by more than the seeds' standard error (:mod:`benchmarks.accuracy_verdicts`),
    and does the true row localise better than the other rows?"""
    return cohort_verdicts(summary, HMIL_DEFAULT, PEER_ROWS)


# ---- main ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny cohort, 2 epochs")
    p.add_argument("--list", action="store_true", help="list cohorts and variants, then exit")
    p.add_argument(
        "--cohorts", default="gen-small", help=f"comma-separated: {', '.join(COHORTS)}, demo"
    )
    p.add_argument("--seeds", default="5", help="number of seeds, or a list such as 0,3,4")
    p.add_argument("--epochs", type=int, default=20, help="epochs (gen-large: 8)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument(
        "--variants",
        default="main",
        help="comma-separated variant names or groups ("
        + ", ".join(sorted({g for v in VARIANTS for g in v.groups}))
        + ")",
    )
    p.add_argument("--demo-dir", default="", help="demo cohort directory with extracted bags")
    p.add_argument("--work", default="/tmp/hmil-bench-accuracy", help="scratch directory")
    p.add_argument("--out", default=str(RESULTS), help="where <tag>.{json,md} go")
    p.add_argument("--tag", default="accuracy", help="result file stem")
    p.add_argument("--resume", action="store_true", help="reuse finished runs in WORK/runs.jsonl")
    p.add_argument(
        "--merge",
        nargs="+",
        default=[],
        metavar="JSON[=NAME]",
        help="only combine result files of earlier invocations (e.g. one per cohort) into one;"
        " =NAME renames that file's cohort",
    )
    p.add_argument(
        "--load-note",
        default="",
        help="what else ran on the machine meanwhile (goes into the header: train s depends on it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine 2 threads ran 3.5× slower)",
    )
    return p.parse_args(argv)


assert not any("," in v.name for v in VARIANTS), "--variants separates names by commas"


def select_variants(spec: str) -> list[Variant]:
    """Variants named by ``spec``: names or group names, comma-separated, in table order."""
    wanted = option_names(spec)
    names = {v.name for v in VARIANTS}
    groups = {g for v in VARIANTS for g in v.groups}
    unknown = [w for w in wanted if w not in names and w not in groups and w != "all"]
    if unknown:
        raise SystemExit(f"error: --variants: unknown {unknown} (see --list)")
    return [v for v in VARIANTS
            if "all" in wanted or v.name in wanted or set(v.groups) & set(wanted)]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.tag)
    if args.list:
        for name, build in COHORTS.items():
            print(f"cohort {name}: {(build.__doc__ or '').strip().splitlines()[0:1]}")
        for v in VARIANTS:
            print(f"variant [{','.join(v.groups)}] {v.name}")
        return 0
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cohorts = option_names(args.cohorts)
    variants = select_variants(args.variants)
    seeds = seed_list(args.seeds)
    fracs = (0.15, 0.3)
    epochs = {c: COHORT_EPOCHS.get(c, args.epochs) for c in cohorts}
    if args.quick:
        epochs = dict.fromkeys(cohorts, 2)
        seeds = [0]
        cohorts = [c for c in cohorts if c != "demo"][:1] or ["gen-small"]
    log = work / "runs.jsonl"
    runs = resumed_runs(log, args.resume)
    done = {(r["cohort"], r["seed"], r["variant"]) for r in runs}
    t_start = time.monotonic()
    spec_text: dict[str, str] = {}
    for cohort in cohorts:
        if cohort == "demo" and not args.demo_dir:
            print("skipping demo: no --demo-dir", file=sys.stderr)
            continue
        settings = TrainSettings(epochs=epochs[cohort], lr=args.lr)
        for seed in seeds:  # every variant of a seed, then the next seed
            todo = [v for v in variants if (cohort, seed, v.name) not in done]
            if not todo:
                continue
            if cohort == "demo":
                prepared = prepare_demo(Path(args.demo_dir), seed, work, fracs)
            else:
                prepared = prepare_cohort(cohort, seed, work, fracs, quick=args.quick)
            spec_text[cohort] = prepared.description
            seed_settings = dataclasses.replace(settings, seed=seed)
            oracle_key = (cohort, seed, "oracle per-instance detector")
            if oracle_key not in done:
                oracle = {"cohort": cohort, "seed": seed, "variant": oracle_key[2],
                          "attention_auroc": oracle_auroc(prepared)}  # fmt: skip
                runs.append(oracle)
                done.add(oracle_key)
                _append(log, oracle)
            for variant in todo:
                t0 = time.monotonic()
                run_dir = work / "runs" / f"{cohort}-s{seed}-{VARIANTS.index(variant)}"
                run = run_hmil if variant.kind == "hmil" else run_peer
                metrics, extra = run(prepared, variant, seed_settings, run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)
                record = {"cohort": cohort, "seed": seed, "variant": variant.name,
                          **metrics, **extra,
                          "train_time_s": round(time.monotonic() - t0, 2)}  # fmt: skip
                runs.append(record)
                done.add((cohort, seed, variant.name))
                _append(log, record)
                print(
                    f"[{time.monotonic() - t_start:7.0f}s] {cohort} seed {seed} "
                    f"{variant.name}: fine bacc {metrics['fine_balanced_accuracy']:.3f} "
                    f"attn {metrics['attention_auroc']:.3f} ({record['train_time_s']:.0f}s)",
                    flush=True,
                )
    summary = summarise(runs)
    checks = verdicts(summary)
    info = machine()
    if args.load_note:
        info["load"] = args.load_note
    result: dict[str, Any] = {
        "machine": info,
        "synthetic": True,
        "settings": {"epochs": epochs, "lr": args.lr, "seeds": seeds, "val_frac": fracs[0],
                     "test_frac": fracs[1]},
        "cohort_specs": spec_text,
        "variants": [dataclasses.asdict(v) for v in variants],
        "summary": summary,
        "verdicts": checks,
        "runs": runs,
    }  # fmt: skip
    out = Path(args.out)
    write_json(out / f"{args.tag}.json", result)
    (out / f"{args.tag}.md").write_text(
        markdown(summary, info, _per_cohort_settings(result["settings"]), spec_text, checks),
        encoding="utf-8",
    )
    for line in checks:
        print(line)
    print(f"wrote {out / (args.tag + '.md')}")
    return 0


def _per_cohort_settings(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{cohort: budget}`` from a run's settings (epochs may differ per cohort)."""
    return {c: {**settings, "epochs": e} for c, e in settings["epochs"].items()}


def _part_settings(part: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{cohort: budget}`` of one result file: a run's own (``settings``) or an earlier
    merge's (``settings_per_cohort``), so a merged file can be merged again."""
    if "settings_per_cohort" in part:
        return dict(part["settings_per_cohort"])
    return _per_cohort_settings(part["settings"])


def _span(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The first part's machine, dated from the earliest to the latest part (a merged file's
    own date is when it was merged, so its parts' machines are read instead), with the load
    notes of every part (``--load-note``)."""
    machines = [m for p in parts for m in p.get("parts_machines", [p["machine"]])]
    dates = sorted(str(m["date"])[:10] for m in machines)
    first = dict(machines[0])  # a merged file's own machine is the merging one's
    first["date"] = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    for key in ("host_cpu", "torch_threads"):  # parts measured on different machines say so
        values = sorted({str(m[key]) for m in machines if key in m})
        if len(values) > 1:
            first[key] = " / ".join(values)
    loads = sorted({m["load"] for m in machines if m.get("load")})
    first.pop("load", None)
    if loads:  # a loaded part's train s is inflated: the merged header keeps saying so
        some = "" if all(m.get("load") for m in machines) else "some parts: "
        first["load"] = some + "; ".join(loads)
    return first


def merge(paths: list[str], out: Path, tag: str) -> int:
    """Combine result files (each from one invocation, e.g. one cohort) into one table.

    ``FILE=NAME`` renames the file's cohorts to NAME (e.g. the same cohort trained with another
    budget), so runs of different budgets are never averaged together.
    """
    parts = []
    for item in paths:
        path, _, rename = item.partition("=")
        part = json.loads(Path(path).read_text(encoding="utf-8"))
        if rename:
            for run in part["runs"]:
                run["cohort"] = rename
            if len(part["summary"]) != 1:
                raise SystemExit(f"error: {path}: =NAME needs a result file with one cohort")
            part["summary"] = {rename: next(iter(part["summary"].values()))}
            specs_in = list(part.get("cohort_specs", {}).values())
            part["cohort_specs"] = {rename: specs_in[0]} if specs_in else {}
            budgets = list(_part_settings(part).values())  # the budget goes with the rows
            part["settings_per_cohort"] = {rename: budgets[0]} if budgets else {}
        parts.append(part)
    runs, seen = [], set()
    for run in (r for part in parts for r in part["runs"]):
        key = (run["cohort"], run["seed"], run["variant"])
        if key not in seen:  # e.g. the oracle row, written by every part of a cohort
            seen.add(key)
            runs.append(run)
    settings: dict[str, Any] = {}
    specs: dict[str, str] = {}
    for part in parts:
        for cohort in part["summary"]:
            merged = dict(_part_settings(part).get(cohort, {}))
            if cohort in settings:  # parts of one cohort: same budget, seeds combined
                seeds = set(settings[cohort].get("seeds", [])) | set(merged.get("seeds", []))
                merged["seeds"] = sorted(seeds)
            settings[cohort] = merged
            if cohort in part.get("cohort_specs", {}):
                specs[cohort] = part["cohort_specs"][cohort]
    summary = summarise(runs)
    checks = verdicts(summary)
    info = machine()
    info["note"] = "merged; the runs were measured on the machines named in the parts"
    machines = [m for p in parts for m in p.get("parts_machines", [p["machine"]])]
    result = {"machine": info, "parts_machines": machines, "synthetic": True,
              "settings_per_cohort": settings, "cohort_specs": specs, "summary": summary,
              "verdicts": checks, "runs": runs}  # fmt: skip
    write_json(out / f"{tag}.json", result)
    text = markdown(summary, _span(parts), settings, specs, checks)
    (out / f"{tag}.md").write_text(text, encoding="utf-8")
    for line in checks:
        print(line)
    print(f"wrote {out / (tag + '.md')}")
    return 0


def _append(path: Path, record: dict[str, Any]) -> None:
    from benchmarks.common import clean

    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(clean(record)) + "\n")


if __name__ == "__main__":
    sys.exit(main())
