"""Synthetic H&E whole-slide images with planted lesions, written as pyramidal TIFFs.

A slide is laid out on a coarse grid (one cell = ``MASK_DOWNSAMPLE`` level-0 pixels): 1-3
blobby tissue fragments on white glass, patches of fat inside them, and — unless the class is
``normal`` — one lesion cluster covering a set share of the tissue. Level 0 is then painted in
``BLOCK``² blocks: collagen stroma everywhere in the tissue, fat where the layout says, round
pieces of *real* tissue (glands) scattered on top, and the class's lesion texture inside the
lesion. Region borders come from the coarse masks' signed distance, upsampled per block and
roughened with edge noise, so they are smooth curves that follow the saved masks to within a few
pixels. Textures are periodic tiles from a :class:`TextureBank` placed with a random offset and
orientation per slide; each slide also gets its own stain intensity (whole slide and slowly
varying across it). Blocks without tissue stay bare glass and are never computed.

Ground truth kept beside the slide (``masks/``):

* ``<slide_id>_tissue.png`` and ``<slide_id>_lesion.png`` — 8-bit masks (255 = inside) at
  downsample ``MASK_DOWNSAMPLE`` (pixel (i, j) covers level-0 rows 16i..16i+15, cols 16j..16j+15);
* ``<slide_id>_lesion.geojson`` — lesion outlines as QuPath annotation polygons in level-0 px,
  each with its bounding box and area.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import measure

from hmil.demo.classes import demo_class, demo_hierarchy
from hmil.demo.textures import (
    IslandTexture,
    StainTile,
    adipose_tile,
    glandular_islands,
    glandular_source,
    lesion_tile,
    periodic_noise,
    stains_to_rgb,
    stroma_tile,
)
from hmil.demo.tiff import aperio_description, write_pyramid_tiff
from hmil.geojson import Classification, polygon_feature, write_features
from hmil.images import save_png

#: level-0 pixels per cell of the layout grid and of the saved masks
MASK_DOWNSAMPLE = 16
#: downsample factors of the pyramid levels after level 0
PYRAMID_DOWNSAMPLES = (4, 16)
#: edge of the periodic texture tiles
TEXTURE_SIZE = 1024
#: level-0 block edge for rendering (a multiple of MASK_DOWNSAMPLE, at most TEXTURE_SIZE)
BLOCK = 512
#: hematoxylin and eosin OD of bare glass (a faint grey, as in real scans)
GLASS_H_OD = 0.012
GLASS_E_OD = 0.010
#: extra hematoxylin on the lesion border (a dark rim, as myoepithelium gives real ducts)
RIM_H_OD = 0.3
SYNTHETIC_NOTE = "SYNTHETIC HMIL demo slide"


@dataclass(frozen=True)
class TextureBank:
    """The texture tiles of one cohort (built once, shared by all its slides).

    Attributes:
        islands: rotated round crops of real tissue (scikit-image's IHC sample recoloured to
            H&E), pasted into the stroma as glands.
        stroma: procedural collagen with spindle nuclei.
        adipose: procedural fat cells.
        lesions: fine class name → lesion texture.
        edge_noise: ``(S, S)`` float32 periodic noise that roughens region borders.
    """

    islands: tuple[IslandTexture, ...]
    stroma: StainTile
    adipose: StainTile
    lesions: dict[str, StainTile]
    edge_noise: np.ndarray


def build_texture_bank(seed: int, class_names: tuple[str, ...]) -> TextureBank:
    """Build every texture the slides of ``class_names`` need (about 0.5 s per tile)."""
    rng = np.random.default_rng([seed, 7919])
    lesions: dict[str, StainTile] = {}
    for name in class_names:
        look = demo_class(name).look
        if look is not None:
            lesions[name] = lesion_tile(rng, look, TEXTURE_SIZE)
    return TextureBank(
        islands=glandular_islands(rng, glandular_source()),
        stroma=stroma_tile(rng, TEXTURE_SIZE),
        adipose=adipose_tile(rng, TEXTURE_SIZE),
        lesions=lesions,
        edge_noise=periodic_noise(rng, TEXTURE_SIZE, sigma=10.0),
    )


@dataclass(frozen=True)
class SlideSpec:
    """Everything that determines one synthetic slide.

    Attributes:
        slide_id: file stem (``synth-…``).
        label: fine class name (see :mod:`hmil.demo.classes`).
        seed: per-slide seed; with the same bank the slide is bit-identical.
        width, height: level-0 size in pixels.
        lesion_fraction: target share of the tissue covered by the lesion (0 for ``normal``).
        mpp: microns per level-0 pixel.
        magnification: objective power written into the metadata.
    """

    slide_id: str
    label: str
    seed: int
    width: int
    height: int
    lesion_fraction: float
    mpp: float = 0.5
    magnification: float = 20.0


@dataclass
class SyntheticSlide:
    """A rendered slide.

    Attributes:
        spec: what was rendered.
        rgb: ``(height, width, 3)`` uint8 level 0.
        tissue: ``(ceil(height/16), ceil(width/16))`` bool tissue mask.
        lesion: same shape, bool lesion mask (all False for ``normal``).
    """

    spec: SlideSpec
    rgb: np.ndarray
    tissue: np.ndarray
    lesion: np.ndarray

    @property
    def lesion_share(self) -> float:
        """Lesion area / tissue area on the mask grid."""
        return float(self.lesion.sum() / max(int(self.tissue.sum()), 1))


@dataclass(frozen=True)
class _Layout:
    """The slide on the coarse grid: ``(hl, wl)`` masks and a stain-intensity field.

    Attributes:
        tissue: bool tissue mask.
        fat: bool mask of fatty tissue (inside ``tissue``, outside ``lesion``).
        lesion: bool lesion mask, inside ``tissue`` (all False without a lesion).
        stain: float32 field in [0, 1] modulating stain intensity slowly across the slide.
    """

    tissue: np.ndarray
    fat: np.ndarray
    lesion: np.ndarray
    stain: np.ndarray


@dataclass
class SlideFiles:
    """Where one slide and its ground truth were written (paths relative to the cohort)."""

    slide: str
    tissue_mask: str
    lesion_mask: str
    lesion_geojson: str


def slide_files(slide_id: str) -> SlideFiles:
    """The cohort-relative paths of one slide's TIFF and ground truth."""
    return SlideFiles(
        slide=f"slides/{slide_id}.tiff",
        tissue_mask=f"masks/{slide_id}_tissue.png",
        lesion_mask=f"masks/{slide_id}_lesion.png",
        lesion_geojson=f"masks/{slide_id}_lesion.geojson",
    )


