"""Patch encoders: a registry of name → class turning RGB patches into feature vectors.

* ``hed-texture`` (default) needs no weights and no network: a fixed, documented descriptor of
  H&E colour and texture (see :class:`HedTextureEncoder`), vectorised in torch over a batch so it
  runs fast on CPU and uses the GPU when there is one.
* the field's encoders by TRIDENT's names (``resnet50_trunc`` alias ``resnet50``, ``uni_v1``,
  ``uni_v2``, ``conch_v15``, ``virchow2``, ``gigapath``, ``hoptimus0``; see
  :mod:`hmil.slides.encoder_specs`) from a local ``--weights`` file (``.pth``/``.bin``/
  ``.safetensors`` state dict, or TorchScript), preprocessed exactly as CLAM/TRIDENT do.
* ``torchscript`` runs any TorchScript file the user has with ImageNet preprocessing at 224 px.

Every encoder maps a uint8 batch ``(B, H, W, 3)`` to float32 features ``(B, D)`` on its device.
The reader threads first call :meth:`PatchEncoder.prepare` on each patch (resizing on uint8, as
the peers' PIL transforms do); :meth:`PatchEncoder.encode` then normalises and runs the network.
Add an encoder by subclassing :class:`PatchEncoder` and decorating it with
:func:`register_encoder`; a named encoder of the field is one row of
:data:`hmil.slides.encoder_specs.SPECS`, its class made by :func:`pretrained_class`.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hmil.device import resolve_device
from hmil.errors import ConfigError
from hmil.slides.backbones import (
    BACKENDS,
    Backend,
    build_network,
    weights_module,
)
from hmil.slides.backbones import adapt_state_dict as _adapt_state_dict
from hmil.slides.encoder_specs import SPECS, EncoderSpec
from hmil.slides.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, to_tile_size
from hmil.slides.weights import (
    WeightsFile,
    first_line,
    match_state_dict,
    read_weights,
    resolve_weights,
)

#: encoder name (and alias) → class
ENCODERS: dict[str, type[PatchEncoder]] = {}

DEFAULT_ENCODER = "hed-texture"

#: ``--precision`` → autocast dtype (None: plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def register_encoder(cls: type[PatchEncoder]) -> type[PatchEncoder]:
    """Class decorator adding ``cls`` to :data:`ENCODERS` under ``cls.name`` and its aliases."""
    for name in (cls.name, *cls.aliases):
        if name in ENCODERS:
            raise ValueError(f"encoder '{name}' is already registered")
        ENCODERS[name] = cls
    return cls


def create_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    backend: Backend = "auto",
) -> PatchEncoder:
    """Build the encoder ``name`` on ``device`` (``auto`` → CUDA when present).

    Args:
        name: registry name or alias (:func:`available_encoders`).
        weights: the weights file, for encoders that take one.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        backend: for named encoders, ``timm`` (needs the ``[encoders]`` extra), ``hmil``
            (the dependency-free copy) or ``auto`` (timm when importable).

    Raises:
        ConfigError: unknown name, weights given to an encoder that takes none, or missing or
            invalid weights.
    """
    if name not in ENCODERS:
        known = ", ".join(sorted(ENCODERS))
        raise ConfigError("encoder", f"unknown encoder '{name}' (available: {known})")
    if backend not in BACKENDS:
        raise ConfigError("backend", f"expected one of {', '.join(BACKENDS)}, got '{backend}'")
    cls = ENCODERS[name]
    path = None if weights is None else resolve_weights(weights, getattr(cls, "spec", None))
    dev = resolve_device(device)
    if issubclass(cls, PretrainedEncoder):
        return cls(weights=path, device=dev, backend=backend)
    return cls(weights=path, device=dev)


class PatchEncoder(ABC):
    """Base class: ``encode`` maps ``(B, H, W, 3)`` uint8 patches to ``(B, D)`` float32.

    Attributes:
        name: registry name.
        aliases: other registry names of the same encoder.
        dim: feature dimension D.
        input_size: side :meth:`prepare` resizes patches to before ``encode``
            (None: patches are passed at the tiling's ``patch_size``).
        neural: runs a network (``--precision`` bf16/fp16 applies); False for fixed descriptors.
        device: where ``encode`` computes.
        label: a short human name for logs (the name, plus the weights' hash prefix).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    neural: ClassVar[bool] = False
    dim: int
    input_size: int | None = None

    def __init__(self, weights: Path | None, device: torch.device) -> None:
        self.device = device
        self.label = self.name

    @abstractmethod
    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 (any device) → ``(B, D)`` float32 on :attr:`device`."""

    def prepare(self, patch: np.ndarray, tile_size: int) -> np.ndarray:
        """One patch as read from the slide → the uint8 the encoder takes (reader threads).

        Args:
            patch: ``(s, s, 3)`` uint8 at the read level.
            tile_size: the tiling's patch size at the target magnification.

        Returns:
            ``(input_size, input_size, 3)`` uint8 (area-averaged when downscaled) or the patch
            at ``tile_size`` when the encoder has no input size.
        """
        size = self.input_size or tile_size
        if patch.shape[0] == size and patch.shape[1] == size:
            return patch
        down = size < patch.shape[0]
        resample = Image.Resampling.BOX if down else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(patch).resize((size, size), resample))

    def provenance(self) -> dict[str, Any]:
        """What a bag records about the encoder on its ``features`` dataset."""
        return {"encoder": self.name, "dim": int(self.dim)}

    def check_precision(self, precision: str) -> None:
        """Raise ConfigError if ``precision`` is unknown, unsupported here, or on this device."""
        if precision not in PRECISIONS:
            raise ConfigError("precision", f"expected fp32, bf16 or fp16, got '{precision}'")
        if precision == "fp32":
            return
        if not self.neural:
            raise ConfigError("precision", f"'{self.name}' computes in fp32 only")
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision", "fp16 needs a CUDA device (use bf16 or fp32 on CPU)")

    @contextlib.contextmanager
    def autocast(self, precision: str = "fp32") -> Iterator[None]:
        """Mixed precision for the network (``torch.autocast``, as TRIDENT runs its encoders)."""
        self.check_precision(precision)
        dtype = PRECISIONS[precision]
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encode(patches.to(self.device, non_blocking=True)).float()


# --------------------------------------------------------------------------- hed-texture

#: skimage.color.hed_from_rgb (Ruifrok & Johnston 2001): optical density row-vector @ M → HED
_HED_FROM_RGB = (
    (1.87798274, -1.00767869, -0.55611582),
    (-0.06590806, 1.13473037, -0.1355218),
    (-0.60190736, -0.48041419, 1.57358807),
)
_LOG_1E6 = math.log(1e-6)
_HIST_BINS = 8
#: histogram ranges (skimage HED scale): H on a square-root axis (most pixels carry little
#: haematoxylin, nuclei reach ~0.15), E and D linear
_H_SQRT_MAX = 0.4
_E_MAX = 0.08
_D_MAX = 0.1
#: gradient-magnitude histogram on a square-root axis up to 0.6² = 0.36 (grey levels / pixel)
_GRAD_SQRT_MAX = 0.6
_LBP_BINS = 10  # rotation-invariant uniform LBP, P = 8: codes 0..8 + "non-uniform"
#: H range quantised for its LBP
_H_LBP_MAX = 0.16
#: H above this counts as a nuclear pixel
_NUCLEAR_H = 0.06
#: side patches are resized to before description (the pipeline does it while reading)
WORK_SIZE = 128


def _hed_texture_names() -> list[str]:
    """The descriptor's feature names, in order (their count is the dimension)."""
    names: list[str] = []
    names += [f"rgb_mean_{c}" for c in "rgb"] + [f"rgb_std_{c}" for c in "rgb"]
    names += [f"{c}_mean" for c in "hed"] + [f"{c}_std" for c in "hed"]
    names += [f"{c}_hist{i}" for c in "hed" for i in range(_HIST_BINS)]
    names += ["corr_h_e", "corr_h_d", "corr_e_d"]
    names += ["frac_tissue", "frac_dark", "frac_nuclear"]
    for s in (1, 2):
        names += [f"grad_mean_s{s}", f"grad_std_s{s}"]
        names += [f"grad_hist{i}_s{s}" for i in range(_HIST_BINS)]
        names += [f"h_grad_mean_s{s}", f"h_grad_std_s{s}", f"coherence_s{s}"]
        names += [f"lbp{i}_s{s}" for i in range(_LBP_BINS)]
    names += [f"h_lbp{i}" for i in range(_LBP_BINS)]
    names += ["h_blob_mean_s2", "h_blob_std_s2", "h_blob_mean_s4", "h_blob_std_s4"]
    names += ["h_block_std", "e_block_std"]
    return names


HED_TEXTURE_FEATURES: tuple[str, ...] = tuple(_hed_texture_names())
#: dimension of ``hed-texture`` features
HED_TEXTURE_DIM = len(HED_TEXTURE_FEATURES)


@register_encoder
class HedTextureEncoder(PatchEncoder):
    """Weight-free histology descriptor of :data:`HED_TEXTURE_DIM` (= 104) features.

    Patches are area-resized to ``128 × 128`` (so the descriptor does not depend on the patch
    size; the extraction pipeline does this while reading), then described by (names, in order,
    in :data:`HED_TEXTURE_FEATURES`):

    * colour, on the 64 × 64 average-pooled patch: RGB mean/std; H&E colour deconvolution
      (exactly ``skimage.color.rgb2hed``, Ruifrok & Johnston) per-channel mean, std and 8-bin
      histogram on fixed ranges; the channels' pairwise correlations; fractions of tissue
      (grey < 0.8), dark (grey < 0.3) and haematoxylin-rich (nuclear, H > 0.06) pixels;
    * texture at scale 1 (128 px) and 2 (64 px): Sobel gradient magnitude mean, std and 8-bin
      histogram of the grey image; gradient mean/std of the H channel; structure-tensor
      coherence over 8 × 8 blocks (fibrous vs. isotropic tissue); rotation-invariant uniform LBP
      histogram (P = 8, R = 1);
    * LBP histogram of the H channel (128 px); Laplacian blob response of H at nucleus scales
      (64 and 32 px pyramid levels): mean of the positive part and std; spread of the H and E
      means over a 4 × 4 block grid.

    Fixed ranges (no per-slide normalisation) keep features comparable across slides. Every
    step is a whole-batch tensor operation (no per-patch Python loop), on CPU or CUDA.
    """

    name = "hed-texture"
    dim = HED_TEXTURE_DIM
    input_size = WORK_SIZE

    def __init__(self, weights: Path | None, device: torch.device) -> None:
        super().__init__(weights, device)
        if weights is not None:
            raise ConfigError("weights", "the 'hed-texture' encoder takes no weights")
        self._hed_matrix = _HED_FROM_RGB
        self._grey_weights = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches.permute(0, 3, 1, 2).contiguous().float()  # (B, 3, H, W) in 0..255
        if tuple(x.shape[2:]) != (WORK_SIZE, WORK_SIZE):
            x = F.interpolate(x, size=(WORK_SIZE, WORK_SIZE), mode="area")
        x.mul_(1.0 / 255.0)
        b = x.shape[0]
        half = WORK_SIZE // 2
        w = self._grey_weights
        grey = x[:, 0] * w[0] + x[:, 1] * w[1] + x[:, 2] * w[2]  # (B, S, S)
        small = _pool2(x)  # (B, 3, S/2, S/2)
        rgb = small.reshape(b, 3, -1)  # (B, 3, P)
        od = _optical_density(rgb)
        m = self._hed_matrix
        hed = torch.stack(
            [od[:, 0] * m[0][d] + od[:, 1] * m[1][d] + od[:, 2] * m[2][d] for d in range(3)], 1
        ).clamp_min_(0.0)  # (B, 3, P)
        grey_small = _pool2(grey)
        h_small = hed[:, 0].reshape(b, half, half)
        h_tiny = _pool2(h_small)
        rgb_mean, rgb_std = _mean_std(rgb, dim=2)
        hed_mean, hed_std = _mean_std(hed, dim=2)
        flat_grey = grey_small.reshape(b, -1)
        n_small = flat_grey.shape[1]
        feats: list[torch.Tensor] = [
            rgb_mean,
            rgb_std,
            hed_mean,
            hed_std,
            _uniform_histogram(hed[:, 0].sqrt(), _H_SQRT_MAX),
            _uniform_histogram(hed[:, 1], _E_MAX),
            _uniform_histogram(hed[:, 2], _D_MAX),
            _channel_correlations(hed, hed_mean, hed_std),
            torch.stack(
                [
                    (flat_grey < 0.8).sum(1) / n_small,
                    (flat_grey < 0.3).sum(1) / n_small,
                    (hed[:, 0] > _NUCLEAR_H).sum(1) / n_small,
                ],
                dim=1,
            ),
        ]
        for g_img, h_img in ((grey, h_small), (grey_small, h_tiny)):
            gx, gy = _sobel(g_img)
            mag = (gx * gx + gy * gy).sqrt_().reshape(b, -1)
            hgx, hgy = _sobel(h_img)
            hmag = (hgx * hgx + hgy * hgy).sqrt_().reshape(b, -1)
            feats += [
                torch.stack(_mean_std(mag, dim=1), dim=1),
                _uniform_histogram(mag.sqrt(), _GRAD_SQRT_MAX),
                torch.stack([*_mean_std(hmag, dim=1), _coherence(gx, gy)], dim=1),
                _lbp_histogram(g_img, 1.0),
            ]
        feats.append(_lbp_histogram(h_small, _H_LBP_MAX))
        for h_img in (h_small, h_tiny):
            blob = -_laplacian(h_img).reshape(b, -1)  # > 0 on haematoxylin peaks (nuclei)
            feats.append(torch.stack([blob.clamp_min(0).mean(1), _mean_std(blob, 1)[1]], 1))
        blocks = F.adaptive_avg_pool2d(hed[:, :2].reshape(b, 2, half, half), 4)
        feats.append(_mean_std(blocks.reshape(b, 2, 16), dim=2)[1])
        out = torch.cat(feats, dim=1)
        return torch.nan_to_num_(out, nan=0.0, posinf=0.0, neginf=0.0)


def _optical_density(rgb: torch.Tensor) -> torch.Tensor:
    """skimage's optical density ``log(max(rgb, 1e-6)) / log(1e-6)`` (same shape as ``rgb``)."""
    return rgb.clamp_min(1e-6).log_().mul_(1.0 / _LOG_1E6)


def _pool2(img: torch.Tensor) -> torch.Tensor:
    """2 × 2 average pooling over the last two dimensions (faster than avg_pool2d on CPU)."""
    rows = (img[..., ::2, :] + img[..., 1::2, :]) * 0.5
    return (rows[..., ::2] + rows[..., 1::2]) * 0.5


def _mean_std(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) standard deviation along ``dim`` in one pass over ``t``."""
    mean = t.mean(dim)
    var = (t * t).mean(dim) - mean * mean
    return mean, var.clamp_min_(0.0).sqrt_()


def _sobel(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel x/y derivatives of ``(B, H, W)`` with replicate borders (÷ 8: grey levels / px)."""
    p = F.pad(img.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
    h, w = img.shape[1:]
    dx = p[:, :, 2:] - p[:, :, :-2]  # (B, H + 2, W)
    dy = p[:, 2:, :] - p[:, :-2, :]  # (B, H, W + 2)
    gx = (dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]) * 0.125
    gy = (dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]) * 0.125
    return gx[:, :h, :w], gy[:, :h, :w]


def _laplacian(img: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian of ``(B, H, W)`` with replicate borders."""
    p = F.pad(img.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * img


def _coherence(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Energy-weighted mean structure-tensor coherence over 8 × 8 blocks of ``(B, H, W)``.

    0 for isotropic texture (cells), towards 1 when one orientation dominates (collagen).
    """
    b, h, w = gx.shape

    def block_mean(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, h // 8, 8, w // 8, 8).mean((2, 4)).reshape(b, -1)

    jxx, jyy, jxy = block_mean(gx * gx), block_mean(gy * gy), block_mean(gx * gy)
    energy = jxx + jyy
    coh = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy) / (energy + 1e-8)
    return (coh * energy).sum(1) / (energy.sum(1) + 1e-8)


def _uniform_histogram(values: torch.Tensor, upper: float, bins: int = _HIST_BINS) -> torch.Tensor:
    """Normalised histograms of ``(B, P)`` on ``[0, upper]`` (overflow in the last bin)."""
    n = values.shape[1]
    idx = values.mul(bins / upper).clamp_(0, bins - 1).long()
    return _count(idx, bins) / n


def _count(idx: torch.Tensor, bins: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row (weighted) counts of integer codes ``(B, P)`` in ``[0, bins)`` → ``(B, bins)``."""
    if weights is None:
        weights = torch.ones(1, device=idx.device).expand(idx.shape)
    return torch.zeros(idx.shape[0], bins, device=idx.device).scatter_add_(1, idx, weights)


def _channel_correlations(hed: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Pearson correlations H–E, H–D, E–D of stains ``(B, 3, P)`` (with ``(B, 3)`` mean/std).

    Clamped to [−1, 1]: on flat patches (std ≈ 0) rounding could otherwise push them outside.
    """
    pairs = ((0, 1), (0, 2), (1, 2))
    cov = [(hed[:, i] * hed[:, j]).mean(1) - mean[:, i] * mean[:, j] for i, j in pairs]
    corr = [c / (std[:, i] * std[:, j] + 1e-8) for c, (i, j) in zip(cov, pairs, strict=True)]
    return torch.stack(corr, dim=1).clamp_(-1.0, 1.0)


#: neighbour offsets (dy, dx) of an 8-neighbourhood, in circular order
_LBP_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _lbp_histogram(img: torch.Tensor, upper: float) -> torch.Tensor:
    """Rotation-invariant uniform LBP (P = 8, R = 1) histogram of ``(B, H, W)`` → ``(B, 10)``.

    ``img`` is quantised to 256 levels on ``[0, upper]``; a neighbour counts when it is brighter
    than the centre by at least one level (tolerance against flat-area noise). Code = number of
    such neighbours for patterns with ≤ 2 transitions around the circle, 9 for the others.
    """
    b, h, w = img.shape
    q = img.mul(255.0 / upper).clamp_(0, 255).to(torch.uint8)
    padded = F.pad(q.unsqueeze(1).float(), (1, 1, 1, 1), mode="replicate")[:, 0].to(torch.uint8)
    bits = [padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] > q for dy, dx in _LBP_OFFSETS]
    ones = bits[0].to(torch.uint8)
    transitions = (bits[0] ^ bits[-1]).to(torch.uint8)
    for i in range(1, len(bits)):
        ones += bits[i]
        transitions += bits[i] ^ bits[i - 1]
    uniform = (transitions <= 2).reshape(b, -1).float()
    counts = _count(ones.reshape(b, -1).long(), _LBP_BINS - 1, weights=uniform) / (h * w)
    return torch.cat([counts, 1.0 - counts.sum(1, keepdim=True)], dim=1)


# --------------------------------------------------------------------------- networks


class _NetworkEncoder(PatchEncoder):
    """Shared by the TorchScript and named encoders: a network fed :attr:`preprocess`'s input."""

    neural = True
    preprocess: Preprocess

    def __init__(self, weights: Path | None, device: torch.device) -> None:
        super().__init__(weights, device)
        self._net: Any = None
        self._weights: WeightsFile | None = None

    def prepare(self, patch: np.ndarray, tile_size: int) -> np.ndarray:
        """TRIDENT's reading: resize to the tiling's patch size (bicubic), then the encoder's
        own ``Resize``/``CenterCrop`` (the patch is then exactly what the peers feed)."""
        return self.preprocess.resize(to_tile_size(patch, tile_size))

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.preprocess.normalize(patches)
        out = self._net(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(self._where(), f"model output must be a (B, D) tensor, got {shape}")
        return out

    def _where(self) -> str:
        return str(self._weights.path) if self._weights is not None else self.name

    def _probe(self) -> int:
        """Run one white patch; returns D (a broken model fails here, before extraction)."""
        size = self.preprocess.input_size
        probe = torch.full((1, size, size, 3), 255, dtype=torch.uint8)
        try:
            out = self(probe)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                self._where(), f"model failed on a (1, 3, {size}, {size}) input: {first_line(exc)}"
            ) from None
        return int(out.shape[1])

    def provenance(self) -> dict[str, Any]:
        record = super().provenance()
        record["encoder_input_size"] = self.preprocess.input_size
        if self._weights is not None:
            record["encoder_weights"] = self._weights.path.name
            record["encoder_weights_sha256"] = self._weights.sha256
        return record


@register_encoder
class TorchScriptEncoder(_NetworkEncoder):
    """A user's TorchScript model: ``--encoder torchscript --weights model.pt``.

    Patches are prepared as CLAM prepares ``resnet50_trunc``'s: Pillow bilinear resize to
    224 × 224, scaled to [0, 1] and normalised with ImageNet mean/std; the model gets
    ``(B, 3, 224, 224)`` float32 and must return ``(B, D)``. D is found by running the model once
    on a blank patch, so a broken model fails before extraction. The bag's ``encoder`` attribute
    is ``torchscript:<file name>:<sha256 prefix>``. (A TorchScript export of a named encoder is
    better given as ``--encoder NAME --weights FILE``: it then gets that encoder's input.)
    """

    name = "torchscript"
    input_size = 224
    preprocess = Preprocess(224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)

    def __init__(self, weights: Path | None, device: torch.device) -> None:
        super().__init__(weights, device)
        if weights is None:
            raise ConfigError(
                "weights", "the 'torchscript' encoder needs weights (a TorchScript file)"
            )
        loaded = read_weights(weights, device=device) if weights.is_file() else None
        if loaded is None:
            raise ConfigError(weights, "weights file not found")
        if loaded.module is None:
            raise ConfigError(
                weights,
                "not a TorchScript model (save one with torch.jit.save(torch.jit.trace(model, x)));"
                " a state dict loads with a named encoder, e.g. resnet50_trunc (every named "
                "encoder: hmil.slides.encoders.encoder_table)",
            )
        self._weights = loaded
        self._net = loaded.module
        self.dim = self._probe()
        self.label = f"torchscript:{weights.name}:{loaded.sha256[:12]}"

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "encoder": self.label}


class PretrainedEncoder(_NetworkEncoder):
    """A named encoder of the field (:data:`spec`) with weights from a local file.

    ``--weights`` is a state dict (``.pth``/``.bin``/``.safetensors``, checked key by key and
    shape by shape against the architecture before any weights are copied) or a TorchScript
    export of the same model. The architecture is timm's when timm is importable (``backend``
    ``auto``/``timm``), else the exact copy in :mod:`hmil.slides.backbones` (``hmil``).
    """

    spec: ClassVar[EncoderSpec]

    def __init__(
        self, weights: Path | None, device: torch.device, backend: Backend = "auto"
    ) -> None:
        super().__init__(weights, device)
        spec = self.spec
        if weights is None:
            raise ConfigError(
                "weights",
                f"'{self.name}' needs a weights file ({spec.where}); nothing is downloaded",
            )
        self.preprocess = spec.preprocess
        self.input_size = spec.input_size
        self._weights = read_weights(weights, device=device)
        if self._weights.module is not None:
            self._net, self.backend = self._weights.module, "torchscript"
        else:
            self._net, self.backend = load_network(spec, self._weights, backend)
            self._net = self._net.to(device).eval()
        self.dim = spec.dim
        found = self._probe()
        if found != spec.dim:
            raise ConfigError(
                weights, f"{self.name} must give D = {spec.dim}, the model gave {found}"
            )
        self.label = f"{spec.trident_name} ({weights.name}, sha256 {self._weights.sha256[:12]})"

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "encoder": self.spec.trident_name,
            "encoder_backend": self.backend,
        }


