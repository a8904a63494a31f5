"""The slides of one fold: label + bag file per slide, validated once, cached in memory.

Bad items (a labelled slide without a bag, an unreadable, empty or non-finite bag, a bag whose
dimension differs from the rest) are reported through ``on_skip`` and left out, or raised at
once with ``strict=True``. Each bag is read and checked once up front, so a bad file found on
epoch 37 of a night's run cannot happen.

The bags' encoder (recorded on them, or named by TRIDENT's ``features_<enc>/`` folder) is kept
in :attr:`FoldCohort.encoder`; :func:`checkpoint_encoder` turns it into the checkpoint's
``encoder``, so predicting another encoder's bags later warns (docs/formats.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pandas as pd
import torch

from hmil.data.bags import find_bag, load_bag
from hmil.data.provenance import EncoderRef, encoder_of, parse_encoder, single_encoder
from hmil.data.splits import Split, check_cases
from hmil.errors import BagError, ConfigError
from hmil.progress import Progress

SkipHandler = Callable[[str, str], None]


@dataclass(frozen=True)
class CohortItem:
    """One labelled slide with a bag file."""

    slide_id: str
    path: Path
    fine: int
    coarse: int
    case_id: str = ""


@dataclass
class FoldCohort:
    """Items per split part, the feature dimension, and what was skipped (slide id, problem)."""

    parts: dict[str, list[CohortItem]]
    in_dim: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    encoder: EncoderRef = field(default_factory=EncoderRef)


def checkpoint_encoder(configured: str, found: EncoderRef) -> str:
    """The ``encoder`` a checkpoint records: ``name`` or ``name@<weights sha256>``.

    Args:
        configured: ``data.encoder`` of the config (``""``: not given).
        found: the cohort's encoder (:attr:`FoldCohort.encoder`).

    Returns:
        The bags' encoder when the config names none; the configured one otherwise, with the
        bags' weights hash added when they record one.

    Raises:
        ConfigError: the config names another encoder than the bags record.
    """
    stated = parse_encoder(configured)
    if stated.differs_from(found):
        raise ConfigError(
            "data.encoder",
            f"'{configured}' is not the encoder the bags record ({found}); fix the setting "
            "or leave it empty to take the bags' own",
        )
    if not stated.known:
        return found.label()
    sha = stated.weights_sha256 or (found.weights_sha256 if found.name == stated.name else "")
    return EncoderRef(stated.name, sha).label()


class BagStore:
    """Loads bags, keeping up to ``budget_bytes`` of them in RAM (first come, first kept)."""

    def __init__(self, budget_bytes: int, expected_dim: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.expected_dim = expected_dim
        self._cache: dict[Path, torch.Tensor] = {}
        self._used = 0

    def offer(self, path: Path, features: torch.Tensor) -> None:
        """Keep ``features`` ``(N, D)`` if the budget allows."""
        size = features.numel() * features.element_size()
        if path not in self._cache and self._used + size <= self.budget_bytes:
            self._cache[path] = features
            self._used += size

    def get(self, path: Path) -> torch.Tensor:
        """``(N, D)`` float32 features of the bag at ``path``."""
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        return load_bag(path, expected_dim=self.expected_dim).features

    @property
    def used_bytes(self) -> int:
        return self._used


def gather_fold(
    labels: pd.DataFrame,
    split: Split,
    features_dir: str | Path,
    store_budget_bytes: int,
    strict: bool = False,
    on_skip: SkipHandler | None = None,
    expected_dim: int | None = None,
    verbose: bool = True,
) -> tuple[FoldCohort, BagStore]:
    """Resolve, load and validate every bag of a fold once.

    Args:
        labels: table from :func:`hmil.data.labels.read_labels`.
        split: the fold's slide ids.
        features_dir: directory of ``<slide_id>.h5|.pt``.
        store_budget_bytes: RAM for keeping bags between epochs.
        strict: raise the first problem instead of skipping the item.
        on_skip: called with ``(slide_id or file, problem)`` for each skipped item.
        expected_dim: D the bags must have (e.g. when resuming); default: the first bag's D.

    Raises:
        SplitError: slides of one case (``case_id``) in two parts of the split.
        HMILError: the first bad item when ``strict``; or when no training bag is usable.
    """
    check_cases(split, dict(zip(labels["slide_id"], labels["case_id"], strict=True)))
    by_id = labels.set_index("slide_id")
    store = BagStore(store_budget_bytes, expected_dim)
    skipped: list[tuple[str, str]] = []
    parts: dict[str, list[CohortItem]] = {}
    encoders: list[tuple[Path, EncoderRef]] = []  # from the loaded bags: no second read
    dim = expected_dim

    def skip(where: str, problem: str) -> None:
        if strict:
            raise BagError(where, problem)
        skipped.append((where, problem))
        if on_skip is not None:
            on_skip(where, problem)

    total = sum(len(ids) for ids in split.parts().values())
    progress = Progress(total, "checking bags", enabled=verbose and total > 50)
    for part, ids in split.parts().items():
        items: list[CohortItem] = []
        for slide_id in ids:
            progress.update(1)
            path = find_bag(features_dir, slide_id)
            if path is None:
                skip(slide_id, f"no bag {slide_id}.h5 or {slide_id}.pt in {features_dir}")
                continue
            try:
                bag = load_bag(path)
            except BagError as exc:
                skip(exc.where, exc.problem)
                continue
            if dim is not None and bag.dim != dim:
                skip(str(path), f"feature dimension {bag.dim} differs from the cohort's {dim}")
                continue
            dim = bag.dim if dim is None else dim
            store.offer(path, bag.features)
            encoders.append((path, encoder_of(bag.attrs)))
            row = cast(pd.Series, by_id.loc[slide_id])  # one row: read_labels refuses duplicates
            items.append(
                CohortItem(
                    slide_id=slide_id,
                    path=path,
                    fine=int(row["fine_idx"]),
                    coarse=int(row["coarse_idx"]),
                    case_id=str(row["case_id"]),
                )
            )
        parts[part] = items
    progress.close()
    encoder = single_encoder(encoders)
    if not parts.get("train") or dim is None:
        raise BagError(features_dir, "no usable training bags for this fold")
    store.expected_dim = dim
    return FoldCohort(parts=parts, in_dim=dim, skipped=skipped, encoder=encoder), store
