"""Deployable exports of a checkpoint: ONNX, and a ``torch.export`` ExportedProgram (``.pt2``).

Both take one bag, ``features`` ``(N, D)`` float32 with N dynamic (N ≥ 1), and return a tuple
of tensors (:data:`OUTPUT_NAMES`), the numbers ``hmil predict`` gives for the same bag:

* ``coarse_probs`` ``(Kc,)``: the fine probabilities summed per coarse class (Mᵀ p_f);
* ``coarse_head_probs`` ``(Kc,)``: softmax of the coarse head;
* ``fine_probs`` ``(Kf,)``: softmax of the fine head;
* ``coarse_attention`` ``(Kc, N)`` and ``fine_attention`` ``(Kf, N)``: class-wise attention,
  each row a distribution over the instances.

The model's own output is a dataclass (:class:`hmil.model.HMILOutput`), which neither
``torch.export`` nor TorchScript accepts, so :class:`ExportModule` wraps it and returns plain
tensors. A checkpoint that carries per-level temperatures (:data:`TEMPERATURE_KEYS`) has its
logits divided by them before the softmax. What a runtime needs besides the weights (label
names, hierarchy, encoder, D, the hmil version) is stored with the file: ONNX ``metadata_props``,
or the ``hmil.json`` extra file of the ``.pt2`` archive; :func:`read_metadata` reads either.
See docs/export.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hmil.checkpoint import HASH_KEY, CheckpointInfo, load_checkpoint_file
from hmil.errors import CheckpointError, ConfigError
from hmil.io import atomic_path
from hmil.model import HMIL
from hmil.model.attention import attention_pool
from hmil.version import __version__

INPUT_NAME = "features"
#: the exported function's outputs, in order
OUTPUT_NAMES = (
    "coarse_probs",
    "coarse_head_probs",
    "fine_probs",
    "coarse_attention",
    "fine_attention",
)
#: ``format`` entry of the metadata
METADATA_FORMAT = "hmil-export"
METADATA_VERSION = 1
#: the ONNX metadata key, and the ``.pt2`` extra file, holding the metadata as JSON
METADATA_KEY = "hmil"
EXTRA_FILE = "hmil.json"
#: where a checkpoint may keep per-level temperatures (``{"coarse": T_c, "fine": T_f}``)
TEMPERATURE_KEYS: tuple[tuple[str, ...], ...] = (
    ("calibration", "temperature"),
    ("calibration", "temperatures"),
    ("temperatures",),
)
#: the name of N in the exported input shape
BAG_DIM = "N"


@dataclass(frozen=True)
class Temperatures:
    """Per-level logit temperatures (1 = uncalibrated): probabilities are softmax(logits / T)."""

    coarse: float = 1.0
    fine: float = 1.0


class ExportModule(nn.Module):
    """An HMIL model as a function of one bag returning a tuple of tensors.

    Calls the model's own layers (embedding, class-wise attention, pooling, heads) on the whole
    bag at once: :meth:`HMIL.forward` switches to block-wise pooling above a bag size, a branch
    on N that an export with a dynamic N cannot keep.

    Args:
        model: the network (put in eval mode, its parameters frozen).
        mapping: ``(Kf, Kc)`` 0/1 fine → coarse matrix of the hierarchy.
        temperatures: divide the logits of each level by these.
    """

    mapping: torch.Tensor  # a buffer: moves with the module, saved with the program

    def __init__(self, model: HMIL, mapping: np.ndarray, temperatures: Temperatures) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mapping", torch.as_tensor(mapping, dtype=torch.float32))
        self.coarse_temperature = float(temperatures.coarse)
        self.fine_temperature = float(temperatures.fine)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``features`` ``(N, D)`` → the tensors of :data:`OUTPUT_NAMES`:
        ``(Kc,), (Kc,), (Kf,), (Kc, N), (Kf, N)``."""
        model = self.model
        h_c, h_f = model.instance_features(features)
        a_c, b_c = attention_pool(model.coarse_attention(h_c), h_c)
        a_f, b_f = attention_pool(model.fine_attention(h_f), h_f)
        coarse_logits, fine_logits = model.heads(b_c, b_f)
        coarse_head = torch.softmax(coarse_logits / self.coarse_temperature, dim=-1)
        fine = torch.softmax(fine_logits / self.fine_temperature, dim=-1)
        coarse = fine @ self.mapping
        return coarse, coarse_head, fine, a_c, a_f


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote."""

    path: Path
    format: str
    metadata: dict[str, Any]


def read_temperatures(payload: Mapping[str, Any], where: str | Path) -> Temperatures:
    """The per-level temperatures a checkpoint dict carries (:data:`TEMPERATURE_KEYS`), else 1.

    Raises:
        CheckpointError: temperatures that are not a ``{"coarse": T, "fine": T}`` mapping of
            finite numbers > 0.
    """
    for keys in TEMPERATURE_KEYS:
        value: Any = payload
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise CheckpointError(where, f"{'.'.join(keys)} must map coarse/fine to numbers")
        levels = {level: value.get(level, 1.0) for level in ("coarse", "fine")}
        for level, t in levels.items():
            number = float(t) if isinstance(t, int | float | torch.Tensor) else float("nan")
            if not (np.isfinite(number) and number > 0):
                raise CheckpointError(
                    where, f"{'.'.join(keys)}.{level} must be a finite number > 0, found {t!r}"
                )
            levels[level] = number
        return Temperatures(coarse=levels["coarse"], fine=levels["fine"])
    return Temperatures()


def build_metadata(
    info: CheckpointInfo, temperatures: Temperatures, checkpoint: Path, content_sha256: str = ""
) -> dict[str, Any]:
    """Everything a runtime needs besides the weights, as plain JSON data."""
    h = info.hierarchy
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "hmil_version": __version__,
        "checkpoint": {
            "file": checkpoint.name,
            "content_sha256": content_sha256,
            "hmil_version": info.hmil_version,
            "fold": info.fold,
            "epoch": info.epoch,
        },
        "encoder": info.encoder,
        "in_dim": int(info.in_dim),
        "input": {"name": INPUT_NAME, "shape": [BAG_DIM, int(info.in_dim)], "dtype": "float32"},
        "outputs": {
            "coarse_probs": [h.n_coarse],
            "coarse_head_probs": [h.n_coarse],
            "fine_probs": [h.n_fine],
            "coarse_attention": [h.n_coarse, BAG_DIM],
            "fine_attention": [h.n_fine, BAG_DIM],
        },
        "coarse_labels": list(h.coarse),
        "fine_labels": list(h.fine),
        "hierarchy": h.to_dict(),
        "temperatures": asdict(temperatures),
    }


def load_export_module(checkpoint: str | Path) -> tuple[ExportModule, dict[str, Any]]:
    """The :class:`ExportModule` of a checkpoint and its metadata (temperatures applied).

    Raises:
        CheckpointError: naming the file, for a checkpoint that does not load, or one whose
            temperatures are malformed.
    """
    path = Path(checkpoint)
    model, info = load_checkpoint_file(path, map_location="cpu")
    with warnings.catch_warnings():  # loaded once already: the same file, the same checks
        warnings.simplefilter("ignore")
        payload = torch.load(path, map_location="cpu", weights_only=True)
    temperatures = read_temperatures(payload, path)
    module = ExportModule(model, info.hierarchy.mapping, temperatures)
    sha = str(payload.get(HASH_KEY) or "")
    return module, build_metadata(info, temperatures, path, sha)


def _example_and_shapes(in_dim: int) -> tuple[tuple[torch.Tensor], tuple[dict[int, Any]]]:
    """An example bag and the dynamic shape spec of the one input (N ≥ 1, named ``N``)."""
    example = torch.zeros(2, in_dim, dtype=torch.float32)  # N = 2: not specialised as 0 or 1
    return (example,), ({0: torch.export.Dim(BAG_DIM, min=1)},)


def export_program(module: ExportModule, in_dim: int) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` with the bag size N dynamic (1 ≤ N)."""
    example, shapes = _example_and_shapes(in_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on its own internals
        return torch.export.export(module, example, dynamic_shapes=shapes, strict=False)


def _write_exported_program(module: ExportModule, metadata: dict[str, Any], out: Path) -> None:
    program = export_program(module, int(metadata["in_dim"]))
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:  # a handle: any suffix will do
        torch.export.save(program, handle, extra_files={EXTRA_FILE: json.dumps(metadata)})


def _write_onnx(module: ExportModule, metadata: dict[str, Any], out: Path) -> None:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            out,
            f"ONNX export needs the package(s) {', '.join(missing)}: "
            "pip install onnx onnxscript onnxruntime, or hmil's [export] extra",
        )
    example, shapes = _example_and_shapes(int(metadata["in_dim"]))
    with _quiet_onnx_exporter():
        onnx_program = torch.onnx.export(
            module,
            example,
            dynamic_shapes=shapes,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamo=True,
            verbose=False,
        )
    assert onnx_program is not None  # the dynamo exporter returns its program
    onnx_program.model.metadata_props.update(onnx_metadata(metadata))
    with atomic_path(out) as tmp:
        onnx_program.save(tmp)


