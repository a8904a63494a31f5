"""Patch-coordinate files: ``patches/<id>.h5`` (CLAM's attribute meaning) and
``patches/<id>_patches.h5`` (TRIDENT's), written and read back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hmil.data.bags import plain_value
from hmil.errors import HMILError, TilingError
from hmil.io import atomic_path
from hmil.slides.tiling import TilingResult


def save_patches(
    path: str | Path, result: TilingResult, attrs: dict[str, Any] | None = None
) -> Path:
    """Write a patch file atomically: ``coords`` ``(N, 2)`` int64 with attributes (default
    :meth:`TilingResult.coords_attrs`, CLAM's meaning) and ``tissue_fraction`` ``(N,)``."""
    out = Path(path)
    size = result.coords.size * 8 + result.fractions.size * 4  # a too-full disk: refused first
    with atomic_path(out, expected_bytes=size) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("coords", data=result.coords.astype(np.int64))
        for key, value in (result.coords_attrs() if attrs is None else attrs).items():
            dset.attrs[key] = value
        f.create_dataset("tissue_fraction", data=result.fractions.astype(np.float32))
    return out


def patch_file_paths(out_dir: str | Path, slide_id: str) -> tuple[Path, Path]:
    """``(patches/<id>.h5, patches/<id>_patches.h5)``: CLAM's and TRIDENT's names."""
    folder = Path(out_dir) / "patches"
    return folder / f"{slide_id}.h5", folder / f"{slide_id}_patches.h5"


@dataclass(frozen=True)
class PatchFile:
    """Patch coordinates read back from a ``patches/<slide_id>.h5`` (ours or CLAM's).

    Attributes:
        path: the file.
        coords: ``(N, 2)`` int64 level-0 top-left corners.
        attrs: the ``coords`` attributes.
    """

    path: Path
    coords: np.ndarray
    attrs: dict[str, Any]


def load_patches(path: str | Path) -> PatchFile:
    """Read a patch-coordinate file.

    Raises:
        HMILError: naming the file when it is missing, unreadable or has no ``(N, 2)`` coords.
    """
    p = Path(path)
    if not p.is_file():
        raise TilingError(p, "patch file not found (run `hmil tile` first)")
    try:
        with h5py.File(p, "r") as f:
            if "coords" not in f or not isinstance(f["coords"], h5py.Dataset):
                raise TilingError(p, "patch file has no 'coords' dataset")
            dset = f["coords"]
            coords = np.asarray(dset[()])
            attrs = {k: plain_value(v) for k, v in dset.attrs.items()}
    except HMILError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise TilingError(p, f"not a readable HDF5 patch file ({str(exc)[:200]})") from None
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.dtype.kind not in "iuf":
        raise TilingError(p, f"coords must be an (N, 2) number array, found {coords.shape}")
    return PatchFile(path=p, coords=coords.astype(np.int64), attrs=attrs)
