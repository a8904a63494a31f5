"""Benchmark cohorts: hierarchical bags with known key instances, each built from a seed.

Every cohort is SYNTHETIC in the sense that its bags and labels were assembled by this code;
two of them are built from *real images* that ship offline with the project's dependencies:

* ``gen-small`` / ``gen-large`` / ``gen-imbalanced`` — generated feature vectors
  (:mod:`hmil.synthetic`: clustered key instances carrying a coarse + a weaker fine signal on
  top of shared background prototypes). Small: 300 bags; large: 2,100 smaller bags; imbalanced:
  BRACS's class counts (N 43, PB 147, UDH 73, FEA 41, ADH 48, DCIS 61, IC 132; 545 bags).
* ``digits`` — instances are real 8 × 8 handwritten digit images (scikit-learn's bundled
  ``load_digits``, 1,797 images), D = 64 pixel intensities. Background instances are digits 0–3;
  a bag of fine class ``digit-k`` also holds a few images of digit k (k = 4…9); coarse groups
  are {4, 5}, {6, 7}, {8, 9}. Images are drawn with replacement, so a test bag can share an
  image with a training bag (equally for every model).
* ``textures`` — instances are 64 × 64 crops of real images bundled with scikit-image, encoded
  by the project's default ``hed-texture`` encoder (D = 104): background crops of the
  ``immunohistochemistry()`` tissue image; key crops are tissue crops darkened by a real
  texture (``cell``, ``gravel``, ``grass``, ``brick``, ``coins``), which defines the fine class.
  Coarse groups: benign {normal (no key instances), cellular}, granular {gravel, grass},
  regular {brick, coins}.

Each builder returns bags with a per-instance ``key_mask`` (the ground truth for attention
localisation) and grid coordinates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hmil.hierarchy import Hierarchy
from hmil.synthetic import EASY, CohortSpec, SyntheticBag, _blobs, make_cohort

#: BRACS's published slide counts per fine class, in the preset's class order
#: (N, PB, UDH, FEA, ADH, DCIS, IC): the 545 BRACS slides the HMIL paper uses
BRACS_COUNTS = (43, 147, 73, 41, 48, 61, 132)


@dataclass
class BenchCohort:
    """One drawn cohort.

    Attributes:
        name: registry name.
        hierarchy: the label tree.
        bags: the bags (features ``(N, D)``, coords ``(N, 2)``, key mask ``(N,)``).
        description: one line for the results table.
        real_images: instances come from real images (not generated vectors).
    """

    name: str
    hierarchy: Hierarchy
    bags: list[SyntheticBag]
    description: str
    real_images: bool = False


def _generated(name: str, spec: CohortSpec, description: str) -> Callable[[int], BenchCohort]:
    def build(seed: int) -> BenchCohort:
        hierarchy = Hierarchy.preset("bracs")
        return BenchCohort(name, hierarchy, make_cohort(hierarchy, spec, seed=seed), description)

    return build


SMALL = dataclasses.replace(EASY, n_slides=300, noise=0.5, grid_min=8, grid_max=11)
LARGE = dataclasses.replace(EASY, n_slides=2100, noise=0.6, grid_min=5, grid_max=7,
                            key_fraction=0.1)  # fmt: skip
IMBALANCED = dataclasses.replace(SMALL, n_slides=sum(BRACS_COUNTS), class_counts=BRACS_COUNTS)


# ---- digits (scikit-learn's bundled handwritten digits) -----------------------------------
DIGIT_TREE = {
    "name": "digits-3x2",
    "coarse": ["digits-45", "digits-67", "digits-89"],
    "fine": {f"digit-{k}": f"digits-{4 + 2 * ((k - 4) // 2)}{5 + 2 * ((k - 4) // 2)}"
             for k in range(4, 10)},
}  # fmt: skip
DIGITS_BAGS = 360
DIGITS_N = (16, 48)
DIGITS_KEY_FRACTION = 0.12


def build_digits(seed: int) -> BenchCohort:
    """360 bags of 16–48 real digit images; ~12 % (at least 2) are the class's key digit."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
    by_digit = {d: np.flatnonzero(data.target == d) for d in range(10)}
    hierarchy = Hierarchy.from_dict(DIGIT_TREE)
    rng = np.random.default_rng(seed)
    labels = np.arange(DIGITS_BAGS) % hierarchy.n_fine
    rng.shuffle(labels)
    background = np.concatenate([by_digit[d] for d in range(4)])
    bags = []
    for i, fine in enumerate(labels):
        n = int(rng.integers(DIGITS_N[0], DIGITS_N[1] + 1))
        side = int(np.ceil(np.sqrt(n)))
        n_key = max(2, round(DIGITS_KEY_FRACTION * n))
        key = np.zeros(n, dtype=bool)
        key[rng.choice(n, n_key, replace=False)] = True
        index = rng.choice(background, n)
        index[key] = rng.choice(by_digit[4 + int(fine)], n_key)
        rows, cols = np.divmod(np.arange(n), side)
        bags.append(_bag("digits", i, int(fine), images[index], rows, cols, key, 32))
    return BenchCohort("digits", hierarchy, bags, "scikit-learn digits: 8×8 real images, D=64",
                       real_images=True)  # fmt: skip


