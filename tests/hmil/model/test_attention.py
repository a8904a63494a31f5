"""``hmil.model.attention``: class-wise gated attention and exact pooling, whole or in chunks."""

from __future__ import annotations

import pytest
import torch

from hmil.model.attention import ClassWiseGatedAttention, OnlinePool, attention_pool


def test_gated_attention_gives_one_score_row_per_class() -> None:
    torch.manual_seed(0)
    layer = ClassWiseGatedAttention(in_dim=12, attention_dim=8, n_classes=3)
    h = torch.randn(20, 12)
    scores = layer(h)
    assert scores.shape == (3, 20)
    a, b = layer.gate_proj(h).split(8, dim=-1)  # W_a and W_b fused in one Linear(12 → 16)
    expected = layer.score(torch.tanh(a) * torch.sigmoid(b)).T
    torch.testing.assert_close(scores, expected)


def test_inference_path_gives_the_same_scores_as_training() -> None:
    torch.manual_seed(1)
    layer = ClassWiseGatedAttention(in_dim=6, attention_dim=4, n_classes=2, dropout=0.5).eval()
    h = torch.randn(9, 6)
    with torch.enable_grad():
        reference = layer(h).detach()
    with torch.no_grad():  # gates in place in the projection's output
        torch.testing.assert_close(layer(h), reference)


def test_attention_pool_rows_sum_to_one_and_weight_the_features() -> None:
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, -10.0, -10.0]])
    h = torch.arange(8, dtype=torch.float32).reshape(4, 2)  # rows (0,1) (2,3) (4,5) (6,7)
    attention, pooled = attention_pool(scores, h)
    assert attention.shape == (2, 4) and pooled.shape == (2, 2)
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(pooled[0], torch.tensor([3.0, 4.0]))  # uniform: the mean
    torch.testing.assert_close(pooled[1], torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_online_pool_equals_the_whole_bag_softmax(chunk: int) -> None:
    torch.manual_seed(2)
    scores = torch.randn(3, 50) * 20  # large scores: the running max must rescale exactly
    h = torch.randn(50, 5)
    attention, pooled = attention_pool(scores, h)
    pool = OnlinePool()
    for start in range(0, 50, chunk):
        pool.update(scores[:, start : start + chunk], h[start : start + chunk])
    torch.testing.assert_close(pool.pooled(), pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pool.attention(), attention, rtol=1e-5, atol=1e-6)


def test_online_pool_score_buffer_grows_past_its_initial_capacity() -> None:
    pool = OnlinePool()
    pool.INITIAL_CAPACITY = 4  # a small buffer, so the test doubles it twice
    for value in range(10):
        pool.update(torch.full((2, 1), float(value)), torch.ones(1, 3))
    attention = pool.attention()
    assert attention.shape == (2, 10)
    torch.testing.assert_close(attention, torch.softmax(torch.arange(10.0), 0).expand(2, 10))


def test_online_pool_refuses_empty_and_score_free_use() -> None:
    with pytest.raises(ValueError, match="received no instances"):
        OnlinePool().pooled()
    pool = OnlinePool(keep_scores=False)
    pool.update(torch.zeros(2, 3), torch.ones(3, 4))
    torch.testing.assert_close(pool.pooled(), torch.ones(2, 4))
    with pytest.raises(ValueError, match="kept no scores"):
        pool.attention()
