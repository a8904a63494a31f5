"""Flat MIL baselines: gated attention (ABMIL/CLAM-SB style) with a K-way head, and CLAM-MB.

The flat baseline that sets HMIL's quality bar: one attention branch, no hierarchy,
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


@dataclass
class CLAMMBOutput:
    """One forward pass of :class:`CLAMMB`.

    Attributes:
        logits: ``(K,)`` one logit per class, each from its own attention branch.
        attention: ``(K, N)`` class-wise attention (rows sum to 1).
        instance_loss: CLAM's instance-level clustering loss (training with a target), or None.
    """

    logits: torch.Tensor
    attention: torch.Tensor
    instance_loss: torch.Tensor | None = None


class CLAMMB(nn.Module):
    """CLAM-MB (Lu et al., Nat. Biomed. Eng. 2021; ``models/model_clam.py`` of mahmoodlab/CLAM),
    the flat model with class-wise attention that HMIL's per-level branches resemble::

        h = ReLU(Linear(D→512)(x))                      (N, 512)
        A = softmax_N(gated_attention(h))               (K, N)   one branch per class
        B = A h                                         (K, 512)
        logit_k = Linear_k(512→1)(B_k)                  (K,)     one bag classifier per class

    Instance-level clustering (CLAM's "subtyping" mode, cross-entropy instance loss): for the
    true class k, the ``k_sample`` highest- and lowest-attended instances of branch k are
    classified in-class/out-of-class by instance classifier k; for every other class c the
    top ``k_sample`` instances of branch c are pushed to out-of-class; the K losses are
    averaged. CLAM trains with 0.7·CE + 0.3·instance loss. ``k_sample`` is capped at N // 2 for
    small bags (CLAM's ``topk`` would fail there). Weights: Xavier-normal, zero bias (CLAM's
    ``initialize_weights``).
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden_dim: int = 512,
        attention_dim: int = 256,
        k_sample: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.n_classes = n_classes
        self.k_sample = k_sample
        self.embed = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )
        self.attention = ClassWiseGatedAttention(hidden_dim, attention_dim, n_classes, dropout)
        self.bag_classifiers = nn.Parameter(torch.empty(n_classes, hidden_dim))
        self.bag_bias = nn.Parameter(torch.zeros(n_classes))
        self.instance_classifiers = nn.ModuleList(
            nn.Linear(hidden_dim, 2) for _ in range(n_classes)
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
        # each bag classifier is a Linear(512→1): Xavier-normal with fan_in 512, fan_out 1
        nn.init.normal_(self.bag_classifiers, std=(2.0 / (hidden_dim + 1)) ** 0.5)

    def forward(self, x: torch.Tensor, target: int | None = None) -> CLAMMBOutput:
        """``x`` ``(N, D)``; with ``target`` in training mode the instance loss is computed."""
        h = self.embed(x)
        attention, bags = attention_pool(self.attention(h), h)  # (K, N), (K, 512)
        logits = (bags.float() * self.bag_classifiers).sum(-1) + self.bag_bias
        inst = None
        if target is not None and self.training:
            inst = self._instance_loss(attention, h, target)
        return CLAMMBOutput(logits=logits, attention=attention, instance_loss=inst)

    def _instance_loss(self, attention: torch.Tensor, h: torch.Tensor, target: int) -> torch.Tensor:
        k = max(1, min(self.k_sample, h.shape[0] // 2))
        total = h.new_zeros(()).float()
        for c, classifier in enumerate(self.instance_classifiers):
            top = torch.topk(attention[c], k).indices
            if c == target:
                bottom = torch.topk(-attention[c], k).indices
                chosen = torch.cat([top, bottom])
                labels = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            else:
                chosen = top
                labels = torch.zeros(k, dtype=torch.long, device=h.device)
            total = total + nn.functional.cross_entropy(classifier(h[chosen]).float(), labels)
        return total / self.n_classes

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
