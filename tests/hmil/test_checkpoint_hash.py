"""Checkpoints carry a SHA-256 of their content: a changed byte is refused on load,
checkpoints written before the hash existed still load."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import hmil
from hmil.checkpoint import HASH_KEY, CheckpointInfo, content_hash, save_checkpoint
from hmil.config import ModelConfig
from hmil.errors import CheckpointError
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL

REPO = Path(__file__).resolve().parents[2]
SMALL = ModelConfig(hidden_dim=8, coarse_dim=8, fine_dim=8, coarse_attention_dim=4,
                    fine_attention_dim=4)  # fmt: skip


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = HMIL(16, 3, 7, SMALL)
    info = CheckpointInfo(Hierarchy.preset("bracs"), 16, SMALL, val_metrics={"fine": {0: 0.5}})
    return save_checkpoint(tmp_path / "checkpoint.pt", model, info)


def _flip_weight_byte(path: Path) -> None:
    """One exponent bit of one float in the largest tensor record of the torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    n_name, n_extra = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + n_name + n_extra + 3] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_saved_checkpoint_carries_its_hash_and_loads(saved: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    assert payload[HASH_KEY] == content_hash(payload) and len(payload[HASH_KEY]) == 64
    bag = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    assert hmil.load_checkpoint(saved, device="cpu").predict(bag).fine_probs.shape == (7,)


def test_one_flipped_byte_in_the_weights_is_refused(saved: Path) -> None:
    """Before: it loaded and predicted other numbers."""
    _flip_weight_byte(saved)
    with pytest.raises(CheckpointError, match="does not match its stored SHA-256"):
        hmil.load_checkpoint(saved, device="cpu")


def test_changed_metadata_is_refused_too(saved: Path, tmp_path: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["hierarchy"]["fine"]["N"] = "malignant"  # a re-parented class, hash left as it was
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="SHA-256"):
        hmil.load_checkpoint(tmp_path / "edited.pt", device="cpu")


def test_checkpoints_without_a_hash_still_load(saved: Path, tmp_path: Path) -> None:
    demo = REPO / "checkpoints" / "demo" / "checkpoint.pt"
    assert HASH_KEY in torch.load(demo, weights_only=True)  # the shipped one is current
    assert hmil.load_checkpoint(demo, device="cpu").in_dim > 0
    payload = torch.load(saved, weights_only=True)
    del payload[HASH_KEY]
    torch.save(payload, tmp_path / "old.pt")
    assert hmil.load_checkpoint(tmp_path / "old.pt", device="cpu").in_dim == 16
