"""Encoder architectures: timm's when it is installed, an exact pure-torch copy otherwise.

The pathology encoders people use are a ResNet-50 cut after layer 3 (CLAM's ``resnet50_trunc``)
and timm Vision Transformers in a few variants (layer scale, register tokens, SwiGLU MLPs,
position embeddings with or without the class token), plus CONCH v1.5's ViT-L with an
attentional pooler. timm (the ``[encoders]`` extra: ``pip install -e '.[encoders]'`` in a
clone) needs torchvision, which does not import beside every torch build; so each
architecture also exists here in plain torch with
**timm's state-dict key names and operations** (the same convolutions, ``F.layer_norm`` with eps
1e-6, ``F.scaled_dot_product_attention``, exact GELU), so a state dict made for timm loads into
either and gives the same features. ``tests/hmil/slides/golden`` checks this against timm's outputs.

Every network maps ``(B, 3, S, S)`` float32 normalised pixels to ``(B, D)`` features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Backend = Literal["auto", "timm", "hmil"]
BACKENDS: tuple[str, ...] = ("auto", "timm", "hmil")


def timm_available() -> bool:
    """True when ``import timm`` works (it needs a torchvision matching torch)."""
    try:
        import timm  # noqa: F401
    except Exception:  # ImportError, or torchvision failing to load its operators
        return False
    return True


# --------------------------------------------------------------------------- ResNet-50 trunk


@dataclass(frozen=True)
class ResNetTrunkConfig:
    """ResNet with bottleneck blocks cut after layer3, then a global average pool (D = 1024).

    Attributes:
        layers: blocks in layer1, layer2, layer3 (ResNet-50: 3, 4, 6).
    """

    layers: tuple[int, int, int] = (3, 4, 6)

    def __post_init__(self) -> None:
        if len(self.layers) != 3 or min(self.layers) < 1:
            raise ValueError(f"layers must be three positive block counts, got {self.layers}")

    @property
    def dim(self) -> int:
        return 1024


class Bottleneck(nn.Module):
    """torchvision/timm ``Bottleneck`` (stride on the 3 × 3 convolution), same parameter names."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + shortcut)


