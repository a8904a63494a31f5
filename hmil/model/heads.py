"""Bag classifiers that turn K class-wise bag embeddings into K logits.

HMIL (paper and released code) applies one *shared* ``Linear(F→1)`` to every row of the
class-wise embedding matrix. That head is symmetric under a relabelling of what attention means:
a bag of class j is classified equally well by row j attending to instances with a *high* w·h
(the lesion, "positive evidence") or by every other row attending to instances with a *low* w·h
while row j attends to background ("negative evidence"). Which of the two a run learns is
settled early (we read it as the random sign of w along the lesion direction); on the SYNTHETIC
``easy`` benchmark cohort the true-class attention AUROC ranged from 0.29 (inverted: it avoids the
key instances) to 0.87 over five seeds (``benchmarks/results/attention_easy_seed1.md``,
``benchmarks/results/accuracy.md``).

The ``per_class`` head (one ``Linear(F→1)`` per class, as CLAM-MB's bag classifiers) removes
the symmetry: the gradient of class j's own weight vector points at the mean embedding of
class-j bags minus the others, so its sign comes from the data, and row j learns to attend to
what raises its own logit. It adds (K−1)·(F+1) parameters (1,542 fine + 2,050 coarse for the
BRACS tree at the reference sizes).
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
        """Kaiming-normal rows (fan-in F, as each row is a Linear(F→1)), zero bias."""
        nn.init.kaiming_normal_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        """``(K, F)`` class-wise bag embeddings → ``(K,)`` logits."""
        bags = bags.to(self.weight.dtype)
        return (bags * self.weight).sum(dim=-1) + self.bias


#: ``model.head`` → implementation
HEADS: dict[str, type[nn.Module]] = {"shared": SharedHead, "per_class": PerClassHead}
