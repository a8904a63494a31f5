"""Feature bags: one slide = N instance feature vectors (+ optional patch coordinates).

Reads the layouts people already have on disk:

* ``.pt``  — CLAM ``pt_files`` (a float tensor ``(N, D)``) or a dict with ``features`` ``(N, D)``
  and optionally ``coords`` ``(N, 2)``; loaded with ``weights_only=True`` (no code execution)
  and memory-mapped, so the file is not read into memory twice.
* ``.pt`` from TRIDENT (``saveas="pt"``): a pickled numpy array; only numpy's array
  reconstruction is allowed to the unpickler, nothing that runs other code.
* ``.h5``  — CLAM ``h5_files`` / TRIDENT ``features_<enc>``: dataset ``features`` ``(N, D)`` or
  ``(1, N, D)``, dataset ``coords`` ``(N, 2)``, attributes on ``coords`` (``patch_size``,
  ``patch_level``, ``patch_size_level0``, ...) and on ``features`` (``encoder``) kept as ``attrs``.
* ``.npy`` — torchmil's ``ProcessedMILDataset`` feature folders: an ``(N, D)`` array
  (memory-mapped, no pickle).

Bags without coords find them beside them (:func:`sibling_coords_paths`): CLAM's
``pt_files/<id>.pt`` in ``h5_files/<id>.h5``, hmil's older ``<id>.pt`` in ``<id>.h5``, TRIDENT's
``features_<enc>/<id>.pt`` in ``patches/<id>_patches.h5`` of its job folder, torchmil's
``features/features_<enc>/<id>.npy`` in ``coords/<id>.npy``.

Coords in patch-grid units (0, 1, 2, …: torchmil's processed ``coords``) are multiplied by the
level-0 patch size when one is stated (a size attribute, or torchmil's ``patches_<size>``
folder); without one, :func:`infer_patch_size` refuses them instead of drawing 1-pixel patches.

A bag that records no encoder takes the one its folder names: TRIDENT's and torchmil's
``features_<enc>/`` (also above CLAM's ``pt_files``/``h5_files``), so features of two encoders are
told apart (see docs/formats.md).

Copies: an ``.h5`` float32 dataset is read straight into one numpy buffer that the returned
tensor shares (one copy: disk → memory); ``.pt`` tensors are memory-mapped. Only a dtype
conversion (e.g. float16 → float32) makes a second buffer.

Claimed sizes are checked before anything is allocated: every ``.h5`` dataset read must store
what its shape claims (compressed ones may expand by :data:`MAX_COMPRESSION_RATIO`; data in
external files or other HDF5 files is refused), coords must number as many as the features,
the records of a ``.pt`` zip may expand by the same ratio, and ``.npy`` arrays are
memory-mapped (the file must hold them). So a bag costs at most its file size times that ratio
(and times 4 for a dtype conversion to float32); a bag that still does not fit in memory is a
:class:`BagError` too.
"""

from __future__ import annotations

import importlib
import math
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from hmil.errors import BagError
from hmil.io import atomic_path

BAG_SUFFIXES = (".h5", ".pt", ".npy")

#: rows checked for non-finite values at a time (bounds the temporary boolean buffer)
_FINITE_CHUNK_ROWS = 65536
#: coordinates are level-0 pixels: 0 ≤ x, y < this (int32 range, far beyond any scanner)
MAX_COORD = 2**31
#: a compressed HDF5 dataset (or ``.pt`` zip record) may claim up to this many times the bytes it
#: stores; uncompressed, it must store what it claims. Real bags compress far less: float32
#: features 1.1–1.9× with gzip, int64 coords 7× (13× with the shuffle filter); 32× leaves room
#: for those and refuses a 1 MB file that expands to 1 GB (deflate alone allows ~1000×)
MAX_COMPRESSION_RATIO = 32
#: claims this small are read without the check (nothing large can be allocated for them)
_UNCHECKED_CLAIM_BYTES = 1 << 20
#: TRIDENT's (and torchmil's) bag folder: ``features_<encoder>``
FEATURES_FOLDER_PREFIX = "features_"
#: CLAM's bag folders, one level below the folder that may name the encoder
CLAM_FOLDERS = ("pt_files", "h5_files")
#: torchmil's processed-dataset folder naming the patch size: ``patches_<size>``
_TORCHMIL_PATCHES_FOLDER = re.compile(r"^patches_(?P<size>\d+)$")
#: bag attribute saying which folder name the encoder was taken from
ENCODER_FROM_FOLDER = "encoder_from_folder"
#: bag attribute: grid-unit coords were multiplied by this level-0 patch size on loading
GRID_SCALE_ATTR = "coords_grid_scale"


