"""The synthetic demo cohort on disk: slides, ground truth, labels, hierarchy, manifest.

Layout of a cohort directory (everything synthetic, and said so in every file)::

    README_SYNTHETIC.txt      what this is and is not
    cohort.json               manifest: generator config, per-slide facts and file paths
    hierarchy.yaml            the label tree (contract format)
    labels.csv                slide_id, case_id, label (fine)
    slides/<slide_id>.tiff    pyramidal JPEG TIFF, 0.5 µm/px, OpenSlide-readable
    masks/<slide_id>_tissue.png, _lesion.png, _lesion.geojson   ground truth (downsample 16)

Building is resumable: a slide whose TIFF already exists is not rendered again (its TIFF is
written last), so rerunning after an interruption only renders what is missing. The plan (which
slide gets which label, size and seed) depends only on the :class:`CohortConfig`, and a rerun
with a different config on the same directory is refused rather than mixing two cohorts.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from hmil.demo.classes import DEMO_CLASSES, HIERARCHY_NAME, demo_class, demo_hierarchy
from hmil.demo.synthetic_slides import (
    MASK_DOWNSAMPLE,
    SYNTHETIC_NOTE,
    SlideSpec,
    TextureBank,
    build_texture_bank,
    render_slide,
    slide_files,
    write_slide,
)
from hmil.errors import ConfigError, RunError
from hmil.io import write_json_atomic, write_text_atomic
from hmil.progress import Progress

SLIDE_PREFIX = "synth-"
MANIFEST = "cohort.json"


@dataclass(frozen=True)
class CohortConfig:
    """What cohort to build; equal configs give bit-identical cohorts.

    Attributes:
        n_slides: number of slides, spread evenly over the fine classes.
        seed: seeds labels, layouts, textures and stains.
        min_size, max_size: level-0 width and height are drawn from this range (multiples of
            256 px).
        lesion_fraction: range of the share of tissue a lesion covers.
        pair_fraction: share of cases that contribute two slides (same label), so that
            case-grouped splitting has something to group.
        mpp: microns per level-0 pixel.
        magnification: objective power in the slide metadata.
    """

    n_slides: int = 36
    seed: int = 0
    min_size: int = 3072
    max_size: int = 4096
    lesion_fraction: tuple[float, float] = (0.05, 0.14)
    pair_fraction: float = 0.25
    mpp: float = 0.5
    magnification: float = 20.0

    def __post_init__(self) -> None:
        n_classes = len(DEMO_CLASSES)
        if self.n_slides < n_classes:
            raise ConfigError("n_slides", f"need at least {n_classes} slides (one per class)")
        if not 512 <= self.min_size <= self.max_size:
            raise ConfigError("min_size", "expected 512 <= min_size <= max_size")
        low, high = self.lesion_fraction
        if not 0 < low <= high <= 0.5:
            raise ConfigError("lesion_fraction", "expected 0 < low <= high <= 0.5")


@dataclass(frozen=True)
class PlannedSlide:
    """One slide of the plan: its spec and the case (patient) it belongs to."""

    spec: SlideSpec
    case_id: str


@dataclass(frozen=True)
class CohortSlide:
    """One finished slide as recorded in ``cohort.json`` (paths relative to the cohort).

    Attributes:
        lesion_share: lesion area / tissue area measured on the saved masks.
    """

    slide_id: str
    case_id: str
    label: str
    coarse: str
    width: int
    height: int
    mpp: float
    lesion_share: float
    slide: str
    tissue_mask: str
    lesion_mask: str
    lesion_geojson: str


@dataclass(frozen=True)
class Cohort:
    """A built cohort: where it is and what is in it."""

    root: Path
    config: CohortConfig
    slides: tuple[CohortSlide, ...]

    @property
    def labels_csv(self) -> Path:
        return self.root / "labels.csv"

    @property
    def hierarchy_yaml(self) -> Path:
        return self.root / "hierarchy.yaml"

    @property
    def slide_paths(self) -> list[Path]:
        return [self.root / s.slide for s in self.slides]


def plan_cohort(config: CohortConfig) -> list[PlannedSlide]:
    """Assign labels, cases, sizes and seeds to ``config.n_slides`` slides, deterministically.

    Classes get ``n_slides // K`` slides each (the first ``n_slides % K`` one more); each class's
    slides are cut into cases of one or two slides, and cases are shuffled before ids are
    given, so ids say nothing about labels.
    """
    rng = np.random.default_rng([config.seed, 1])
    n_classes = len(DEMO_CLASSES)
    cases: list[tuple[str, int]] = []
    for index, cls in enumerate(DEMO_CLASSES):
        remaining = config.n_slides // n_classes + (1 if index < config.n_slides % n_classes else 0)
        while remaining > 0:
            size = 2 if remaining >= 2 and rng.random() < config.pair_fraction else 1
            cases.append((cls.name, size))
            remaining -= size
    order = rng.permutation(len(cases))
    steps = (config.max_size - config.min_size) // 256 + 1
    plan: list[PlannedSlide] = []
    for case_number, case_index in enumerate(order):
        label, size = cases[int(case_index)]
        for _ in range(size):
            index = len(plan)
            width, height = (config.min_size + 256 * rng.integers(steps, size=2)).tolist()
            has_lesion = demo_class(label).look is not None
            fraction = float(rng.uniform(*config.lesion_fraction)) if has_lesion else 0.0
            seed = int(np.random.SeedSequence([config.seed, index]).generate_state(1)[0])
            spec = SlideSpec(
                slide_id=f"{SLIDE_PREFIX}{index:03d}",
                label=label,
                seed=seed,
                width=int(width),
                height=int(height),
                lesion_fraction=fraction,
                mpp=config.mpp,
                magnification=config.magnification,
            )
            plan.append(PlannedSlide(spec=spec, case_id=f"{SLIDE_PREFIX}case-{case_number:03d}"))
    return plan


def build_cohort(
    out_dir: str | Path,
    config: CohortConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Cohort:
    """Render the cohort into ``out_dir`` (skipping slides already there) and write its tables.

    Args:
        out_dir: cohort directory (created if missing).
        config: what to build; the default is the demo cohort.
        workers: processes rendering slides in parallel (default: up to 2, one per CPU core).
        progress: print a progress line/bar per slide.

    Raises:
        HMILError: if ``out_dir`` holds a cohort built with a different config.
    """
    config = config or CohortConfig()
    root = Path(out_dir)
    _check_same_config(root, config)
    plan = plan_cohort(config)
    todo = [p.spec for p in plan if not (root / slide_files(p.spec.slide_id).slide).is_file()]
    workers = workers or min(2, os.cpu_count() or 1)
    meter = Progress(len(plan), "demo slides", enabled=progress, initial=len(plan) - len(todo))
    with meter:
        if todo:
            # built here first so that forked workers inherit it instead of each building one
            _texture_bank(config.seed)
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
                jobs = [pool.submit(_render_and_write, spec, config.seed, root) for spec in todo]
                for job in jobs:
                    job.result()
                    meter.update(1)
        else:
            for spec in todo:
                _render_and_write(spec, config.seed, root)
                meter.update(1)
    slides = tuple(_record(root, p) for p in plan)
    cohort = Cohort(root=root, config=config, slides=slides)
    _write_tables(cohort)
    return cohort


def load_cohort(root: str | Path) -> Cohort:
    """Read a cohort's ``cohort.json`` (written by :func:`build_cohort`)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise RunError(path, "not a demo cohort (cohort.json missing)")
    data = json.loads(path.read_text(encoding="utf-8"))
    config = _config_from_dict(data["config"])
    slides = tuple(CohortSlide(**entry) for entry in data["slides"])
    return Cohort(root=Path(root), config=config, slides=slides)