class ResNetTrunk(nn.Module):
    """``(B, 3, H, W)`` → ``(B, 1024)`` for ResNet-50 through layer3 + global average pool:
    what timm's ``features_only=True, out_indices=[3]`` + ``AdaptiveAvgPool2d(1)`` compute."""

    def __init__(self, config: ResNetTrunkConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for i, blocks in enumerate(config.layers):
            planes = 64 * 2**i
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(channels, planes, stride=2 if (i > 0 and b == 0) else 1))
                channels = planes * Bottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.n_stages = len(config.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


# --------------------------------------------------------------------------- ViT

Pool = Literal["token", "token+mean"]
MlpKind = Literal["gelu", "swiglu_packed"]


@dataclass(frozen=True)
class ViTConfig:
    """A timm ``VisionTransformer`` variant (names as timm's constructor arguments).

    Attributes:
        img_size: input side the position embedding is made for.
        patch_size: side of one token's pixel square.
        embed_dim: token width.
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width ÷ ``embed_dim`` (timm takes ``int(embed_dim * mlp_ratio)``).
        mlp: ``gelu`` (Linear–GELU–Linear) or ``swiglu_packed`` (timm's ``SwiGLUPacked``).
        init_values: layer-scale init (None: no layer scale, no ``ls1.gamma`` keys).
        reg_tokens: register tokens (``reg_token`` parameter) after the class token.
        no_embed_class: position embedding covers patch tokens only (DINOv2-reg, UNI 2).
        pool: ``token`` (class token, timm's ``global_pool='token'``) or ``token+mean`` (class
            token concatenated with the mean patch token, Virchow's embedding).
        timm_name: timm architecture whose constructor these arguments are passed to.
    """

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    mlp: MlpKind = "gelu"
    init_values: float | None = None
    reg_tokens: int = 0
    no_embed_class: bool = False
    pool: Pool = "token"
    timm_name: str = "vit_large_patch16_224"

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.reg_tokens

    @property
    def dim(self) -> int:
        return self.embed_dim * (2 if self.pool == "token+mean" else 1)


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (timm's ``ls1``/``ls2``, key ``gamma``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """timm's ``Attention`` (fused scaled-dot-product path): ``qkv`` and ``proj`` linears."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` → ``(B, N, C)``."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc1`` → GELU (or packed SwiGLU: SiLU(first half) × second half) → ``fc2``."""

    def __init__(self, dim: int, hidden: int, kind: MlpKind) -> None:
        super().__init__()
        self.kind = kind
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2 if kind == "swiglu_packed" else hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.kind == "swiglu_packed":
            x1, x2 = x.chunk(2, dim=-1)
            x = F.silu(x1) * x2
        else:
            x = F.gelu(x)
        return self.fc2(x)


class Block(nn.Module):
    """Pre-norm transformer block with optional layer scale (timm's ``Block``)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, config.num_heads)
        self.ls1 = LayerScale(dim, config.init_values) if config.init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.mlp)
        self.ls2 = LayerScale(dim, config.init_values) if config.init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping ``p × p`` patches to tokens by one strided convolution (timm's
    ``patch_embed.proj``)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, H/p · W/p, D)`` (row-major tokens)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """``(B, 3, S, S)`` → ``(B, D)``: the timm ViT forward for ``num_classes=0`` (parameter
    names ``cls_token``, ``reg_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.i.*``,
    ``norm``), at the configured input size."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.reg_token = (
            nn.Parameter(torch.zeros(1, config.reg_tokens, d)) if config.reg_tokens else None
        )
        n_pos = config.grid**2 + (0 if config.no_embed_class else config.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, d))
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)

    def prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        tokens = [self.cls_token.expand(batch, -1, -1)]
        if self.reg_token is not None:
            tokens.append(self.reg_token.expand(batch, -1, -1))
        return tokens

    def embed(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens with position embedding and prefix tokens: ``(B, T, D)``."""
        x = self.patch_embed(x)
        pos = self.pos_embed if pos_embed is None else pos_embed
        prefix = self.prefix_tokens(x.shape[0])
        if self.config.no_embed_class:
            return torch.cat([*prefix, x + pos], dim=1)
        return torch.cat([*prefix, x], dim=1) + pos

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → normalised tokens ``(B, T, D)``."""
        grid = x.shape[-1] // self.config.patch_size
        if grid != self.config.grid or x.shape[-2] != x.shape[-1]:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} does not fit the {self.config.img_size}px "
                "position embedding"
            )
        return self.norm(self.blocks(self.embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.forward_features(x), self.config)


def pool_tokens(tokens: torch.Tensor, config: ViTConfig) -> torch.Tensor:
    """``(B, T, D)`` tokens → the embedding: class token, or class token ‖ mean patch token."""
    cls = tokens[:, 0]
    if config.pool == "token":
        return cls
    return torch.cat([cls, tokens[:, config.num_prefix_tokens :].mean(1)], dim=-1)


# --------------------------------------------------------------------------- CONCH v1.5


@dataclass(frozen=True)
class ConchConfig:
    """CONCH v1.5's vision tower as TRIDENT builds it: a ViT-L/16 trunk (layer scale 1.0) made
    for ``trunk.img_size`` and fed ``input_size`` pixels, an attentional pooler with one query,
    and a final LayerNorm.

    Attributes:
        trunk: the ViT trunk (its ``img_size`` is the size the model is *built* for: 224).
        input_size: the size patches are fed at (448).
        pool_dim: the pooler's query width (the output D).
        pool_heads: pooler heads.
    """

    trunk: ViTConfig = ViTConfig(init_values=1.0)
    input_size: int = 448
    pool_dim: int = 768
    pool_heads: int = 8

    @property
    def dim(self) -> int:
        return self.pool_dim


class AttentionalPooler(nn.Module):
    """One learned query attending over the trunk's tokens (CONCH's ``attn_pool_contrast``)."""

    def __init__(self, d_model: int, context_dim: int, n_head: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, d_model))
        self.heads = n_head
        self.scale = (d_model // n_head) ** -0.5
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, d_model * 2, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` → ``(B, d_model)``."""
        b = x.shape[0]
        h = self.heads
        x = self.ln_k(x)
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)  # (B, 1, d)
        k, v = self.to_kv(x).chunk(2, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, n, h·e) → (B, h, n, e)
            return t.reshape(b, t.shape[1], h, -1).transpose(1, 2)

        q, k, v = heads(q) * self.scale, heads(k), heads(v)
        sim = q @ k.transpose(-2, -1)
        attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, 1, -1)
        return self.to_out(out)[:, 0]


