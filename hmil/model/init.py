"""Weight initialisation schemes for HMIL's Linear layers (``model.init``).

The reference recipe (the method notes) uses Kaiming-normal weights and zero biases. Measured
here (``benchmarks/results/accuracy.md``), that start is a poor one for HMIL's stack of linear
layers in front of tanh/sigmoid gates: Kaiming-normal has 6× the weight variance of PyTorch's
own ``nn.Linear`` default, the coarse branch passes three such layers before its gate, and the
gates start saturated. The options:

* ``kaiming`` — Kaiming-normal (fan-in, gain √2), zero bias (the paper's reference);
* ``xavier`` — Xavier-normal, zero bias (CLAM's ``initialize_weights``);
* ``pytorch`` — ``nn.Linear``'s default (weights and bias U(±1/√fan_in)), as ABMIL, TransMIL
  and torchmil's models start.

A per-class head's weight ``(K, F)`` is K independent ``Linear(F→1)`` rows and is initialised
as such (fan-in F, fan-out 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def _kaiming(weight: torch.Tensor, bias: torch.Tensor, per_row: bool) -> None:
    del per_row  # kaiming_normal_ uses fan-in only: rows of (K, F) already have fan-in F
    nn.init.kaiming_normal_(weight)
    nn.init.zeros_(bias)


def _xavier(weight: torch.Tensor, bias: torch.Tensor, per_row: bool) -> None:
    if per_row:  # each row a Linear(F→1): fan-in F, fan-out 1
        nn.init.normal_(weight, std=math.sqrt(2.0 / (weight.shape[1] + 1)))
    else:
        nn.init.xavier_normal_(weight)
    nn.init.zeros_(bias)


def _pytorch(weight: torch.Tensor, bias: torch.Tensor, per_row: bool) -> None:
    del per_row
    bound = 1.0 / math.sqrt(weight.shape[1])  # nn.Linear.reset_parameters, for any (out, in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


#: ``model.init`` → initialiser of one weight ``(out, in)`` and its bias ``(out,)``
INITS: dict[str, Callable[[torch.Tensor, torch.Tensor, bool], None]] = {
    "kaiming": _kaiming,
    "xavier": _xavier,
    "pytorch": _pytorch,
}


@torch.no_grad()
def initialise(
    weight: torch.Tensor, bias: torch.Tensor, scheme: str, per_row: bool = False
) -> None:
    """Initialise ``weight`` ``(out, in)`` and ``bias`` ``(out,)`` in place with ``scheme``;
    ``per_row``: the rows are independent ``Linear(in→1)`` classifiers (a per-class head)."""
    INITS[scheme](weight, bias, per_row)
