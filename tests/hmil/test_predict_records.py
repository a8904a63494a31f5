"""The Python prediction API and the contract's prediction record."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import hmil
from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.config import ModelConfig
from hmil.data.bags import save_bag
from hmil.decoding import decode
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.predict import Prediction

BRACS = Hierarchy.preset("bracs")
SMALL = ModelConfig(
    hidden_dim=16, coarse_dim=32, fine_dim=16, coarse_attention_dim=8, fine_attention_dim=8
)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = HMIL(12, 3, 7, SMALL)
    info = CheckpointInfo(hierarchy=BRACS, in_dim=12, model_config=SMALL, encoder="synthetic")
    return save_checkpoint(tmp_path / "ckpt.pt", model, info)


def test_load_checkpoint_predicts_paths_tensors_and_arrays(checkpoint, tmp_path):
    predictor = hmil.load_checkpoint(checkpoint, device="cpu")
    assert predictor.hierarchy.same_as(BRACS) and predictor.in_dim == 12
    assert predictor.info.encoder == "synthetic"
    x = np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)
    coords = np.stack(np.divmod(np.arange(40), 8), 1) * 256
    path = save_bag(tmp_path / "s1.h5", x, coords)
    from_path = predictor.predict(path, attention=True)
    from_tensor = predictor.predict(torch.from_numpy(x))
    from_array = predictor.predict(x, slide_id="arr")
    np.testing.assert_allclose(from_path.fine_probs, from_tensor.fine_probs, atol=1e-6)
    np.testing.assert_allclose(from_path.fine_probs, from_array.fine_probs, atol=1e-6)
    assert from_path.slide_id == "s1" and from_array.slide_id == "arr"
    assert from_path.attention["fine"].shape == (7, 40)
    assert from_path.attention["coarse"].shape == (3, 40)
    np.testing.assert_array_equal(from_path.coords, coords)
    record = from_path.to_dict(attention=True)
    assert record["n_instances"] == 40
    assert sum(record["fine"]["probs"].values()) == pytest.approx(1, abs=1e-5)
    assert sum(record["coarse"]["probs"].values()) == pytest.approx(1, abs=1e-5)
    assert sum(record["coarse"]["head_probs"].values()) == pytest.approx(1, abs=1e-5)
    assert len(record["attention"]["fine"]["IC"]) == 40
    assert "attention" not in from_path.to_dict()


def test_coarse_probs_are_summed_fine_probs_and_inconsistency_is_flagged():
    # fine 0.3 / 0.3 under 'benign', 0.4 'IC' under 'malignant' -> coarse benign, fine IC
    fine = np.array([0.3, 0.3, 0.0, 0.0, 0.0, 0.0, 0.4])
    pred = Prediction("s", 3, BRACS, fine, np.array([0.2, 0.2, 0.6]))
    np.testing.assert_allclose(pred.coarse_probs, [0.6, 0.0, 0.4])
    assert (pred.fine_pred, pred.coarse_pred) == ("IC", "benign")
    record = pred.to_dict()
    assert record["consistent"] is False
    assert record["coarse"]["head_pred"] == "malignant"
    top_down = decode(fine[None], BRACS, decoding="top_down")
    assert BRACS.fine[top_down.fine_pred[0]] == "N" and top_down.consistent.all()


def test_streaming_prediction_equals_in_memory(checkpoint, tmp_path):
    x = np.random.default_rng(1).standard_normal((5000, 12)).astype(np.float32) * 2
    path = save_bag(tmp_path / "big.h5", x)
    in_memory = hmil.load_checkpoint(checkpoint, device="cpu").predict(path, attention=True)
    streamed = hmil.load_checkpoint(checkpoint, device="cpu", stream_bytes=1, chunk_rows=777)
    out = streamed.predict(path, attention=True)
    assert np.abs(out.fine_probs - in_memory.fine_probs).max() <= 1e-5
    assert np.abs(out.coarse_head_probs - in_memory.coarse_head_probs).max() <= 1e-5
    assert np.abs(out.attention["fine"] - in_memory.attention["fine"]).max() <= 1e-7


def test_streaming_reports_bad_rows_with_the_file(checkpoint, tmp_path):
    x = np.ones((3000, 12), np.float32)
    x[2500, 1] = np.nan
    path = save_bag(tmp_path / "nan.h5", x)
    predictor = hmil.load_checkpoint(checkpoint, device="cpu", stream_bytes=1, chunk_rows=1000)
    with pytest.raises(
        hmil.errors.BagError,
        match="non-finite feature values \\(NaN/Inf\\), first at instance 2500",
    ) as info:
        predictor.predict(path)
    assert str(path) in str(info.value)


def test_per_class_head_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, head="per_class")
    model = HMIL(12, 3, 7, cfg).eval()
    info = CheckpointInfo(hierarchy=BRACS, in_dim=12, model_config=cfg, encoder="synthetic")
    path = save_checkpoint(tmp_path / "ckpt.pt", model, info)
    predictor = hmil.load_checkpoint(path)
    assert predictor.model.config.head == "per_class"
    x = torch.randn(40, 12)
    with torch.no_grad():
        expected = torch.softmax(model(x).fine_logits, -1).numpy()
    got = predictor.predict(x)
    assert np.abs(got.fine_probs - expected).max() <= 1e-6
