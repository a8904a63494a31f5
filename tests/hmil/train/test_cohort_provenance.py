"""Encoder provenance: names + weights hashes, mixed cohorts refused, predict warns (SYNTHETIC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import hmil
from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main
from hmil.config import ModelConfig
from hmil.data.bags import save_bag, save_feature_tensor
from hmil.data.provenance import (
    EncoderRef,
    check_single_encoder,
    encoder_mismatch,
    encoder_of,
    parse_encoder,
    read_bag_encoder,
)
from hmil.data.splits import Split
from hmil.errors import HMILError
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.train.cohort import gather_fold

BRACS = Hierarchy.preset("bracs")
SMALL = ModelConfig(
    hidden_dim=16, coarse_dim=32, fine_dim=16, coarse_attention_dim=8, fine_attention_dim=8
)


def _bag(path: Path, encoder: str | None, sha: str = "", n: int = 6) -> Path:
    attrs = {} if encoder is None else {"encoder": encoder, "encoder_weights_sha256": sha}
    x = np.random.default_rng(len(str(path))).standard_normal((n, 12)).astype(np.float32)
    coords = np.stack(np.divmod(np.arange(n), 3), 1) * 256
    return save_bag(path, x, coords, attrs)


def test_references_compare_names_aliases_and_weights() -> None:
    assert parse_encoder("resnet50_trunc") == EncoderRef("resnet50")  # CLAM's name → TRIDENT's
    assert parse_encoder("torchscript:net.pt:abc123def456") == EncoderRef(
        "torchscript", "abc123def456"
    )
    assert parse_encoder("uni_v1@1a2b") == EncoderRef("uni_v1", "1a2b")
    uni = EncoderRef("uni_v1", "1a2b3c4d")
    assert not uni.differs_from(EncoderRef("uni_v1", "1a2b"))  # a prefix of the same hash
    assert not uni.differs_from(EncoderRef("uni_v1"))  # weights not recorded on one side
    assert uni.differs_from(EncoderRef("uni_v1", "ffff"))  # other weights, same architecture
    assert uni.differs_from(EncoderRef("resnet50"))
    assert not uni.differs_from(EncoderRef())  # unknown never conflicts
    assert str(uni) == "uni_v1 (weights 1a2b3c4d)" and str(EncoderRef()) == "unknown encoder"
    assert encoder_of({"encoder": "uni_v2"}).name == "uni_v2"


def test_bag_encoders_are_read_from_h5_and_pt(tmp_path: Path) -> None:
    assert read_bag_encoder(_bag(tmp_path / "a.h5", "uni_v1", "abcd")) == EncoderRef(
        "uni_v1", "abcd"
    )
    assert read_bag_encoder(_bag(tmp_path / "b.h5", None)) == EncoderRef()
    # a CLAM-style .pt tensor beside its .h5 gets the .h5's provenance
    _bag(tmp_path / "c.h5", "conch_v15", "beef")
    save_feature_tensor(tmp_path / "c.pt", torch.zeros(6, 12))
    assert read_bag_encoder(tmp_path / "c.pt") == EncoderRef("conch_v15", "beef")


def test_mixed_encoders_are_refused(tmp_path: Path) -> None:
    same = [_bag(tmp_path / f"s{i}.h5", "uni_v1", "aa11") for i in range(3)]
    unknown = _bag(tmp_path / "clam.h5", None)
    assert check_single_encoder([*same, unknown]) == EncoderRef("uni_v1", "aa11")
    other = _bag(tmp_path / "r.h5", "resnet50")
    with pytest.raises(HMILError, match=r"made by resnet50, but s0\.h5 by uni_v1 \(weights aa11\)"):
        check_single_encoder([*same, other])
    reweighted = _bag(tmp_path / "w.h5", "uni_v1", "bb22")
    with pytest.raises(HMILError, match="different encoders cannot be trained together"):
        check_single_encoder([same[0], reweighted])


def test_training_refuses_a_mixed_cohort(tmp_path: Path) -> None:
    ids = [f"s{i}" for i in range(6)]
    for i, sid in enumerate(ids):
        _bag(tmp_path / f"{sid}.h5", "uni_v1" if i != 4 else "resnet50")
    labels = pd.DataFrame({
        "slide_id": ids, "case_id": ids, "label": ["N"] * 6,
        "fine_idx": [0] * 6, "coarse_idx": [0] * 6,
    })  # fmt: skip
    split = Split(train=tuple(ids[:4]), val=tuple(ids[4:5]), test=tuple(ids[5:]))
    with pytest.raises(HMILError, match="features of different encoders"):
        gather_fold(labels, split, tmp_path, store_budget_bytes=1 << 20, verbose=False)


@pytest.fixture
def uni_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    info = CheckpointInfo(hierarchy=BRACS, in_dim=12, model_config=SMALL, encoder="uni_v1")
    return save_checkpoint(tmp_path / "ckpt.pt", HMIL(12, 3, 7, SMALL), info)


def test_predict_warns_when_the_bag_encoder_is_not_the_checkpoints(
    uni_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictor = hmil.load_checkpoint(uni_checkpoint, device="cpu")
    good = predictor.predict(_bag(tmp_path / "good.h5", "uni_v1", "aa"))
    assert good.warnings == [] and "warnings" not in good.to_dict()
    bad = predictor.predict(_bag(tmp_path / "bad.h5", "resnet50"))
    assert bad.warnings == [
        "bag made by resnet50, but the checkpoint was trained on uni_v1 features: the "
        "prediction is not meaningful"
    ]
    assert bad.to_dict()["warnings"] == bad.warnings
    assert predictor.predict(_bag(tmp_path / "clam.h5", None)).warnings == []  # unknown: silent
    code = main(["predict", "--checkpoint", str(uni_checkpoint), str(tmp_path / "bad.h5")])
    captured = capsys.readouterr()
    assert code == 0 and '"warnings"' in captured.out
    assert f"warning: {tmp_path / 'bad.h5'}: bag made by resnet50" in captured.err


def test_mismatch_text_for_weights_of_the_same_architecture() -> None:
    text = encoder_mismatch("uni_v1@aaaa", {"encoder": "uni_v1", "encoder_weights_sha256": "bbbb"})
    assert text is not None and "uni_v1 (weights bbbb)" in text
    assert encoder_mismatch("", {"encoder": "uni_v1"}) is None