def render_slide(spec: SlideSpec, bank: TextureBank) -> SyntheticSlide:
    """Render level 0 and the ground-truth masks of ``spec`` (deterministic in ``spec.seed``).

    Level 0 is rendered in ``BLOCK``² blocks; blocks without tissue stay bare glass, and region
    borders are only computed in blocks that a border crosses.
    """
    rng = np.random.default_rng([spec.seed, 104729])
    layout = _layout(rng, spec)
    tissue_edge = _Region(layout.tissue)
    fat_edge = _Region(layout.fat)
    lesion_edge = _Region(layout.lesion)
    stain_field = Image.fromarray(0.75 + 0.5 * layout.stain.astype(np.float32), mode="F")
    stroma = _Periodic.place(rng, bank.stroma)
    adipose = _Periodic.place(rng, bank.adipose)
    noise = _Periodic.place(rng, StainTile(h=bank.edge_noise, e=bank.edge_noise))
    islands = _place_islands(rng, layout.tissue, bank.islands)
    lesion_tex = _Periodic.place(rng, bank.lesions[spec.label]) if layout.lesion.any() else None
    h_gain = float(np.exp(0.08 * rng.standard_normal()))
    e_gain = float(np.exp(0.10 * rng.standard_normal()))

    glass_h = np.array([GLASS_H_OD], dtype=np.float32)
    glass_e = np.array([GLASS_E_OD], dtype=np.float32)
    glass = stains_to_rgb(glass_h, glass_e)[0]
    rgb = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
    rgb[:] = glass
    for y0 in range(0, spec.height, BLOCK):
        for x0 in range(0, spec.width, BLOCK):
            y1, x1 = min(y0 + BLOCK, spec.height), min(x0 + BLOCK, spec.width)
            box = (y0, y1, x0, x1)
            edge_noise = noise.h(*box)
            tissue = tissue_edge.alpha(box, edge_noise)
            if isinstance(tissue, float) and tissue == 0.0:
                continue
            h = stroma.h(*box).copy()
            e = stroma.e(*box).copy()
            fat = fat_edge.alpha(box, edge_noise[::-1])
            if not (isinstance(fat, float) and fat == 0.0):
                h += (adipose.h(*box) - h) * fat
                e += (adipose.e(*box) - e) * fat
            for island in islands:
                island.paste(h, e, y0, x0)
            if lesion_tex is not None:
                lesion = lesion_edge.alpha(box, edge_noise[:, ::-1])
                if not (isinstance(lesion, float) and lesion == 0.0):
                    keep = 1.0 - lesion
                    h = h * keep + lesion_tex.h(*box) * lesion + RIM_H_OD * 4.0 * lesion * keep
                    e = e * keep + lesion_tex.e(*box) * lesion
            stain = _resize_box(stain_field, box)
            h *= tissue * stain * h_gain
            e *= tissue * stain * e_gain
            h += GLASS_H_OD
            e += GLASS_E_OD
            rgb[y0:y1, x0:x1] = stains_to_rgb(h, e)
    return SyntheticSlide(spec=spec, rgb=rgb, tissue=layout.tissue, lesion=layout.lesion)


