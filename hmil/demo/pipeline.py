"""``hmil demo`` as a library call: synthetic cohort → tile → extract → split → train → evaluate.

Every step calls the same library functions as the corresponding ``hmil`` command, so the demo
exercises the real pipeline. Layout of the demo directory::

    DIR/                       the synthetic cohort (see :mod:`hmil.demo.cohort`)
    DIR/tiles/patches/<id>.h5  patch coordinates (``hmil tile``), tiles/masks/<id>.png QC
    DIR/features/<id>.h5       bags from the default encoder (``hmil extract``)
    DIR/splits/splits_<k>.csv  case-grouped, stratified folds (``hmil split``)
    DIR/run/                   the training run (``hmil train``; view it with ``hmil view``)

Each step reuses what a previous call finished (slides, patch files, bags, splits, finished
folds), so rerunning after an interruption only does the remaining work. A rerun with
different settings is refused by the step whose output would no longer match (cohort or run).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmil.config import Config
from hmil.data.labels import read_labels
from hmil.data.splits import list_split_files, make_splits, write_splits
from hmil.demo import defaults
from hmil.demo.cohort import Cohort, CohortConfig, build_cohort
from hmil.errors import ConfigError, SplitError
from hmil.hierarchy import Hierarchy
from hmil.slides.encoders import DEFAULT_ENCODER
from hmil.slides.extract import ExtractConfig, extract_slides
from hmil.slides.tile_batch import TileReport, tile_slides
from hmil.slides.tissue import TilingConfig
from hmil.train.api import train
from hmil.train.evaluate import evaluate_run_fold
from hmil.train.runs import summarise_run

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``hmil demo``.

    The demo trains with ``hmil train``'s default recipe and model (per-class heads, Xavier
    init, one bag per step, constant lr, SupCon on the true row; the reference widths), with
    two exceptions for a cohort of ~32 training bags per fold trained for minutes, not hours:
    a higher learning rate and 30 epochs. With 48 slides (8 per class) its held-out fine
    balanced accuracy and true-row attention AUROC clear 0.85 and 0.9 (``checkpoints/demo/
    MODEL_CARD.md``); with 36 they did not (measured, README "The demo").

    Attributes:
        out: demo directory.
        n_slides: synthetic slides (at least one per fine class).
        folds: cross-validation folds trained.
        epochs: epochs per fold.
        seed: seeds the cohort, the splits and training.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``; for extraction and training.
        workers: processes generating and tiling slides (default: up to 2).
        lr: learning rate (higher than the default 1e-4: the demo trains few epochs).
        patch_size: patch side in pixels at ``magnification``.
        magnification: tiling magnification (the synthetic slides are 20x at level 0).
        min_size, max_size: range of the slides' level-0 width and height.
    """

    out: Path = Path("hmil-demo")
    n_slides: int = defaults.N_SLIDES
    folds: int = defaults.FOLDS
    epochs: int = defaults.EPOCHS
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    lr: float = defaults.LR
    patch_size: int = 256
    magnification: float = 20.0
    min_size: int = 3072
    max_size: int = 4096

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError("folds", f"need at least 2 folds, got {self.folds}")
        if self.epochs < 1:
            raise ConfigError("epochs", f"must be at least 1, got {self.epochs}")

    def cohort_config(self) -> CohortConfig:
        return CohortConfig(
            n_slides=self.n_slides,
            seed=self.seed,
            min_size=self.min_size,
            max_size=self.max_size,
        )


@dataclass
class DemoResult:
    """What ``hmil demo`` produced.

    Attributes:
        cohort: the synthetic cohort.
        run_dir: the training run (``DIR/run``).
        summary: ``run/summary.json`` (mean ± std of test metrics over folds).
        seconds: wall time per step (a step that only reused earlier output is fast).
        n_patches: patches over all slides.
        skipped: ``(where, problem)`` for every item a step skipped.
    """

    cohort: Cohort
    run_dir: Path
    summary: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    n_patches: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tiles_dir(self) -> Path:
        return self.cohort.root / "tiles"

    @property
    def features_dir(self) -> Path:
        return self.cohort.root / "features"


