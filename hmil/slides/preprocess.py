"""Patch preprocessing exactly as CLAM and TRIDENT do it, without torchvision.

CLAM and TRIDENT hand each patch to the encoder as a PIL image through
``torchvision.transforms``: ``Resize(size, interpolation)`` (Pillow's own resize for PIL input),
optionally ``CenterCrop``, then ``ToTensor`` (÷ 255 in float32) and ``Normalize`` (``(x − mean)
/ std``). The same Pillow calls and the same float32 operations in the same order give the same
numbers bit for bit, so features made here match the peers' for the same weights; torchvision is
not needed (and does not import beside this project's CPU torch).

The uint8 half (:meth:`Preprocess.resize`) runs in the reader threads, the float half
(:meth:`Preprocess.normalize`) on the encoder's device.

TRIDENT first resizes a patch read at a pyramid level to the tiling's patch size (Pillow's
default filter, bicubic) before its encoder transform; :func:`to_tile_size` is that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from hmil.errors import ConfigError

Interpolation = Literal["bilinear", "bicubic"]

#: torchvision ``InterpolationMode`` → the Pillow filter torchvision uses for PIL images
_PIL_FILTERS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

#: ImageNet statistics used by ResNet/UNI/most histology foundation models
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """``Resize(resize_size, interpolation)`` → ``CenterCrop(input_size)`` → ``ToTensor`` →
    ``Normalize(mean, std)``, as the peers' encoder transforms.

    Attributes:
        input_size: side of the square the encoder sees.
        interpolation: Pillow filter of the resize (torchvision's default is bilinear).
        mean: per-channel mean (RGB) subtracted after scaling to [0, 1].
        std: per-channel standard deviation (RGB).
        resize_size: side the patch is resized to before the centre crop (default
            ``input_size``: the crop is then a no-op, as for every square patch).
    """

    input_size: int
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_size: int | None = None

    def __post_init__(self) -> None:
        if self.input_size < 1:
            raise ConfigError("input_size", f"must be ≥ 1, got {self.input_size}")
        if self.interpolation not in _PIL_FILTERS:
            raise ConfigError(
                "interpolation", f"expected bilinear or bicubic, got {self.interpolation}"
            )
        if self.resize_size is not None and self.resize_size < self.input_size:
            raise ConfigError("resize_size", "must be ≥ input_size (it is centre-cropped)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean/std", "need three values each, std > 0")

    @property
    def resize_to(self) -> int:
        return self.resize_size or self.input_size

    def describe(self) -> str:
        """One line for ``--list-encoders``: sizes, filter, mean/std."""
        steps = f"{self.interpolation} {self.resize_to}px"
        if self.resize_to != self.input_size:
            steps += f", centre crop {self.input_size}px"
        mean = ",".join(f"{m:g}" for m in self.mean)
        std = ",".join(f"{s:g}" for s in self.std)
        return f"{steps}, mean ({mean}) std ({std})"

    def resize(self, patch: np.ndarray) -> np.ndarray:
        """``(S, S, 3)`` uint8 → ``(input_size, input_size, 3)`` uint8 (Resize + CenterCrop)."""
        image = Image.fromarray(patch)
        size = self.resize_to
        if image.size != (size, size):
            # torchvision.transforms.Resize on a PIL image is exactly this call; Pillow returns a
            # copy when the size is unchanged, so skipping it changes nothing
            image = image.resize((size, size), _PIL_FILTERS[self.interpolation])
        if size != self.input_size:
            # torchvision.transforms.functional.center_crop's offsets
            top = int(round((size - self.input_size) / 2.0))
            left = int(round((size - self.input_size) / 2.0))
            image = image.crop((left, top, left + self.input_size, top + self.input_size))
        return np.asarray(image)

    def normalize(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, S, S, 3)`` uint8 → ``(B, 3, S, S)`` float32: ToTensor then Normalize.

        The operations are torchvision's (``float()``, ``div(255)``, ``sub_(mean)``,
        ``div_(std)`` with float32 mean/std), so the result is identical bit for bit.
        """
        x = patches.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def to_tile_size(patch: np.ndarray, tile_size: int) -> np.ndarray:
    """TRIDENT's ``WSIPatcher`` step: a patch read at a pyramid level, resized to the tiling's
    patch size with Pillow's default filter (bicubic); unchanged when it already has that size.

    Args:
        patch: ``(s, s, 3)`` uint8 as read from the slide.
        tile_size: the patch size at the target magnification.

    Returns:
        ``(tile_size, tile_size, 3)`` uint8.
    """
    if patch.shape[0] == tile_size and patch.shape[1] == tile_size:
        return patch
    resized = Image.fromarray(patch).resize((tile_size, tile_size), Image.Resampling.BICUBIC)
    return np.asarray(resized)