# ---- internals --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _texture_bank(seed: int) -> TextureBank:
    """The cohort's textures, built once per process (forked workers inherit the parent's)."""
    return build_texture_bank(seed, tuple(cls.name for cls in DEMO_CLASSES))


def _render_and_write(spec: SlideSpec, cohort_seed: int, root: Path) -> None:
    slide = render_slide(spec, _texture_bank(cohort_seed))
    write_slide(slide, root)


def _record(root: Path, planned: PlannedSlide) -> CohortSlide:
    spec = planned.spec
    files = slide_files(spec.slide_id)
    tissue = np.asarray(Image.open(root / files.tissue_mask)) > 0
    lesion = np.asarray(Image.open(root / files.lesion_mask)) > 0
    hierarchy = demo_hierarchy()
    return CohortSlide(
        slide_id=spec.slide_id,
        case_id=planned.case_id,
        label=spec.label,
        coarse=hierarchy.parent_of(spec.label),
        width=spec.width,
        height=spec.height,
        mpp=spec.mpp,
        lesion_share=round(float(lesion.sum() / max(int(tissue.sum()), 1)), 4),
        slide=files.slide,
        tissue_mask=files.tissue_mask,
        lesion_mask=files.lesion_mask,
        lesion_geojson=files.lesion_geojson,
    )


