"""The flat MIL baselines the benchmark peers wrap: shapes, attention sums, CLAM's instance loss."""

from __future__ import annotations

import pytest
import torch

from benchmarks.baselines import CLAMMB, FlatGatedMIL, FlatMILConfig


def test_flat_gated_mil_one_attention_map_and_k_logits() -> None:
    torch.manual_seed(0)
    model = FlatGatedMIL(12, 5, FlatMILConfig(hidden_dim=16, attention_dim=8)).eval()
    out = model(torch.randn(7, 12))
    assert out.logits.shape == (5,) and out.attention.shape == (1, 7)
    assert float(out.attention.detach().sum()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"expected a bag of shape \(N, 12\)"):
        model(torch.randn(7, 3))
    with pytest.raises(ValueError, match="unknown init 'x'"):
        FlatGatedMIL(12, 5, FlatMILConfig(init="x"))


def test_clam_mb_class_wise_attention_and_instance_loss_only_when_training() -> None:
    torch.manual_seed(0)
    model = CLAMMB(12, 4, hidden_dim=16, attention_dim=8, k_sample=3)
    bag = torch.randn(10, 12)
    out = model.train()(bag, target=2)
    assert out.logits.shape == (4,) and out.attention.shape == (4, 10)
    assert torch.allclose(out.attention.sum(dim=1), torch.ones(4), atol=1e-6)
    assert out.instance_loss is not None and float(out.instance_loss.detach()) > 0
    assert model.eval()(bag, target=2).instance_loss is None
    # a bag smaller than 2·k_sample samples what it has (CLAM's topk would fail)
    assert model.train()(torch.randn(3, 12), target=0).instance_loss is not None
