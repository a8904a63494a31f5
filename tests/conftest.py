"""Shared fixtures: small SYNTHETIC cohorts, slides and runs, the shared real-slide folder, fake
SLURM commands and the viewer's run.

The fake ``sbatch``/``srun``/``sacct`` let the real submitit ``SlurmExecutor`` submit through
its public path (it writes the sbatch script and runs ``sbatch <script>``) without a cluster:
``sbatch`` keeps a copy of each script and answers like SLURM does
(``Submitted batch job <id>``, ids from 4242 up); ``sacct`` prints ``fake_slurm/sacct.txt``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from slide_helpers import disc_image, write_pyramid_tiff
from viewer_fixtures import build_fixture

from hmil.cli import main
from hmil.hierarchy import Hierarchy
from hmil.synthetic import CohortSpec, make_cohort, write_cohort

REPO = Path(__file__).resolve().parents[1]
SHARED_SLIDES = REPO.parent / "shared" / "data" / "slides"


@pytest.fixture(scope="session")
def slides_dir() -> Path:
    """``../shared/data/slides`` (real TCGA/OpenSlide test slides); skips when absent."""
    if not SHARED_SLIDES.is_dir():
        pytest.skip("shared test slides not available")
    return SHARED_SLIDES


@pytest.fixture(scope="session")
def bracs() -> Hierarchy:
    return Hierarchy.preset("bracs")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory, bracs: Hierarchy) -> Path:
    """42 SYNTHETIC bags (6 per BRACS fine class), D = 16, 8–10 patches a side."""
    out = tmp_path_factory.mktemp("cohort")
    spec = CohortSpec(n_slides=42, dim=16, grid_min=8, grid_max=10, key_fraction=0.08)
    write_cohort(make_cohort(bracs, spec, seed=1), bracs, out)
    return out


@pytest.fixture(scope="session")
def disc_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1536 × 1024 SYNTHETIC slide at 0.5 µm/px (20×), 3 levels, a tissue disc of radius 350."""
    return write_pyramid_tiff(tmp_path_factory.mktemp("slides") / "disc.tiff", disc_image())


@pytest.fixture
def make_slide(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a SYNTHETIC pyramidal TIFF from an image into ``tmp_path``."""

    def make(name: str, image: np.ndarray, **kwargs: object) -> Path:
        return write_pyramid_tiff(tmp_path / name, image, **kwargs)  # type: ignore[arg-type]

    return make


FAKE_SBATCH = """#!/bin/sh
d="$FAKE_SLURM_DIR"
n=$(cat "$d/next_id" 2>/dev/null || echo 4242)
echo $((n + 1)) > "$d/next_id"
cp "$1" "$d/sbatch_$n.sh"
echo "$@" > "$d/sbatch_$n.args"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM_DIR/sacct.calls"
cat "$FAKE_SLURM_DIR/sacct.txt" 2>/dev/null
"""
FAKE_SRUN = "#!/bin/sh\nexit 0\n"


@pytest.fixture(scope="session")
def split_cohort(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_cohort`` (42 SYNTHETIC bags, D = 16) with 3 CLAM splits in ``<dir>/splits``."""
    out = tmp_path_factory.mktemp("splits")
    args = [
        "split",
        "--labels",
        str(small_cohort / "labels.csv"),
        "--k",
        "3",
        "--out",
        str(out / "splits"),
        "--hierarchy",
        "bracs",
        "--seed",
        "0",
    ]
    assert main(args) == 0
    return out / "splits"


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose fake SLURM commands come first on PATH; returns the folder."""
    folder = tmp_path / "fake_slurm"
    folder.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", FAKE_SRUN)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def viewer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{cohort,splits,run,small.yaml}`` (see :func:`viewer_fixtures.build_fixture`)."""
    return build_fixture(tmp_path_factory.mktemp("viewer")).parent


@pytest.fixture(scope="session")
def viewer_run(viewer_root: Path) -> Path:
    return viewer_root / "run"


@pytest.fixture()
def app_env(monkeypatch: pytest.MonkeyPatch, viewer_root: Path) -> Path:
    """Point the viewer at the fixture run, with its folder as the only extra data root."""
    monkeypatch.setenv("HMIL_VIEW_RUN", str(viewer_root / "run"))
    monkeypatch.setenv("HMIL_VIEW_DATA_ROOTS", str(viewer_root))
    monkeypatch.setenv("HMIL_VIEW_CHECKPOINT", "")
    monkeypatch.setenv("HMIL_VIEW_MAX_UPLOAD_MB", "5")
    return viewer_root