def _check_same_config(root: Path, config: CohortConfig) -> None:
    path = root / MANIFEST
    if not path.is_file():
        return
    try:
        existing = _config_from_dict(json.loads(path.read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RunError(path, "unreadable cohort manifest; remove the directory") from None
    if existing != config:
        ours, theirs = asdict(config), asdict(existing)
        changed = [key for key, value in ours.items() if theirs.get(key) != value]
        raise RunError(
            root,
            f"holds a demo cohort built with different settings ({', '.join(changed)}); "
            "use another folder or delete this one",
        )


def _config_from_dict(data: dict[str, Any]) -> CohortConfig:
    data = dict(data)
    data["lesion_fraction"] = tuple(data["lesion_fraction"])
    return CohortConfig(**data)


def _write_tables(cohort: Cohort) -> None:
    root = cohort.root
    rows = ["slide_id,case_id,label"]
    rows += [f"{s.slide_id},{s.case_id},{s.label}" for s in cohort.slides]
    write_text_atomic(root / "labels.csv", "\n".join(rows) + "\n")
    hierarchy = demo_hierarchy()
    header = (
        f"# SYNTHETIC demo hierarchy '{HIERARCHY_NAME}' (hmil demo); classes are invented\n"
        "# appearances, not pathology.\n"
    )
    write_text_atomic(
        root / "hierarchy.yaml", header + yaml.safe_dump(hierarchy.to_dict(), sort_keys=False)
    )
    manifest = {
        "synthetic": True,
        "note": f"{SYNTHETIC_NOTE}s: generated by hmil demo, not real tissue",
        "generator": "hmil.demo",
        "config": asdict(cohort.config),
        "hierarchy": hierarchy.to_dict(),
        "mask_downsample": MASK_DOWNSAMPLE,
        "classes": {c.name: {"coarse": c.coarse, "appearance": c.summary} for c in DEMO_CLASSES},
        "slides": [asdict(s) for s in cohort.slides],
    }
    write_json_atomic(root / MANIFEST, manifest)
    write_text_atomic(root / "README_SYNTHETIC.txt", _readme(cohort))


def _readme(cohort: Cohort) -> str:
    lines = [
        "SYNTHETIC DATA - NOT REAL TISSUE, NOT FOR ANY MEDICAL USE",
        "",
        "This folder was generated by `hmil demo` (HMIL Studio) to show the pipeline end to end",
        "without downloading real slides. Every slide is synthetic: its id starts with",
        f"'{SLIDE_PREFIX}', its TIFF ImageDescription says '{SYNTHETIC_NOTE}', and OpenSlide",
        "reports the property aperio.Synthetic. The Aperio-style description only exists so that",
        "OpenSlide reports the pixel size (openslide.mpp-x) and objective power; no Aperio",
        "scanner or software made these files.",
        "",
        "How the slides are made: tissue fragments on white glass, filled with procedural",
        "collagen stroma, fat, and glands cut from scikit-image's bundled immunohistochemistry",
        "sample (real colon tissue, recoloured to H&E by colour deconvolution). Each slide except",
        "the 'normal' ones has one planted lesion cluster covering "
        f"{cohort.config.lesion_fraction[0]:.0%}-{cohort.config.lesion_fraction[1]:.0%}",
        "of the tissue. The lesion's appearance defines the slide's fine label:",
        "",
    ]
    for cls in DEMO_CLASSES:
        lines.append(f"  {cls.coarse:<10} {cls.name:<16} {cls.summary}")
    lines += [
        "",
        "The class names only hint at what the appearance imitates; this is not pathology.",
        "",
        "Files:",
        "  labels.csv                 slide_id, case_id, label (fine class)",
        "  hierarchy.yaml             coarse classes over fine classes",
        "  cohort.json                generator settings, per-slide size and lesion share",
        "  slides/<id>.tiff           pyramidal JPEG TIFF, level 0 at "
        f"{cohort.config.mpp:g} um/px ({cohort.config.magnification:g}x)",
        f"  masks/<id>_tissue.png      tissue mask, 1 pixel = {MASK_DOWNSAMPLE}x{MASK_DOWNSAMPLE}"
        " level-0 pixels",
        "  masks/<id>_lesion.png      ground-truth lesion mask, same grid",
        "  masks/<id>_lesion.geojson  lesion outlines in level-0 pixels (QuPath annotations)",
        "",
        f"Settings: {json.dumps(asdict(cohort.config))}",
        "",
    ]
    return "\n".join(lines)


def lesion_key_mask(
    root: str | Path, slide_id: str, coords: np.ndarray, attrs: dict[str, Any] | None = None
) -> np.ndarray:
    """``(N,)`` bool: which patches of a demo slide's bag lie in its planted lesion.

    A patch counts as a key instance when its centre falls inside the lesion outline
    (``masks/<slide_id>_lesion.geojson``, its polygons as one region): the same
    :func:`hmil.regions.patches_inside` that ``hmil regions`` and the viewer's regions use, so
    the model card's localisation and a region's AUROC are one number. ``coords`` are the
    bag's level-0 top-left corners, ``attrs`` its patch-size attributes.
    """
    from hmil.data.bags import infer_patch_size
    from hmil.regions import merge_by_class, patches_inside, read_annotations

    path = Path(root) / "masks" / f"{slide_id}_lesion.geojson"
    size = infer_patch_size(coords, attrs)
    inside = np.zeros(len(coords), dtype=bool)
    for region in merge_by_class(read_annotations(path, allow_empty=True)):
        inside |= patches_inside(region, coords, size)
    return inside
