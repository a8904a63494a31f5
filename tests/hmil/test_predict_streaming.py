"""Exact streaming inference: chunked ``.h5`` prediction equals the in-memory forward."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.config import ModelConfig
from hmil.data.bags import save_bag
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.predict import Predictor, load_checkpoint

BRACS = Hierarchy.preset("bracs")
SMALL = ModelConfig(
    hidden_dim=32,
    coarse_dim=64,
    fine_dim=32,
    coarse_attention_dim=16,
    fine_attention_dim=8,
    dropout=0.0,  # training-mode forwards below are compared with eval-mode ones
)
DIM = 24


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = HMIL(DIM, 3, 7, SMALL)
    info = CheckpointInfo(hierarchy=BRACS, in_dim=DIM, model_config=SMALL)
    return save_checkpoint(tmp_path / "ckpt.pt", model, info)


def _bag(n: int, seed: int = 0) -> np.ndarray:
    """Features with a few strongly scored instances, so the softmax is far from uniform."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32) * 2
    x[rng.choice(n, 20, replace=False)] += 6
    return x


def _streaming(checkpoint, chunk_rows: int) -> Predictor:
    return load_checkpoint(checkpoint, device="cpu", stream_bytes=1024, chunk_rows=chunk_rows)


@pytest.mark.parametrize("chunk_rows", [1000, 4096, 777])
def test_streamed_h5_prediction_equals_in_memory(checkpoint, tmp_path, chunk_rows):
    x = _bag(10_000)
    coords = np.stack(np.divmod(np.arange(len(x)), 100), 1) * 256
    path = save_bag(tmp_path / "big.h5", x, coords)
    streamed = _streaming(checkpoint, chunk_rows)
    assert streamed._should_stream(path)  # > stream_bytes: the chunked path is taken
    in_memory = load_checkpoint(checkpoint, device="cpu")
    assert not in_memory._should_stream(path)
    a = in_memory.predict(path, attention=True)
    b = streamed.predict(path, attention=True)
    assert b.n_instances == a.n_instances == 10_000
    assert np.abs(a.fine_probs - b.fine_probs).max() <= 1e-5
    assert np.abs(a.coarse_head_probs - b.coarse_head_probs).max() <= 1e-5
    assert np.abs(a.coarse_probs - b.coarse_probs).max() <= 1e-5
    for level in ("coarse", "fine"):
        assert b.attention[level].shape == a.attention[level].shape
        np.testing.assert_allclose(b.attention[level], a.attention[level], rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(b.coords, coords)
    assert a.to_dict()["fine"]["pred"] == b.to_dict()["fine"]["pred"]


def test_streamed_prediction_without_attention_and_trident_layout(checkpoint, tmp_path):
    x = _bag(5_000, seed=1)
    path = tmp_path / "trident.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x[None])  # (1, N, D)
    ref = load_checkpoint(checkpoint, device="cpu").predict(torch.from_numpy(x))
    out = _streaming(checkpoint, 999).predict(path)
    assert out.attention is None and out.n_instances == 5_000
    assert np.abs(ref.fine_probs - out.fine_probs).max() <= 1e-5


def test_streamed_prediction_reports_bad_rows(checkpoint, tmp_path):
    x = _bag(3_000)
    x[2_500, 3] = np.nan
    path = save_bag(tmp_path / "bad.h5", x)
    from hmil.errors import BagError

    with pytest.raises(BagError, match=r"non-finite.*first at instance 2500"):
        _streaming(checkpoint, 1000).predict(path)


def test_streaming_forward_with_extreme_scores_is_stable():
    """Scores far apart (one instance dominating) must not overflow the running sums."""
    torch.manual_seed(0)
    model = HMIL(DIM, 3, 7, SMALL).eval()
    x = torch.randn(4_000, DIM)
    x[3_999] *= 200  # the last chunk holds the maximum: every earlier sum gets rescaled
    with torch.no_grad():
        full = model(x)
        stream = model.forward_streaming(x.split(512))
    for name in ("fine_logits", "coarse_logits"):
        p = torch.softmax(getattr(full, name), -1)
        q = torch.softmax(getattr(stream, name), -1)
        assert torch.isfinite(q).all() and (p - q).abs().max() <= 1e-5


def test_large_in_memory_bag_is_forwarded_in_chunks(checkpoint):
    """A tensor above ``stream_bytes`` goes through the chunked forward with equal results."""
    x = torch.from_numpy(_bag(6_000, seed=2))
    ref = load_checkpoint(checkpoint, device="cpu").predict(x, attention=True)
    chunked = _streaming(checkpoint, 1_000)
    calls: list[int] = []
    original = chunked.model.forward_streaming

    def spy(chunks, keep_attention=True):
        calls.append(1)
        return original(chunks, keep_attention)

    chunked.model.forward_streaming = spy
    out = chunked.predict(x, attention=True)
    assert calls, "the chunked path was not taken"
    assert np.abs(ref.fine_probs - out.fine_probs).max() <= 1e-5
    np.testing.assert_allclose(out.attention["fine"], ref.attention["fine"], rtol=1e-4, atol=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pinned", [True, False])
def test_device_chunks_on_cuda_equal_in_memory(checkpoint, pinned):
    from hmil.predict import device_chunks

    x = torch.from_numpy(_bag(20_000, seed=3))
    x = x.pin_memory() if pinned else x
    predictor = load_checkpoint(checkpoint, device="cuda")
    dev = torch.device("cuda")
    with torch.no_grad():
        full = predictor.model(x.to(dev))
        stream = predictor.model.forward_streaming(device_chunks(x, 3_000, dev))
    p = torch.softmax(full.fine_logits, -1)
    q = torch.softmax(stream.fine_logits, -1)
    assert (p - q).abs().max().item() <= 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_large_host_tensor_on_cuda_is_checked_on_the_device(checkpoint):
    from hmil.errors import BagError

    x = torch.from_numpy(_bag(6_000, seed=4))
    ref = load_checkpoint(checkpoint, device="cpu").predict(x)
    gpu = load_checkpoint(checkpoint, device="cuda", stream_bytes=1024, chunk_rows=1_000)
    out = gpu.predict(x.pin_memory())
    assert np.abs(ref.fine_probs - out.fine_probs).max() <= 1e-5
    x[4_321, 0] = float("inf")
    with pytest.raises(BagError, match="first at instance 4321"):
        gpu.predict(x)


def test_cpu_inference_forward_in_blocks_equals_one_shot_forward():
    """Large bags at inference on CPU run in blocks (hmil.model.hmil.CPU_INFERENCE_BLOCK)."""
    from hmil.model.hmil import CPU_INFERENCE_BLOCK

    torch.manual_seed(0)
    model = HMIL(DIM, 3, 7, SMALL)
    x = torch.from_numpy(_bag(3 * CPU_INFERENCE_BLOCK + 123, seed=5))
    model.train()  # dropout is 0: training mode takes the one-shot path with the same math
    with torch.no_grad():
        one_shot = model(x)
    model.eval()
    with torch.inference_mode():
        blocks = model(x)
    for name in ("fine_logits", "coarse_logits"):
        p = torch.softmax(getattr(one_shot, name), -1)
        q = torch.softmax(getattr(blocks, name), -1)
        assert (p - q).abs().max() <= 1e-6
    for name in ("fine_attention", "coarse_attention", "fine_embeddings"):
        a, b = getattr(one_shot, name), getattr(blocks, name)
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-6
