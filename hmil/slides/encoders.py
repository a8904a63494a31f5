"""Patch encoders: a registry of name → class turning RGB patches into feature vectors.

* ``hed-texture`` (default) needs no weights and no network: a fixed, documented descriptor of
  H&E colour and texture (see :class:`HedTextureEncoder`), vectorised in torch over a batch so it
  runs fast on CPU and uses the GPU when there is one.
* ``torchscript`` runs any TorchScript file the user has (a ResNet-50 trunk, UNI, CONCH exported
  with ``torch.jit.trace``/``script`` + ``torch.jit.save``) given by ``--weights PATH``.

Every encoder maps a uint8 batch ``(B, H, W, 3)`` to float32 features ``(B, D)`` on its device.
Add an encoder by subclassing :class:`PatchEncoder` and decorating it with
:func:`register_encoder`.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from hmil.device import resolve_device
from hmil.errors import ConfigError

#: encoder name → class
ENCODERS: dict[str, type[PatchEncoder]] = {}

DEFAULT_ENCODER = "hed-texture"


def register_encoder(cls: type[PatchEncoder]) -> type[PatchEncoder]:
    """Class decorator adding ``cls`` to :data:`ENCODERS` under ``cls.name``."""
    if cls.name in ENCODERS:
        raise ValueError(f"encoder '{cls.name}' is already registered")
    ENCODERS[cls.name] = cls
    return cls


def create_encoder(
    name: str = DEFAULT_ENCODER,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
) -> PatchEncoder:
    """Build the encoder ``name`` on ``device`` (``auto`` → CUDA when present).

    Raises:
        ConfigError: unknown name, weights given to an encoder that takes none, or missing or
            invalid weights.
    """
    if name not in ENCODERS:
        known = ", ".join(sorted(ENCODERS))
        raise ConfigError("--encoder", f"unknown encoder '{name}' (available: {known})")
    return ENCODERS[name](
        weights=Path(weights) if weights is not None else None, device=resolve_device(device)
    )


class PatchEncoder(ABC):
    """Base class: ``encode`` maps ``(B, H, W, 3)`` uint8 patches to ``(B, D)`` float32.

    Attributes:
        name: registry name.
        dim: feature dimension D.
        input_size: side the extraction pipeline resizes patches to before ``encode``
            (None: patches are passed at the tiling's ``patch_size``).
        device: where ``encode`` computes.
        label: what is stored as the bag's ``encoder`` attribute.
    """

    name: ClassVar[str]
    dim: int
    input_size: int | None = None

    def __init__(self, weights: Path | None, device: torch.device) -> None:
        self.device = device
        self.label = self.name

    @abstractmethod
    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 (any device) → ``(B, D)`` float32 on :attr:`device`."""

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encode(patches.to(self.device, non_blocking=True))


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
            raise ConfigError("--weights", "the 'hed-texture' encoder takes no weights")
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


# --------------------------------------------------------------------------- torchscript

#: ImageNet statistics used by ResNet/UNI/most histology foundation models
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_encoder
class TorchScriptEncoder(PatchEncoder):
    """A user's TorchScript model: ``--encoder torchscript --weights model.pt``.

    Patches are resized to 224 × 224, scaled to [0, 1] and normalised with ImageNet mean/std,
    then fed as ``(B, 3, 224, 224)`` float32; the model must return ``(B, D)``. The dimension is
    found by running the model once on a blank patch, so a broken model fails before extraction.
    The bag's ``encoder`` attribute becomes ``torchscript:<file name>:<sha256 prefix>``.
    """

    name = "torchscript"
    input_size = 224

    def __init__(self, weights: Path | None, device: torch.device) -> None:
        super().__init__(weights, device)
        if weights is None:
            raise ConfigError(
                "--weights", "the 'torchscript' encoder needs --weights PATH (a TorchScript file)"
            )
        if not weights.is_file():
            raise ConfigError(weights, "weights file not found")
        try:
            with warnings.catch_warnings():  # torch ≥ 2.13 flags TorchScript as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                self._model = torch.jit.load(str(weights), map_location=device).eval()
        except Exception as exc:  # torch raises RuntimeError/ValueError/... for non-TorchScript
            raise ConfigError(
                weights,
                "not a TorchScript model (save one with torch.jit.save(torch.jit.trace(model, x)); "
                f"state_dicts and pickled modules cannot be loaded): {_first_line(exc)}",
            ) from None
        self._weights = weights
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        probe = torch.full((1, self.input_size, self.input_size, 3), 255, dtype=torch.uint8)
        try:
            out = self(probe)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                weights,
                f"TorchScript model failed on a (1, 3, {self.input_size}, {self.input_size}) "
                f"input: {_first_line(exc)}",
            ) from None
        self.dim = int(out.shape[1])
        self.label = f"torchscript:{weights.name}:{_sha256(weights)[:12]}"

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x,
                size=(self.input_size, self.input_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        out = self._model((x - self._mean) / self._std)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                self._weights,
                f"model output must be a (B, D) tensor, got {shape}",
            )
        return out.float()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def available_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(ENCODERS)
