"""Prediction keeps a bag's provenance whichever way it is read: in memory, or streamed from a
large ``.h5`` (SYNTHETIC features in TRIDENT's ``features_<enc>/`` folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hmil.checkpoint import CheckpointInfo
from hmil.config import ModelConfig
from hmil.data.bags import save_bag
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.predict import Predictor

SMALL = ModelConfig(hidden_dim=16, coarse_dim=16, fine_dim=8, coarse_attention_dim=8,
                    fine_attention_dim=8)  # fmt: skip


def test_streamed_and_whole_bags_carry_the_folder_encoder_and_grid_scale(tmp_path: Path) -> None:
    torch.manual_seed(0)
    info = CheckpointInfo(hierarchy=Hierarchy.preset("bracs"), in_dim=8, model_config=SMALL,
                          encoder="uni_v1")  # fmt: skip
    grid = np.stack(np.divmod(np.arange(6), 3), 1).astype(np.int64)  # patch indices
    bag = save_bag(tmp_path / "features_resnet50" / "s1.h5",
                   np.random.default_rng(0).standard_normal((6, 8)), grid,
                   coords_attrs={"patch_size_level0": 448})  # fmt: skip
    whole = Predictor(HMIL(8, 3, 7, SMALL), info, torch.device("cpu"))
    streamed = Predictor(whole.model, info, torch.device("cpu"), stream_bytes=0, chunk_rows=4)
    results = [p.predict(bag) for p in (whole, streamed)]
    for pred in results:
        assert pred.bag_attrs is not None and pred.bag_attrs["encoder"] == "resnet50"
        assert pred.warnings == [
            "bag made by resnet50 (named by its folder features_resnet50), but the checkpoint "
            "was trained on uni_v1 features: the prediction is not meaningful"
        ]
        assert pred.coords is not None and (pred.coords == grid * 448).all()
    np.testing.assert_allclose(results[0].fine_probs, results[1].fine_probs, atol=1e-5)