def onnx_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """ONNX ``metadata_props``: the whole metadata as JSON under :data:`METADATA_KEY`, and the
    fields most runtimes look for under their own keys (lists and mappings as JSON)."""
    flat = {
        "hmil_version": metadata["hmil_version"],
        "encoder": metadata["encoder"],
        "in_dim": str(metadata["in_dim"]),
        "coarse_labels": json.dumps(metadata["coarse_labels"]),
        "fine_labels": json.dumps(metadata["fine_labels"]),
        "hierarchy": json.dumps(metadata["hierarchy"]),
    }
    return {METADATA_KEY: json.dumps(metadata), **flat}


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Silence the exporter's notes on optional operator libraries it does not find (it
    registers torchvision's when present) and its deprecation chatter."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


#: ``--format`` → writer: exports the module with its metadata to a file, atomically
WRITERS: dict[str, Callable[[ExportModule, dict[str, Any], Path], None]] = {
    "onnx": _write_onnx,
    "exported-program": _write_exported_program,
}
#: ``--format`` → the usual file suffix
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "exported-program": ".pt2"}


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str) -> ExportResult:
    """Export a checkpoint to ``out`` in ``fmt`` (:data:`WRITERS`); written atomically.

    Raises:
        ConfigError: an unknown format, or ONNX without its packages.
        CheckpointError: a checkpoint that does not load.
    """
    if fmt not in WRITERS:
        raise ConfigError(fmt, f"unknown export format (expected one of {', '.join(WRITERS)})")
    module, metadata = load_export_module(checkpoint)
    WRITERS[fmt](module, metadata, Path(out))
    return ExportResult(path=Path(out), format=fmt, metadata=metadata)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata stored with an export (ONNX or ``.pt2``), recognised by content.

    Raises:
        ConfigError: a file that is neither, or one without hmil metadata.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "export file not found")
    text = _pt2_metadata(p) if _is_zip(p) else _onnx_metadata(p)
    if not text:
        raise ConfigError(p, "no hmil metadata in this file (not written by hmil export?)")
    data: dict[str, Any] = json.loads(text)
    return data


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _pt2_metadata(path: Path) -> str:
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.load(path, extra_files=extra)
    except Exception as exc:  # torch raises many types on archives it cannot read
        raise ConfigError(path, f"not a readable ExportedProgram archive ({exc})") from None
    return extra[EXTRA_FILE]


def _onnx_metadata(path: Path) -> str:
    try:
        import onnx
    except ImportError:
        raise ConfigError(path, "reading ONNX needs `pip install onnx`") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others on garbage
        raise ConfigError(path, f"not a readable ONNX model ({exc})") from None
    props = {p.key: p.value for p in model.metadata_props}
    return props.get(METADATA_KEY, "")
