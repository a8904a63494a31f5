"""A small SYNTHETIC cohort with slides, lesion masks and a trained run, for viewer tests.

Bags come from :mod:`hmil.synthetic` (patch grid of 256 px, key instances in blobs). Each slide is
a pyramidal JPEG TIFF (OpenSlide-readable, written by :mod:`hmil.demo.tiff`) whose pixels show
the patch grid: pink tissue, key patches purple; the key instances also form the
``masks/<id>_lesion.png`` ground truth at downsample 16, as in the demo cohort. One slide
(:data:`NO_SLIDE_ID`) has no slide file, to exercise the coordinate canvas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from hmil.cli import main as hmil_main
from hmil.demo.tiff import aperio_description, write_pyramid_tiff
from hmil.hierarchy import Hierarchy
from hmil.synthetic import CohortSpec, SyntheticBag, make_cohort, write_cohort

APP = Path(__file__).resolve().parents[2] / "viewer" / "app.py"
#: AppTest runs load a model and read slides; the default 3 s is too short on 2 CPU cores
APP_TIMEOUT = 120
PATCH = 128
MASK_DOWNSAMPLE = 16
NO_SLIDE_ID = "synth-0003"
#: a small model so a fold trains in seconds on 2 CPU cores
SMALL_MODEL = {
    "model": {
        "hidden_dim": 32,
        "coarse_dim": 64,
        "fine_dim": 32,
        "coarse_attention_dim": 32,
        "fine_attention_dim": 16,
    },
    "train": {"bags_per_step": 8, "device": "cpu", "cache_bags_gb": 0.5},
}


def write_slide(bag: SyntheticBag, folder: Path) -> tuple[Path, Path]:
    """Write ``slides/<id>.tiff`` and ``masks/<id>_lesion.png`` for one synthetic bag."""
    cells = bag.coords // PATCH
    cols, rows = int(cells[:, 0].max()) + 2, int(cells[:, 1].max()) + 2  # one cell of glass
    per_cell = PATCH // MASK_DOWNSAMPLE  # mask pixels per patch
    low = np.zeros((rows * per_cell, cols * per_cell), dtype=np.uint8)  # 0 glass 1 tissue 2 key
    for (cx, cy), key in zip(cells, bag.key_mask, strict=True):
        low[cy * per_cell : (cy + 1) * per_cell, cx * per_cell : (cx + 1) * per_cell] = (
            2 if key else 1
        )
    lesion = (low == 2).astype(np.uint8) * 255
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    mask_path = folder / "masks" / f"{bag.slide_id}_lesion.png"
    Image.fromarray(lesion).save(mask_path)
    palette = np.array([[242, 240, 245], [232, 170, 200], [120, 50, 150]], dtype=np.uint8)
    level0 = np.asarray(
        Image.fromarray(palette[low]).resize((cols * PATCH, rows * PATCH), Image.Resampling.NEAREST)
    )
    rng = np.random.default_rng(int(bag.slide_id.split("-")[-1]))
    noise = rng.integers(-12, 13, size=(level0.shape[0] // 8, level0.shape[1] // 8, 1))
    noise = np.repeat(np.repeat(noise, 8, axis=0), 8, axis=1)
    level0 = np.clip(level0.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(level0)
    levels = [level0, np.asarray(image.reduce(4)), np.asarray(image.reduce(16))]
    (folder / "slides").mkdir(parents=True, exist_ok=True)
    slide_path = folder / "slides" / f"{bag.slide_id}.tiff"
    w, h = image.size
    desc = aperio_description(w, h, 128, 80, 0.5, 20.0, "SYNTHETIC test slide")
    write_pyramid_tiff(slide_path, levels, mpp=0.5, description=desc, tile=128)
    return slide_path, mask_path


def build_fixture(root: Path, n_slides: int = 24, epochs: int = 2, folds: str = "0,1") -> Path:
    """Cohort + slides + masks + splits + a trained run under ``root``; returns the run dir.

    Layout: ``root/cohort/{features,slides,masks,labels.csv,README_SYNTHETIC.txt}``,
    ``root/splits``, ``root/run``, ``root/small.yaml`` (the small-model config).
    """
    h = Hierarchy.preset("bracs")
    spec = CohortSpec(
        n_slides=n_slides, dim=16, grid_min=8, grid_max=10, key_fraction=0.1, patch_size=PATCH
    )
    bags = make_cohort(h, spec, seed=3)
    cohort = write_cohort(bags, h, root / "cohort", patch_size=PATCH)
    for bag in bags:
        if bag.slide_id != NO_SLIDE_ID:
            write_slide(bag, cohort)
    split_args = ["split", "--labels", str(cohort / "labels.csv"), "--k", "2"]
    split_args += ["--out", str(root / "splits"), "--hierarchy", "bracs", "--val-frac", "0.25"]
    assert hmil_main(split_args) == 0
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_MODEL))
    run = root / "run"
    args = ["train", "--config", str(config), "--labels", str(cohort / "labels.csv")]
    args += ["--features", str(cohort / "features"), "--splits", str(root / "splits")]
    args += ["--hierarchy", "bracs", "--out", str(run), "--epochs", str(epochs)]
    args += ["--folds", folds, "--quiet"]
    assert hmil_main(args) in (0, 3)
    return run


if __name__ == "__main__":  # build a fixture by hand: python tests/helpers/viewer_fixtures.py DIR
    import sys

    print(build_fixture(Path(sys.argv[1])))
