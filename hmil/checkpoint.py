"""Self-describing checkpoints: weights plus everything needed to use them.

A checkpoint is a plain dict of tensors, strings and numbers, so it loads with
``torch.load(weights_only=True)``: a file that needs arbitrary code to unpickle is refused
instead of executed. Layout (``format_version`` 1)::

    format: "hmil-checkpoint"   format_version: 1   hmil_version: "0.1.0"   created: ISO time
    state_dict: model weights   in_dim: D           hierarchy: {name, coarse, fine}
    model_config: {...}         encoder: "uni_v1", "uni_v1@<weights sha256>" or "" (unknown)
    config: the run's full config
    fold, epoch, val_metrics    (where it came from; informational)
    calibration: {temperature: {coarse, fine}, conformal: {...}}  (optional; docs/formats.md)
    content_sha256: SHA-256 of everything above (weights included), checked on load

``encoder`` is the training bags' encoder (:func:`hmil.train.cohort.checkpoint_encoder`);
prediction warns on bags of another (:func:`hmil.data.provenance.encoder_mismatch`), and a
checkpoint recording none never warns.

``calibration`` (:class:`hmil.calibration.Calibration`) is fitted on the validation part after
training; a checkpoint without it predicts with T = 1 and makes no call.

A file with one flipped bit in its weights still unpickles and predicts — different numbers,
silently — so the hash is checked on every load. Checkpoints written before the hash existed
(no ``content_sha256``) load as before.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hmil.calibration import Calibration
from hmil.config import ModelConfig, legacy_values
from hmil.errors import CheckpointError
from hmil.hierarchy import Hierarchy
from hmil.io import atomic_path
from hmil.model import HMIL
from hmil.version import __version__

FORMAT = "hmil-checkpoint"
FORMAT_VERSION = 1
HASH_KEY = "content_sha256"


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
    calibration: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: HMIL, info: CheckpointInfo) -> Path:
    """Write ``model`` and ``info`` atomically to ``path``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hmil_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "state_dict": state,
        "in_dim": int(info.in_dim),
        "hierarchy": info.hierarchy.to_dict(),
        "model_config": asdict(info.model_config),
        "encoder": info.encoder,
        "config": info.config,
        "fold": info.fold,
        "epoch": info.epoch,
        "val_metrics": info.val_metrics,
    }
    if info.calibration:  # absent, not empty, in checkpoints without one
        payload["calibration"] = info.calibration
    payload[HASH_KEY] = content_hash(payload)
    size = sum(t.numel() * t.element_size() for t in state.values())
    with atomic_path(path, expected_bytes=size) as tmp:  # a too-full disk: refused first
        torch.save(payload, tmp)
    return Path(path)


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint payload without its hash: every tensor's name, dtype,
    shape and bytes, then the other entries as canonical JSON."""
    digest = hashlib.sha256()
    state = payload.get("state_dict") or {}
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    rest = {k: v for k, v in payload.items() if k not in ("state_dict", HASH_KEY)}
    digest.update(json.dumps(_canonical(rest), sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    """Plain JSON-able data with string keys (``sort_keys`` cannot order mixed key types)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _check_hash(payload: dict[str, Any], path: Path) -> None:
    stored = payload.get(HASH_KEY)
    if stored is None:
        return  # written before checkpoints carried a hash
    try:
        actual = content_hash(payload)
    except (AttributeError, TypeError, RuntimeError) as exc:  # a state_dict of non-tensors
        raise CheckpointError(path, f"checkpoint is incomplete or inconsistent ({exc})") from None
    if actual != stored:
        raise CheckpointError(
            path,
            "content does not match its stored SHA-256 (the file is corrupt or was modified); "
            "restore it from a copy",
        )


def load_checkpoint_file(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[HMIL, CheckpointInfo]:
    """Read, validate and rebuild the model of a checkpoint (weights_only, no code execution).

    Raises:
        CheckpointError: naming the file for a missing file, a file that is not a torch
            archive, a pickle that needs code to load, a dict that is not an HMIL checkpoint,
            content that does not match its stored hash, or weights that do not fit the stored
            architecture.
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
    _check_hash(payload, p)
    try:
        hierarchy = Hierarchy.from_dict(payload["hierarchy"], source=str(p))
        # fields a checkpoint predates take the values it was trained with (shared head, ...)
        model_config = ModelConfig(**{**legacy_values()["model"], **payload["model_config"]})
        in_dim = int(payload["in_dim"])
        model = HMIL(in_dim, hierarchy.n_coarse, hierarchy.n_fine, model_config)
        model.load_state_dict(payload["state_dict"])
        calibration = payload.get("calibration") or {}
        Calibration.from_dict(calibration)  # malformed: refused now, not at the first bag
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
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
        calibration=calibration,
    )
    model.eval()
    return model, info
