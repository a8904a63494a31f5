"""Launchers: where a run's folds (and an extraction's shards) run — this process, parallel
local processes, or SLURM jobs — through submitit, recorded in the run directory.

* :func:`launch_training` — ``hmil train --launcher inline|local|slurm``;
* :func:`fold_views` — each fold's state, epoch, best metric, ETA and job (``hmil status``);
* :func:`launch_extraction` — ``hmil extract --launcher local|slurm --shards K``.

Names are imported lazily: a job process unpickles ``hmil.train.launch.folds.FoldJob``, which
imports this package first, and a fold still waiting for a worker slot should not have paid
for a torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hmil.train.launch.executors import BACKENDS, JOBS_DIR, make_executor
    from hmil.train.launch.shards import (
        ExtractLaunch,
        ShardResult,
        launch_extraction,
        shard_slides,
    )
    from hmil.train.launch.status import STATES, FoldView, fold_view, fold_views
    from hmil.train.launch.training import (
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
    "STATES": "status",
    "FoldView": "status",
    "fold_view": "status",
    "fold_views": "status",
    "LAUNCHERS": "training",
    "LaunchOutcome": "training",
    "Submission": "training",
    "launch_training": "training",
}

__all__ = [
    "BACKENDS",
    "JOBS_DIR",
    "LAUNCHERS",
    "STATES",
    "ExtractLaunch",
    "FoldView",
    "LaunchOutcome",
    "ShardResult",
    "Submission",
    "fold_view",
    "fold_views",
    "launch_extraction",
    "launch_training",
    "make_executor",
    "shard_slides",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
