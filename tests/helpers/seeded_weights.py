"""SEEDED RANDOM weights and images, reproducible bit for bit without any RNG library.

The golden-vector script (``golden/make_golden.py``, run with timm) and the tests (run without
it) must build *the same* random weights. NumPy's and torch's generators promise no stream
stability across versions, so values come from SplitMix64 on integer counters (exact uint64
arithmetic), seeded per tensor by a CRC of its name: any key order gives the same tensors.

Scales keep a random network's activations in a sane range: linear/conv weights uniform in
±1/√fan_in, biases ±0.1, norm weights 1 ± 0.1, BatchNorm variances in [1, 1.5], layer-scale
gammas in [0.3, 0.7] (large enough that a bug inside a block changes the output), tokens and
position embeddings ±0.5.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform(n: int, seed: int) -> np.ndarray:
    """``(n,)`` float64 in [−1, 1): SplitMix64 of counters ``seed·2³² + i``."""
    with np.errstate(over="ignore"):
        x = (np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32)) * _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (2.0 / 2**53) - 1.0


def seeded_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A deterministic float32 tensor for parameter ``name`` (int64 zeros for counters)."""
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    n = math.prod(shape)
    u = uniform(n, zlib.crc32(name.encode()) ^ seed).reshape(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        values = 1.25 + 0.25 * u
    elif leaf == "gamma":
        values = 0.5 + 0.2 * u
    elif leaf == "bias" or leaf == "running_mean":
        values = 0.1 * u
    elif leaf == "weight" and len(shape) == 1:  # LayerNorm / BatchNorm scale
        values = 1.0 + 0.1 * u
    elif leaf == "weight":
        fan_in = math.prod(shape[1:])
        values = u / math.sqrt(fan_in)
    else:  # cls_token, reg_token, pos_embed, query
        values = 0.5 * u
    return torch.from_numpy(values.astype(np.float32))


def seeded_state_dict(
    shapes: Mapping[str, tuple[int, ...]], seed: int = 0
) -> dict[str, torch.Tensor]:
    """A state dict with every key of ``shapes`` (name → shape) filled by :func:`seeded_tensor`."""
    return {name: seeded_tensor(name, tuple(shape), seed) for name, shape in shapes.items()}


def seeded_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 SYNTHETIC image: smooth colour gradients plus noise (so resizing
    filters differ measurably), deterministic for ``seed``."""
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    base = np.stack(
        [
            128 + 80 * np.sin(xx / 9.0 + seed),
            128 + 80 * np.cos(yy / 7.0 - seed),
            128 + 60 * np.sin((xx + yy) / 13.0),
        ],
        axis=2,
    )
    noise = 40 * uniform(height * width * 3, 7919 + seed).reshape(height, width, 3)
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)
