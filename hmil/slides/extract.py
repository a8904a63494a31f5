"""Feature extraction: slide + patch coordinates + encoder → one bag per slide.

The per-slide work (:func:`extract_slide`) streams: reader threads decode batches of patches
(at most ``prefetch_batches`` batches in flight), the calling thread encodes each batch and
writes its rows straight into the output ``.h5``, so memory stays bounded by a few batches
whatever the number of patches. Outputs are written through :func:`hmil.io.atomic_path`, so a
bag either exists complete or not at all; :func:`extract_slides` skips slides whose bags exist,
which makes an interrupted run resumable and lets a launcher hand each worker a shard of the
slide list.

Bag layout (the contract's, as :func:`hmil.data.bags.save_bag` writes it): dataset ``features``
``(N, D)`` float32 with the encoder's provenance as attributes (``encoder``: TRIDENT's name,
``dim``, ``encoder_weights``, ``encoder_weights_sha256``, ``encoder_input_size``,
``encoder_precision``, ...); dataset ``coords`` ``(N, 2)`` int64 with the patch file's attributes
(``patch_size``, ``patch_level``, ``patch_size_level0``, ...) and its slide's fields (``name``,
``level0_width``, ``level0_height``, ``mpp``: from the patch file, else from the slide read).
``.pt``: CLAM's ``pt_files`` layout, a plain ``(N, D)`` float32 tensor (CLAM's loader takes
nothing else); its coords and provenance are those of its ``.h5``.

Folder layout (:func:`bag_paths`): one format writes ``OUT/<slide_id>.h5`` (or ``.pt``); both
write CLAM's feature folder, ``OUT/h5_files/<slide_id>.h5`` and ``OUT/pt_files/<slide_id>.pt``,
the folder CLAM's ``extract_features_fp.py`` writes and its ``Generic_MIL_Dataset`` reads as
``data_dir``. hmil reads either (and the older side-by-side ``<id>.h5`` + ``<id>.pt``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from PIL import Image

from hmil.data.bags import save_feature_tensor
from hmil.errors import BagError, HMILError, SlideError, TilingError
from hmil.io import atomic_path
from hmil.params import Interval, Options, Subset, param, validate
from hmil.progress import Progress
from hmil.slides.encoders import PRECISIONS, PatchEncoder, create_encoder
from hmil.slides.match import slide_attrs
from hmil.slides.patch_files import PatchFile, load_patches
from hmil.slides.reader import Slide, open_slide, slide_id_from_path, trident_best_level

BAG_FORMATS = ("h5", "pt")
#: CLAM's feature folder: the subfolder of each format when both are written
CLAM_FOLDERS = {"h5": "h5_files", "pt": "pt_files"}


def default_readers() -> int:
    """Reader threads when none are asked for: ``min(4, CPUs)``."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract; each field's help and accepted values are declared with it
    (:func:`hmil.params.param`, ``hmil extract --help`` shows them), checked on construction
    (:class:`~hmil.errors.ConfigError` naming the field, e.g. ``batch_size``)."""

    batch_size: int = param(64, "patches encoded at once", Interval(int, 1, None, "left"))
    formats: tuple[str, ...] = param(
        ("h5",), "bag files to write per slide: h5, pt or both", Subset(BAG_FORMATS, empty=False)
    )
    num_readers: int = param(
        help="threads decoding patches (OpenSlide releases the GIL while decoding); default "
        "(or None) min(4, CPUs): on a 16-core machine a J2K slide extracted 1.75× faster with "
        "4 readers than with 1",
        rule=Interval(int, 1, None, "left"),
        factory=default_readers,
    )
    prefetch_batches: int = param(
        4, "decoded batches allowed in flight (bounds memory)", Interval(int, 1, None, "left")
    )
    torch_threads: int | None = param(
        None,
        "intra-op threads for a CPU encoder while extracting; None = the CPUs left over by the "
        "readers (at least 1). Restored afterwards",
        Interval(int, 1, None, "left"),
    )
    overwrite: bool = param(False, "re-extract slides whose bags already exist")
    precision: str = param(
        "fp32",
        "autocast of a network encoder: fp32, bf16 (CPU or GPU), fp16 (GPU)",
        Options(tuple(PRECISIONS)),
    )

    def __post_init__(self) -> None:
        if self.num_readers is None:  # e.g. an unset readers option
            object.__setattr__(self, "num_readers", default_readers())
        validate(self)


@dataclass(frozen=True)
class ReadPlan:
    """How to read the patches of one patch file from its slide.

    Attributes:
        level: slide level to read.
        read_size: patch side at that level (pixels).
        tile_size: patch side at the tiling's target magnification (pixels); a patch read at
            another size is first resized to it (TRIDENT's reader), then the encoder's
            :meth:`~hmil.slides.encoders.PatchEncoder.prepare` makes its input.
        patch_size_level0: patch side at level 0 (pixels).
    """

    level: int
    read_size: int
    tile_size: int
    patch_size_level0: int


@dataclass
class SlideOutcome:
    """Result of one slide.

    Attributes:
        slide_id: the slide.
        status: ``done``, ``skipped`` (bags already there) or ``failed``.
        n_patches: patches encoded (0 unless done).
        seconds: wall time spent on the slide.
        paths: bag files of the slide.
        error: the problem, when failed.
    """

    slide_id: str
    status: Literal["done", "skipped", "failed"]
    n_patches: int = 0
    seconds: float = 0.0
    paths: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def patches_per_s(self) -> float:
        return self.n_patches / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ExtractReport:
    """Outcome of :func:`extract_slides`, one :class:`SlideOutcome` per slide."""

    outcomes: list[SlideOutcome] = field(default_factory=list)

    def _with(self, status: str) -> list[SlideOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[SlideOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[SlideOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SlideOutcome]:
        return self._with("failed")


def resolve_patches_dir(path: str | Path) -> Path:
    """``hmil tile``'s output folder or its ``patches/`` subfolder → the folder of ``.h5`` files."""
    root = Path(path)
    if (root / "patches").is_dir():
        return root / "patches"
    if not root.is_dir():
        raise TilingError(root, "patches folder not found (the output of `hmil tile`)")
    return root


def find_patch_file(folder: Path, slide_id: str) -> Path:
    """``<slide_id>.h5`` (hmil's and CLAM's name) or else ``<slide_id>_patches.h5``
    (TRIDENT's) in ``folder``; the first name when neither exists (its load reports it)."""
    clam, trident = folder / f"{slide_id}.h5", folder / f"{slide_id}_patches.h5"
    return trident if trident.is_file() and not clam.is_file() else clam


def bag_paths(out_dir: str | Path, slide_id: str, formats: Sequence[str]) -> list[Path]:
    """The bag files of ``slide_id`` in ``out_dir`` for ``formats``.

    One format: ``out_dir/<slide_id>.<format>``. Both: CLAM's layout,
    ``out_dir/h5_files/<slide_id>.h5`` and ``out_dir/pt_files/<slide_id>.pt``, so CLAM reads
    ``out_dir`` as its ``data_dir`` (``pt_files`` by default, ``h5_files`` with coords).
    """
    root = Path(out_dir)
    if len(set(formats)) > 1:
        return [root / CLAM_FOLDERS[fmt] / f"{slide_id}.{fmt}" for fmt in formats]
    return [root / f"{slide_id}.{fmt}" for fmt in formats]


def plan_reads(slide: Slide, patches: PatchFile, out_size: int | None = None) -> ReadPlan:
    """Reading geometry from a patch file's attributes, as its maker's own reader would read it.

    ``out_size`` replaces the plan's ``tile_size`` (for callers that read patches without an
    encoder straight at some size, e.g. an encoder's input size).

    * ``patch_level`` stored (CLAM's ``patches/<id>.h5``, and hmil's): ``patch_size`` pixels are
      read at that level (CLAM's ``Whole_Slide_Bag_FP``). hmil's files also store
      ``patch_size_level0`` (which wins, so older hmil files whose ``patch_size`` was the
      target size still read right) and ``target_patch_size``, the side the patch is then
      resized to.
    * otherwise TRIDENT's ``<id>_patches.h5``: ``patch_size`` is at ``target_magnification``;
      the level is the one TRIDENT's ``WSIPatcher`` picks for the downsample
      ``level0_magnification / target_magnification`` (an exact level within 0.1, else the
      finest level below), and the patch is resized back to ``patch_size``.

    Raises:
        HMILError: the patch file names a level the slide lacks, was made for a slide of other
            dimensions, or has no patch size.
    """
    attrs = patches.attrs
    w0, h0 = attrs.get("level0_width"), attrs.get("level0_height")
    if w0 is not None and h0 is not None and (int(w0), int(h0)) != slide.dimensions:
        raise TilingError(
            patches.path,
            f"made for a {int(w0)}x{int(h0)} slide, but {slide.path.name} is "
            f"{slide.dimensions[0]}x{slide.dimensions[1]} (wrong slide or patch folder?)",
        )
    size = attrs.get("patch_size")
    size0_attr = attrs.get("patch_size_level0")
    if not size and not size0_attr:
        raise TilingError(patches.path, "no patch_size or patch_size_level0 attribute on coords")
    if "patch_level" in attrs:
        level = int(attrs["patch_level"])
        if not 0 <= level < slide.level_count:
            raise TilingError(
                patches.path, f"patch_level {level} does not exist in {slide.path.name}"
            )
        level_ds = slide.level_downsamples[level]
        size0 = int(size0_attr) if size0_attr else round(float(size or 0) * level_ds)
        read_size = max(1, round(size0 / level_ds))
        tile = out_size or int(attrs.get("target_patch_size") or size or read_size)
        return ReadPlan(level=level, read_size=read_size, tile_size=tile, patch_size_level0=size0)
    tile = int(size) if size else int(size0_attr or 0)
    src, dst = attrs.get("level0_magnification"), attrs.get("target_magnification")
    if src and dst:
        downsample = (10.0 / float(dst)) / (10.0 / float(src))
        size0 = round(tile * downsample)
    else:
        size0 = int(size0_attr) if size0_attr else tile
        downsample = size0 / tile
    level = trident_best_level(slide, downsample)
    read_size = max(1, round(size0 / slide.level_downsamples[level]))
    return ReadPlan(
        level=level, read_size=read_size, tile_size=out_size or tile, patch_size_level0=size0
    )


def read_patch(
    slide: Slide, xy: np.ndarray, plan: ReadPlan, encoder: PatchEncoder | None = None
) -> np.ndarray:
    """One patch as the encoder takes it (:meth:`PatchEncoder.prepare`), or as read at
    ``read_size`` resized to ``tile_size`` (area-averaged) when no encoder is given.

    Network encoders read with the alpha channel dropped (``composite=False``), as CLAM and
    TRIDENT do (``read_region(...).convert("RGB")``: outside the scan is black for them too).
    """
    composite = encoder is None or not encoder.neural
    size = (plan.read_size, plan.read_size)
    pixels = slide.read_region((int(xy[0]), int(xy[1])), plan.level, size, composite=composite)
    if encoder is not None:
        return encoder.prepare(pixels, plan.tile_size)
    if plan.read_size == plan.tile_size:
        return pixels
    down = plan.tile_size < plan.read_size
    resample = Image.Resampling.BOX if down else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(pixels).resize((plan.tile_size,) * 2, resample))


