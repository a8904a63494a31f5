"""The field's patch encoders as data: architecture, input, normalisation, output D, TRIDENT name.

Every value is the one CLAM/TRIDENT use (``trident/patch_encoder_models/load.py`` at TRIDENT
a91fa84; CLAM 53e2409 ``models/builder.py``): the timm architecture and its keyword arguments,
the ``torchvision.transforms`` pipeline (resize side and filter, centre crop, mean/std), the
embedding (class token, or class token ‖ mean patch token for Virchow), and the precision
TRIDENT runs it in on a GPU. Weights are never downloaded: ``where`` says which file of the
model's published repository ``--weights`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hmil.slides.backbones import Architecture, ConchConfig, ResNetTrunkConfig, ViTConfig
from hmil.slides.preprocess import Preprocess

#: H-optimus-0/1 statistics (bioptimus model card, TRIDENT)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


@dataclass(frozen=True)
class EncoderSpec:
    """One named encoder.

    Attributes:
        name: ``--encoder`` name (TRIDENT's, or CLAM's ``resnet50_trunc``).
        trident_name: the name TRIDENT gives it (stored as the bag's ``encoder`` attribute).
        architecture: what to build (timm's, or :mod:`hmil.slides.backbones`' copy).
        preprocess: resize / crop / normalisation, as the peers' eval transform.
        where: the weights file(s) ``--weights`` takes.
        trident_precision: the autocast dtype TRIDENT uses on a GPU.
        aliases: other accepted ``--encoder`` names.
        summary: the model in one line (the docstring of its encoder class).
    """

    name: str
    trident_name: str
    architecture: Architecture
    preprocess: Preprocess
    where: str
    trident_precision: str = "fp32"
    aliases: tuple[str, ...] = ()
    summary: str = ""

    @property
    def dim(self) -> int:
        return self.architecture.dim

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size


RESNET50_TRUNC = EncoderSpec(
    name="resnet50_trunc",
    trident_name="resnet50",
    architecture=ResNetTrunkConfig(),
    # CLAM: Resize(224) (bilinear); TRIDENT: Resize(224, bilinear) + CenterCrop(224)
    preprocess=Preprocess(224, "bilinear"),
    where="torchvision resnet50-*.pth, or timm resnet50.tv_in1k pytorch_model.bin / "
    "model.safetensors (layer4 and fc are ignored)",
    aliases=("resnet50",),
    summary="CLAM's default ``resnet50_trunc`` (TRIDENT ``resnet50``): ImageNet ResNet-50 through "
    "layer3, global average pool, D = 1024.",
)

UNI_V1 = EncoderSpec(
    name="uni_v1",
    trident_name="uni_v1",
    architecture=ViTConfig(
        img_size=224,
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        init_values=1e-5,
        timm_name="vit_large_patch16_224",
    ),
    preprocess=Preprocess(224, "bilinear"),
    where="MahmoodLab/UNI pytorch_model.bin",
    trident_precision="fp16",
    summary="UNI (ViT-L/16, layer scale), class token, D = 1024.",
)

UNI_V2 = EncoderSpec(
    name="uni_v2",
    trident_name="uni_v2",
    architecture=ViTConfig(
        img_size=224,
        patch_size=14,
        embed_dim=1536,
        depth=24,
        num_heads=24,
        mlp_ratio=2.66667 * 2,
        mlp="swiglu_packed",
        init_values=1e-5,
        reg_tokens=8,
        no_embed_class=True,
        timm_name="vit_giant_patch14_224",
    ),
    preprocess=Preprocess(224, "bilinear"),
    where="MahmoodLab/UNI2-h pytorch_model.bin",
    trident_precision="bf16",
    summary="UNI 2-h (ViT-H/14, SwiGLU, 8 register tokens), class token, D = 1536.",
)

CONCH_V15 = EncoderSpec(
    name="conch_v15",
    trident_name="conch_v15",
    architecture=ConchConfig(),
    preprocess=Preprocess(448, "bilinear"),
    where="MahmoodLab/conchv1_5 pytorch_model_vision.bin",
    trident_precision="fp16",
    summary="CONCH v1.5 vision tower (ViT-L/16 at 448 px + attentional pooler), D = 768.",
)

VIRCHOW2 = EncoderSpec(
    name="virchow2",
    trident_name="virchow2",
    architecture=ViTConfig(
        img_size=224,
        patch_size=14,
        embed_dim=1280,
        depth=32,
        num_heads=16,
        mlp_ratio=5.3375,
        mlp="swiglu_packed",
        init_values=1e-5,
        reg_tokens=4,
        pool="token+mean",
        timm_name="vit_huge_patch14_224",
    ),
    preprocess=Preprocess(224, "bicubic"),
    where="paige-ai/Virchow2 pytorch_model.bin",
    trident_precision="fp16",
    summary="Virchow 2 (ViT-H/14, SwiGLU, 4 registers), class token ‖ mean patch token, D = 2560.",
)

GIGAPATH = EncoderSpec(
    name="gigapath",
    trident_name="gigapath",
    architecture=ViTConfig(
        img_size=224,
        patch_size=16,
        embed_dim=1536,
        depth=40,
        num_heads=24,
        mlp_ratio=5.33334,
        mlp="swiglu_packed",
        init_values=1e-5,
        timm_name="vit_giant_patch14_dinov2",
    ),
    # Resize(256, bicubic) + CenterCrop(224)
    preprocess=Preprocess(224, "bicubic", resize_size=256),
    where="prov-gigapath/prov-gigapath pytorch_model.bin",
    trident_precision="fp16",
    summary="Prov-GigaPath tile encoder (ViT-g/16, SwiGLU), class token, D = 1536.",
)

HOPTIMUS0 = EncoderSpec(
    name="hoptimus0",
    trident_name="hoptimus0",
    architecture=ViTConfig(
        img_size=224,
        patch_size=14,
        embed_dim=1536,
        depth=40,
        num_heads=24,
        mlp_ratio=2.66667 * 2,
        mlp="swiglu_packed",
        init_values=1e-5,
        reg_tokens=4,
        no_embed_class=True,
        timm_name="vit_giant_patch14_reg4_dinov2",
    ),
    preprocess=Preprocess(224, "bilinear", mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD),
    where="bioptimus/H-optimus-0 pytorch_model.bin",
    trident_precision="fp16",
    summary="H-optimus-0 (ViT-g/14, SwiGLU, 4 registers), class token, D = 1536.",
)

#: every named encoder, in ``--list-encoders`` order
SPECS: tuple[EncoderSpec, ...] = (
    RESNET50_TRUNC, UNI_V1, UNI_V2, CONCH_V15, VIRCHOW2, GIGAPATH, HOPTIMUS0,
)  # fmt: skip
