"""Bag classifiers that turn K class-wise bag embeddings into K logits.

HMIL (paper and released code) applies one *shared* ``Linear(F→1)`` to every row of the
class-wise embedding matrix (``model.head: shared``). The shared head is symmetric under a
relabelling of what attention means: a bag of class j is classified equally well by row j
attending to instances with a *high* w·h (the lesion, "positive evidence") or by every other
row attending to instances with a *low* w·h while row j attends to background. Runs with the
shared head learned maps of both kinds (true-row attention AUROC below 0.5 on some seeds:
``benchmarks/results/accuracy.md``); what decides which one a run learns is not established
(an earlier reading here, the random sign of w at initialisation, did not hold up).

The ``per_class`` head (the default; one ``Linear(F→1)`` per class, as CLAM-MB's bag
classifiers) has no such symmetry: class j's logit depends only on row j, so row j is trained
to attend to what raises class j's own logit. It adds (K−1)·(F+1) parameters (1,542 fine +
2,050 coarse for the BRACS tree at the reference sizes). Measured against the shared head in
``benchmarks/results/accuracy.md`` (README "The method").
"""

from __future__ import annotations

import torch
from torch import nn


class SharedHead(nn.Linear):
    """One scalar classifier shared by every class row (the paper's head).

    An ``nn.Linear(F, 1)``, so checkpoints written before heads were configurable load
    unchanged and the reference initialisation (Kaiming-normal, zero bias) applies to it.
    """

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__(in_dim, 1)

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        """``(K, F)`` class-wise bag embeddings → ``(K,)`` logits."""
        return super().forward(bags.to(self.weight.dtype)).squeeze(-1)


class PerClassHead(nn.Module):
    """One scalar classifier per class row: logit_k = w_k · B_k + b_k."""

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        self.bias = nn.Parameter(torch.empty(n_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal rows (fan-in F, as each row is a Linear(F→1)), zero bias; HMIL then
        re-initialises the head with its ``model.init`` scheme (:mod:`hmil.model.init`)."""
        nn.init.kaiming_normal_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        """``(K, F)`` class-wise bag embeddings → ``(K,)`` logits."""
        bags = bags.to(self.weight.dtype)
        return (bags * self.weight).sum(dim=-1) + self.bias


#: ``model.head`` → implementation
HEADS: dict[str, type[nn.Module]] = {"shared": SharedHead, "per_class": PerClassHead}
