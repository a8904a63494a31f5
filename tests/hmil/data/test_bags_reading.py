import h5py
import numpy as np
import pytest
import torch

from hmil.data.bags import find_bag, infer_patch_size, load_bag, save_bag
from hmil.errors import BagError


def _coords(n, step=256):
    side = int(np.ceil(np.sqrt(n)))
    r, c = np.divmod(np.arange(n), side)
    return np.stack([c, r], 1) * step


def test_pt_plain_tensor_and_dict(tmp_path):
    x = torch.randn(10, 8)
    torch.save(x, tmp_path / "a.pt")  # CLAM pt_files
    torch.save({"features": x, "coords": torch.from_numpy(_coords(10))}, tmp_path / "b.pt")
    a = load_bag(tmp_path / "a.pt")
    b = load_bag(tmp_path / "b.pt")
    assert a.features.shape == (10, 8) and a.coords is None
    torch.testing.assert_close(b.features, x)
    assert b.coords.shape == (10, 2) and b.coords.dtype == np.int64
    assert a.slide_id == "a"


def test_clam_h5_without_attrs_and_batch_dim(tmp_path):
    x = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    with h5py.File(tmp_path / "clam.h5", "w") as f:
        f["features"] = x[None]  # (1, N, D)
        f["coords"] = _coords(12, 512).astype(np.int32)
    bag = load_bag(tmp_path / "clam.h5")
    assert bag.features.shape == (12, 4)
    np.testing.assert_allclose(bag.features.numpy(), x)
    assert infer_patch_size(bag.coords, bag.attrs) == 512


def test_trident_h5_attrs(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["features"] = np.ones((5, 3), np.float32)
        f["features"].attrs["encoder"] = "uni_v1"
        c = f.create_dataset("coords", data=_coords(5))
        c.attrs["patch_size_level0"] = 448
        c.attrs["patch_size"] = 224
    bag = load_bag(tmp_path / "t.h5")
    assert bag.attrs["encoder"] == "uni_v1"
    assert infer_patch_size(bag.coords, bag.attrs) == 448


@pytest.mark.parametrize("name", ["big.h5", "big.pt"])
def test_large_bag_is_not_copied_twice(tmp_path, name):
    """Peak Python/numpy allocation while loading stays near one copy of the features."""
    import tracemalloc

    x = np.random.default_rng(0).standard_normal((20_000, 128)).astype(np.float32)  # 10 MB
    save_bag(tmp_path / name, x, _coords(20_000))
    tracemalloc.start()
    bag = load_bag(tmp_path / name)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert bag.features.shape == (20_000, 128)
    assert peak < 1.5 * x.nbytes, f"peak {peak / 1e6:.1f} MB for a {x.nbytes / 1e6:.1f} MB bag"


def test_save_round_trip_both_formats(tmp_path):
    x = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    for name in ("r.h5", "r.pt"):
        save_bag(tmp_path / name, x, _coords(7), attrs={"encoder": "e"})
        bag = load_bag(tmp_path / name)
        np.testing.assert_array_equal(bag.features.numpy(), x)
        np.testing.assert_array_equal(bag.coords, _coords(7))
        assert bag.attrs["encoder"] == "e"
    assert find_bag(tmp_path, "r").suffix == ".h5"
    assert find_bag(tmp_path, "missing") is None


@pytest.mark.parametrize(
    ("features", "coords", "message"),
    [
        (np.zeros((0, 4), np.float32), None, "0 instances"),
        (np.zeros(4, np.float32), None, "2-D"),
        (np.zeros((2, 3, 4), np.float32), None, "2-D"),
        (np.array([[1.0, np.nan]], np.float32), None, "non-finite"),
        (np.array([[1.0, np.inf]], np.float32), None, "non-finite"),
        (np.ones((3, 2), np.float32), np.zeros((2, 2), np.int64), "2 coords for 3"),
    ],
)
def test_bad_bags_raise_naming_the_file(tmp_path, features, coords, message):
    path = tmp_path / "bad.pt"
    payload = {"features": torch.from_numpy(features)}
    if coords is not None:
        payload["coords"] = torch.from_numpy(coords)
    torch.save(payload, path)
    with pytest.raises(BagError, match=message) as info:
        load_bag(path)
    assert str(path) in str(info.value)


def test_wrong_dimension_missing_file_and_garbage(tmp_path):
    save_bag(tmp_path / "d.h5", np.ones((3, 8), np.float32))
    with pytest.raises(BagError, match="dimension 8 does not match the model's 16"):
        load_bag(tmp_path / "d.h5", expected_dim=16)
    with pytest.raises(BagError, match="not found"):
        load_bag(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(BagError, match=r"junk\.h5: not a readable HDF5"):
        load_bag(tmp_path / "junk.h5")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage")
    with pytest.raises(BagError, match=r"junk\.pt: not a readable torch file"):
        load_bag(tmp_path / "junk.pt")
