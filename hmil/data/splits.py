"""Train/val/test splits per fold, stratified by fine label and grouped by patient.

On disk each fold is CLAM's ``splits_<k>.csv``: columns ``train``, ``val``, ``test`` of slide
ids (unequal lengths, blanks pad), with CLAM's unnamed leading index column.

Two designs, both deterministic by seed:

* default (``test_frac=None``): k-fold cross-validation — the k test sets partition the cohort
  (``StratifiedGroupKFold``); a validation set of ``val_frac`` is drawn from the rest.
* ``test_frac`` given: CLAM/HMIL-style Monte-Carlo splits — every fold draws its own test and
  validation sets of the given fractions (the paper's ten 80/10/10 splits).

Groups (``case_id``) never straddle two parts of a fold.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from hmil.data.tables import read_text_table
from hmil.errors import ConfigError, SplitError
from hmil.io import write_text_atomic


@dataclass(frozen=True)
class Split:
    """Slide ids of one fold (``source``: the file it was read from, for messages)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    source: str = field(default="split", compare=False)

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def check_cases(split: Split, cases: Mapping[str, str]) -> None:
    """Refuse a split that puts different slides of one case (patient) in two parts.

    A case in train and test leaks the patient's tissue into the evaluation. ``cases`` maps
    slide id → case id (the label table's ``case_id``, which defaults to the slide id). A slide
    listed in two parts is refused by :func:`read_split`; a split built in code may list the
    same slides in two parts on purpose (evaluation passes the test slides as "train" too), so
    only *different* slides of a case in different parts are refused here.

    Raises:
        SplitError: naming ``split.source``, the case and its slides in each part.
    """
    by_case: dict[str, dict[str, set[str]]] = {}
    for part, ids in split.parts().items():
        for slide_id in ids:
            case = cases.get(slide_id, slide_id)
            by_case.setdefault(case, {}).setdefault(part, set()).add(slide_id)
    for case, parts in by_case.items():
        (first, first_ids), *others = parts.items()
        for part, part_ids in others:
            if part_ids != first_ids:
                raise SplitError(
                    split.source,
                    f"case '{case}' has slides in both {first} ({_some(first_ids)}) and {part} "
                    f"({_some(part_ids)}); all slides of a case belong to one part",
                )


def _some(ids: set[str], n: int = 3) -> str:
    shown = sorted(ids)
    return ", ".join(shown[:n]) + (", ..." if len(shown) > n else "")


def make_splits(
    labels: pd.DataFrame,
    k: int,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float | None = None,
) -> list[Split]:
    """Make ``k`` folds from a label table (see :func:`hmil.data.labels.read_labels`).

    Args:
        labels: needs columns ``slide_id``, ``case_id``, ``fine_idx``.
        k: number of folds (≥ 2 for cross-validation, ≥ 1 with ``test_frac``).
        seed: makes the splits reproducible.
        val_frac: fraction of the cohort in each validation set (0 for none).
        test_frac: None for k-fold cross-validation, else the test fraction of every fold.
    """
    if k < 1 or (test_frac is None and k < 2):
        raise ConfigError("k", f"need k ≥ 2 folds for cross-validation (got {k})")
    if not 0 <= val_frac < 1:
        raise ConfigError("val_frac", f"must lie in [0, 1), got {val_frac}")
    if test_frac is not None and not 0 < test_frac < 1:
        raise ConfigError("test_frac", f"must lie in (0, 1), got {test_frac}")
    n_groups = labels["case_id"].nunique()
    if n_groups < 3:
        raise SplitError("labels", f"need at least 3 cases to split, found {n_groups}")
    ids = labels["slide_id"].to_numpy()
    y = labels["fine_idx"].to_numpy()
    groups = labels["case_id"].to_numpy()
    folds: list[Split] = []
    if test_frac is None:
        largest = int(np.bincount(y).max())
        if k > n_groups or k > largest:  # the labels cannot carry k folds
            raise SplitError(
                "k", f"{k} folds need at least {k} cases and a class with ≥ {k} slides "
                f"(found {n_groups} cases, largest class {largest})",
            )  # fmt: skip
        outer = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # rare classes: fewer members than k
            test_parts = [test for _, test in outer.split(ids, y, groups)]
    else:
        test_parts = [
            _draw(np.arange(len(ids)), y, groups, test_frac, seed + 1000 * f) for f in range(k)
        ]
    for fold, test_idx in enumerate(test_parts):
        rest = np.setdiff1d(np.arange(len(ids)), test_idx)
        rest_frac = min(val_frac * len(ids) / max(len(rest), 1), 1.0)  # of the cohort
        val_idx = (
            rest[_draw(np.arange(len(rest)), y[rest], groups[rest], rest_frac, seed + 7 + fold)]
            if val_frac > 0
            else np.array([], dtype=int)
        )
        train_idx = np.setdiff1d(rest, val_idx)
        folds.append(
            Split(
                train=tuple(ids[np.sort(train_idx)]),
                val=tuple(ids[np.sort(val_idx)]),
                test=tuple(ids[np.sort(test_idx)]),
            )
        )
    return folds


