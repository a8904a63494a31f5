"""Which encoder made a bag, and refusing to mix features of different encoders.

``hmil extract`` stores the encoder on the bag's ``features`` dataset: ``encoder`` (TRIDENT's
name, e.g. ``uni_v1``; TRIDENT writes the same attribute) and ``encoder_weights_sha256`` (the
weights file's hash). Features of two encoders — or of two weights files of one architecture —
live in different spaces: a cohort mixing them trains on noise, and a checkpoint applied to
another encoder's bags predicts garbage without an error, since D often matches (UNI and
``resnet50_trunc`` are both 1024-d). A bag that records no encoder takes the one its folder
names (TRIDENT's ``features_<enc>/``: :func:`hmil.data.bags.folder_encoder`); bags with neither
are "unknown" and never reported as a mismatch.

Training records the cohort's encoder in the checkpoint (``encoder``: ``name`` or
``name@<weights sha256>``, :meth:`EncoderRef.label`), so prediction, heatmaps and the viewer
can warn when a bag comes from another encoder (see docs/formats.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from hmil.data.bags import ENCODER_FROM_FOLDER, folder_encoder, load_bag
from hmil.errors import BagError

#: other tools' names of the same encoder → TRIDENT's (CLAM calls TRIDENT's resnet50 so)
ENCODER_ALIASES: dict[str, str] = {"resnet50_trunc": "resnet50"}


def canonical_encoder_name(name: str) -> str:
    """TRIDENT's name for ``name`` (``resnet50_trunc`` → ``resnet50``; others unchanged)."""
    return ENCODER_ALIASES.get(name, name)


@dataclass(frozen=True)
class EncoderRef:
    """An encoder as a bag or checkpoint records it.

    Attributes:
        name: TRIDENT's name (``""``: unknown).
        weights_sha256: hex digest (or prefix) of the weights file, ``""`` when not recorded.
    """

    name: str = ""
    weights_sha256: str = ""

    @property
    def known(self) -> bool:
        return bool(self.name)

    def differs_from(self, other: EncoderRef) -> bool:
        """True when both are known and are not the same encoder (name, or recorded weights)."""
        if not (self.known and other.known):
            return False
        if self.name != other.name:
            return True
        a, b = self.weights_sha256, other.weights_sha256
        return bool(a and b) and not (a.startswith(b) or b.startswith(a))

    def label(self) -> str:
        """The form a checkpoint's ``encoder`` records: ``name`` or ``name@<weights sha256>``
        (``""`` when unknown); :func:`parse_encoder` reads it back."""
        if not self.known:
            return ""
        return f"{self.name}@{self.weights_sha256}" if self.weights_sha256 else self.name

    def __str__(self) -> str:
        if not self.known:
            return "unknown encoder"
        return (
            f"{self.name} (weights {self.weights_sha256[:12]})"
            if self.weights_sha256
            else self.name
        )


def parse_encoder(text: str, weights_sha256: str = "") -> EncoderRef:
    """An :class:`EncoderRef` from a recorded name.

    Accepts TRIDENT names, CLAM aliases, ``torchscript:<file>:<sha prefix>`` (hmil's TorchScript
    label) and ``<name>@<sha prefix>`` (a checkpoint's ``encoder`` naming its weights).
    """
    text = str(text or "").strip()
    if text.startswith("torchscript:"):
        parts = text.split(":")
        return EncoderRef("torchscript", weights_sha256 or (parts[-1] if len(parts) >= 3 else ""))
    if "@" in text:
        text, _, sha = text.partition("@")
        weights_sha256 = weights_sha256 or sha
    return EncoderRef(canonical_encoder_name(text), weights_sha256)


def encoder_of(attrs: Mapping[str, Any]) -> EncoderRef:
    """The encoder recorded in a bag's attributes (unknown when none)."""
    return parse_encoder(
        str(attrs.get("encoder") or ""), str(attrs.get("encoder_weights_sha256") or "")
    )


def read_bag_encoder(path: Path) -> EncoderRef:
    """The encoder of a bag file: ``.h5`` attributes only; ``.pt``/``.npy`` through
    :func:`~hmil.data.bags.load_bag` (memory-mapped; their sibling ``.h5`` carries it). Either
    way, a bag that records none takes the one its folder names (``features_<enc>/``).

    Raises:
        BagError: unreadable file.
    """
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        try:
            with h5py.File(path, "r") as f:
                attrs = dict(f["features"].attrs) if "features" in f else {}
        except OSError as exc:
            raise BagError(path, f"not a readable HDF5 bag ({str(exc).splitlines()[0]})") from None
        ref = encoder_of({k: _text(v) for k, v in attrs.items()})
        return ref if ref.known else parse_encoder(folder_encoder(path))
    return encoder_of(load_bag(path, check_finite=False).attrs)


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def check_single_encoder(paths: Iterable[Path]) -> EncoderRef:
    """Refuse a cohort whose bag files come from different encoders (or weights): each file's
    encoder read with :func:`read_bag_encoder`, then :func:`single_encoder`."""
    return single_encoder((Path(path), read_bag_encoder(Path(path))) for path in paths)


def single_encoder(found: Iterable[tuple[Path, EncoderRef]]) -> EncoderRef:
    """Refuse a cohort whose bags come from different encoders (or weights).

    Args:
        found: each bag file with its encoder (e.g. :func:`encoder_of` its loaded attributes).

    Returns:
        The cohort's encoder (unknown when no bag records one).

    Raises:
        HMILError: naming one bag of each of the first two encoders found.
    """
    first: tuple[EncoderRef, Path] | None = None
    for path, ref in found:
        if not ref.known:
            continue
        if first is None:
            first = (ref, path)
        elif ref.differs_from(first[0]):
            raise BagError(
                path,
                f"made by {ref}, but {first[1].name} by {first[0]}: features of different "
                "encoders cannot be trained together (re-extract with one encoder)",
            )
    return first[0] if first is not None else EncoderRef()


def encoder_mismatch(checkpoint_encoder: str, bag_attrs: Mapping[str, Any] | None) -> str | None:
    """A warning when a bag's recorded encoder is not the checkpoint's, else None.

    Args:
        checkpoint_encoder: the checkpoint's ``encoder`` (a name, ``name@sha`` or ``""``).
        bag_attrs: the bag's attributes.
    """
    attrs = bag_attrs or {}
    trained, bag = parse_encoder(checkpoint_encoder), encoder_of(attrs)
    if not trained.differs_from(bag):
        return None
    folder = attrs.get(ENCODER_FROM_FOLDER)
    named = f" (named by its folder {folder})" if folder else ""
    return (
        f"bag made by {bag}{named}, but the checkpoint was trained on {trained} features: "
        "the prediction is not meaningful"
    )
