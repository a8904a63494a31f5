"""Class-imbalance handling for training (``train.class_balance``).

Pathology cohorts are rarely balanced (BRACS: PB 147 slides … FEA 41). Two standard remedies:

* ``sampler``: each epoch draws as many bags as the training part holds, with replacement, each
  with probability ∝ 1 / (count of its fine class) — CLAM's default weighted sampler — so every
  class is seen about equally often;
* ``loss``: every bag keeps its place in the epoch, and its fine (and coarse) cross-entropy is
  multiplied by n / (K · n_class), so each class contributes the same total weight.

Which one (if any) is the default was measured on the imbalanced benchmark cohort
(``benchmarks/results/accuracy.md``).
"""

from __future__ import annotations

import numpy as np
import torch


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
