"""A flat gated-attention MIL baseline (ABMIL/CLAM-SB style) with a K-way head.

The baseline the issue-3 quality bar compares HMIL against: one attention branch, no hierarchy,
no class-wise attention, one cross-entropy over the fine classes::

    x (N, D) ─ Linear(D→hidden) ─ ReLU ─▶ h (N, hidden)
    scores = w (tanh(W_a h) ⊙ sigmoid(W_b h))  (1, N)   A = softmax_N(scores)  (1, N)
    B = A h  (1, hidden)                                  logits = Linear(hidden→K)(B)  (K,)

Default sizes are CLAM's "small" configuration (1024→512, gate 256); the same
:class:`~hmil.model.attention.ClassWiseGatedAttention` module as HMIL computes the gate (with
one output), so both models share the gate implementation and its speed. Weights use PyTorch's
default Linear initialisation, as ABMIL (Ilse et al. 2018) and torchmil do; ``init="kaiming"``
gives HMIL's reference initialisation instead (Kaiming-normal weights, zero biases).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hmil.model.attention import ClassWiseGatedAttention, attention_pool


@dataclass
class FlatMILConfig:
    """Sizes of :class:`FlatGatedMIL`.

    Attributes:
        hidden_dim: width of the instance embedding h.
        attention_dim: hidden size of the gated attention.
        dropout: dropout after the embedding and on the gated hidden units (0 = off).
        init: ``default`` (PyTorch's Linear init, as ABMIL) or ``kaiming`` (as HMIL).
    """

    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.0
    init: str = "default"


@dataclass
class FlatMILOutput:
    """One forward pass of one bag.

    Attributes:
        logits: ``(K,)`` class logits.
        attention: ``(1, N)`` the single attention distribution over instances (sums to 1).
    """

    logits: torch.Tensor
    attention: torch.Tensor


class FlatGatedMIL(nn.Module):
    """Flat gated-attention MIL for any input dimension and number of classes.

    Args:
        in_dim: D, the instance feature size.
        n_classes: K, the number of (fine) classes.
        config: layer sizes and dropout.
    """

    def __init__(self, in_dim: int, n_classes: int, config: FlatMILConfig | None = None) -> None:
        super().__init__()
        cfg = config or FlatMILConfig()
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.config = cfg
        self.embed = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.ReLU(),
            nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity(),
        )
        self.attention = ClassWiseGatedAttention(cfg.hidden_dim, cfg.attention_dim, 1, cfg.dropout)
        self.head = nn.Linear(cfg.hidden_dim, n_classes)
        if cfg.init == "kaiming":
            self.kaiming_init()
        elif cfg.init != "default":
            raise ValueError(f"unknown init '{cfg.init}' (expected default or kaiming)")

    def kaiming_init(self) -> None:
        """Kaiming-normal weights and zero biases for every Linear layer (as HMIL)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> FlatMILOutput:
        """One bag.

        Args:
            x: ``(N, D)`` instance features (N ≥ 1).

        Returns:
            :class:`FlatMILOutput` with logits ``(K,)`` and attention ``(1, N)``.
        """
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected a bag of shape (N, {self.in_dim}), got {tuple(x.shape)}")
        h = self.embed(x)
        attention, bag = attention_pool(self.attention(h), h)
        logits = self.head(bag.to(self.head.weight.dtype)).squeeze(0).float()
        return FlatMILOutput(logits=logits, attention=attention)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