# ---- textures (scikit-image's bundled images through the hed-texture encoder) --------------
TEXTURE_TREE = {
    "name": "textures-3x2",
    "coarse": ["benign", "granular", "regular"],
    "fine": {
        "normal": "benign",
        "cellular": "benign",
        "gravel": "granular",
        "grass": "granular",
        "brick": "regular",
        "coins": "regular",
    },
}
TEXTURE_BAGS = 300
TEXTURE_N = (30, 60)
TEXTURE_KEY_FRACTION = 0.1
TEXTURE_CROP = 64
TEXTURE_POOL = 2500  # background crops per seed
LESION_POOL = 250  # key crops per texture per seed


def _texture_images() -> dict[str, np.ndarray]:
    """Grey texture images in [0, 1] by fine class (``normal`` has none)."""
    from skimage import data
    from skimage.util import img_as_float

    return {
        "cellular": img_as_float(data.cell()),
        "gravel": img_as_float(data.gravel()),
        "grass": img_as_float(data.grass()),
        "brick": img_as_float(data.brick()),
        "coins": img_as_float(data.coins()),
    }


def _crops(rng: np.random.Generator, image: np.ndarray, n: int, size: int) -> np.ndarray:
    """``(n, size, size, ...)`` random crops, each randomly flipped and rotated by k·90°."""
    h, w = image.shape[:2]
    ys = rng.integers(0, h - size + 1, n)
    xs = rng.integers(0, w - size + 1, n)
    out = np.stack([image[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])
    for i in range(n):
        out[i] = np.rot90(out[i], int(rng.integers(4)))
        if rng.integers(2):
            out[i] = out[i][:, ::-1]
    return out


def build_textures(seed: int) -> BenchCohort:
    """300 bags of 30–60 real-image crops encoded by ``hed-texture``; ~10 % key crops."""
    import torch
    from skimage import data

    from hmil.slides.encoders import create_encoder

    rng = np.random.default_rng(seed)
    tissue = data.immunohistochemistry()  # (512, 512, 3) uint8, real IHC-stained tissue
    hierarchy = Hierarchy.from_dict(TEXTURE_TREE)
    encoder = create_encoder("hed-texture", device="cpu")

    def encode(patches: np.ndarray) -> np.ndarray:
        feats = [encoder(torch.from_numpy(np.ascontiguousarray(patches[i : i + 256])))
                 for i in range(0, len(patches), 256)]  # fmt: skip
        return torch.cat(feats).numpy().astype(np.float32)

    background = encode(_crops(rng, tissue, TEXTURE_POOL, TEXTURE_CROP))
    lesions: dict[int, np.ndarray] = {}
    for name, image in _texture_images().items():
        base = _crops(rng, tissue, LESION_POOL, TEXTURE_CROP).astype(np.float32)
        texture = _crops(rng, image, LESION_POOL, TEXTURE_CROP)[..., None]
        imprinted = np.clip(base * (0.45 + 0.55 * texture), 0, 255).astype(np.uint8)
        lesions[hierarchy.fine.index(name)] = encode(imprinted)
    labels = np.arange(TEXTURE_BAGS) % hierarchy.n_fine
    rng.shuffle(labels)
    bags = []
    for i, fine in enumerate(labels):
        n = int(rng.integers(TEXTURE_N[0], TEXTURE_N[1] + 1))
        side = int(np.ceil(np.sqrt(n)))
        rows, cols = np.divmod(np.arange(n), side)
        x = background[rng.integers(0, TEXTURE_POOL, n)]
        key = np.zeros(n, dtype=bool)
        if int(fine) in lesions:
            n_key = max(2, round(TEXTURE_KEY_FRACTION * n))
            key = _blobs(rng, rows, cols, side, n_key, 1)
            x[key] = lesions[int(fine)][rng.integers(0, LESION_POOL, int(key.sum()))]
        bags.append(_bag("textures", i, int(fine), x, rows, cols, key, TEXTURE_CROP))
    return BenchCohort(
        "textures",
        hierarchy,
        bags,
        "scikit-image crops (IHC tissue + real textures) through hed-texture, D=104",
        real_images=True,
    )


def _bag(prefix: str, i: int, fine: int, x: np.ndarray, rows: np.ndarray, cols: np.ndarray,
         key: np.ndarray, patch: int) -> SyntheticBag:  # fmt: skip
    return SyntheticBag(
        slide_id=f"{prefix}-{i:04d}",
        case_id=f"{prefix}-case-{i:04d}",
        fine=fine,
        features=np.ascontiguousarray(x, dtype=np.float32),
        coords=(np.stack([cols, rows], axis=1) * patch).astype(np.int64),
        key_mask=key,
        patch_size=patch,
    )


#: cohort name → builder(seed)
COHORTS: dict[str, Callable[[int], BenchCohort]] = {
    "gen-small": _generated(
        "gen-small", SMALL, "generated vectors, 300 bags of 64–121, D=64, BRACS tree"
    ),
    "gen-large": _generated(
        "gen-large", LARGE, "generated vectors, 2,100 bags of 25–49, D=64, BRACS tree"
    ),
    "gen-imbalanced": _generated(
        "gen-imbalanced", IMBALANCED, "generated vectors, BRACS class counts (545 bags), D=64"
    ),
    "digits": build_digits,
    "textures": build_textures,
}
