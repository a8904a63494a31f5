"""Fixtures for the slide tests (SYNTHETIC slides; see ``slide_helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from slide_helpers import disc_image, write_pyramid_tiff


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