def iter_patch_batches(
    slide: Slide,
    coords: np.ndarray,
    plan: ReadPlan,
    batch_size: int,
    num_readers: int = 2,
    prefetch_batches: int = 4,
    encoder: PatchEncoder | None = None,
) -> Generator[np.ndarray, None, None]:
    """Decoded patches in ``coords`` order, batch by batch, read ahead by a thread pool.

    The readers also do the encoder's uint8 preprocessing (:func:`read_patch`), so decoding
    and resizing overlap the encoder's work on the previous batch.

    Yields:
        ``(B, S, S, 3)`` uint8 arrays (``S``: the encoder's input size, or ``plan.tile_size``
        without an encoder; the last batch may be smaller). At most ``prefetch_batches``
        batches are decoded ahead of the consumer.
    """
    n = coords.shape[0]
    starts = range(0, n, batch_size)

    def read_batch(start: int) -> np.ndarray:
        stop = min(n, start + batch_size)
        return np.stack([read_patch(slide, coords[i], plan, encoder) for i in range(start, stop)])

    with ThreadPoolExecutor(max_workers=num_readers, thread_name_prefix="hmil-read") as pool:
        pending: deque[Future[np.ndarray]] = deque()
        try:
            for start in starts:
                pending.append(pool.submit(read_batch, start))
                if len(pending) >= prefetch_batches:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def extract_slide(
    slide_path: str | Path,
    patch_file: str | Path,
    out_dir: str | Path,
    encoder: PatchEncoder,
    config: ExtractConfig | None = None,
    progress: bool = True,
) -> SlideOutcome:
    """Encode every patch of one slide and write its bag(s).

    Args:
        slide_path: the slide file.
        patch_file: its ``patches/<slide_id>.h5``.
        out_dir: the bag folder (:func:`bag_paths`: ``<slide_id>.h5`` / ``.pt``, or CLAM's
            ``h5_files/`` and ``pt_files/`` when both are written).
        encoder: a built encoder (see :func:`hmil.slides.encoders.create_encoder`).
        config: batch size, formats, reader threads.
        progress: show a per-patch progress bar.

    Raises:
        HMILError: unreadable slide or patch file, 0 patches, mismatched patch file.
    """
    config = config or ExtractConfig()
    started = time.perf_counter()
    patches = load_patches(patch_file)
    n = patches.coords.shape[0]
    if n == 0:
        raise TilingError(patches.path, "0 patches (nothing to extract)")
    targets = bag_paths(out_dir, slide_id_from_path(slide_path), config.formats)
    with open_slide(slide_path) as slide:
        plan = plan_reads(slide, patches)
        feature_attrs: dict[str, Any] = {
            **encoder.provenance(),
            "encoder_precision": config.precision,
            "name": slide.slide_id,
        }
        # the patch file's own slide fields win; CLAM's and TRIDENT's files lack some, and
        # this is the slide the features are read from
        coords_attrs = {**slide_attrs(slide), **patches.attrs}
        coords_attrs["patch_size_level0"] = plan.patch_size_level0
        bar = Progress(n, f"extract {slide.slide_id}", enabled=progress)
        h5_target = next((t for t in targets if t.suffix == ".h5"), None)
        features: np.ndarray | None = None
        batches = iter_patch_batches(
            slide,
            patches.coords,
            plan,
            config.batch_size,
            num_readers=config.num_readers,
            prefetch_batches=config.prefetch_batches,
            encoder=encoder,
        )
        threads = _torch_threads(_encoder_threads(encoder, config))
        with contextlib.closing(batches), threads, encoder.autocast(config.precision):
            encoded = _encode_batches(batches, encoder, bar)
            if h5_target is not None:
                _write_h5_streamed(
                    h5_target, encoded, n, encoder.dim, patches.coords, feature_attrs, coords_attrs
                )
            else:
                features = np.concatenate(list(encoded), axis=0)
        bar.close()
    for target in targets:
        if target.suffix == ".pt":
            if features is None and h5_target is not None:
                with h5py.File(h5_target, "r") as f:
                    features = np.asarray(f["features"][()])
            assert features is not None
            save_feature_tensor(target, features)
    return SlideOutcome(
        slide_id=slide_id_from_path(slide_path),
        status="done",
        n_patches=n,
        seconds=time.perf_counter() - started,
        paths=targets,
    )


