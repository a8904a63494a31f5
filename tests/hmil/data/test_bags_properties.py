"""Property-based: whatever arrays or bytes a bag file holds, loading either yields a valid bag
or raises BagError naming the file — never another exception, never a hang."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from hmil.data.bags import load_bag
from hmil.errors import BagError

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_])
any_array = dtypes.flatmap(
    lambda dt: arrays(dt, array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6))
)


def _check(path: Path, expected_dim: int | None = None) -> None:
    try:
        bag = load_bag(path, expected_dim=expected_dim)
    except BagError as exc:
        assert str(path) in str(exc)
        return
    assert bag.features.ndim == 2 and bag.features.shape[0] > 0
    assert bag.features.dtype == torch.float32
    assert bool(torch.isfinite(bag.features).all())
    if expected_dim is not None:
        assert bag.dim == expected_dim


@SETTINGS
@given(features=any_array, coords=st.none() | any_array)
def test_random_h5_arrays(features, coords):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bag.h5"
        with h5py.File(path, "w") as f:
            f["features"] = features
            if coords is not None:
                f["coords"] = coords
        _check(path)
        _check(path, expected_dim=4)


@SETTINGS
@given(features=any_array, as_dict=st.booleans())
def test_random_pt_tensors(features, as_dict):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bag.pt"
        tensor = torch.from_numpy(np.ascontiguousarray(features))
        torch.save({"features": tensor} if as_dict else tensor, path)
        _check(path)


@SETTINGS
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".h5", ".pt"]))
def test_random_bytes(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bag{suffix}"
        path.write_bytes(data)
        _check(path)


@SETTINGS
@given(prefix=st.integers(min_value=0, max_value=400))
def test_truncated_real_files(prefix):
    """Valid bag files cut off at any length."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("bag.h5", "bag.pt"):
            full = Path(tmp) / f"full_{name}"
            if name.endswith(".h5"):
                with h5py.File(full, "w") as f:
                    f["features"] = np.ones((8, 4), np.float32)
            else:
                torch.save(torch.ones(8, 4), full)
            data = full.read_bytes()
            cut = Path(tmp) / name
            cut.write_bytes(data[: prefix * len(data) // 400])
            _check(cut)
