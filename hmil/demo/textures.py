"""Periodic H&E texture tiles from which the synthetic slides are assembled.

Everything is built in optical-density (OD) space as two stain maps, hematoxylin ``H`` and eosin
``E`` (Beer-Lambert: ``rgb = 255 · exp(-(H·h + E·e))`` with the Ruifrok-Johnston stain vectors
that ``skimage.color`` also uses). Working in stain space keeps colour realistic under any
blending, and lets a slide-level stain variation be one multiplication.

Every procedural tile is square and *periodic* (its left edge continues its right edge), so a
slide of any size is covered by repeating it from a random offset without visible seams. Tiles:

* **glandular tissue** — real tissue: scikit-image's bundled ``immunohistochemistry()`` image
  (colon, hematoxylin + DAB), unmixed with ``rgb2hed``; its hematoxylin becomes our H and its
  DAB (cytoplasm, membranes) our E. Not periodic: slides paste rotated crops of it as islands.
* **stroma** — procedural: wavy eosinophilic collagen fibres with sparse spindle nuclei.
* **fat** — procedural: large empty polygonal cells with thin membranes.
* **lesion** — procedural, one per fine class: a sheet of cells whose nuclear density, size,
  pleomorphism, chromatin and cytoplasm (:class:`LesionAppearance`) define the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import data as skdata
from skimage.color import rgb2hed

#: Ruifrok-Johnston stain vectors (RGB optical density per unit stain), unit length.
HEMATOXYLIN_RGB = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
EOSIN_RGB = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])

#: skimage's rgb2hed returns OD divided by ln(1e6); multiply to get natural-log OD.
_SKIMAGE_OD_SCALE = float(np.log(1e6))


@dataclass(frozen=True)
class StainTile:
    """A periodic texture in stain space.

    Attributes:
        h: ``(S, S)`` float32 hematoxylin OD.
        e: ``(S, S)`` float32 eosin OD.
    """

    h: np.ndarray
    e: np.ndarray

    @property
    def size(self) -> int:
        return int(self.h.shape[0])


@dataclass(frozen=True)
class LesionAppearance:
    """What a lesion of one fine class looks like (level-0 pixels at 0.5 µm/px, OD units).

    Attributes:
        nuclear_density: fraction of the area covered by nuclei (0..1).
        nuclear_radius: mean nucleus semi-major axis in pixels.
        pleomorphism: relative spread of nucleus size (0 = all equal).
        elongation: mean ratio of long to short axis.
        nuclear_h: hematoxylin OD at the centre of a nucleus.
        chromatin: strength of the coarse texture inside nuclei (0 = smooth).
        nucleoli: fraction of nuclei with a dark nucleolus.
        cytoplasm_e: eosin OD of the cytoplasm between nuclei.
        cytoplasm_h: hematoxylin OD of the cytoplasm (basophilia).
        lumen_density: round lumens (white holes) per 10⁶ px².
        lumen_radius: mean lumen radius in pixels.
    """

    nuclear_density: float
    nuclear_radius: float
    pleomorphism: float
    elongation: float
    nuclear_h: float
    chromatin: float
    nucleoli: float
    cytoplasm_e: float
    cytoplasm_h: float
    lumen_density: float = 0.0
    lumen_radius: float = 0.0


def stains_to_rgb(h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``(...,)`` H and E optical densities → ``(..., 3)`` uint8 RGB (Beer-Lambert)."""
    out = np.empty((*h.shape, 3), dtype=np.uint8)
    for channel in range(3):
        od = h * np.float32(HEMATOXYLIN_RGB[channel]) + e * np.float32(EOSIN_RGB[channel])
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= 255.0
        out[..., channel] = np.clip(od, 0, 255)
    return out


def periodic_noise(
    rng: np.random.Generator, size: int, sigma: float, anisotropy: float = 1.0, angle: float = 0.0
) -> np.ndarray:
    """Periodic Gaussian-filtered white noise, standardised to mean 0 and std 1.

    Filtering in the Fourier domain makes the result wrap around seamlessly. ``sigma`` is the
    smoothing (pixels) across the ``angle`` direction and ``sigma * anisotropy`` along it, so
    ``anisotropy > 1`` gives fibre-like streaks.

    Returns:
        ``(size, size)`` float32.
    """
    white = rng.standard_normal((size, size)).astype(np.float32)
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    along = kx * cos + ky * sin
    across = -kx * sin + ky * cos
    gain = np.exp(-2 * np.pi**2 * ((sigma * anisotropy * along) ** 2 + (sigma * across) ** 2))
    spectrum = np.fft.rfft2(white) * gain.astype(np.float32)
    field = np.fft.irfft2(spectrum, s=(size, size)).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-8
    return field