@dataclass
class Bag:
    """The instances of one slide.

    Attributes:
        features: ``(N, D)`` float32 tensor on CPU.
        coords: ``(N, 2)`` int64 level-0 (x, y) of each patch's top-left corner, or None.
        attrs: metadata from the file (patch size, level, encoder name, ...).
        path: where the bag was read from (None for in-memory bags).
    """

    features: torch.Tensor
    coords: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_instances(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def slide_id(self) -> str:
        return self.path.stem if self.path is not None else str(self.attrs.get("slide_id", "bag"))


def find_bag(features_dir: str | Path, slide_id: str) -> Path | None:
    """The bag file of ``slide_id`` in ``features_dir`` (``.h5`` preferred), or None.

    Also looks in CLAM's ``h5_files/`` and ``pt_files/`` subfolders.
    """
    root = Path(features_dir)
    for folder in (root, root / "h5_files", root / "pt_files"):
        for suffix in BAG_SUFFIXES:
            candidate = folder / f"{slide_id}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def load_bag(
    source: str | Path | torch.Tensor | np.ndarray | Bag,
    expected_dim: int | None = None,
    check_finite: bool = True,
) -> Bag:
    """Load and validate one bag.

    Args:
        source: a ``.pt``/``.h5`` path, an ``(N, D)`` tensor/array, or a :class:`Bag`.
        expected_dim: if given, D must equal it (the model's input dimension).
        check_finite: reject NaN/Inf features (checked in chunks, bounded extra memory).

    Returns:
        A :class:`Bag` with ``features`` ``(N, D)`` float32.

    Raises:
        BagError: naming the file, for a missing/unreadable file, 0 instances, a tensor that is
            not 2-D, non-finite values, coords whose count differs from N, or a wrong D.
    """
    if isinstance(source, Bag):
        bag = source
    elif isinstance(source, torch.Tensor | np.ndarray):
        bag = Bag(features=_as_float_tensor(source, "bag"))
    else:
        path = Path(source)
        try:
            bag = _load_file(path)
            validate_bag(bag, expected_dim=expected_dim, check_finite=check_finite)
        except MemoryError:
            raise BagError(path, "does not fit in the memory available") from None
        return bag
    validate_bag(bag, expected_dim=expected_dim, check_finite=check_finite)
    return bag


def _load_file(path: Path) -> Bag:
    if not path.is_file():
        raise BagError(path, "bag file not found")
    suffix = path.suffix.lower()
    if suffix == ".h5" or suffix == ".hdf5":
        bag = _load_h5(path)
    elif suffix in (".pt", ".pth"):
        bag = _with_sibling_coords(_load_pt(path))
    elif suffix == ".npy":
        bag = _with_sibling_coords(_load_npy(path))
    else:
        raise BagError(path, f"unsupported bag format '{suffix}' (expected .h5, .pt or .npy)")
    return scale_grid_coords(with_folder_encoder(bag))


