"""What the fold loop trains: the model, its loss and how it is predicted, saved and loaded.

:func:`hmil.train.loop.train_fold` owns the recipe (seeding, bag order, gradient accumulation,
class balancing, learning-rate schedule, weight average, selection, resume, test); a
:class:`Trainee` owns the model. :class:`HMILTrainee` is the one ``hmil train`` uses; any
multiple-instance model that takes one bag ``(N, D)`` and gives fine-class logits can be
trained under exactly the same recipe by passing its own trainee (the flat MIL peers of
``benchmarks/peers.py`` are).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hmil.checkpoint import CheckpointInfo, load_checkpoint_file, save_checkpoint
from hmil.config import Config
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.model.losses import HMILLoss, LossResult, SupConMemory
from hmil.train.cohort import BagStore, CohortItem
from hmil.train.evaluate import predict_items


class Objective(Protocol):
    """One bag's training loss: ``(out, fine target, epoch, memory) -> LossResult``.

    ``out`` is what :meth:`Trainee.forward` returned for the bag; ``memory`` holds the
    detached views of the epoch's previous bags (HMIL's contrastive term; others ignore it).
    """

    def __call__(self, out: Any, target: int, epoch: int, memory: SupConMemory) -> LossResult: ...


class Trainee(Protocol):
    """A model family the fold loop can train (see the module docstring)."""

    def build(self, in_dim: int) -> torch.nn.Module:
        """A fresh model for instance features of size ``in_dim`` (the loop seeds first)."""
        ...

    def forward(self, model: torch.nn.Module, bag: torch.Tensor, target: int) -> Any:
        """One training forward pass of a bag ``(N, D)`` with its fine target."""
        ...

    def objective(
        self, fine_weights: torch.Tensor | None, coarse_weights: torch.Tensor | None
    ) -> Objective:
        """The training loss, with per-class ``(Kf,)`` / ``(Kc,)`` factors of the cross-entropy
        (``train.class_balance: loss``) or None for 1."""
        ...

    def predict(
        self,
        model: torch.nn.Module,
        items: list[CohortItem],
        store: BagStore,
        device: torch.device,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(S, Kf)`` fine probabilities in fp32, and ``(S, Kc)`` coarse-head ones (None: the
        model has no coarse head)."""
        ...

    def save(self, path: Path, model: torch.nn.Module, info: CheckpointInfo) -> None:
        """Write the selected weights (atomically)."""
        ...

    def load(self, path: Path) -> torch.nn.Module:
        """The model :meth:`save` wrote, on the CPU."""
        ...


@dataclass
class _HMILObjective:
    """:class:`HMILLoss` of a bag, then the bag's class-wise fine embeddings kept in the
    memory for the next bags' contrastive term."""

    loss: HMILLoss
    epochs: int

    def __call__(self, out: Any, target: int, epoch: int, memory: SupConMemory) -> LossResult:
        result = self.loss(out, target, epoch, self.epochs, memory)
        memory.push(out.fine_embeddings, target)  # detached: the same before or after backward
        return result


@dataclass
class HMILTrainee:
    """HMIL (:class:`hmil.model.HMIL`) with :class:`hmil.model.losses.HMILLoss` and the
    project's checkpoint format: what ``hmil train`` trains."""

    config: Config
    hierarchy: Hierarchy

    def build(self, in_dim: int) -> torch.nn.Module:
        h = self.hierarchy
        return HMIL(in_dim, h.n_coarse, h.n_fine, self.config.model)

    def forward(self, model: torch.nn.Module, bag: torch.Tensor, target: int) -> Any:
        return model(bag)

    def objective(
        self, fine_weights: torch.Tensor | None, coarse_weights: torch.Tensor | None
    ) -> Objective:
        mapping = torch.from_numpy(self.hierarchy.mapping)
        tc = self.config.train
        loss = HMILLoss(self.config.loss, mapping, fine_weights, coarse_weights, tc.bags_per_step)
        return _HMILObjective(loss, tc.epochs)

    def predict(
        self,
        model: torch.nn.Module,
        items: list[CohortItem],
        store: BagStore,
        device: torch.device,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        assert isinstance(model, HMIL)
        return predict_items(model, items, store, device)

    def save(self, path: Path, model: torch.nn.Module, info: CheckpointInfo) -> None:
        assert isinstance(model, HMIL)
        save_checkpoint(path, model, info)

    def load(self, path: Path) -> torch.nn.Module:
        model, _ = load_checkpoint_file(path)
        return model