def write_slide(slide: SyntheticSlide, cohort_dir: str | Path) -> SlideFiles:
    """Write ``slides/<id>.tiff`` and ``masks/<id>_{tissue,lesion}.png`` + lesion GeoJSON.

    The TIFF is written last, so an existing TIFF means the slide is complete (reruns skip it).
    """
    root = Path(cohort_dir)
    spec = slide.spec
    files = slide_files(spec.slide_id)
    save_png(root / files.tissue_mask, slide.tissue.astype(np.uint8) * 255)
    save_png(root / files.lesion_mask, slide.lesion.astype(np.uint8) * 255)
    write_features(
        root / files.lesion_geojson, lesion_features(slide.lesion, spec.label, spec.slide_id)
    )
    levels = [slide.rgb]
    image = Image.fromarray(slide.rgb)
    for factor in PYRAMID_DOWNSAMPLES:
        if min(spec.width, spec.height) // factor < 64:
            break
        levels.append(np.asarray(image.reduce(factor)))
    description = aperio_description(
        spec.width,
        spec.height,
        tile=256,
        quality=80,
        mpp=spec.mpp,
        magnification=spec.magnification,
        note=SYNTHETIC_NOTE,
    )
    write_pyramid_tiff(root / files.slide, levels, mpp=spec.mpp, description=description)
    return files


def lesion_features(lesion: np.ndarray, label: str, slide_id: str) -> list[dict[str, Any]]:
    """Outlines of the lesion mask as GeoJSON features in level-0 pixels.

    One ``Feature`` per connected lesion component (outer boundary only), QuPath-style
    (``objectType = annotation``, ``classification`` = the fine label with its fixed colour in
    the demo's hierarchy, as ``hmil heatmap --geojson`` colours it), with ``bbox``
    ``[x0, y0, x1, y1]`` and ``area_px`` (level-0 pixels, from the mask) in its properties.
    """
    classification = Classification.of(label, demo_hierarchy()).to_json()
    features: list[dict[str, Any]] = []
    labelled, count = ndimage.label(lesion)
    ds = MASK_DOWNSAMPLE
    for index in range(1, count + 1):
        component = labelled == index
        padded = np.pad(component, 1).astype(np.float32)
        contours = measure.find_contours(padded, 0.5)
        outer = max(contours, key=len)
        # contour is (row, col) in padded mask cells; cell centres sit at (i + 0.5) * ds
        ring = np.stack([(outer[:, 1] - 0.5) * ds, (outer[:, 0] - 0.5) * ds], axis=1)
        rows, cols = np.nonzero(component)
        features.append(
            polygon_feature(
                [ring],
                {
                    "objectType": "annotation",
                    "classification": classification,
                    "slide_id": slide_id,
                    "synthetic": True,
                    "bbox": [
                        int(cols.min() * ds),
                        int(rows.min() * ds),
                        int((cols.max() + 1) * ds),
                        int((rows.max() + 1) * ds),
                    ],
                    "area_px": int(component.sum()) * ds * ds,
                },
            )
        )
    return features