def load_network(
    spec: EncoderSpec, weights: WeightsFile, backend: Backend = "auto"
) -> tuple[torch.nn.Module, str]:
    """Build ``spec``'s architecture and load a state dict into it (on CPU, eval mode).

    The network is first built on the ``meta`` device (no memory), its expected key → shape
    table checked against the file, and only then are the file's tensors assigned to it.

    Raises:
        ConfigError: naming missing, unexpected and wrong-shaped keys.
    """
    assert weights.state_dict is not None
    try:
        with torch.device("meta"):
            net, used = build_network(spec.architecture, backend)
    except RuntimeError as exc:  # backend="timm" without timm
        raise ConfigError(
            "backend",
            f"{first_line(exc)} (pip install timm torchvision, or hmil's [encoders] extra)",
        ) from None
    target = weights_module(net)
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    state = _adapt_state_dict(spec.architecture, weights.state_dict)
    optional = [k for k in expected if k.endswith("num_batches_tracked")]
    state = match_state_dict(
        state, expected, weights.path, spec.name,
        ignore_prefixes=_IGNORED_PREFIXES.get(type(spec.architecture).__name__, ()),
        optional=optional,
    )  # fmt: skip
    for key in optional:
        state.setdefault(key, torch.zeros((), dtype=torch.long))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    target.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):  # pragma: no cover
        raise ConfigError(weights.path, f"{spec.name}: some weights were not loaded")
    return net.eval(), used