def glandular_source() -> StainTile:
    """Real colon tissue (scikit-image's bundled IHC sample) recoloured to H&E; ``(512, 512)``.

    The IHC counterstain is hematoxylin already; DAB marks cytoplasm and membranes, which in H&E
    would be eosinophilic, so DAB becomes eosin on top of a pink baseline. The baseline is
    faded out where the sample is nearly white (lumens), which stay white. Not periodic: slides
    paste rotated crops of it as gland islands.
    """
    rgb = skdata.immunohistochemistry()
    hed = rgb2hed(rgb).astype(np.float32) * _SKIMAGE_OD_SCALE
    h = np.clip(hed[..., 0] - 0.10, 0, None) * 2.2
    optical = -np.log(np.clip(rgb.astype(np.float32), 1, 255) / 255.0).sum(axis=2)
    tissue = np.clip((optical - 0.15) / 0.35, 0, 1)
    e = 0.30 * tissue + 0.25 * np.clip(hed[..., 2], 0, None)
    return StainTile(h=np.ascontiguousarray(h), e=np.ascontiguousarray(e, dtype=np.float32))


@dataclass(frozen=True)
class IslandTexture:
    """A round piece of real tissue to paste into stroma.

    Attributes:
        h, e: ``(d, d)`` float32 stain maps.
        alpha: ``(d, d)`` float32 soft, irregular round mask (1 inside).
    """

    h: np.ndarray
    e: np.ndarray
    alpha: np.ndarray


def glandular_islands(
    rng: np.random.Generator, source: StainTile, count: int = 24
) -> tuple[IslandTexture, ...]:
    """Rotated round crops (radius 100-250 px) of the real-tissue image.

    Rotating costs milliseconds per crop, so a cohort builds a few dozen once; each slide then
    places them with one of 8 right-angle orientations.
    """
    islands: list[IslandTexture] = []
    for _ in range(count):
        radius = int(rng.uniform(100, 250))
        sy, sx = rng.integers(radius, source.size - radius, 2)
        angle = float(rng.uniform(0, 360))
        maps = []
        for channel in (source.h, source.e):
            crop = channel[sy - radius : sy + radius + 1, sx - radius : sx + radius + 1]
            rotated = Image.fromarray(crop, mode="F").rotate(angle, Image.Resampling.BILINEAR)
            maps.append(np.asarray(rotated, dtype=np.float32))
        yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
        theta = np.arctan2(yy, xx).astype(np.float32)
        phases = rng.uniform(0, 2 * np.pi, 2)
        wobble = 1.0 + 0.1 * np.cos(2 * theta + phases[0]) + 0.1 * np.cos(3 * theta + phases[1])
        edge = radius * 0.82 * wobble - np.hypot(yy, xx).astype(np.float32)
        alpha = np.clip(edge / 12.0, 0.0, 1.0).astype(np.float32)
        islands.append(IslandTexture(h=maps[0], e=maps[1], alpha=alpha))
    return tuple(islands)


def stroma_tile(rng: np.random.Generator, size: int = 1024) -> StainTile:
    """Wavy collagen (eosin streaks in a few directions) with sparse spindle-shaped nuclei."""
    fibres = np.zeros((size, size), dtype=np.float32)
    weights = np.zeros((size, size), dtype=np.float32)
    coarse = size // 8  # the direction weights vary slowly: draw them on a coarser grid
    for angle in rng.uniform(0, np.pi, size=3):
        streaks = periodic_noise(rng, size, sigma=1.3, anisotropy=14.0, angle=float(angle))
        slow = periodic_noise(rng, coarse, sigma=40.0 / 8)
        slow = ndimage.zoom(slow, 8, order=1, mode="grid-wrap", grid_mode=True)
        weight = np.exp(2.0 * slow)
        fibres += weight * np.abs(streaks)
        weights += weight
    fibres /= weights
    fibres = np.clip(fibres / 1.2, 0, 1)
    gaps = np.clip(periodic_noise(rng, size, sigma=6.0) - 1.2, 0, None)
    e = 0.22 + 0.35 * fibres - 0.25 * gaps
    h = np.full((size, size), 0.05, dtype=np.float32)
    spindle = LesionAppearance(
        nuclear_density=0.035,
        nuclear_radius=8.0,
        pleomorphism=0.15,
        elongation=3.0,
        nuclear_h=0.85,
        chromatin=0.2,
        nucleoli=0.0,
        cytoplasm_e=0.0,
        cytoplasm_h=0.0,
    )
    h += _nuclei_field(rng, size, spindle)
    return StainTile(h=h.astype(np.float32), e=np.clip(e, 0.02, None).astype(np.float32))


