"""Synthetic hierarchical bags with known key instances (SYNTHETIC data, for tests/benchmarks).

Each bag is a square grid of patches. A few spatially clustered blobs of *key instances* carry
the slide's class signal; all other instances are background tissue shared by every class.
The signal of fine class j is ``coarse_strength · u_parent(j) + fine_strength · v_j`` (a strong
direction shared by siblings plus a weaker sibling-specific one), so the coarse label is easy,
the fine label is hard, and knowing the coarse group helps find the key instances — the
situation HMIL is designed for. ``key_mask`` gives the ground truth for attention localisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from hmil.data.bags import save_bag
from hmil.hierarchy import Hierarchy


@dataclass(frozen=True)
class CohortSpec:
    """Generator settings (two difficulty presets: :data:`EASY`, :data:`HARD`).

    Attributes:
        n_slides: number of bags.
        dim: feature dimension D.
        grid: bags are ``grid_min..grid_max`` patches on a side (N = side²).
        key_fraction: fraction of instances that are key instances (clustered in blobs).
        n_blobs: number of key-instance clusters per bag.
        coarse_strength: norm of the coarse-group component of the key signal.
        fine_strength: norm of the sibling-specific component.
        noise: standard deviation of per-instance Gaussian noise.
        n_background: number of background tissue prototypes shared by all classes.
        patch_size: level-0 patch size used for the coords.
        slides_per_case: slides per patient (case_id groups them).
        class_counts: bags per fine class, in class order (must sum to ``n_slides``); empty:
            labels cycle through the classes (a balanced cohort).
    """

    n_slides: int = 120
    dim: int = 64
    grid_min: int = 12
    grid_max: int = 20
    key_fraction: float = 0.05
    n_blobs: int = 2
    coarse_strength: float = 1.6
    fine_strength: float = 0.9
    noise: float = 1.0
    n_background: int = 6
    patch_size: int = 256
    slides_per_case: int = 1
    class_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.class_counts and sum(self.class_counts) != self.n_slides:
            raise ValueError(
                f"class_counts sum to {sum(self.class_counts)}, not n_slides = {self.n_slides}"
            )


EASY = CohortSpec()
HARD = CohortSpec(key_fraction=0.03, coarse_strength=1.2, fine_strength=0.6)


@dataclass
class SyntheticBag:
    """One synthetic slide: features ``(N, D)`` float32, coords ``(N, 2)``, key mask ``(N,)``."""

    slide_id: str
    case_id: str
    fine: int
    features: np.ndarray
    coords: np.ndarray
    key_mask: np.ndarray
    patch_size: int = 256


def make_cohort(hierarchy: Hierarchy, spec: CohortSpec, seed: int = 0) -> list[SyntheticBag]:
    """Generate ``spec.n_slides`` bags with fine labels cycling through all classes."""
    rng = np.random.default_rng(seed)
    d = spec.dim
    coarse_dirs = _orthonormal(rng, hierarchy.n_coarse + hierarchy.n_fine + spec.n_background, d)
    u = coarse_dirs[: hierarchy.n_coarse]
    v = coarse_dirs[hierarchy.n_coarse : hierarchy.n_coarse + hierarchy.n_fine]
    background = coarse_dirs[hierarchy.n_coarse + hierarchy.n_fine :] * 2.0
    if spec.class_counts:
        if len(spec.class_counts) != hierarchy.n_fine:
            raise ValueError(f"class_counts has {len(spec.class_counts)} entries, the "
                             f"hierarchy {hierarchy.n_fine} fine classes")  # fmt: skip
        labels = np.repeat(np.arange(hierarchy.n_fine), spec.class_counts)
    else:
        labels = np.arange(spec.n_slides) % hierarchy.n_fine
    rng.shuffle(labels)
    bags = []
    for i, fine in enumerate(labels):
        side = int(rng.integers(spec.grid_min, spec.grid_max + 1))
        n = side * side
        rows, cols = np.divmod(np.arange(n), side)
        key = _blobs(rng, rows, cols, side, max(1, round(spec.key_fraction * n)), spec.n_blobs)
        tissue = rng.integers(0, spec.n_background, size=n)
        x = background[tissue] + spec.noise * rng.standard_normal((n, d))
        signal = spec.coarse_strength * u[hierarchy.parent[fine]] + spec.fine_strength * v[fine]
        x[key] += signal
        coords = np.stack([cols, rows], axis=1) * spec.patch_size
        bags.append(
            SyntheticBag(
                slide_id=f"synth-{i:04d}",
                case_id=f"synth-case-{i // spec.slides_per_case:04d}",
                fine=int(fine),
                features=x.astype(np.float32),
                coords=coords.astype(np.int64),
                key_mask=key,
                patch_size=spec.patch_size,
            )
        )
    return bags


def _orthonormal(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """``(k, d)`` orthonormal rows (k ≤ d), or unit random rows when k > d."""
    m = rng.standard_normal((d, k))
    if k <= d:
        q, _ = np.linalg.qr(m)
        return q.T[:k]
    return (m / np.linalg.norm(m, axis=0)).T


def _blobs(
    rng: np.random.Generator,
    rows: np.ndarray,
    cols: np.ndarray,
    side: int,
    n_key: int,
    n_blobs: int,
) -> np.ndarray:
    """Boolean ``(N,)`` mask of the ``n_key`` instances nearest to ``n_blobs`` random centres."""
    centres = rng.uniform(0.2 * side, 0.8 * side, size=(n_blobs, 2))
    dist = np.min(
        np.hypot(rows[:, None] - centres[None, :, 0], cols[:, None] - centres[None, :, 1]), axis=1
    )
    mask = np.zeros(rows.size, dtype=bool)
    mask[np.argsort(dist, kind="stable")[:n_key]] = True
    return mask


def write_cohort(
    bags: list[SyntheticBag],
    hierarchy: Hierarchy,
    out_dir: str | Path,
    fmt: str = "h5",
    patch_size: int | None = None,
) -> Path:
    """Write bags (``features/<id>.h5``), ``labels.csv``, ``key_masks.npz`` and the hierarchy.

    Returns the cohort directory. Every file is marked SYNTHETIC (ids, attrs, README).
    The stored patch size is each bag's own (the spec's that built its coords); ``patch_size``
    is only a check that the caller expects the same.
    """
    if patch_size is not None and any(b.patch_size != patch_size for b in bags):
        raise ValueError("patch_size differs from the patch size the bags' coords were built with")
    out = Path(out_dir)
    feats = out / "features"
    feats.mkdir(parents=True, exist_ok=True)
    for bag in bags:
        save_bag(
            feats / f"{bag.slide_id}.{fmt}",
            bag.features,
            bag.coords,
            attrs={"encoder": "synthetic", "synthetic": True},
            coords_attrs={"patch_size_level0": bag.patch_size},
        )
    pd.DataFrame(
        {
            "slide_id": [b.slide_id for b in bags],
            "case_id": [b.case_id for b in bags],
            "label": [hierarchy.fine[b.fine] for b in bags],
        }
    ).to_csv(out / "labels.csv", index=False)
    masks = {b.slide_id: b.key_mask for b in bags}
    # numpy's stub: **masks could fill its allow_pickle: bool parameter; these are all arrays
    np.savez_compressed(out / "key_masks.npz", **masks)  # type: ignore[arg-type]  # stub, above
    (out / "hierarchy.yaml").write_text(yaml.safe_dump(hierarchy.to_dict(), sort_keys=False))
    (out / "README_SYNTHETIC.txt").write_text(
        "SYNTHETIC feature bags generated by hmil.synthetic (no real patient data).\n"
    )
    return out
