"""SMALL variants of the named encoders (same architecture classes and options, tiny widths) with
SEEDED RANDOM weights in each encoder's real state-dict layout, for fast tests without timm.

Full ViT-L/H/g sizes are never built here; the golden script (``golden/make_golden.py``) uses
the same small architectures with timm.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from seeded_weights import seeded_state_dict

from hmil.slides.backbones import (
    Architecture,
    ConchConfig,
    ResNetTrunkConfig,
    ViTConfig,
    build_network,
    weights_module,
)
from hmil.slides.encoder_specs import SPECS, EncoderSpec
from hmil.slides.encoders import PretrainedEncoder

SPEC_BY_NAME = {s.name: s for s in SPECS}
_SMALL_VIT = {"embed_dim": 48, "depth": 2, "num_heads": 4}


def small_architecture(name: str) -> Architecture:
    """The encoder ``name``'s architecture at a test size."""
    arch = SPEC_BY_NAME[name].architecture
    if isinstance(arch, ResNetTrunkConfig):
        return ResNetTrunkConfig((1, 1, 1))
    if isinstance(arch, ConchConfig):
        trunk = dataclasses.replace(arch.trunk, img_size=32, patch_size=8, **_SMALL_VIT)
        return ConchConfig(trunk=trunk, input_size=64, pool_dim=32, pool_heads=4)
    size = 4 * arch.patch_size  # a 4 × 4 token grid
    return dataclasses.replace(arch, img_size=size, **_SMALL_VIT)


def small_spec(name: str) -> EncoderSpec:
    """``name``'s spec with the small architecture and a matching input size (same filter,
    mean/std, and the same resize-then-crop ratio)."""
    spec = SPEC_BY_NAME[name]
    arch = small_architecture(name)
    if isinstance(arch, ViTConfig):
        size = arch.img_size
    elif isinstance(arch, ConchConfig):
        size = arch.input_size
    else:
        size = 64
    pre = spec.preprocess
    resize = None if pre.resize_size is None else round(size * pre.resize_size / pre.input_size)
    preprocess = dataclasses.replace(pre, input_size=size, resize_size=resize)
    return dataclasses.replace(spec, architecture=arch, preprocess=preprocess)


def small_encoder_class(name: str) -> type[PretrainedEncoder]:
    """An unregistered encoder class for ``small_spec(name)``."""
    return type(f"Small_{name}", (PretrainedEncoder,), {"name": name, "spec": small_spec(name)})


def small_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """SEEDED RANDOM weights in the layout of ``name``'s file (timm's / TRIDENT's key names)."""
    with torch.device("meta"):
        net, _ = build_network(small_architecture(name), "hmil")
    shapes = {k: tuple(v.shape) for k, v in weights_module(net).state_dict().items()}
    return seeded_state_dict(shapes, seed)


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as ``.safetensors`` or a torch file, by the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path