def folder_encoder(path: Path) -> str:
    """The encoder a bag's folder names, ``""`` when it names none.

    TRIDENT writes ``<job>/<mag>x_<ps>px_<ov>px_overlap/features_<enc>/<id>.h5|.pt`` and torchmil
    ``patches_<ps>/features/features_<enc>/<id>.npy``: ``features_uni_v1/s1.pt`` → ``uni_v1``.
    CLAM's ``pt_files``/``h5_files`` are looked through (``features_uni_v1/pt_files/s1.pt``).
    """
    folder = path.parent
    if folder.name in CLAM_FOLDERS:
        folder = folder.parent
    name = folder.name
    if name.startswith(FEATURES_FOLDER_PREFIX) and len(name) > len(FEATURES_FOLDER_PREFIX):
        return name[len(FEATURES_FOLDER_PREFIX) :]
    return ""


def with_folder_encoder(bag: Bag) -> Bag:
    """A bag that records no ``encoder`` takes the one its folder names (TRIDENT's ``.pt`` and
    torchmil's ``.npy`` record none); the attribute :data:`ENCODER_FROM_FOLDER` says so."""
    if bag.path is None or bag.attrs.get("encoder"):
        return bag
    name = folder_encoder(bag.path)
    if name:
        bag.attrs["encoder"] = name
        bag.attrs[ENCODER_FROM_FOLDER] = bag.path.parent.name
    return bag


def in_grid_units(coords: np.ndarray) -> bool:
    """True when ``(N, 2)`` coords look like patch-grid indices (0, 1, 2, …), not pixels.

    The test: more than half of the gaps between neighbouring distinct x values (and y values)
    are exactly 1. A level-0 grid's gaps are its patch step (hundreds of pixels); CLAM's
    per-contour grids may put two columns 1 px apart, but not most of them.
    """
    if coords.ndim != 2 or coords.shape[0] < 2:
        return False
    gaps = [np.diff(np.unique(coords[:, axis])) for axis in (0, 1)]
    all_gaps = np.concatenate(gaps)
    return bool(all_gaps.size) and int(np.count_nonzero(all_gaps == 1)) * 2 > all_gaps.size


def _torchmil_patch_size(bag: Bag) -> int | None:
    """The size in torchmil's ``patches_<size>/`` folder above the bag or its coords file."""
    places = [bag.path] if bag.path is not None else []
    if bag.attrs.get("coords_file"):
        places.append(Path(str(bag.attrs["coords_file"])))
    for place in places:
        for folder in list(place.parents)[:3]:
            match = _TORCHMIL_PATCHES_FOLDER.match(folder.name)
            if match and int(match["size"]) > 0:
                return int(match["size"])
    return None


def scale_grid_coords(bag: Bag) -> Bag:
    """Multiply grid-unit coords (:func:`in_grid_units`) by the stated level-0 patch size.

    The size comes from the bag's attributes (:func:`stated_patch_size`), else torchmil's
    ``patches_<size>`` folder (taken as level-0 pixels). Without either the coords stay as
    they are and :func:`infer_patch_size` refuses them.
    """
    if bag.coords is None or not in_grid_units(bag.coords):
        return bag
    where = bag.path if bag.path is not None else "bag"
    size = stated_patch_size(bag.attrs, where) or _torchmil_patch_size(bag)
    if size is None:
        return bag
    step = round(size)
    if int(bag.coords.max(initial=0)) >= MAX_COORD // max(step, 1):
        raise BagError(where, f"grid coords times the patch size {step} exceed {MAX_COORD}")
    bag.coords = bag.coords * step
    bag.attrs.setdefault("patch_size_level0", step)
    bag.attrs[GRID_SCALE_ATTR] = step
    return bag


