"""Class-imbalance handling for training (``train.class_balance``).

Pathology cohorts are rarely balanced (BRACS: PB 147 slides … FEA 41). Two standard remedies:

* ``sampler``: each epoch draws as many bags as the training part holds, with replacement, each
  with probability ∝ 1 / (count of its fine class) — CLAM's default weighted sampler — so every
  class is seen about equally often;
* ``loss``: every bag keeps its place in the epoch, and its fine (and coarse) cross-entropy is
  multiplied by n / (K · n_class), so each class contributes the same total weight.

The default, ``auto``, picks ``sampler`` when the training part is imbalanced (its largest fine
class holds at least :data:`AUTO_IMBALANCE_RATIO` times the bags of its smallest, or a class has
none) and ``none`` otherwise. That is what was measured best (``benchmarks/results/accuracy.md``):
on the BRACS-count cohort the sampler beat no balancing and loss weights; on the balanced cohorts
``auto`` trains exactly as ``none`` (the same code path, bit for bit), so their rows hold.
"""

from __future__ import annotations

import numpy as np
import torch

#: ``auto`` balances when the largest fine class has at least this many times the training bags
#: of the smallest (BRACS: 147 / 41 = 3.6; a stratified split of a balanced cohort: ~1.0–1.1,
#: but a tiny one such as the 48-slide demo's folds reaches 5 / 3 = 1.7 by chance)
AUTO_IMBALANCE_RATIO = 2.0


def resolve_class_balance(mode: str, labels: np.ndarray, n_classes: int) -> tuple[str, str]:
    """The balancing a fold trains with and why: ``mode`` itself, or for ``auto`` ``sampler``
    or ``none`` from the training part's fine class counts.

    Args:
        mode: ``train.class_balance`` (none, sampler, loss or auto).
        labels: ``(n,)`` fine class indices of the training bags.
        n_classes: number of fine classes K.

    Returns:
        ``(resolved mode, one line for the log)``.
    """
    if mode != "auto":
        return mode, f"class balance: {mode}"
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes)
    if counts.size == 0:
        return "none", "class balance: auto → none (no training bags)"
    largest, smallest = int(counts.max()), int(counts.min())
    imbalanced = smallest == 0 or largest >= AUTO_IMBALANCE_RATIO * smallest
    resolved = "sampler" if imbalanced else "none"
    return resolved, (
        f"class balance: auto → {resolved} (training bags per fine class {largest} … {smallest}; "
        f"the sampler is used from a ratio of {AUTO_IMBALANCE_RATIO})"
    )


def inverse_frequency_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K,)`` weights n / (K · n_k) for classes present in ``labels`` (0 for absent classes).

    With these weights the mean weight over the ``labels`` is exactly 1, so the loss keeps its
    scale and the learning rate means the same as without balancing.
    """
    labels = np.asarray(labels, dtype=int)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = labels.size / (present.sum() * counts[present])
    return weights


def epoch_order(
    fine_labels: np.ndarray, n_fine: int, mode: str, generator: torch.Generator
) -> list[int]:
    """Indices of the training bags in the order epoch e visits them.

    ``mode`` ``sampler``: ``len(fine_labels)`` draws with replacement, probability ∝ 1 / class
    count; otherwise a permutation of all bags. ``generator`` is seeded by (seed, epoch), so the
    order is the same in a resumed run.
    """
    n = len(fine_labels)
    if mode == "sampler" and n:
        per_bag = inverse_frequency_weights(fine_labels, n_fine)[np.asarray(fine_labels)]
        probs = torch.from_numpy(per_bag / per_bag.sum())
        return torch.multinomial(probs, n, replacement=True, generator=generator).tolist()
    return torch.randperm(n, generator=generator).tolist()
