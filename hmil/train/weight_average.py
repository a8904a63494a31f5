"""An exponential moving average (EMA) of the model's weights (``train.ema_decay`` or
``train.ema_epochs``).

Why: the project's recipe takes one optimiser step per bag at a constant learning rate, so the
weights after any one step carry that last bag's gradient noise; on a large cohort the
validation score peaked within one to three epochs of eight (gen-large). Averaging the weights
over the last ~1 / (1 − decay) steps (Polyak averaging) damps that noise without a schedule
that would have to know the run's length. It is on by default (``train.ema_epochs`` 0.5:
half an epoch), chosen on ``benchmarks/results/accuracy.md`` (the defaults against the row
"defaults without EMA", five cohorts × 5 seeds). Training itself is
unchanged: the optimiser steps the live weights, and only validation, the kept checkpoint and
the test see the average. Built on :class:`torch.optim.swa_utils.AveragedModel`.
"""

from __future__ import annotations

import math
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


def steps_per_epoch(n_bags: int, bags_per_step: int) -> int:
    """Optimiser steps in one epoch of ``n_bags`` training bags (the last group may be short)."""
    return max(1, math.ceil(n_bags / bags_per_step))


def average_decay(ema_decay: float, ema_epochs: float, steps: int) -> float:
    """The EMA decay a run uses: ``ema_decay`` as given, or from a horizon of ``ema_epochs``
    epochs of ``steps`` optimiser steps each, 1 − 1 / (ema_epochs · steps); 0 = no average.

    Why a horizon in epochs: a fixed decay of 0.998 (~500 steps) won on the 2,100-bag cohort
    (~1,150 steps per epoch) but averaged over three of the 300-bag cohort's twenty epochs
    (~165 steps each), where the model was still improving, and lost there
    (``benchmarks/results/accuracy.md``). A horizon in epochs is the same share of an epoch on
    both; a horizon of one step or less is no average at all.
    """
    if ema_decay > 0:
        return ema_decay
    if ema_epochs <= 0:
        return 0.0
    horizon = ema_epochs * steps
    return 1.0 - 1.0 / horizon if horizon > 1.0 else 0.0