def validate_bag(
    bag: Bag, expected_dim: int | None = None, check_finite: bool = True, row_offset: int = 0
) -> None:
    """Raise :class:`BagError` if ``bag`` cannot be fed to a model (see :func:`load_bag`).

    ``row_offset`` is added to instance indices in messages (for chunks of a streamed bag).
    """
    where = bag.path if bag.path is not None else "bag"
    x = bag.features
    if x.numel() == 0 and x.ndim != 2:
        raise BagError(
            where,
            f"empty bag: features of shape {tuple(x.shape)} (TRIDENT writes this for a slide "
            "without tissue patches)",
        )
    if x.ndim != 2:
        raise BagError(where, f"features must be 2-D (N, D), found shape {tuple(x.shape)}")
    n, d = x.shape
    if n == 0:
        raise BagError(where, "empty bag: 0 instances (a slide without tissue patches?)")
    if d == 0:
        raise BagError(where, "features have dimension 0")
    if expected_dim is not None and d != expected_dim:
        raise BagError(where, f"feature dimension {d} does not match the model's {expected_dim}")
    if bag.coords is not None:
        c = bag.coords
        if c.ndim != 2 or c.shape[1] != 2:
            raise BagError(where, f"coords must have shape (N, 2), found {tuple(c.shape)}")
        if c.shape[0] != n:
            raise BagError(where, f"{c.shape[0]} coords for {n} feature vectors")
    if check_finite:
        for start in range(0, n, _FINITE_CHUNK_ROWS):
            chunk = x[start : start + _FINITE_CHUNK_ROWS]
            if not bool(torch.isfinite(chunk).all()):
                bad = int((~torch.isfinite(chunk)).any(dim=1).nonzero()[0, 0]) + start + row_offset
                raise BagError(
                    where, f"non-finite feature values (NaN/Inf), first at instance {bad}"
                )


def _as_float_tensor(data: Any, where: str | Path) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "fiu":
            raise BagError(where, f"features must be numeric, found dtype {data.dtype}")
        tensor = torch.from_numpy(data)
    elif isinstance(data, torch.Tensor):
        tensor = data
    else:
        raise BagError(where, f"expected a feature tensor, found {type(data).__name__}")
    if tensor.ndim == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dtype != torch.float32:
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise BagError(where, f"features must be real numbers, found dtype {tensor.dtype}")
        tensor = tensor.to(torch.float32)
    return tensor


#: what a pickled numpy array needs (TRIDENT's ``.pt`` bags), also under numpy 1.x's module names
#: (numeric dtypes only: an object array could hold anything)
_RECONSTRUCT = importlib.import_module("numpy._core.multiarray")._reconstruct  # not in the stubs
_NUMPY_ARRAY_GLOBALS: list[Any] = [
    _RECONSTRUCT,
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdg"),
    bytes,  # an empty array's buffer
]