def _encode_batches(
    batches: Iterable[np.ndarray], encoder: PatchEncoder, bar: Progress
) -> Iterator[np.ndarray]:
    """``(B, S, S, 3)`` uint8 batches → ``(B, D)`` float32 feature batches (on the CPU)."""
    pin = encoder.device.type == "cuda"
    for batch in batches:
        x = torch.from_numpy(batch)
        if pin:
            x = x.pin_memory()
        feats = encoder(x).float().cpu().numpy()
        if not np.isfinite(feats).all():
            raise BagError(encoder.label, "encoder produced non-finite features (NaN/Inf)")
        bar.update(len(batch))
        yield feats


def _write_h5_streamed(
    path: Path,
    feature_batches: Iterable[np.ndarray],
    n: int,
    dim: int,
    coords: np.ndarray,
    feature_attrs: dict[str, Any],
    coords_attrs: dict[str, Any],
) -> None:
    """Write a bag ``.h5`` (save_bag's layout) filling ``features`` batch by batch."""
    # refuse a too-full disk up front: HDF5 failing mid-write can crash the interpreter at exit
    size = n * dim * 4 + coords.size * 8
    with atomic_path(path, expected_bytes=size) as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset(
            "features", shape=(n, dim), dtype=np.float32, chunks=(min(n, 1024), dim)
        )
        for key, value in feature_attrs.items():
            dset.attrs[key] = value
        row = 0
        for feats in feature_batches:
            if feats.shape[1] != dim:
                raise BagError(path, f"encoder returned dimension {feats.shape[1]}, not {dim}")
            dset[row : row + feats.shape[0]] = feats
            row += feats.shape[0]
        if row != n:
            raise BagError(path, f"encoded {row} patches, expected {n}")
        cset = f.create_dataset("coords", data=coords.astype(np.int64))
        for key, value in coords_attrs.items():
            cset.attrs[key] = value


