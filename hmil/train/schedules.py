"""Learning-rate schedules over epochs, one small class per ``train.lr_schedule``.

Why not ReduceLROnPlateau by default: on a small validation set its score is noisy and often
flat while a run is still at chance, so with patience 5 it divides the learning rate by 10 every
six epochs (1e-4 → 1e-7 by epoch 19 on a 28-bag validation set) and the rest of training barely
moves. Cosine annealing depends only on the epoch count, so it cannot collapse early; plateau
stays available (the paper's recipe, ``--preset paper``). The choice between them was measured
(``benchmarks/results/accuracy.md``).

Each schedule is stepped once per finished epoch with that epoch's validation score and has a
``state_dict`` so that resumed runs continue exactly.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from hmil.config import TrainConfig


class Schedule(Protocol):
    """Sets the optimiser's learning rate for the next epoch."""

    def step(self, score: float) -> None:
        """Called after each epoch with its validation selection score (higher is better)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ConstantSchedule:
    """The learning rate never changes."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        del optimizer, config

    def step(self, score: float) -> None:
        del score

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class CosineSchedule:
    """lr(e) = lr_min + (lr − lr_min)·(1 + cos(π e / (E − 1))) / 2: the full lr at epoch 0,
    ``lr · lr_final_fraction`` at the last epoch E − 1."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.base = config.lr
        self.final = config.lr * config.lr_final_fraction
        self.epochs = config.epochs
        self.epoch = 0
        self._apply()

    def progress(self, epoch: int) -> float:
        """How far epoch ``epoch`` is through the decay, in [0, 1]."""
        return min(max(epoch / max(self.epochs - 1, 1), 0.0), 1.0)

    def lr_at(self, epoch: int) -> float:
        cosine = (1.0 + math.cos(math.pi * self.progress(epoch))) / 2.0
        return self.final + (self.base - self.final) * cosine

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.epoch)

    def step(self, score: float) -> None:
        del score
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self._apply()


class CosineTailSchedule(CosineSchedule):
    """The full lr for the first epochs, then a cosine down to ``lr · lr_final_fraction`` over
    the last ``round(E · lr_decay_fraction)`` epochs (at least one).

    Why it exists: plain cosine beat the constant lr on gen-large but lost on the smaller
    cohorts, and holding the lr for most of the run was the obvious middle way. Measured, it
    did not pay: 5 seeds, fine balanced accuracy 0.699 / 0.712 (25% / 50% tail) vs 0.723 on
    gen-small and 0.962 / 0.945 vs 0.969 on textures (against the constant lr of the earlier
    defaults, which had no weight average), so it stays an option."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.decay_epochs = max(1, round(config.epochs * config.lr_decay_fraction))
        super().__init__(optimizer, config)

    def progress(self, epoch: int) -> float:
        start = self.epochs - self.decay_epochs  # the last epoch at the full lr is start − 1
        return min(max((epoch - start + 1) / self.decay_epochs, 0.0), 1.0)


class PlateauSchedule:
    """ReduceLROnPlateau on the validation selection score (the paper's recipe)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
        )

    def step(self, score: float) -> None:
        self.inner.step(score)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


#: ``train.lr_schedule`` → implementation
SCHEDULES: dict[str, type[ConstantSchedule | CosineSchedule | PlateauSchedule]] = {
    "constant": ConstantSchedule,
    "cosine": CosineSchedule,
    "cosine_tail": CosineTailSchedule,
    "plateau": PlateauSchedule,
}


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Schedule:
    """The schedule ``config.lr_schedule`` driving ``optimizer``."""
    return SCHEDULES[config.lr_schedule](optimizer, config)
