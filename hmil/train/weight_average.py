"""An exponential moving average (EMA) of the model's weights (``train.ema_decay``).

Why: the project's recipe takes one optimiser step per bag at a constant learning rate, so the
weights after any one step carry that last bag's gradient noise; on a large cohort the
validation score peaked within one to three epochs of eight (gen-large). Averaging the weights
over the last ~1 / (1 − decay) steps (Polyak averaging) damps that noise without a schedule
that would have to know the run's length; whether it wins is measured in
``benchmarks/accuracy.py`` (rows "EMA of the weights"), and it is off by default. Training
itself is unchanged: the optimiser steps the live weights, and only validation, the kept
checkpoint and the test see the average. Built on :class:`torch.optim.swa_utils.AveragedModel`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """EMA of a module's parameters: avg ← decay · avg + (1 − decay) · w after each step; the
    first update copies the weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))

    @property
    def model(self) -> torch.nn.Module:
        """The averaged copy, a module of the same class as the trained one."""
        return self._averaged.module

    @property
    def n_updates(self) -> int:
        return int(self._averaged.n_averaged.item())

    def update(self, model: torch.nn.Module) -> None:
        """Take in ``model``'s current weights (call after each optimiser step)."""
        self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._averaged.load_state_dict(state)


def make_weight_average(model: torch.nn.Module, decay: float) -> WeightAverage | None:
    """The average ``train.ema_decay`` asks for, or ``None`` when it is 0 (off)."""
    return WeightAverage(model, decay) if decay > 0 else None