def _draw(
    index: np.ndarray, y: np.ndarray, groups: np.ndarray, frac: float, seed: int
) -> np.ndarray:
    """Indices (into ``index``) of a stratified, group-respecting subset of about ``frac``.

    Greedy: visit the groups in a seeded random order and take a group when doing so brings
    the per-class counts closer to ``frac`` × the class totals. Unlike
    ``StratifiedGroupKFold`` this works for any fraction and for classes with only a few
    slides (it never fails; a class of 3 slides at 10 % simply gets none). A positive
    fraction of a cohort with more than one group always gets at least one group: a tiny
    cohort asked for validation slides must not end up with none (training would then have
    nothing to select an epoch on).
    """
    rng = np.random.default_rng(seed)
    classes, y_idx = np.unique(y, return_inverse=True)
    target = frac * np.bincount(y_idx, minlength=classes.size)
    unique_groups = np.unique(groups)
    counts = np.zeros(classes.size)
    chosen: list[np.ndarray] = []
    order = rng.permutation(unique_groups)
    for group in order:
        members = np.flatnonzero(groups == group)
        add = np.bincount(y_idx[members], minlength=classes.size)
        before = np.abs(counts - target).sum()
        after = np.abs(counts + add - target).sum()
        # ties (a 2-slide case against a 1-slide class quota) are taken while under the total
        if after < before or (after == before and (counts + add).sum() <= target.sum()):
            counts += add
            chosen.append(members)
    if not chosen and frac > 0 and unique_groups.size > 1:
        chosen.append(np.flatnonzero(groups == order[0]))
    if not chosen:
        return index[:0]
    picked: np.ndarray = index[np.sort(np.concatenate(chosen))]
    return picked


def write_splits(splits: list[Split], out_dir: str | Path) -> list[Path]:
    """Write ``splits_<k>.csv`` per fold (CLAM layout) atomically; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, split in enumerate(splits):
        columns = {name: pd.Series(list(ids), dtype=object) for name, ids in split.parts().items()}
        frame = pd.DataFrame(columns)
        path = out / f"splits_{k}.csv"
        write_text_atomic(path, frame.to_csv(index=True))
        paths.append(path)
    return paths


def read_split(
    path: str | Path, known_ids: set[str] | None = None, cases: Mapping[str, str] | None = None
) -> Split:
    """Read one ``splits_<k>.csv``; with ``known_ids``, every id must have a label; with
    ``cases`` (slide id → case id), a case must not straddle two parts (:func:`check_cases`).

    Raises:
        SplitError: naming the file for a missing file or column, a slide listed twice (in one
            part or in two), a case in two parts, or a slide that is not in ``known_ids``.
    """
    p = Path(path)
    frame = read_text_table(p, SplitError, "split file")
    missing = [c for c in ("train", "val", "test") if c not in frame.columns]
    if missing:
        raise SplitError(p, f"missing column(s) {', '.join(missing)}")
    parts = {c: tuple(s.strip() for s in frame[c] if s.strip()) for c in ("train", "val", "test")}
    seen: dict[str, str] = {}
    for part, ids in parts.items():
        for slide_id in ids:
            if slide_id in seen and seen[slide_id] != part:
                raise SplitError(p, f"slide '{slide_id}' is in both {seen[slide_id]} and {part}")
            if slide_id in seen:
                raise SplitError(p, f"slide '{slide_id}' is listed twice in {part}")
            seen[slide_id] = part
            if known_ids is not None and slide_id not in known_ids:
                raise SplitError(p, f"{part} slide '{slide_id}' has no row in the label table")
    if not parts["train"]:
        raise SplitError(p, "the train column is empty")
    split = Split(**parts, source=str(p))
    if cases is not None:
        check_cases(split, cases)
    return split


def list_split_files(splits_dir: str | Path) -> dict[int, Path]:
    """``{fold: path}`` for every ``splits_<k>.csv`` in a directory, sorted by fold."""
    d = Path(splits_dir)
    if not d.is_dir():
        raise SplitError(d, "splits directory not found")
    found: dict[int, Path] = {}
    for path in d.glob("splits_*.csv"):
        suffix = path.stem.removeprefix("splits_")
        if suffix.isdigit():
            found[int(suffix)] = path
    if not found:
        raise SplitError(d, "no splits_<k>.csv files found")
    return dict(sorted(found.items()))