# ---- layout on the coarse grid ---------------------------------------------------------------


def _layout(rng: np.random.Generator, spec: SlideSpec) -> _Layout:
    hl = -(-spec.height // MASK_DOWNSAMPLE)
    wl = -(-spec.width // MASK_DOWNSAMPLE)
    tissue = _tissue_score(rng, hl, wl) > 0
    stain = np.clip(0.5 + _grid_noise(rng, hl, wl, sigma=20.0) / 4.0, 0.0, 1.0)
    lesion = np.zeros_like(tissue)
    if demo_class(spec.label).look is not None:
        lesion = _lesion_score(rng, tissue, spec.lesion_fraction) > 0
    fatty = _grid_noise(rng, hl, wl, sigma=7.0) > rng.uniform(0.5, 1.3)
    fat = fatty & tissue & ~ndimage.binary_dilation(lesion, iterations=3)
    return _Layout(tissue=tissue, fat=fat, lesion=lesion, stain=stain.astype(np.float32))


def _grid_noise(rng: np.random.Generator, hl: int, wl: int, sigma: float) -> np.ndarray:
    side = max(hl, wl)
    return periodic_noise(rng, side, sigma=sigma)[:hl, :wl]


def _tissue_score(rng: np.random.Generator, hl: int, wl: int) -> np.ndarray:
    """1-3 rotated, noise-distorted ellipses, kept off the slide border; > 0 is tissue."""
    yy, xx = np.mgrid[0:hl, 0:wl].astype(np.float32)
    yy = (yy + 0.5) / hl
    xx = (xx + 0.5) / wl
    n_pieces = int(rng.integers(1, 4))
    score = np.full((hl, wl), -np.inf, dtype=np.float32)
    for _ in range(n_pieces):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        ry, rx = rng.uniform(0.22, 0.38, 2) / np.sqrt(n_pieces) * 1.3
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        score = np.maximum(score, 1.0 - (u / rx) ** 2 - (v / ry) ** 2)
    score += 0.35 * _grid_noise(rng, hl, wl, sigma=max(hl, wl) / 24)
    border = np.minimum.reduce([yy, 1 - yy, xx, 1 - xx])
    score -= np.clip((0.07 - border) * 80, 0, None)
    # drop crumbs smaller than ~4 patches of 256 px so every fragment can be tiled, but always
    # keep the largest piece (small slides)
    labelled, count = ndimage.label(score > 0)
    if count:
        sizes = ndimage.sum_labels(np.ones_like(score), labelled, index=np.arange(1, count + 1))
        too_small = sizes < 4 * (256 // MASK_DOWNSAMPLE) ** 2
        too_small[int(np.argmax(sizes))] = False
        score[np.isin(labelled, 1 + np.flatnonzero(too_small))] = -0.1
    else:  # no tissue at all: fall back to the central ellipse alone
        score = 1.0 - ((yy - 0.5) / 0.3) ** 2 - ((xx - 0.5) / 0.3) ** 2
    return score.astype(np.float32)


def _lesion_score(rng: np.random.Generator, tissue: np.ndarray, fraction: float) -> np.ndarray:
    """One lesion cluster (1-3 touching blobs) covering ``fraction`` of the tissue; > 0 inside.

    The lesion is the top-``k`` cells of a score that falls with distance from the cluster
    centres and is roughened by noise, restricted to cells at least 3 cells inside the tissue,
    so its area is exact and it never touches the glass.
    """
    depth = ndimage.distance_transform_edt(tissue)
    allowed = depth >= 3
    if not allowed.any():
        allowed = tissue.copy()
    target = max(int(round(fraction * tissue.sum())), 1)
    radius = float(np.sqrt(target / np.pi))
    # the cluster centre lies deep enough inside the tissue for the lesion to fit around it
    cand_y, cand_x = np.nonzero(depth >= min(radius, depth.max() * 0.8))
    pick = int(rng.integers(len(cand_y)))
    centres = [(float(cand_y[pick]), float(cand_x[pick]))]
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.5, 1.1) * radius
        centres.append((centres[0][0] + dist * np.sin(angle), centres[0][1] + dist * np.cos(angle)))
    yy, xx = np.mgrid[0 : tissue.shape[0], 0 : tissue.shape[1]].astype(np.float32)
    closeness = np.full(tissue.shape, -np.inf, dtype=np.float32)
    for cy, cx in centres:
        closeness = np.maximum(closeness, -np.hypot(yy - cy, xx - cx) / radius)
    hl, wl = tissue.shape
    score = closeness + 0.15 * _grid_noise(rng, hl, wl, sigma=2.5)
    score[~allowed] = -np.inf
    target = min(target, int(allowed.sum()))
    threshold = np.partition(score.ravel(), -target)[-target]
    out = score - threshold
    # strictly positive inside (ties at the threshold included), negative outside
    out = np.where(score >= threshold, np.maximum(out, 1e-3), np.minimum(out, -1e-3))
    out[~allowed] = -1.0
    return out.astype(np.float32)


# ---- rendering helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Periodic:
    """A stain tile placed on the slide plane with a random offset and orientation.

    Holds the oriented tile repeated 2×2, so any block up to the tile size is a plain slice
    (a view, no copy) of it.
    """

    h_plane: np.ndarray
    e_plane: np.ndarray
    dy: int
    dx: int

    @classmethod
    def place(cls, rng: np.random.Generator, tile: StainTile) -> _Periodic:
        rotations = int(rng.integers(4))
        flip = bool(rng.integers(2))
        planes = []
        for channel in (tile.h, tile.e):
            oriented = np.rot90(channel, rotations)
            if flip:
                oriented = oriented[:, ::-1]
            planes.append(np.tile(oriented, (2, 2)).astype(np.float32))
        size = tile.size
        return cls(planes[0], planes[1], int(rng.integers(size)), int(rng.integers(size)))

    def h(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """``(y1 - y0, x1 - x0)`` view of hematoxylin at level-0 rows y0:y1, cols x0:x1."""
        return self._crop(self.h_plane, y0, y1, x0, x1)

    def e(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Same for eosin."""
        return self._crop(self.e_plane, y0, y1, x0, x1)

    def _crop(self, plane: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        size = plane.shape[0] // 2
        oy = (y0 + self.dy) % size
        ox = (x0 + self.dx) % size
        return plane[oy : oy + (y1 - y0), ox : ox + (x1 - x0)]


@dataclass(frozen=True)
class _Island:
    """A piece of real tissue placed on the slide.

    Attributes:
        y, x: level-0 position of its top-left corner.
        h, e, alpha: ``(d, d)`` stain maps and mask, already in this slide's orientation.
    """

    y: int
    x: int
    h: np.ndarray
    e: np.ndarray
    alpha: np.ndarray

    def paste(self, h: np.ndarray, e: np.ndarray, y0: int, x0: int) -> None:
        """Blend into the block ``h``/``e`` whose top-left is level-0 (y0, x0), in place."""
        d = self.alpha.shape[0]
        ty0, tx0 = max(self.y, y0), max(self.x, x0)
        ty1, tx1 = min(self.y + d, y0 + h.shape[0]), min(self.x + d, x0 + h.shape[1])
        if ty0 >= ty1 or tx0 >= tx1:
            return
        block = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
        own = (slice(ty0 - self.y, ty1 - self.y), slice(tx0 - self.x, tx1 - self.x))
        a = self.alpha[own]
        h[block] += (self.h[own] - h[block]) * a
        e[block] += (self.e[own] - e[block]) * a


def _place_islands(
    rng: np.random.Generator, tissue: np.ndarray, textures: tuple[IslandTexture, ...]
) -> list[_Island]:
    """Scatter gland islands over the tissue, about one per 0.05 mm² (450² px at 0.5 µm/px)."""
    ys, xs = np.nonzero(ndimage.binary_erosion(tissue, iterations=2))
    if len(ys) == 0 or not textures:
        return []
    area_px = float(tissue.sum()) * MASK_DOWNSAMPLE**2
    count = int(rng.poisson(area_px / 450.0**2)) + 1
    islands: list[_Island] = []
    for _ in range(count):
        texture = textures[int(rng.integers(len(textures)))]
        rotations = int(rng.integers(4))
        flip = bool(rng.integers(2))
        maps = []
        for channel in (texture.h, texture.e, texture.alpha):
            oriented = np.rot90(channel, rotations)
            maps.append(oriented[:, ::-1] if flip else oriented)
        radius = texture.alpha.shape[0] // 2
        pick = int(rng.integers(len(ys)))
        cy = int(ys[pick] * MASK_DOWNSAMPLE + rng.integers(MASK_DOWNSAMPLE))
        cx = int(xs[pick] * MASK_DOWNSAMPLE + rng.integers(MASK_DOWNSAMPLE))
        islands.append(_Island(cy - radius, cx - radius, maps[0], maps[1], maps[2]))
    return islands


class _Region:
    """A coarse region mask, turned into a level-0 alpha one block at a time.

    Holds the signed distance to the region border (level-0 px, > 0 inside) on the coarse grid,
    lightly smoothed so that upsampled borders are round rather than stair-stepped. A block far
    from any border gets a scalar 0.0 or 1.0 without upsampling anything.
    """

    #: blocks whose coarse cells are all further than this from the border skip the upsampling
    FAR_PX = 48.0

    def __init__(self, mask: np.ndarray) -> None:
        inside = ndimage.distance_transform_edt(mask)
        outside = ndimage.distance_transform_edt(~mask)
        signed = (inside - outside + np.where(mask, -0.5, 0.5)) * MASK_DOWNSAMPLE
        signed = ndimage.gaussian_filter(signed.astype(np.float32), sigma=0.7)
        self.signed = np.clip(signed, -4 * self.FAR_PX, 4 * self.FAR_PX).astype(np.float32)
        self.image = Image.fromarray(self.signed, mode="F")

    def alpha(self, box: tuple[int, int, int, int], noise: np.ndarray) -> np.ndarray | float:
        """0..1 alpha of the block ``box = (y0, y1, x0, x1)``, or a scalar when uniform.

        The border is moved by up to ~±8 px by ``noise`` and blurred over ~4 px (anti-aliased,
        like a real scan's focus).
        """
        y0, y1, x0, x1 = box
        cells = self.signed[
            max(y0 // MASK_DOWNSAMPLE - 1, 0) : y1 // MASK_DOWNSAMPLE + 2,
            max(x0 // MASK_DOWNSAMPLE - 1, 0) : x1 // MASK_DOWNSAMPLE + 2,
        ]
        if cells.min() > self.FAR_PX:
            return 1.0
        if cells.max() < -self.FAR_PX:
            return 0.0
        value = _resize_box(self.image, box)
        value += 6.0 * noise
        value *= 0.25
        value += 0.5
        return np.clip(value, 0.0, 1.0, out=value)


def _resize_box(coarse: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """Bilinear level-0 values of a coarse ``F`` image over ``box = (y0, y1, x0, x1)``.

    Coarse cell (i, j) covers level-0 rows 16i..16i+15, so its centre is (16i + 8, 16j + 8);
    PIL's ``box`` argument samples exactly that mapping, block by block without seams.

    Returns:
        ``(y1 - y0, x1 - x0)`` float32 (a new array).
    """
    y0, y1, x0, x1 = box
    ds = MASK_DOWNSAMPLE
    resized = coarse.resize(
        (x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=(x0 / ds, y0 / ds, x1 / ds, y1 / ds)
    )
    return np.asarray(resized, dtype=np.float32).copy()