def adipose_tile(rng: np.random.Generator, size: int = 1024) -> StainTile:
    """Fat: large empty polygonal cells (Voronoi, ~100 µm) with thin pink membranes."""
    spacing = 190.0
    count = max(int((size / spacing) ** 2), 4)
    points = rng.uniform(0, size, (count, 2))
    shifts = np.array([(dy, dx) for dy in (-size, 0, size) for dx in (-size, 0, size)])
    wrapped = (points[None, :, :] + shifts[:, None, :]).reshape(-1, 2)
    # the distance gap to the two nearest cell centres is smooth: compute it at half
    # resolution and upsample (periodically), which is 4x cheaper than the full grid
    half = size // 2
    yy, xx = np.mgrid[0:half, 0:half]
    pixels = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float32) * 2.0 + 0.5
    dist, _ = cKDTree(wrapped).query(pixels, k=2)
    dist = np.asarray(dist)  # (M, 2); the stub also allows the float of a 1-point query
    gap = (dist[:, 1] - dist[:, 0]).reshape(half, half).astype(np.float32)
    gap = ndimage.zoom(gap, size / half, order=1, mode="grid-wrap", grid_mode=True)
    thickness = 2.4 * np.clip(1.0 + 0.35 * periodic_noise(rng, size, sigma=6.0), 0.5, None)
    membrane = np.clip(1.0 - gap / thickness, 0.0, 1.0)
    e = 0.03 + 0.45 * membrane
    h = 0.02 + 0.05 * membrane
    return StainTile(h=h.astype(np.float32), e=e.astype(np.float32))


def lesion_tile(rng: np.random.Generator, look: LesionAppearance, size: int = 1024) -> StainTile:
    """A sheet of lesion cells with the given appearance (see :class:`LesionAppearance`)."""
    mottle = periodic_noise(rng, size, sigma=3.0)
    e = look.cytoplasm_e * (1.0 + 0.15 * mottle)
    h = look.cytoplasm_h * (1.0 + 0.2 * mottle) + _nuclei_field(rng, size, look)
    if look.lumen_density > 0:
        lumens = _lumen_mask(rng, size, look.lumen_density, look.lumen_radius)
        keep = 1.0 - lumens
        h *= keep
        e = e * keep + 0.05 * lumens
    return StainTile(h=h.astype(np.float32), e=np.clip(e, 0.0, None).astype(np.float32))


def _nuclei_field(rng: np.random.Generator, size: int, look: LesionAppearance) -> np.ndarray:
    """Hematoxylin OD of randomly placed elliptical nuclei on a jittered grid, wrapping around.

    Returns:
        ``(size, size)`` float32, 0 outside nuclei.
    """
    mean_area = np.pi * look.nuclear_radius**2 / look.elongation
    spacing = float(np.sqrt(mean_area / max(look.nuclear_density, 1e-3)))
    n_side = max(int(size / spacing), 1)
    grid = (np.arange(n_side) + 0.5) * (size / n_side)
    cy, cx = np.meshgrid(grid, grid, indexing="ij")
    jitter = 0.45 * spacing
    cy = cy.ravel() + rng.uniform(-jitter, jitter, cy.size)
    cx = cx.ravel() + rng.uniform(-jitter, jitter, cx.size)
    count = cy.size
    major = look.nuclear_radius * np.exp(look.pleomorphism * rng.standard_normal(count))
    ratio = np.clip(look.elongation * (1 + 0.15 * rng.standard_normal(count)), 1.0, None)
    minor = major / ratio
    angles = rng.uniform(0, np.pi, count)
    darkness = look.nuclear_h * np.exp(0.12 * rng.standard_normal(count))
    has_nucleolus = rng.random(count) < look.nucleoli

    # quantised shapes are cached: a tile has thousands of nuclei but only hundreds of shapes
    cache: dict[tuple[float, float, int, bool], np.ndarray] = {}
    stamps = []
    for i in range(count):
        key = (
            round(float(major[i]) * 2) / 2,
            round(float(minor[i]) * 2) / 2,
            int(angles[i] / np.pi * 24) % 24,
            bool(has_nucleolus[i]),
        )
        if key not in cache:
            cache[key] = _nucleus_stamp(key[0], max(key[1], 1.0), key[2] * np.pi / 24, key[3])
        stamps.append(darkness[i] * cache[key])
    field = _stamp_periodic(size, cy, cx, stamps)
    if look.chromatin > 0:
        grain = periodic_noise(rng, size, sigma=1.2)
        field *= np.clip(1.0 + look.chromatin * grain, 0.2, None)
    return field


