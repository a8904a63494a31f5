"""Launchers: where a run's folds (and an extraction's shards) run — this process, parallel
local processes, or SLURM jobs — through submitit, recorded in the run directory (what each
fold is doing is read back by :mod:`hmil.train.status`, which training itself consults before a
launch, so it lives below this package).

* :func:`launch_training` — ``hmil train --launcher inline|local|slurm``;
* :func:`launch_extraction` — ``hmil extract --launcher local|slurm --shards K``.

Names are imported lazily: a job process unpickles ``hmil.launch.folds.FoldJob``, which
imports this package first, and a fold still waiting for a worker slot should not have paid
for a torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hmil.launch.executors import BACKENDS, JOBS_DIR, make_executor
    from hmil.launch.shards import (
        ExtractLaunch,
        ShardResult,
        launch_extraction,
        shard_slides,
    )
    from hmil.launch.training import (
        LAUNCHERS,
        LaunchOutcome,
        Submission,
        launch_training,
    )

_LAZY = {
    "BACKENDS": "executors",
    "JOBS_DIR": "executors",
    "make_executor": "executors",
    "ExtractLaunch": "shards",
    "ShardResult": "shards",
    "launch_extraction": "shards",
    "shard_slides": "shards",
    "LAUNCHERS": "training",
    "LaunchOutcome": "training",
    "Submission": "training",
    "launch_training": "training",
}

__all__ = [
    "BACKENDS",
    "JOBS_DIR",
    "LAUNCHERS",
    "ExtractLaunch",
    "LaunchOutcome",
    "ShardResult",
    "Submission",
    "launch_extraction",
    "launch_training",
    "make_executor",
    "shard_slides",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
