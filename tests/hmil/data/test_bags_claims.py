"""Claimed sizes in bags are checked against what the file stores before anything is allocated:
coords, compressed datasets, data outside the file, ``.pt`` zip records, legacy ``.pt``
storages; ``hmil predict`` skips such bags with one line each and exits 3. (The memory each
refusal costs is measured in ``tests/hmil/slides/test_reader_memory.py``.)"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import hmil
from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main as hmil_main
from hmil.config import ModelConfig
from hmil.data.bags import MAX_COMPRESSION_RATIO, load_bag, save_bag
from hmil.errors import BagError
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL

D = 12
SMALL = ModelConfig(
    hidden_dim=16, coarse_dim=32, fine_dim=16, coarse_attention_dim=8, fine_attention_dim=8
)


def _features(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, D)).astype(np.float32)


def coords_claim_bag(path: Path, claimed: int, n: int = 64) -> Path:
    """Real features of ``n`` rows, and a chunked gzip ``coords`` claiming ``claimed`` rows of
    which nothing is written (a 30 KB file)."""
    with h5py.File(path, "w") as f:
        f["features"] = _features(n)
        f.create_dataset(
            "coords", shape=(claimed, 2), dtype="i8", chunks=(1 << 16, 2), compression="gzip"
        )
    return path


def gzip_bag(path: Path, rows: int, fill: float = 0.0) -> Path:
    """A features dataset of ``rows`` × D floats, gzip-compressed and written in blocks
    (constant values compress ~1000×)."""
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "features", shape=(rows, D), dtype="f4", chunks=(4096, D), compression="gzip"
        )
        for start in range(0, rows, 65536):
            stop = min(rows, start + 65536)
            dset[start:stop] = np.full((stop - start, D), fill, dtype=np.float32) + 1.0
    return path


@pytest.mark.parametrize("claimed", [400_000_000, 4_000_000_000])
def test_coords_claiming_more_rows_than_features_are_refused_unread(tmp_path, claimed):
    path = coords_claim_bag(tmp_path / "bag.h5", claimed)
    assert path.stat().st_size < 100_000
    with pytest.raises(BagError) as info:
        load_bag(path)
    assert info.value.where == str(path)
    assert info.value.problem == f"{claimed} coords for 64 feature vectors"


def test_unwritten_coords_of_the_right_count_are_refused(tmp_path):
    n = 70_000  # coords of 1.1 MB: above the unchecked floor
    path = tmp_path / "bag.h5"
    with h5py.File(path, "w") as f:
        f["features"] = _features(n)
        f.create_dataset("coords", shape=(n, 2), dtype="i8", chunks=(4096, 2))
    with pytest.raises(
        BagError, match=r"'coords' claims shape \(70000, 2\) .*\(truncated or forged\)"
    ):
        load_bag(path)


def test_coords_of_the_wrong_shape_or_type_are_refused_before_reading(tmp_path):
    for name, data in [("shape", np.zeros((64, 3), "i8")), ("dtype", np.array(["a"] * 64))]:
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f["features"] = _features()
            f["coords"] = data.astype("S1") if name == "dtype" else data
        with pytest.raises(BagError, match="coords must"):
            load_bag(path)


def test_data_outside_the_file_is_refused(tmp_path):
    """External raw storage (e.g. ``/dev/zero``, anyone's file) and links to other files."""
    raw = tmp_path / "coords.raw"
    raw.write_bytes(np.zeros((64, 2), "i8").tobytes())
    external = tmp_path / "external.h5"
    with h5py.File(external, "w") as f:
        f["features"] = _features()
        f.create_dataset("coords", shape=(64, 2), dtype="i8", external=[(str(raw), 0, 1024)])
    with pytest.raises(BagError, match="'coords' keeps its data outside the file"):
        load_bag(external)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["coords"] = np.zeros((64, 2), "i8")
        f["features"] = _features()
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["features"] = _features()
        f["coords"] = h5py.ExternalLink(str(other), "/coords")
    with pytest.raises(BagError, match="'coords' links to another file"):
        load_bag(linked)
    with h5py.File(linked, "a") as f:
        del f["features"]
        f["features"] = h5py.ExternalLink(str(other), "/features")
    with pytest.raises(BagError, match="'features' links to another file"):
        load_bag(linked)


def test_a_gzip_bag_expanding_past_the_ratio_is_refused_and_a_real_one_loads(tmp_path):
    bomb = gzip_bag(tmp_path / "bomb.h5", rows=1 << 17)  # 6 MB of constant floats
    assert bomb.stat().st_size * MAX_COMPRESSION_RATIO < (1 << 17) * D * 4
    with pytest.raises(BagError, match=f"more than {MAX_COMPRESSION_RATIO}× compression"):
        load_bag(bomb)
    real = tmp_path / "real.h5"
    with h5py.File(real, "w") as f:
        f.create_dataset("features", data=_features(1 << 15), compression="gzip", shuffle=True)
    assert load_bag(real).features.shape == (1 << 15, D)


def test_a_pt_zip_whose_records_expand_past_the_ratio_is_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"features": torch.ones(1 << 15, D)}, plain)
    assert load_bag(plain).features.shape == (1 << 15, D)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(deflated, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), zipfile.ZIP_DEFLATED)
    with pytest.raises(BagError, match=r"record '.*/data/0' claims 1,572,864 bytes but stores"):
        load_bag(deflated)


