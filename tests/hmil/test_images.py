"""The one PNG writer: pixels round-trip exactly, and a failed write leaves no file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmil.images import save_png, write_png


@pytest.mark.parametrize("channels", [3, 4])
def test_save_png_round_trips_the_pixels(tmp_path: Path, channels: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 11, channels), dtype=np.uint8)
    out = save_png(tmp_path / "sub" / "a.png", image)
    assert out == tmp_path / "sub" / "a.png"
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (11, 7)
        assert np.array_equal(np.asarray(png), image)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]  # no temporary left


def test_a_failed_encode_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_png(tmp_path / "bad.png", np.zeros((4, 4, 3), dtype=np.complex64))
    assert list(tmp_path.iterdir()) == []


def test_write_png_writes_where_it_is_told(tmp_path: Path) -> None:
    write_png(tmp_path / "g.png", np.full((2, 3), 200, dtype=np.uint8))
    with Image.open(tmp_path / "g.png") as png:
        assert png.mode == "L" and np.asarray(png).tolist() == [[200] * 3] * 2
