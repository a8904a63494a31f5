"""Prediction with a trained checkpoint: ``hmil.load_checkpoint(path).predict(bag)``.

Bags small enough to hold comfortably are forwarded at once; larger ``.h5`` bags (above
``stream_bytes``) are read in chunks and pooled with the exact online softmax
(:meth:`hmil.model.HMIL.forward_streaming`), so memory stays bounded by one chunk plus the
K×N attention scores. In-memory bags above ``stream_bytes`` are forwarded chunk by chunk too
(bounded activation memory); on CUDA their chunks are copied on a side stream while the previous
chunk computes (:func:`device_chunks`), and ``.h5`` chunks are read into one pinned buffer while
the GPU works on the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from hmil.calibration import Calibration
from hmil.checkpoint import CheckpointInfo, load_checkpoint_file
from hmil.conformal import check_coverage, hierarchical_calls
from hmil.data.bags import (
    Bag,
    check_stored_size,
    h5_dataset,
    load_bag,
    plain_value,
    read_h5_coords,
    scale_grid_coords,
    validate_bag,
    with_folder_encoder,
)
from hmil.data.provenance import encoder_mismatch
from hmil.decoding import decode
from hmil.device import resolve_device
from hmil.errors import BagError
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL, HMILOutput

#: bags whose features exceed this many bytes are streamed from disk (h5 only)
DEFAULT_STREAM_BYTES = 1 << 30
DEFAULT_CHUNK_ROWS = 32768  # 128 MB of float32 at D = 1024


@dataclass
class Prediction:
    """One bag's prediction.

    Attributes:
        slide_id: file stem or given id.
        n_instances: N.
        hierarchy: the checkpoint's label tree.
        fine_probs: ``(Kf,)`` softmax of the fine head.
        coarse_head_probs: ``(Kc,)`` softmax of the coarse head.
        attention: ``{"coarse": (Kc, N), "fine": (Kf, N)}`` numpy arrays, or None.
        coords: ``(N, 2)`` level-0 patch coordinates from the bag, or None.
        bag_attrs: metadata stored with the bag (patch size, encoder, ...).
        warnings: problems that do not stop the prediction but make it doubtful (e.g. the bag's
            encoder is not the one the checkpoint was trained on); shown by ``hmil predict``
            on stderr and in the record's ``warnings``.
        calibrated: True when the probabilities are temperature-scaled with the checkpoint's
            calibration (record ``probabilities``: ``calibrated`` or ``raw``).
        call: the hierarchical call (``{"level", "label", "coverage_target"}``, see
            :mod:`hmil.conformal`), or None for a checkpoint without one.
        raw_fine_probs: ``(Kf,)`` the fine head's softmax before temperature scaling, or None
            when ``fine_probs`` are raw already. The predicted labels come from the raw
            probabilities: a temperature changes how sure a prediction says it is, never which
            label it names (a fine argmax cannot move, but the coarse argmax of Mᵀ p_f can when
            two coarse classes nearly tie), so ``hmil predict``, the viewer and the fold's
            ``predictions.csv`` name the same labels.
    """

    slide_id: str
    n_instances: int
    hierarchy: Hierarchy
    fine_probs: np.ndarray
    coarse_head_probs: np.ndarray
    attention: dict[str, np.ndarray] | None = None
    coords: np.ndarray | None = None
    bag_attrs: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    calibrated: bool = False
    call: dict[str, Any] | None = None
    raw_fine_probs: np.ndarray | None = None

    @property
    def coarse_probs(self) -> np.ndarray:
        """``(Kc,)`` = Mᵀ p_f, the fine probabilities summed per coarse class."""
        probs: np.ndarray = self.fine_probs @ self.hierarchy.mapping
        return probs

    @property
    def fine_pred(self) -> str:
        return self.hierarchy.fine[int(np.argmax(self.fine_probs))]

    @property
    def coarse_pred(self) -> str:
        """The coarse class of Mᵀ p_f with the raw fine probabilities (see ``raw_fine_probs``)."""
        raw = self.fine_probs if self.raw_fine_probs is None else self.raw_fine_probs
        return self.hierarchy.coarse[int(np.argmax(raw @ self.hierarchy.mapping))]

    @property
    def consistent(self) -> bool:
        """True when the coarse prediction is the parent of the fine prediction."""
        return self.hierarchy.parent_of(self.fine_pred) == self.coarse_pred

    def to_dict(self, attention: bool = False) -> dict[str, Any]:
        """The contract's prediction record (``attention`` only when asked and available)."""
        h = self.hierarchy
        record: dict[str, Any] = {
            "slide_id": self.slide_id,
            "n_instances": self.n_instances,
            "coarse": {
                "pred": self.coarse_pred,
                "probs": _named(h.coarse, self.coarse_probs),
                "head_pred": h.coarse[int(np.argmax(self.coarse_head_probs))],  # T cannot move it
                "head_probs": _named(h.coarse, self.coarse_head_probs),
            },
            "fine": {"pred": self.fine_pred, "probs": _named(h.fine, self.fine_probs)},
            "consistent": self.consistent,
            "probabilities": "calibrated" if self.calibrated else "raw",
        }
        if self.call is not None:
            record["call"] = dict(self.call)
        if self.warnings:
            record["warnings"] = list(self.warnings)
        if attention and self.attention is not None:
            record["attention"] = {
                "coarse": {n: self.attention["coarse"][i].tolist() for i, n in enumerate(h.coarse)},
                "fine": {n: self.attention["fine"][i].tolist() for i, n in enumerate(h.fine)},
            }
        return record