def _encoder_threads(encoder: PatchEncoder, config: ExtractConfig) -> int | None:
    if encoder.device.type != "cpu":
        return None
    if config.torch_threads is not None:
        return config.torch_threads
    return max(1, (os.cpu_count() or 1) - config.num_readers)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (readers need the other cores)."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def extract_slides(
    slides: Iterable[str | Path],
    patches_dir: str | Path,
    out_dir: str | Path,
    encoder: PatchEncoder | str,
    config: ExtractConfig | None = None,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    strict: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> ExtractReport:
    """Extract bags for many slides; the unit a launcher runs per shard.

    Args:
        slides: slide files; each needs ``<patches_dir>/<slide_id>.h5`` (or TRIDENT's
            ``<slide_id>_patches.h5``).
        patches_dir: ``hmil tile``'s output folder or its ``patches/`` subfolder.
        out_dir: bag folder.
        encoder: a built encoder, or a registry name (built with ``weights`` and ``device``).
        config: see :class:`ExtractConfig`.
        strict: raise the first problem as :class:`HMILError` instead of skipping the slide.
        on_error: called with ``(where, problem)`` for each skipped slide.
        log: called with one line per finished or skipped slide.
        progress: show progress bars.

    Returns:
        An :class:`ExtractReport`; slides whose bags already exist are ``skipped``.
    """
    config = config or ExtractConfig()
    folder = resolve_patches_dir(patches_dir)
    enc = encoder if isinstance(encoder, PatchEncoder) else create_encoder(encoder, weights, device)
    enc.check_precision(config.precision)
    paths = [Path(s) for s in slides]
    report = ExtractReport()
    seen: dict[str, Path] = {}
    overall = Progress(len(paths), "slides", enabled=progress and len(paths) > 1)
    for path in paths:
        sid = slide_id_from_path(path)
        try:
            if sid in seen:
                raise SlideError(path, f"duplicate slide id '{sid}' (also {seen[sid]})")
            seen[sid] = path
            targets = bag_paths(out_dir, sid, config.formats)
            if not config.overwrite and all(t.is_file() for t in targets):
                report.outcomes.append(SlideOutcome(sid, "skipped", paths=targets))
                if log is not None:
                    log(f"{sid}: bag exists, skipped ({', '.join(t.name for t in targets)})")
            else:
                outcome = extract_slide(path, find_patch_file(folder, sid), out_dir, enc, config,
                                        progress)  # fmt: skip
                report.outcomes.append(outcome)
                if log is not None:
                    log(
                        f"{sid}: {outcome.n_patches} patches → {enc.label} D={enc.dim} in "
                        f"{outcome.seconds:.1f} s ({outcome.patches_per_s:.0f} patches/s)"
                    )
        except HMILError as exc:
            if strict:
                raise
            report.outcomes.append(SlideOutcome(sid, "failed", error=exc.problem))
            if on_error is not None:
                on_error(exc.where, exc.problem)
        overall.update(1)
    overall.close()
    return report
