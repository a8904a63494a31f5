"""Shared fixtures: small synthetic cohorts and the shared real-slide folder."""

from __future__ import annotations

from pathlib import Path

import pytest

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