#: file keys dropped silently per architecture: the ResNet-50 trunk ends at layer3
_IGNORED_PREFIXES: dict[str, tuple[str, ...]] = {"ResNetTrunkConfig": ("layer4.", "fc.")}


def pretrained_class(spec: EncoderSpec) -> type[PretrainedEncoder]:
    """The encoder class of one row of the spec table: :class:`PretrainedEncoder` with the
    row's name, aliases and summary (``uni_v1`` → ``UniV1Encoder``)."""
    title = "".join(part[:1].upper() + part[1:] for part in spec.name.split("_"))
    namespace = {
        "name": spec.name,
        "aliases": spec.aliases,
        "spec": spec,
        "__doc__": spec.summary,
        "__module__": __name__,
    }
    return cast("type[PretrainedEncoder]", type(f"{title}Encoder", (PretrainedEncoder,), namespace))


#: one class per named encoder of :data:`hmil.slides.encoder_specs.SPECS`, registered in order
PRETRAINED: tuple[type[PretrainedEncoder], ...] = tuple(pretrained_class(s) for s in SPECS)
for _encoder_class in PRETRAINED:
    register_encoder(_encoder_class)


def available_encoders() -> list[str]:
    """Registered encoder names and aliases, sorted."""
    return sorted(ENCODERS)


@dataclass(frozen=True)
class EncoderInfo:
    """One row of ``hmil extract --list-encoders``."""

    name: str
    trident_name: str
    dim: str
    input: str
    weights: str


def encoder_table() -> list[EncoderInfo]:
    """What ``--list-encoders`` prints: every encoder once (aliases in its row)."""
    rows = [
        EncoderInfo(
            "hed-texture", "-", str(HED_TEXTURE_DIM),
            f"area resize {WORK_SIZE}px, no normalisation", "none (fixed descriptor)",
        ),
        EncoderInfo(
            "torchscript", "-", "from the model", TorchScriptEncoder.preprocess.describe(),
            "--weights FILE (a torch.jit.save archive)",
        ),
    ]  # fmt: skip
    for cls in dict.fromkeys(ENCODERS.values()):
        if issubclass(cls, PretrainedEncoder):
            spec = cls.spec
            name = " | ".join((spec.name, *spec.aliases))
            rows.append(
                EncoderInfo(
                    name, spec.trident_name, str(spec.dim), spec.preprocess.describe(),
                    f"--weights FILE: {spec.where}; TRIDENT runs it in {spec.trident_precision}",
                )
            )  # fmt: skip
    return rows
