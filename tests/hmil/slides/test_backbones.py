"""The dependency-free encoders equal timm/torchvision/TRIDENT: golden vectors + a PIL reference.

``golden/golden.npz`` was written by ``golden/make_golden.py`` with timm 1.0.31, torchvision
0.29.1 and TRIDENT a91fa84's CONCH code (versions inside the file). Weights and inputs are
SEEDED RANDOM (``seeded_weights.py``, reproducible without timm), at SMALL sizes of the same
architecture classes. Tolerance: ``max |ours − timm| ≤ 1e-5 · max(1, max |timm|)`` (float32
rounding of different but equivalent kernels; measured 0 for the timm cases and 4.8e-7 for
CONCH's einsum vs matmul, with torch 2.14.1 on both sides). Preprocessing must match bit for
bit (SHA-256 of the float32 tensor).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from seeded_weights import seeded_image, seeded_state_dict, uniform

from hmil.slides.backbones import (
    ConchConfig,
    ResNetTrunkConfig,
    ViTConfig,
    adapt_state_dict,
    build_network,
)
from hmil.slides.encoder_specs import SPECS
from hmil.slides.preprocess import Preprocess, to_tile_size

GOLDEN = Path(__file__).parent / "golden" / "golden.npz"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, Any], Any]:
    data = np.load(GOLDEN)
    return json.loads(bytes(data["meta"]).decode()), data


def _architecture(case: dict[str, Any]) -> ResNetTrunkConfig | ViTConfig | ConchConfig:
    config = case["config"]
    if case["kind"] == "ResNetTrunkConfig":
        return ResNetTrunkConfig(tuple(config["layers"]))
    if case["kind"] == "ViTConfig":
        return ViTConfig(**config)
    return ConchConfig(
        trunk=ViTConfig(**config["trunk"]),
        input_size=config["input_size"],
        pool_dim=config["pool_dim"],
        pool_heads=config["pool_heads"],
    )


CASES = ["resnet50_trunc", "uni_v1", "uni_v2", "conch_v15", "virchow2", "gigapath", "hoptimus0"]


@pytest.mark.parametrize("name", CASES)
def test_hmil_networks_equal_timm_and_trident(name: str, golden: tuple[dict, Any]) -> None:
    meta, data = golden
    case = meta["nets"][name]
    arch = _architecture(case)
    net, backend = build_network(arch, "hmil")
    assert backend == "hmil"
    file_shapes = {k: tuple(s) for k, s in case["keys"]}
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    state = adapt_state_dict(arch, seeded_state_dict(file_shapes))
    # the same parameter names and shapes as timm's model (CONCH: after TRIDENT's resize)
    assert ours == {k: tuple(v.shape) for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    size = case["input_size"]
    batch = meta["batch"]
    values = 2.0 * uniform(batch * 3 * size * size, meta["input_seed"])
    x = torch.from_numpy(values.reshape(batch, 3, size, size).astype(np.float32))
    with torch.no_grad():
        out = net.eval()(x).numpy()
    expected = data[f"net/{name}"]
    assert out.shape == expected.shape == (batch, arch.dim)
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(out - expected).max()) <= TOLERANCE * scale


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().astype(np.float32).tobytes()).hexdigest()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_preprocessing_equals_torchvision_bit_for_bit(spec: Any, golden: tuple[dict, Any]) -> None:
    meta, _ = golden
    expected = meta["pre"][spec.name]
    pre: Preprocess = spec.preprocess
    patch = seeded_image(256, 256, seed=3)
    read = seeded_image(512, 512, seed=4)  # a patch read at twice the tile size (40x → 20x)
    for key, pixels in (("patch256", patch), ("read512", to_tile_size(read, 256))):
        x = pre.normalize(torch.from_numpy(np.array(pre.resize(pixels)))[None])[0]
        assert x.shape == (3, pre.input_size, pre.input_size)
        assert float(x.double().sum()) == pytest.approx(expected[key]["sum"], abs=1e-6)
        assert _digest(x) == expected[key]["sha256"], key


def _pil_numpy_reference(patch: np.ndarray, pre: Preprocess) -> np.ndarray:
    """torchvision's Resize → CenterCrop → ToTensor → Normalize, written with PIL + numpy."""
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    size = pre.resize_size or pre.input_size
    image = Image.fromarray(patch).resize((size, size), filters[pre.interpolation])
    off = int(round((size - pre.input_size) / 2.0))
    image = image.crop((off, off, off + pre.input_size, off + pre.input_size))
    x = np.asarray(image).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(pre.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(pre.std, dtype=np.float32)[:, None, None]
    return (x - mean) / std


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess(224, "bilinear"),
        Preprocess(448, "bilinear"),
        Preprocess(224, "bicubic", resize_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ],
    ids=["224-bilinear", "448-bilinear", "256-bicubic-crop224"],
)
def test_preprocessing_equals_a_pil_numpy_reference(pre: Preprocess) -> None:
    patch = seeded_image(300, 300, seed=9)
    ours = pre.normalize(torch.from_numpy(np.array(pre.resize(patch)))[None])[0].numpy()
    np.testing.assert_array_equal(ours, _pil_numpy_reference(patch, pre))


def test_every_spec_has_its_published_size_and_dimension() -> None:
    published = {  # TRIDENT README table / model cards: (D, input px)
        "resnet50_trunc": (1024, 224), "uni_v1": (1024, 224), "uni_v2": (1536, 224),
        "conch_v15": (768, 448), "virchow2": (2560, 224), "gigapath": (1536, 224),
        "hoptimus0": (1536, 224),
    }  # fmt: skip
    assert {s.name: (s.dim, s.input_size) for s in SPECS} == published
    assert {s.name: s.trident_name for s in SPECS}["resnet50_trunc"] == "resnet50"
    # the big configurations are what TRIDENT builds: checked on the data, never instantiated
    uni2 = {s.name: s for s in SPECS}["uni_v2"].architecture
    assert isinstance(uni2, ViTConfig) and int(uni2.embed_dim * uni2.mlp_ratio) == 8192
    small = dataclasses.replace(uni2, embed_dim=48, img_size=56)
    assert small.grid == 4 and small.num_prefix_tokens == 9