def legacy_claim_pt(path: Path, claimed: int) -> Path:
    """A legacy (pre-zip) ``.pt`` whose storage claims ``claimed`` floats (it holds 64 × 104)."""
    torch.save({"features": torch.ones(64, 104)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    numel = b"M" + struct.pack("<H", 64 * 104)  # BININT2 of the storage's element count
    assert data.count(numel) == 1
    path.write_bytes(data.replace(numel, b"J" + struct.pack("<i", claimed)))
    return path


def test_a_legacy_pt_claiming_a_large_storage_is_refused(tmp_path):
    path = legacy_claim_pt(tmp_path / "legacy.pt", 250_000_000)
    with pytest.raises(BagError, match="not a readable torch file"):
        load_bag(path)


def test_a_memory_error_while_loading_is_one_bag_error(tmp_path, monkeypatch):
    path = save_bag(tmp_path / "bag.h5", _features())

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(np, "empty", exhausted)
    with pytest.raises(BagError) as info:
        load_bag(path)
    assert info.value.problem == "does not fit in the memory available"


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    info = CheckpointInfo(hierarchy=Hierarchy.preset("bracs"), in_dim=D, model_config=SMALL)
    return save_checkpoint(tmp_path / "ckpt.pt", HMIL(D, 3, 7, SMALL), info)


def test_predict_over_many_bags_skips_the_bad_ones_and_exits_3(tmp_path, checkpoint, capsys):
    good = [save_bag(tmp_path / f"good-{i}.h5", _features(), np.zeros((64, 2))) for i in range(4)]
    bad = [
        coords_claim_bag(tmp_path / "coords.h5", 4_000_000_000),
        gzip_bag(tmp_path / "gzip.h5", rows=1 << 17),
        legacy_claim_pt(tmp_path / "legacy.pt", 250_000_000),
    ]
    out = tmp_path / "pred.jsonl"
    bags = [str(p) for p in [good[0], *bad, *good[1:]]]
    code = hmil_main(["predict", "--checkpoint", str(checkpoint), *bags, "--out", str(out)])
    assert code == 3
    assert len(out.read_text().splitlines()) == len(good)
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[1] for line in errors if line.startswith("error:")] == [
        str(p) for p in bad
    ]


def test_predict_turns_memory_errors_into_bag_errors(tmp_path, checkpoint, monkeypatch):
    """MemoryError (numpy) and torch's allocator refusal, in loading or in the forward."""
    predictor = hmil.load_checkpoint(checkpoint, device="cpu")
    path = save_bag(tmp_path / "bag.h5", _features())
    for error in (MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory")):

        def fail(*args, _error=error, **kwargs):
            raise _error

        monkeypatch.setattr(predictor, "forward_bag", fail)
        with pytest.raises(BagError) as info:
            predictor.predict(path)
        assert (info.value.where, info.value.problem) == (
            str(path),
            "does not fit in the memory available",
        )

    def bug(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(predictor, "forward_bag", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug keeps its traceback
        predictor.predict(path)