def _load_pt(path: Path) -> Bag:
    check_zip_records(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on odd files
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:  # e.g. a pickle that would run code: refused
        raise BagError(path, f"not a readable torch file ({_first_line(exc)})") from None
    except Exception:
        # mmap needs the zip format (legacy torch.save files load without it); anything else
        # is reported by the plain load below
        obj = _torch_load_plain(path)
    coords: np.ndarray | None = None
    attrs: dict[str, Any] = {}
    if isinstance(obj, dict):
        if "features" not in obj:
            raise BagError(path, "dict bag has no 'features' entry")
        features = _as_float_tensor(obj["features"], path)
        if obj.get("coords") is not None:
            coords = _as_coords(obj["coords"], path)
        attrs = {k: v for k, v in obj.items() if k not in ("features", "coords") and _is_plain(v)}
    else:
        features = _as_float_tensor(obj, path)
    return Bag(features=features, coords=coords, attrs=attrs, path=path)


def check_zip_records(path: Path) -> None:
    """Refuse (BagError) a ``.pt`` zip whose records claim more bytes than they store.

    ``torch.save`` stores its records uncompressed, but torch also loads deflated ones and
    allocates a record's claimed size before inflating it; a compressed record may expand by
    :data:`MAX_COMPRESSION_RATIO`. Legacy (pre-zip) files are left to torch: it compares each
    storage's claimed size with the size written beside its bytes before reading them (a 27 KB
    file claiming 1 GB is refused at +15 MB).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # a legacy torch file, or not a torch file: torch.load reports it
    for info in records:
        stored = info.compress_size
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else MAX_COMPRESSION_RATIO
        if info.file_size > max(stored * ratio, _UNCHECKED_CLAIM_BYTES):
            how = "truncated" if ratio == 1 else f"more than {MAX_COMPRESSION_RATIO}× compression"
            raise BagError(
                path,
                f"record '{info.filename}' claims {info.file_size:,} bytes but stores "
                f"{stored:,} ({how} or forged)",
            )


def _torch_load_plain(path: Path) -> Any:
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise BagError(path, f"not a readable torch file ({_first_line(exc)})") from None


def _load_npy(path: Path) -> Bag:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # the file must hold it
    except (OSError, ValueError) as exc:  # not .npy, truncated, or an object array (pickle)
        raise BagError(path, f"not a readable .npy array ({_first_line(exc)})") from None
    if array.dtype.kind not in "fiu":
        raise BagError(path, f"features must be numeric, found dtype {array.dtype}")
    features = torch.from_numpy(np.array(array, dtype=np.float32))
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    return Bag(features=features, path=path)


def sibling_coords_paths(path: Path) -> list[Path]:
    """Where the coords of a coords-less bag file live, by the peers' folder layouts.

    * CLAM (and hmil ``--format both``): ``FEATURES/pt_files/<id>.pt`` →
      ``FEATURES/h5_files/<id>.h5``;
    * hmil's older ``--format both``: ``<id>.pt`` → ``<id>.h5`` in the same folder;
    * TRIDENT: ``JOB/<mag>x_<ps>px_<ov>px_overlap/features_<enc>/<id>.pt`` →
      ``.../patches/<id>_patches.h5`` (its ``coords`` dataset and attributes: ``patch_size``,
      ``patch_size_level0``, ``level0_magnification``, ...);
    * torchmil: ``ROOT/features/features_<enc>/<id>.npy`` → ``ROOT/coords/<id>.npy`` (also
      ``../coords`` and ``<id>.h5`` beside it).
    """
    stem = path.stem
    parent = path.parent
    candidates = [parent / f"{stem}.h5"]
    if parent.name == "pt_files":
        candidates.insert(0, parent.parent / "h5_files" / f"{stem}.h5")
    if parent.name.startswith(FEATURES_FOLDER_PREFIX):
        candidates.append(parent.parent / "patches" / f"{stem}_patches.h5")
    if path.suffix.lower() == ".npy":
        candidates += [parent.parent.parent / "coords" / f"{stem}.npy"]
        candidates += [parent.parent / "coords" / f"{stem}.npy"]
    return [c for c in candidates if c != path]


def _with_sibling_coords(bag: Bag) -> Bag:
    """Fill a coords-less bag's coords (and the h5's attributes) from its sibling file."""
    if bag.coords is not None or bag.path is None:
        return bag
    if bag.features.ndim != 2:
        return bag  # validate_bag refuses the features' shape
    n = int(bag.features.shape[0])
    for candidate in sibling_coords_paths(bag.path):
        if not candidate.is_file():
            continue
        count = _coords_count(candidate)
        if count is None:
            continue
        if count != n:
            raise BagError(
                bag.path,
                f"{count} coords in {candidate} for {bag.features.shape[0]} feature "
                "vectors (bag and coords from different runs?)",
            )
        coords, attrs = _read_coords_file(candidate)
        if coords is None:
            continue
        return Bag(
            features=bag.features,
            coords=coords,
            attrs={**attrs, **bag.attrs, "coords_file": str(candidate)},
            path=bag.path,
        )
    return bag


def _coords_count(path: Path) -> int | None:
    """How many coords a coords file claims (from its header, nothing read), or None without
    coords."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            shape = array.shape[1:] if array.ndim == 3 and array.shape[0] == 1 else array.shape
            return int(shape[0]) if shape else 0
        with h5py.File(path, "r") as f:
            cset = h5_dataset(f, "coords", path)
            if cset is None:
                return None
            return _coords_shape(cset, path)[0]
    except (OSError, ValueError, KeyError) as exc:
        raise BagError(path, f"unreadable coords file ({_first_line(exc)})") from None