def _named(names: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {n: round(float(v), 6) for n, v in zip(names, values, strict=True)}


class Predictor:
    """A loaded checkpoint on a device, ready to predict bags.

    Args:
        model: the HMIL network (moved to ``device``, eval mode).
        info: what the checkpoint says about itself (hierarchy, D, encoder, config).
        device: where to run.
        precision: ``fp32`` or ``bf16`` (autocast; CUDA only, ignored on CPU).
        stream_bytes: ``.h5`` bags larger than this are streamed in chunks.
        chunk_rows: instances per chunk when streaming.
        calibrated: divide the logits by the checkpoint's temperatures (False: raw
            probabilities; the call always uses the calibrated ones).
        coverage: the call's target coverage (default: the checkpoint's).

    Raises:
        ConfigError: a ``coverage`` outside (0, 1).
    """

    def __init__(
        self,
        model: HMIL,
        info: CheckpointInfo,
        device: torch.device,
        precision: str = "fp32",
        stream_bytes: int = DEFAULT_STREAM_BYTES,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        calibrated: bool = True,
        coverage: float | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.info = info
        self.calibration = Calibration.from_dict(info.calibration)
        self.calibrated = calibrated
        target = self.calibration.coverage_target if coverage is None else coverage
        self.coverage = check_coverage(target)
        self.thresholds = self.calibration.thresholds(self.coverage)
        self.device = device
        self.precision = precision
        self.stream_bytes = stream_bytes
        self.chunk_rows = chunk_rows

    @property
    def hierarchy(self) -> Hierarchy:
        return self.info.hierarchy

    @property
    def in_dim(self) -> int:
        return self.info.in_dim

    def _autocast(self) -> Any:
        enabled = self.precision == "bf16" and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.inference_mode()
    def forward_bag(self, features: torch.Tensor) -> HMILOutput:
        """Forward ``(N, D)`` features (already validated) on the predictor's device.

        Bags larger than ``stream_bytes`` go through the exact chunked forward (same outputs),
        so activations stay bounded and, on CUDA, host→device copies overlap compute.
        """
        with self._autocast():
            if self._chunked(features):
                finite: list[torch.Tensor] = []
                chunks = _check_finite(
                    device_chunks(features, self.chunk_rows, self.device), finite
                )
                out = self.model.forward_streaming(chunks, keep_attention=True)
                if finite and not bool(torch.stack(finite).all()):  # one sync, at the end
                    validate_bag(Bag(features=features.cpu()), self.in_dim)  # names the row
                    raise BagError("bag", "non-finite feature values (NaN/Inf)")
                return out
            output: HMILOutput = self.model(features.to(self.device, non_blocking=True))
            return output

    def _chunked(self, features: torch.Tensor) -> bool:
        """True for bags above ``stream_bytes`` (forwarded in chunks)."""
        return features.numel() * features.element_size() > self.stream_bytes

    def predict(
        self,
        source: str | Path | torch.Tensor | np.ndarray | Bag,
        attention: bool = False,
        slide_id: str | None = None,
    ) -> Prediction:
        """Predict one bag (path, ``(N, D)`` tensor/array, or :class:`Bag`).

        Raises:
            BagError: naming the file for an unreadable bag, N = 0, non-finite features, a
                wrong shape, a D different from the checkpoint's, or a bag that does not fit
                in memory (a MemoryError, or torch's CPU allocator refusing).
        """
        try:
            return self._predict(source, attention, slide_id)
        except MemoryError:
            raise BagError(_where(source), "does not fit in the memory available") from None
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc) and not _is_oom(exc):
                raise
            raise BagError(_where(source), "does not fit in the memory available") from None

    def _predict(
        self,
        source: str | Path | torch.Tensor | np.ndarray | Bag,
        attention: bool,
        slide_id: str | None,
    ) -> Prediction:
        if isinstance(source, str | Path) and self._should_stream(Path(source)):
            return self._predict_streaming(Path(source), attention, slide_id)
        # a large host tensor bound for CUDA is checked for NaN/Inf on the GPU, chunk by chunk,
        # instead of in a separate pass over host memory (see forward_bag)
        on_device_check = (
            isinstance(source, torch.Tensor)
            and self.device.type == "cuda"
            and source.dtype == torch.float32
            and self._chunked(source)
        )
        bag = load_bag(source, expected_dim=self.in_dim, check_finite=not on_device_check)
        out = self.forward_bag(bag.features)
        return self._to_prediction(out, bag.n_instances, slide_id or bag.slide_id, bag, attention)

    def _to_prediction(
        self, out: HMILOutput, n: int, slide_id: str, bag: Bag | None, attention: bool
    ) -> Prediction:
        att = None
        if attention:
            att = {
                "coarse": out.coarse_attention.float().cpu().numpy(),
                "fine": out.fine_attention.float().cpu().numpy(),
            }
        cal = self.calibration
        fine = _softmax(out.fine_logits, cal.fine_temperature)
        head = _softmax(out.coarse_logits, cal.coarse_temperature)
        call = None
        if self.thresholds is not None:
            parent = np.asarray(self.hierarchy.parent)
            calls = hierarchical_calls(fine[None, :], parent, *self.thresholds)
            level, index = str(calls.level[0]), int(calls.label[0])
            names = {"fine": self.hierarchy.fine, "coarse": self.hierarchy.coarse}
            label = names[level][index] if level in names else None
            call = {"level": level, "label": label, "coverage_target": self.coverage}
        raw = _softmax(out.fine_logits, 1.0)
        if not self.calibrated:
            fine, head = raw, _softmax(out.coarse_logits, 1.0)
        return Prediction(
            slide_id=slide_id,
            n_instances=n,
            hierarchy=self.hierarchy,
            fine_probs=fine,
            coarse_head_probs=head,
            attention=att,
            coords=None if bag is None else bag.coords,
            bag_attrs=None if bag is None else bag.attrs,
            warnings=self._warnings(bag),
            calibrated=self.calibrated and bool(self.info.calibration),
            call=call,
            raw_fine_probs=None if fine is raw else raw,
        )

    def _warnings(self, bag: Bag | None) -> list[str]:
        mismatch = encoder_mismatch(self.info.encoder, None if bag is None else bag.attrs)
        return [mismatch] if mismatch else []

    def _should_stream(self, path: Path) -> bool:
        if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
            return False
        try:
            with h5py.File(path, "r") as f:
                d = f.get("features")  # an external link stays unresolved here: not streamed
                return isinstance(d, h5py.Dataset) and d.size * 4 > self.stream_bytes
        except (OSError, KeyError, ValueError):
            return False  # let load_bag report the unreadable file

    @torch.inference_mode()
    def _predict_streaming(self, path: Path, attention: bool, slide_id: str | None) -> Prediction:
        coords: np.ndarray | None = None
        attrs: dict[str, Any] = {}
        n = 0
        try:
            with h5py.File(path, "r") as f:
                dset = h5_dataset(f, "features", path)
                if dset is None:
                    raise BagError(path, "h5 file has no 'features' dataset")
                check_stored_size(dset, path)  # before streaming a forged 10⁹-row claim
                shape = dset.shape[1:] if dset.ndim == 3 and dset.shape[0] == 1 else dset.shape
                if len(shape) != 2:
                    raise BagError(path, f"features must be 2-D (N, D), found shape {dset.shape}")
                n, d = shape
                if n == 0:
                    raise BagError(path, "bag has 0 instances")
                if d != self.in_dim:
                    raise BagError(
                        path, f"feature dimension {d} does not match the model's {self.in_dim}"
                    )
                coords, attrs = read_h5_coords(f, path, n)  # claims checked before reading
                attrs.update({k: plain_value(v) for k, v in dset.attrs.items()})
                with self._autocast():
                    out = self.model.forward_streaming(
                        self._h5_chunks(path, dset), keep_attention=attention
                    )
        except OSError as exc:
            raise BagError(path, f"not a readable HDF5 bag ({str(exc).splitlines()[0]})") from None
        bag = Bag(features=torch.empty(0, self.in_dim), coords=coords, attrs=attrs, path=path)
        bag = scale_grid_coords(with_folder_encoder(bag))  # as load_bag does
        return self._to_prediction(out, n, slide_id or path.stem, bag, attention)

    def _h5_chunks(self, path: Path, dset: h5py.Dataset) -> Iterator[torch.Tensor]:
        """Yield validated ``(n, D)`` chunks of an h5 features dataset on the device.

        On CUDA, chunks are read into two alternating pinned buffers: while the GPU copies and
        computes chunk i, chunk i + 1 is read from disk into the other buffer (a buffer is only
        refilled once its previous host→device copy has finished).
        """
        squeeze = dset.ndim == 3
        n = dset.shape[1] if squeeze else dset.shape[0]

        def fill(view: torch.Tensor, start: int, stop: int) -> None:
            sel = np.s_[0, start:stop] if squeeze else np.s_[start:stop]
            dset.read_direct(view.numpy(), source_sel=sel)
            validate_bag(Bag(features=view, path=path), self.in_dim, row_offset=start)

        return staged_chunks(n, dset.shape[-1], fill, self.chunk_rows, self.device)


def _softmax(logits: torch.Tensor, temperature: float) -> np.ndarray:
    """``(K,)`` float64 softmax of ``logits / temperature`` (computed in fp32, as in training)."""
    probs = torch.softmax(logits.float() / temperature, -1)
    return probs.cpu().numpy().astype(np.float64)


def _where(source: object) -> str | Path:
    """What a message names for a bag source: its file, or "bag" for an in-memory one."""
    if isinstance(source, str | Path):
        return source
    path = getattr(source, "path", None)
    return path if isinstance(path, Path) else "bag"


def _is_oom(exc: RuntimeError) -> bool:
    """True for an allocator's out-of-memory error (CUDA's is a RuntimeError subclass)."""
    oom = getattr(torch, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


def _check_finite(
    chunks: Iterator[torch.Tensor], flags: list[torch.Tensor]
) -> Iterator[torch.Tensor]:
    """Pass chunks through, appending a device-side "all finite" flag per chunk (no sync)."""
    for chunk in chunks:
        flags.append(torch.isfinite(chunk).all())
        yield chunk


def staged_chunks(
    n: int,
    d: int,
    fill: Callable[[torch.Tensor, int, int], None],
    chunk_rows: int,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """Chunks ``[start, stop)`` of an ``(n, d)`` float32 source, produced by ``fill`` on the host.

    ``fill(view, start, stop)`` writes rows ``start..stop-1`` into ``view`` ``(stop − start, d)``.
    On CPU one buffer is reused (each chunk must be consumed before the next is requested, as
    :meth:`hmil.model.HMIL.forward_streaming` does). On CUDA two pinned buffers alternate and
    each copy is asynchronous, so filling chunk i + 1 overlaps the GPU's work on chunk i.
    """
    rows = min(chunk_rows, max(n, 1))
    if device.type != "cuda":
        buffer = torch.empty((rows, d), dtype=torch.float32)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            view = buffer[: stop - start]
            fill(view, start, stop)
            yield view
        return
    buffers = [torch.empty((rows, d), dtype=torch.float32, pin_memory=True) for _ in range(2)]
    copied: list[torch.cuda.Event | None] = [None, None]
    for i, start in enumerate(range(0, n, rows)):
        stop = min(start + rows, n)
        slot = i % 2
        event = copied[slot]
        if event is not None:
            event.synchronize()  # the copy out of this buffer (two chunks ago) has finished
        view = buffers[slot][: stop - start]
        fill(view, start, stop)
        chunk = view.to(device, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        copied[slot] = done
        yield chunk


def device_chunks(x: torch.Tensor, chunk_rows: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Row chunks of an in-memory ``(N, D)`` bag on ``device``, copied ahead of their use.

    * CPU: views of ``x`` (no copy).
    * CUDA, ``x`` on the GPU already: views.
    * CUDA, ``x`` in pinned host memory: chunk i + 1 is copied on a side stream into one of two
      device buffers while the consumer's kernels for chunk i run on the current stream; an
      event makes each chunk ready before use, and a buffer is refilled only after the work
      queued on its previous chunk has finished. This hides the transfer behind compute (or
      compute behind the transfer, whichever is longer).
    * CUDA, pageable host memory: staged through two pinned buffers (:func:`staged_chunks`).

    Each yielded chunk is only valid until the next one is requested.
    """
    n, d = x.shape
    rows = min(chunk_rows, max(n, 1))
    if device.type != "cuda" or x.device.type == "cuda":
        for start in range(0, n, rows):
            yield x[start : start + rows].to(device)
        return
    if not x.is_pinned():

        def fill(view: torch.Tensor, start: int, stop: int) -> None:
            view.copy_(x[start:stop])

        yield from staged_chunks(n, d, fill, rows, device)
        return
    compute = torch.cuda.current_stream(device)
    copy_stream = torch.cuda.Stream(device)
    buffers = [torch.empty((rows, d), dtype=x.dtype, device=device) for _ in range(2)]
    for buffer in buffers:  # freed memory must not be reused while a copy may still write it
        buffer.record_stream(copy_stream)
    ready = [torch.cuda.Event(), torch.cuda.Event()]
    free: list[torch.cuda.Event | None] = [None, None]
    starts = list(range(0, n, rows))

    def issue(i: int) -> None:
        start, slot = starts[i], i % 2
        stop = min(start + rows, n)
        with torch.cuda.stream(copy_stream):
            event = free[slot]
            if event is not None:
                copy_stream.wait_event(event)  # the consumer's kernels on this buffer are done
            buffers[slot][: stop - start].copy_(x[start:stop], non_blocking=True)
            ready[slot].record(copy_stream)

    issue(0)
    for i, start in enumerate(starts):
        if i + 1 < len(starts):
            issue(i + 1)
        slot = i % 2
        compute.wait_event(ready[slot])
        yield buffers[slot][: min(start + rows, n) - start]
        done = torch.cuda.Event()
        done.record(compute)
        free[slot] = done


def load_checkpoint(
    path: str | Path, device: str | torch.device = "auto", precision: str = "fp32", **kwargs: Any
) -> Predictor:
    """Load a checkpoint for prediction (``device="auto"``: CUDA when present)."""
    dev = resolve_device(device)
    model, info = load_checkpoint_file(path, map_location="cpu")
    return Predictor(model, info, dev, precision=precision, **kwargs)


def decode_predictions(predictions: list[Prediction], hierarchy: Hierarchy) -> Any:
    """Stack many predictions and decode them together (see :func:`hmil.decoding.decode`)."""
    fine = np.stack([p.fine_probs for p in predictions])
    head = np.stack([p.coarse_head_probs for p in predictions])
    return decode(fine, hierarchy, head)