class ConchVisionTower(nn.Module):
    """``(B, 3, 448, 448)`` → ``(B, 768)``, TRIDENT's ``CONCHVisionTower.forward``."""

    def __init__(self, config: ConchConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = VisionTransformer(config.trunk)
        self.attn_pool_contrast = AttentionalPooler(
            config.pool_dim, config.trunk.embed_dim, config.pool_heads
        )
        self.ln_contrast = nn.LayerNorm(config.pool_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trunk = self.trunk
        pos = conch_interpolate_pos_embed(trunk.pos_embed, x.shape[-1], trunk.config.patch_size)
        tokens = trunk.norm(trunk.blocks(trunk.embed(x, pos)))
        return self.ln_contrast(self.attn_pool_contrast(tokens))


def conch_interpolate_pos_embed(pos_embed: torch.Tensor, size: int, patch: int) -> torch.Tensor:
    """CONCH v1.5's ``interpolate_pos_encoding`` (DINO's): the class token's entry kept, the
    patch grid resized bicubically with ``scale_factor = (size/patch + 0.1) / grid``.

    Args:
        pos_embed: ``(1, 1 + g², D)``.
        size: input side in pixels.
        patch: patch side.

    Returns:
        ``(1, 1 + (size/patch)², D)``.
    """
    n = pos_embed.shape[1] - 1
    g = int(math.sqrt(n))
    w0 = size // patch
    if w0 * w0 == n:
        return pos_embed
    cls, grid = pos_embed[:, :1], pos_embed[:, 1:]
    d = pos_embed.shape[-1]
    scale = (w0 + 0.1) / math.sqrt(n)
    grid = F.interpolate(
        grid.reshape(1, g, g, d).permute(0, 3, 1, 2), scale_factor=(scale, scale), mode="bicubic"
    )
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)


def resample_pos_embed_bilinear(pos_embed: torch.Tensor, grid: int, prefix: int) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed(interpolation='bilinear', antialias=False)``: what
    TRIDENT's CONCH loader applies to a checkpoint's position embedding of another grid.

    Args:
        pos_embed: ``(1, prefix + g², D)`` from the checkpoint.
        grid: the model's grid side.
        prefix: leading non-grid entries (the class token: 1).

    Returns:
        ``(1, prefix + grid², D)``.
    """
    n = pos_embed.shape[1] - prefix
    if n == grid * grid:
        return pos_embed
    old = int(math.sqrt(n))
    d = pos_embed.shape[-1]
    head, body = pos_embed[:, :prefix], pos_embed[:, prefix:].float()
    body = body.reshape(1, old, old, d).permute(0, 3, 1, 2)
    body = F.interpolate(body, size=(grid, grid), mode="bilinear", antialias=False)
    body = body.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos_embed.dtype)
    return torch.cat([head, body], dim=1)


# --------------------------------------------------------------------------- factory


def adapt_state_dict(
    arch: ResNetTrunkConfig | ViTConfig | ConchConfig, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The peers' own key/shape adjustments of a state dict before loading it.

    * ResNet: CLAM's ``TimmCNNEncoder`` keeps the timm model under ``model.``; that prefix is
      removed.
    * CONCH v1.5: TRIDENT resamples the checkpoint's ``trunk.pos_embed`` to the trunk's 224 px
      grid (bilinear, no antialias) whatever grid the file has.
    """
    if isinstance(arch, ResNetTrunkConfig) and state and all(k.startswith("model.") for k in state):
        return {k[len("model.") :]: v for k, v in state.items()}
    if isinstance(arch, ConchConfig) and "trunk.pos_embed" in state:
        pos = state["trunk.pos_embed"]
        if pos.ndim == 3 and pos.shape[1] != arch.trunk.grid**2 + 1:
            n = pos.shape[1] - 1
            if int(math.isqrt(n)) ** 2 == n:
                state = {
                    **state,
                    "trunk.pos_embed": resample_pos_embed_bilinear(pos, arch.trunk.grid, 1),
                }
    return state


Architecture = ResNetTrunkConfig | ViTConfig | ConchConfig


def build_network(arch: Architecture, backend: Backend = "auto") -> tuple[nn.Module, str]:
    """The network of ``arch`` on the current default device (use ``torch.device("meta")`` to
    size a model without allocating it).

    Returns:
        ``(network, backend used)`` — ``timm`` when requested/available and the architecture is
        in timm, else ``hmil`` (this module's copy).
    """
    use_timm = backend == "timm" or (backend == "auto" and timm_available())
    if use_timm and not isinstance(arch, ConchConfig):
        return _timm_network(arch), "timm"
    if backend == "timm" and not isinstance(arch, ConchConfig):
        raise RuntimeError("timm is not importable")
    if isinstance(arch, ResNetTrunkConfig):
        return ResNetTrunk(arch), "hmil"
    if isinstance(arch, ViTConfig):
        return VisionTransformer(arch), "hmil"
    return ConchVisionTower(arch), "hmil"


class _TimmResNetTrunk(nn.Module):
    """timm's ``features_only`` ResNet (keys as ``resnet50``'s) + global average pool."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.features(x)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


class _TimmViT(nn.Module):
    def __init__(self, vit: nn.Module, config: ViTConfig) -> None:
        super().__init__()
        self.vit = vit
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens: torch.Tensor = self.vit.forward_features(x)  # type: ignore[operator]  # timm's
        return pool_tokens(tokens, self.config)


def _timm_network(arch: ResNetTrunkConfig | ViTConfig) -> nn.Module:
    """timm's model for ``arch`` in a wrapper computing the embedding; the timm model itself
    (whose state dict the weights file holds) is :func:`weights_module` of the wrapper."""
    import timm

    if isinstance(arch, ResNetTrunkConfig):
        # TRIDENT's and CLAM's construction; layer4 is built with one block and dropped by
        # features_only (only layer1..layer3 are kept)
        features = timm.create_model(
            "resnet50", pretrained=False, features_only=True, out_indices=[3], num_classes=0,
            layers=[*arch.layers, 1],
        )  # fmt: skip
        return _TimmResNetTrunk(features)
    kwargs: dict[str, object] = dict(
        img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
        depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio,
        init_values=arch.init_values, reg_tokens=arch.reg_tokens,
        no_embed_class=arch.no_embed_class, num_classes=0, dynamic_img_size=True,
    )  # fmt: skip
    if arch.mlp == "swiglu_packed":
        kwargs.update(mlp_layer=timm.layers.SwiGLUPacked, act_layer=nn.SiLU)
    vit = timm.create_model(arch.timm_name, pretrained=False, **kwargs)
    return _TimmViT(vit, arch)


def weights_module(network: nn.Module) -> nn.Module:
    """The module whose ``state_dict`` keys are the weights file's (timm's model inside the
    wrappers above; the network itself for this module's copies)."""
    if isinstance(network, _TimmResNetTrunk):
        return network.features
    if isinstance(network, _TimmViT):
        return network.vit
    return network
