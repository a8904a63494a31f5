"""``hmil tile`` on a list of slides: per slide ``patches/<id>.h5`` (+ ``<id>_patches.h5``),
the QC image ``masks/<id>.png`` and the tissue ``contours_geojson/<id>.geojson``; reruns skip
finished slides and re-tile those whose contours were edited.

``patches/<id>.h5`` has CLAM's attribute meaning (``patch_size`` pixels at ``patch_level``,
what CLAM's ``Whole_Slide_Bag_FP`` reads), ``patches/<id>_patches.h5`` TRIDENT's
(``patch_size`` at ``target_magnification``, what TRIDENT's ``WSIPatcher`` and torchmil's
``TridentWSIDataset`` read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hmil.errors import HMILError, SlideError, TilingError
from hmil.geojson import Polygon, read_tissue_geojson, write_tissue_geojson
from hmil.images import save_png
from hmil.progress import Progress
from hmil.slides.patch_files import patch_file_paths, save_patches
from hmil.slides.reader import Slide, open_slide, slide_id_from_path
from hmil.slides.slide_list import SlideEntry
from hmil.slides.tile_qc import render_qc
from hmil.slides.tiling import TilingResult, tile_slide
from hmil.slides.tissue import TilingConfig, mask_polygons


@dataclass
class TileReport:
    """Outcome of :func:`tile_slides`.

    Attributes:
        patch_files: slide id → written ``patches/<slide_id>.h5``.
        n_patches: slide id → number of patches written.
        failures: ``(where, problem)`` per skipped slide (unreadable, 0 tissue patches, ...).
        skipped: slide id → its existing patch file (finished on an earlier run).
    """

    patch_files: dict[str, Path] = field(default_factory=dict)
    n_patches: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, Path] = field(default_factory=dict)


def contours_path(out_dir: str | Path, slide_id: str) -> Path:
    """``contours_geojson/<id>.geojson`` (TRIDENT's folder name), the slide's tissue polygons."""
    return Path(out_dir) / "contours_geojson" / f"{slide_id}.geojson"


def tile_slides(
    slides: Iterable[str | Path | SlideEntry],
    out_dir: str | Path,
    config: TilingConfig,
    *,
    strict: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    tissue_dir: str | Path | None = None,
) -> TileReport:
    """Tile every slide into ``out_dir/patches/<id>.h5`` (+ ``<id>_patches.h5`` with
    ``config.trident_names``), ``out_dir/masks/<id>.png`` and
    ``out_dir/contours_geojson/<id>.geojson``.

    Reruns: a slide whose patch file exists is skipped (``report.skipped``) unless
    ``config.overwrite`` — or unless its contours GeoJSON is newer than the patch file (edited
    in QuPath): it is then re-tiled on the edited tissue. ``tissue_dir`` takes the tissue of
    every slide from ``<tissue_dir>/<id>.geojson`` instead (e.g. TRIDENT's
    ``contours_geojson``), when that file exists.

    A bad slide (unreadable, 0 tissue patches, duplicate id) is passed to ``on_error`` and
    skipped — or, with ``strict``, its :class:`HMILError` is raised at once. A slide without
    tissue patches still gets its QC image and contours, so one can see why (and draw tissue).
    """
    out = Path(out_dir)
    entries = [s if isinstance(s, SlideEntry) else SlideEntry(Path(s)) for s in slides]
    report = TileReport()
    seen: dict[str, Path] = {}
    bar = Progress(len(entries), "tile", enabled=progress)
    for entry in entries:
        try:
            job = _TileJob(entry, out, config, Path(tissue_dir) if tissue_dir else None)
            job.run(seen, report, log)
        except HMILError as exc:
            if strict:
                raise
            report.failures.append((exc.where, exc.problem))
            if on_error is not None:
                on_error(exc.where, exc.problem)
        bar.update(1)
    bar.close()
    return report


@dataclass(frozen=True)
class _TileJob:
    """One slide of :func:`tile_slides`: where its outputs go and whether it is finished."""

    entry: SlideEntry
    out: Path
    config: TilingConfig
    tissue_dir: Path | None

    @property
    def slide_id(self) -> str:
        return slide_id_from_path(self.entry.path)

    def outputs(self) -> list[Path]:
        clam, trident = patch_file_paths(self.out, self.slide_id)
        return [clam, trident] if self.config.trident_names else [clam]

    def edited_contours(self) -> Path | None:
        """The tissue to use instead of segmenting: ``tissue_dir``'s file, or our contours
        when they are newer than the patch file (edited after tiling)."""
        if self.tissue_dir is not None:
            candidate = self.tissue_dir / f"{self.slide_id}.geojson"
            return candidate if candidate.is_file() else None
        ours = contours_path(self.out, self.slide_id)
        if not ours.is_file():
            return None
        patch = self.outputs()[0]
        if patch.is_file() and ours.stat().st_mtime_ns <= patch.stat().st_mtime_ns:
            return None
        return ours

    def finished(self) -> bool:
        if self.config.overwrite or not all(p.is_file() for p in self.outputs()):
            return False
        return self.tissue_dir is None and self.edited_contours() is None

    def run(
        self, seen: dict[str, Path], report: TileReport, log: Callable[[str], None] | None
    ) -> None:
        """Tile the slide into ``report``; raises HMILError for a slide that must be skipped."""
        path, sid = self.entry.path, self.slide_id
        if sid in seen:
            raise SlideError(path, f"duplicate slide id '{sid}' (also {seen[sid]})")
        seen[sid] = path
        if self.finished():
            report.skipped[sid] = self.outputs()[0]
            if log is not None:
                log(f"{sid}: already tiled, skipped ({self.outputs()[0].name})")
            return
        say = log or (lambda _line: None)
        with open_slide(path) as slide:
            tissue = self._tissue(slide, say)
            override = self.entry.mpp if self.entry.mpp is not None else self.config.mpp
            if override is not None and slide.mpp is not None and abs(slide.mpp - override) > 1e-3:
                say(f"{sid}: using {override:g} µm/px instead of the file's {slide.mpp:g}")
            result = tile_slide(slide, self.config, tissue=tissue, mpp=self.entry.mpp)
            if result.plan.note:
                say(f"{sid}: {result.plan.note}")
            save_png(self.out / "masks" / f"{sid}.png", render_qc(slide, result))
            if tissue is None:  # written before the patch files: newer contours = edited
                polygons = mask_polygons(result.mask, result.mask_scale, _origin(result))
                write_tissue_geojson(contours_path(self.out, sid), polygons, slide.offset)
        if result.n_patches == 0:
            for stale in patch_file_paths(self.out, sid):  # no stale coords from a rerun
                stale.unlink(missing_ok=True)
            share = 100.0 * float(result.mask.mean())
            raise TilingError(
                path,
                f"0 patches passed the tissue threshold {self.config.tissue_threshold:g} "
                f"(tissue covers {share:.1f}% of the slide{_too_small_hint(result, self.config)}; "
                f"see masks/{sid}.png, or draw the tissue in contours_geojson/{sid}.geojson "
                "and rerun)",
            )
        clam, trident = patch_file_paths(self.out, sid)
        save_patches(clam, result)
        if self.config.trident_names:
            save_patches(trident, result, result.trident_attrs(trident.parent))
        report.patch_files[sid] = clam
        report.n_patches[sid] = result.n_patches
        plan = result.plan
        mag = plan.target_magnification
        where = f"{mag:.3g}x" if mag is not None else f"level {plan.patch_level}"
        say(
            f"{sid}: {result.n_patches} patches of {plan.patch_size}px at {where} "
            f"(level {plan.patch_level}, {plan.patch_size_level0}px at level 0)"
        )

    def _tissue(self, slide: Slide, say: Callable[[str], None]) -> list[Polygon] | None:
        source = self.edited_contours()
        if source is None:
            return None
        say(f"{self.slide_id}: tissue from {source}")
        return read_tissue_geojson(source, slide.offset)


def _too_small_hint(result: TilingResult, config: TilingConfig) -> str:
    """Why a slide with visible stain has no tissue: every stained piece was smaller than
    ``min_object_patches`` of a patch and was dropped as a speck. That happens when patches are
    huge relative to the tissue (e.g. a low-resolution image without magnification, tiled at
    level 0), and a smaller ``--patch-size`` is the fix; '' when it is not the case."""
    stained = result.stained_share
    if stained is None or result.mask.any() or stained < 0.0005:
        return ""
    return (
        f"; stain on {100.0 * stained:.1f}% was dropped as pieces under "
        f"{config.tissue.min_object_patches:g} of a patch ({result.plan.patch_size_level0} px "
        "at level 0): try a smaller patch_size"
    )


def _origin(result: TilingResult) -> tuple[float, float]:
    region = result.tiled_region
    return (region.x, region.y)