def _nucleus_stamp(major: float, minor: float, angle: float, nucleolus: bool) -> np.ndarray:
    """A soft-edged ellipse (peak 1, rim slightly darker as in real nuclei), odd square array."""
    r = int(np.ceil(major)) + 1
    axis = np.arange(-r, r + 1, dtype=np.float32)
    yy, xx = axis[:, None], axis[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx * cos + yy * sin) / major
    v = (-xx * sin + yy * cos) / minor
    q = np.sqrt(u * u + v * v)
    edge = np.clip((1.0 - q) * minor / 1.2, 0.0, 1.0)
    body = edge * (0.8 + 0.2 * np.clip(q, 0, 1) ** 2)
    if nucleolus:
        spot = np.exp(-((xx - 0.2 * major * cos) ** 2 + (yy - 0.2 * major * sin) ** 2) / 3.0)
        body = body + 0.6 * spot * edge
    return body.astype(np.float32)


def _stamp_periodic(
    size: int, cy: np.ndarray, cx: np.ndarray, stamps: list[np.ndarray]
) -> np.ndarray:
    """Max-composite odd-sized square ``stamps`` centred at (cy, cx) on a periodic canvas.

    Stamps are drawn on a canvas padded by the largest stamp radius; the padding is then folded
    back onto the opposite edges, so a stamp crossing an edge reappears on the other side.

    Returns:
        ``(size, size)`` float32.
    """
    pad = max(s.shape[0] // 2 for s in stamps) + 1 if stamps else 1
    canvas = np.zeros((size + 2 * pad, size + 2 * pad), dtype=np.float32)
    for y, x, stamp in zip(cy, cx, stamps, strict=True):
        r = stamp.shape[0] // 2
        y0 = int(round(y)) % size + pad - r
        x0 = int(round(x)) % size + pad - r
        region = canvas[y0 : y0 + stamp.shape[0], x0 : x0 + stamp.shape[1]]
        np.maximum(region, stamp, out=region)
    rows = canvas[pad : pad + size].copy()
    np.maximum(rows[size - pad :], canvas[:pad], out=rows[size - pad :])
    np.maximum(rows[:pad], canvas[pad + size :], out=rows[:pad])
    out = rows[:, pad : pad + size].copy()
    np.maximum(out[:, size - pad :], rows[:, :pad], out=out[:, size - pad :])
    np.maximum(out[:, :pad], rows[:, pad + size :], out=out[:, :pad])
    return out


def _lumen_mask(rng: np.random.Generator, size: int, density: float, radius: float) -> np.ndarray:
    """Soft, slightly irregular round holes (1 inside) at random places, wrapping around.

    Returns:
        ``(size, size)`` float32 in [0, 1].
    """
    count = max(int(round(density * size * size / 1e6)), 1)
    cy = rng.uniform(0, size, count)
    cx = rng.uniform(0, size, count)
    stamps = []
    for _ in range(count):
        rad = radius * float(np.exp(0.25 * rng.standard_normal()))
        r = int(np.ceil(rad * 1.3)) + 2
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
        theta = np.arctan2(yy, xx)
        phases = rng.uniform(0, 2 * np.pi, 3)
        wobble = 1.0 + sum(0.08 * np.cos(k * theta + phases[k - 2]) for k in (2, 3, 4))
        dist = np.sqrt(xx * xx + yy * yy)
        stamps.append(np.clip((rad * wobble - dist) / 1.5, 0.0, 1.0).astype(np.float32))
    return _stamp_periodic(size, cy, cx, stamps)