def run_demo(config: DemoConfig, log: Log | None = None, progress: bool = True) -> DemoResult:
    """Build the synthetic cohort and run the real pipeline on it; see the module docstring."""
    say = log or _stderr
    root = Path(config.out)
    workers = config.workers or min(2, os.cpu_count() or 1)
    seconds: dict[str, float] = {}
    skipped: list[tuple[str, str]] = []

    def note(where: str, problem: str) -> None:
        skipped.append((where, problem))
        print(f"error: {where}: {problem}", file=sys.stderr, flush=True)

    start = time.monotonic()
    say(f"[1/6] synthetic cohort: {config.n_slides} slides → {root}")
    cohort = build_cohort(root, config.cohort_config(), workers=workers, progress=progress)
    seconds["cohort"] = _lap(start)

    start = time.monotonic()
    tiles = root / "tiles"
    tiling = TilingConfig(patch_size=config.patch_size, magnification=config.magnification)
    n_patches = _tile(cohort, tiles, tiling, workers, note, progress)
    seconds["tile"] = _lap(start)
    say(f"[2/6] tiled: {n_patches} tissue patches of {config.patch_size} px at "
        f"{config.magnification:g}x → {tiles / 'patches'}")  # fmt: skip

    start = time.monotonic()
    features = root / "features"
    tiled = [p for p in cohort.slide_paths if (tiles / "patches" / f"{p.stem}.h5").is_file()]
    report = extract_slides(
        tiled, tiles, features, DEFAULT_ENCODER, ExtractConfig(), device=config.device,
        on_error=note, progress=progress,
    )  # fmt: skip
    seconds["extract"] = _lap(start)
    say(f"[3/6] extracted {len(report.done)} bags with the '{DEFAULT_ENCODER}' encoder "
        f"({len(report.skipped)} reused) → {features}")  # fmt: skip

    start = time.monotonic()
    hierarchy = Hierarchy.from_file(cohort.hierarchy_yaml)
    splits = root / "splits"
    _split(cohort, hierarchy, splits, config)
    seconds["split"] = _lap(start)
    say(f"[4/6] {config.folds} case-grouped, stratified folds → {splits}")

    start = time.monotonic()
    run_dir = root / "run"
    say(f"[5/6] training HMIL: {config.folds} folds × {config.epochs} epochs → {run_dir}")
    train(
        _train_config(config, cohort, features, splits), run_dir, resume=True,
        verbose=progress, on_skip=note,
    )  # fmt: skip
    seconds["train"] = _lap(start)

    start = time.monotonic()
    for fold in sorted(list_split_files(splits)):
        evaluate_run_fold(run_dir, fold, device=config.device, on_skip=note)
    summary = summarise_run(run_dir)
    seconds["evaluate"] = _lap(start)
    say(f"[6/6] evaluated {summary.get('n_folds', 0)} folds from their checkpoints → "
        f"{run_dir / 'summary.json'}")  # fmt: skip
    return DemoResult(
        cohort=cohort, run_dir=run_dir, summary=summary, seconds=seconds,
        n_patches=n_patches, skipped=skipped,
    )  # fmt: skip


def _tile(
    cohort: Cohort,
    tiles: Path,
    config: TilingConfig,
    workers: int,
    note: Callable[[str, str], None],
    progress: bool,
) -> int:
    """Tile slides without a patch file yet, in ``workers`` processes; total patch count."""
    todo = [p for p in cohort.slide_paths if not (tiles / "patches" / f"{p.stem}.h5").is_file()]
    shards = [todo[i::workers] for i in range(workers) if todo[i::workers]]
    reports: list[TileReport] = []
    if len(shards) > 1:
        with ProcessPoolExecutor(max_workers=len(shards)) as pool:
            jobs = [
                pool.submit(tile_slides, shard, tiles, config, progress=False) for shard in shards
            ]
            reports = [job.result() for job in jobs]
    elif shards:
        reports = [tile_slides(shards[0], tiles, config, progress=progress)]
    for report in reports:
        for where, problem in report.failures:
            note(where, problem)
    return _count_patches(tiles / "patches")


def _count_patches(patches_dir: Path) -> int:
    import h5py

    total = 0
    for path in sorted(patches_dir.glob("*.h5")):
        with h5py.File(path, "r") as handle:
            total += int(handle["coords"].shape[0])
    return total


def _split(cohort: Cohort, hierarchy: Hierarchy, splits: Path, config: DemoConfig) -> None:
    """Write k-fold splits unless the same number of folds is already there (deterministic)."""
    existing = list_split_files(splits) if splits.is_dir() else {}
    if sorted(existing) == list(range(config.folds)):
        return
    if existing:
        raise SplitError(
            splits,
            f"holds {len(existing)} folds, not {config.folds}; use another folder",
        )
    labels = read_labels(cohort.labels_csv, hierarchy)
    write_splits(make_splits(labels, k=config.folds, seed=config.seed, val_frac=0.15), splits)


def _train_config(config: DemoConfig, cohort: Cohort, features: Path, splits: Path) -> Config:
    return Config().override(
        {
            "data.labels": str(cohort.labels_csv),
            "data.features": str(features),
            "data.splits": str(splits),
            "data.hierarchy": str(cohort.hierarchy_yaml),
            "data.folds": "all",
            "data.encoder": DEFAULT_ENCODER,
            "train.epochs": config.epochs,
            "train.lr": config.lr,
            "train.seed": config.seed,
            "train.device": config.device,
            # one torch thread: the demo's bags are small (1 thread is as fast as 2 here), and
            # the shipped checkpoint then does not depend on the machine's core count (CPU
            # kernels split reductions by thread count, which changes the last bits and, over
            # a few hundred steps on ~32 bags, the trained model)
            "launcher.threads": 1,
        }
    )


def _lap(start: float) -> float:
    return round(time.monotonic() - start, 1)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
