"""Self-describing checkpoints: weights plus everything needed to use them.

A checkpoint is a plain dict of tensors, strings and numbers, so it loads with
``torch.load(weights_only=True)``: a file that needs arbitrary code to unpickle is refused
instead of executed. Layout (``format_version`` 1)::

    format: "hmil-checkpoint"   format_version: 1   hmil_version: "0.1.0"   created: ISO time
    state_dict: model weights   in_dim: D           hierarchy: {name, coarse, fine}
    model_config: {...}         encoder: "hed-texture" or ""   config: the run's full config
    fold, epoch, val_metrics    (where it came from; informational)
"""

from __future__ import annotations

import datetime as _dt
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hmil import __version__
from hmil.config import ModelConfig
from hmil.errors import CheckpointError
from hmil.hierarchy import Hierarchy
from hmil.io import atomic_path
from hmil.model import HMIL

FORMAT = "hmil-checkpoint"
FORMAT_VERSION = 1


@dataclass
class CheckpointInfo:
    """What a checkpoint says about itself, besides the weights."""

    hierarchy: Hierarchy
    in_dim: int
    model_config: ModelConfig
    encoder: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    fold: int | None = None
    epoch: int | None = None
    val_metrics: dict[str, Any] = field(default_factory=dict)
    hmil_version: str = __version__
    created: str = ""


def save_checkpoint(path: str | Path, model: HMIL, info: CheckpointInfo) -> Path:
    """Write ``model`` and ``info`` atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hmil_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "in_dim": int(info.in_dim),
        "hierarchy": info.hierarchy.to_dict(),
        "model_config": asdict(info.model_config),
        "encoder": info.encoder,
        "config": info.config,
        "fold": info.fold,
        "epoch": info.epoch,
        "val_metrics": info.val_metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint_file(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[HMIL, CheckpointInfo]:
    """Read, validate and rebuild the model of a checkpoint (weights_only, no code execution).

    Raises:
        CheckpointError: naming the file for a missing file, a file that is not a torch
            archive, a pickle that needs code to load, a dict that is not an HMIL checkpoint,
            or weights that do not fit the stored architecture.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "checkpoint file not found")
    try:
        with warnings.catch_warnings():  # pickle-protocol warnings on odd files: we report
            warnings.simplefilter("ignore")
            payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "unsafe pickle"
        raise CheckpointError(
            p, f"refused: not a plain-data checkpoint (weights_only load failed: {first})"
        ) from None
    except Exception as exc:  # torch raises many types (KeyError, RuntimeError...) on garbage
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(p, f"not a readable checkpoint ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            p, "not an HMIL checkpoint (no 'format: hmil-checkpoint' entry; a bare state_dict?)"
        )
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            p,
            f"checkpoint format {payload['format_version']} is newer than this hmil "
            f"{__version__} reads (format {FORMAT_VERSION}); upgrade hmil-studio to load it",
        )
    try:
        hierarchy = Hierarchy.from_dict(payload["hierarchy"], source=str(p))
        # checkpoints written before ``model.head`` existed all have the paper's shared head
        model_config = ModelConfig(**{"head": "shared", **payload["model_config"]})
        in_dim = int(payload["in_dim"])
        model = HMIL(in_dim, hierarchy.n_coarse, hierarchy.n_fine, model_config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(p, f"checkpoint is incomplete or inconsistent ({first})") from None
    info = CheckpointInfo(
        hierarchy=hierarchy,
        in_dim=in_dim,
        model_config=model_config,
        encoder=str(payload.get("encoder") or ""),
        config=payload.get("config") or {},
        fold=payload.get("fold"),
        epoch=payload.get("epoch"),
        val_metrics=payload.get("val_metrics") or {},
        hmil_version=str(payload.get("hmil_version", "")),
        created=str(payload.get("created", "")),
    )
    model.eval()
    return model, info