def _read_coords_file(path: Path) -> tuple[np.ndarray | None, dict[str, Any]]:
    """``(N, 2)`` coords and attributes from an ``.h5`` (its ``coords`` dataset) or ``.npy``."""
    try:
        if path.suffix.lower() == ".npy":
            return _as_coords(np.load(path, mmap_mode="r", allow_pickle=False), path), {}
        with h5py.File(path, "r") as f:
            attrs: dict[str, Any] = {}
            features = h5_dataset(f, "features", path)
            if features is not None:
                attrs.update({k: plain_value(v) for k, v in features.attrs.items()})
            coords, coords_attrs = read_h5_coords(f, path)
            return coords, {**attrs, **coords_attrs}
    except (OSError, ValueError, KeyError) as exc:
        raise BagError(path, f"unreadable coords file ({_first_line(exc)})") from None


def h5_dataset(f: h5py.File, name: str, where: str | Path) -> h5py.Dataset | None:
    """The dataset ``name`` of an open bag, or None when absent.

    Raises:
        BagError: ``name`` is a link to another file (reading it would read that file) or
            not a dataset.
    """
    link = f.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise BagError(where, f"'{name}' links to another file ({link.filename}); copy it in")
    dset = f[name]
    if not isinstance(dset, h5py.Dataset):
        raise BagError(where, f"'{name}' is not a dataset")
    return dset


def _coords_shape(cset: h5py.Dataset, where: str | Path) -> tuple[int, int]:
    """``(N, 2)`` of a coords dataset (``(1, N, 2)`` squeezed), checked before any read."""
    shape = cset.shape[1:] if cset.ndim == 3 and cset.shape[0] == 1 else cset.shape
    if len(shape) != 2 or shape[1] != 2:
        raise BagError(where, f"coords must have shape (N, 2), found {tuple(cset.shape)}")
    if cset.dtype.kind not in "fiu":
        raise BagError(where, f"coords must be numeric, found dtype {cset.dtype}")
    return int(shape[0]), 2


def read_h5_coords(
    f: h5py.File, where: str | Path, n: int | None = None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The ``coords`` dataset of an open bag and its attributes (``(None, {})`` without one).

    Shape, dtype, the count ``n`` (the number of feature vectors, when given) and the stored
    size (:func:`check_stored_size`) are checked before anything is read: a 30 KB file can
    claim 4·10⁹ coords.
    """
    cset = h5_dataset(f, "coords", where)
    if cset is None:
        return None, {}
    count, _ = _coords_shape(cset, where)
    if n is not None and count != n:
        raise BagError(where, f"{count} coords for {n} feature vectors")
    check_stored_size(cset, where)
    attrs = {k: plain_value(v) for k, v in cset.attrs.items()}
    return _as_coords(cset[()], Path(where)), attrs


def _load_h5(path: Path) -> Bag:
    try:
        with h5py.File(path, "r") as f:
            dset = h5_dataset(f, "features", path)
            if dset is None:
                raise BagError(path, "h5 file has no 'features' dataset")
            if dset.dtype.kind not in "fiu":
                raise BagError(path, f"features must be numeric, found dtype {dset.dtype}")
            check_stored_size(dset, path)
            # read straight into a float32 buffer: one copy from disk, shared with the tensor
            buffer = np.empty(dset.shape, dtype=np.float32)
            if buffer.size:
                dset.read_direct(buffer)
            attrs: dict[str, Any] = {k: plain_value(v) for k, v in dset.attrs.items()}
            coords, coords_attrs = read_h5_coords(f, path, _rows(dset.shape))
            attrs.update(coords_attrs)
            attrs.update({k: plain_value(v) for k, v in f.attrs.items()})
    except BagError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise BagError(path, f"not a readable HDF5 bag ({_first_line(exc)})") from None
    features = torch.from_numpy(buffer)
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    return Bag(features=features, coords=coords, attrs=attrs, path=path)


def _rows(shape: tuple[int, ...]) -> int | None:
    """N of a features shape ``(N, D)`` or ``(1, N, D)``; None for other shapes (refused later
    by :func:`validate_bag` with their own message)."""
    if len(shape) == 2:
        return int(shape[0])
    if len(shape) == 3 and shape[0] == 1:
        return int(shape[1])
    return None


def check_stored_size(dset: h5py.Dataset, where: str | Path) -> None:
    """Refuse (BagError) a dataset whose shape claims more bytes than the file stores, or whose
    data is not in the file.

    A 1.4 KB file can declare ``features`` of 10⁹ × 104 floats that were never written;
    reading it would allocate hundreds of GB (or stream fill values for hours). Uncompressed
    data must be stored in full; compressed data may expand by :data:`MAX_COMPRESSION_RATIO`.
    External raw files and virtual datasets are refused whatever their size: they would read
    other files of the machine (``/dev/zero``, anyone's data).
    """
    name = dset.name.lstrip("/") if dset.name else "dataset"
    if dset.is_virtual or dset.external:
        raise BagError(where, f"'{name}' keeps its data outside the file; copy it in")
    claimed = int(dset.size) * dset.dtype.itemsize
    if claimed <= _UNCHECKED_CLAIM_BYTES:
        return
    stored = int(dset.id.get_storage_size())
    filtered = dset.id.get_create_plist().get_nfilters() > 0
    if claimed > stored * (MAX_COMPRESSION_RATIO if filtered else 1):
        how = f"more than {MAX_COMPRESSION_RATIO}× compression" if filtered else "truncated"
        raise BagError(
            where,
            f"'{name}' claims shape {tuple(dset.shape)} ({claimed:,} bytes) but the file stores "
            f"{stored:,} bytes of it ({how} or forged)",
        )


def _as_coords(data: Any, where: Path) -> np.ndarray:
    arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dtype.kind not in "fiu":
        raise BagError(where, f"coords must be numeric, found dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BagError(where, "coords contain NaN/Inf")
    if arr.size and (arr.min() < 0 or arr.max() >= MAX_COORD):
        raise BagError(
            where,
            f"coords must be level-0 pixels in [0, {MAX_COORD}), found {arr.min():g} to "
            f"{arr.max():g}",
        )
    return arr.astype(np.int64, copy=False)


def plain_value(value: Any) -> Any:
    """h5py attribute → JSON-friendly Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _positive_attr(attrs: dict[str, Any], key: str, where: str | Path) -> float:
    """A size attribute as a positive finite float (first entry of an array attribute)."""
    raw = attrs[key]
    try:
        value = float(np.ravel(np.asarray(raw, dtype=object))[0])
    except (TypeError, ValueError, IndexError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value < MAX_COORD):
        raise BagError(where, f"attribute '{key}' must be a positive number, found {raw!r}")
    return value


def _is_plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def save_bag(
    path: str | Path,
    features: torch.Tensor | np.ndarray,
    coords: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
    coords_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a bag atomically in the contract's layout.

    ``.h5``: datasets ``features`` ``(N, D)`` float32 and ``coords`` ``(N, 2)`` int64, ``attrs``
    on ``features`` (e.g. ``encoder``, ``dim``) and ``coords_attrs`` on ``coords`` (e.g.
    ``patch_size_level0``). ``.pt``: a dict ``{"features", "coords", **attrs}`` of plain types.
    """
    out = Path(path)
    feats = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    size = feats.nbytes + (np.asarray(coords).size * 8 if coords is not None else 0)
    with atomic_path(out, expected_bytes=size) as tmp:
        if out.suffix.lower() == ".pt":
            payload: dict[str, Any] = {"features": torch.from_numpy(feats)}
            if coords is not None:
                payload["coords"] = torch.from_numpy(np.asarray(coords, dtype=np.int64))
            payload.update({k: v for k, v in (attrs or {}).items() if _is_plain(v)})
            torch.save(payload, tmp)
        else:
            with h5py.File(tmp, "w") as f:
                fd = f.create_dataset("features", data=feats)
                for k, v in (attrs or {}).items():
                    fd.attrs[k] = v
                if coords is not None:
                    cd = f.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
                    for k, v in (coords_attrs or {}).items():
                        cd.attrs[k] = v
    return out


def save_feature_tensor(path: str | Path, features: torch.Tensor | np.ndarray) -> Path:
    """Write CLAM's ``pt_files`` bag atomically: a plain float32 ``(N, D)`` tensor, which is what
    CLAM's ``Generic_MIL_Dataset`` loads (a dict would break it)."""
    out = Path(path)
    feats = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
    tensor = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    with atomic_path(out) as tmp:
        torch.save(tensor, tmp)
    return out


def stated_patch_size(attrs: dict[str, Any], where: str | Path = "bag") -> int | None:
    """The level-0 patch size a bag's attributes state, None when they state none.

    Order: ``patch_size_level0`` (TRIDENT), ``patch_size`` × downsample of ``patch_level``
    (CLAM; downsample from the ``downsample`` attribute when stored, else level 0).

    Raises:
        BagError: naming ``where``, for a size attribute that is not a positive finite
            number (``"abc"``, NaN, 0, negative).
    """
    if attrs.get("patch_size_level0") is not None:
        return max(1, round(_positive_attr(attrs, "patch_size_level0", where)))
    if attrs.get("patch_size") is not None:
        size = _positive_attr(attrs, "patch_size", where)
        # CLAM stores the level's downsample beside patch_size; without it assume level 0
        has_factor = attrs.get("downsample") is not None
        factor = _positive_attr(attrs, "downsample", where) if has_factor else 1.0
        return max(1, round(size * factor))
    return None


def level0_coords(
    coords: np.ndarray,
    attrs: dict[str, Any] | None,
    patch_size: float | None = None,
    where: str | Path = "bag",
) -> tuple[np.ndarray, float]:
    """``(N, 2)`` level-0 pixel coords and the patch size to draw them with.

    ``patch_size`` (given by the user) wins over the bag's; grid-unit coords
    (:func:`in_grid_units`) are multiplied by it. Without it the size is
    :func:`infer_patch_size`'s, which refuses grid-unit coords.
    """
    if patch_size is None:
        return coords, float(infer_patch_size(coords, attrs, where))
    if in_grid_units(coords):
        return np.rint(coords * float(patch_size)).astype(np.int64), float(patch_size)
    return coords, float(patch_size)


def infer_patch_size(
    coords: np.ndarray, attrs: dict[str, Any] | None = None, where: str | Path = "bag"
) -> int:
    """Level-0 patch size of a bag: from its attributes, else the most common grid step.

    Order: :func:`stated_patch_size`, else the most common positive difference between sorted
    unique x (and y) coordinates.

    Raises:
        BagError: naming ``where``, for a size attribute that is not a positive finite
            number (``"abc"``, NaN, 0, negative), or, without one, for coords in patch-grid
            units (:func:`in_grid_units`: drawn as pixels they would be 1-pixel patches).
    """
    stated = stated_patch_size(attrs or {}, where)
    if stated is not None:
        return stated
    if in_grid_units(coords):
        raise BagError(
            where,
            "coords are patch-grid indices (0, 1, 2, ...), not level-0 pixels, and the bag "
            "states no patch size: give the level-0 patch size to scale them",
        )
    steps: list[np.ndarray] = []
    for axis in (0, 1):
        values = np.unique(coords[:, axis])
        if values.size > 1:
            d = np.diff(values)
            steps.append(d[d > 0])
    all_steps = np.concatenate(steps) if steps else np.array([], dtype=np.int64)
    if all_steps.size == 0:
        return 256
    vals, counts = np.unique(all_steps, return_counts=True)
    return int(vals[np.argmax(counts)])
