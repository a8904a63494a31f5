"""Write the golden vectors that prove the dependency-free encoders equal timm's and TRIDENT's.

Run with timm + torchvision installed (NOT the project venv; e.g. a separate venv with
``pip install torch==2.14.1 torchvision==0.29.1 timm safetensors numpy einops einops-exts``)::

    PYTHONPATH=. /work/venv-timm/bin/python tests/hmil/slides/golden/make_golden.py \\
        [--trident-src DIR]   # a TRIDENT checkout, for the CONCH v1.5 case

It writes ``tests/hmil/slides/golden/golden.npz`` (a few kB). Everything is SYNTHETIC: SEEDED RANDOM
weights (``seeded_weights.py``, reproducible without any RNG library) in each architecture's own
state-dict layout, at SMALL sizes of the same architecture classes, and seeded inputs.

* ``net/<case>``: timm's model (``timm.create_model`` with the encoder's keyword arguments,
  shrunk) on a seeded float input → its ``(2, D)`` output, plus timm's state-dict key → shape
  table. ``conch_v15`` is TRIDENT's own ``CONCHVisionTower`` code (needs ``--trident-src``),
  loaded through TRIDENT's ``resize_pos_embed``.
* ``pre/<encoder>``: ``torchvision.transforms`` as TRIDENT composes them for the encoder, on a
  seeded 256 px patch, and on a 512 px patch first resized to 256 px by Pillow's default filter
  (TRIDENT's ``WSIPatcher``): SHA-256 of the float32 output bytes plus its sum.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from PIL import Image
from torchvision import transforms

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "helpers"))  # seeded_weights

from seeded_weights import seeded_image, seeded_state_dict, uniform  # noqa: E402
from small_encoders import small_architecture  # noqa: E402

from hmil.slides.backbones import (  # noqa: E402
    ResNetTrunkConfig,
    ViTConfig,
    build_network,
    weights_module,
)
from hmil.slides.encoder_specs import SPECS  # noqa: E402

BATCH = 2


def small_architectures() -> dict[str, ResNetTrunkConfig | ViTConfig]:
    """The timm-built cases: every named encoder but CONCH (TRIDENT's own code, below)."""
    return {s.name: small_architecture(s.name) for s in SPECS if s.name != "conch_v15"}


def seeded_input(size: int, seed: int) -> torch.Tensor:
    """``(BATCH, 3, size, size)`` float32 in [−2, 2): a normalised-pixel-like input."""
    values = 2.0 * uniform(BATCH * 3 * size * size, seed).reshape(BATCH, 3, size, size)
    return torch.from_numpy(values.astype(np.float32))


def input_size(arch: ResNetTrunkConfig | ViTConfig) -> int:
    return 64 if isinstance(arch, ResNetTrunkConfig) else arch.img_size


def net_case(name: str, arch: ResNetTrunkConfig | ViTConfig) -> tuple[dict, np.ndarray]:
    net, backend = build_network(arch, "timm")
    assert backend == "timm"
    target = weights_module(net)
    shapes = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    target.load_state_dict(seeded_state_dict(shapes))
    net.eval()
    with torch.no_grad():
        out = net(seeded_input(input_size(arch), seed=11))
    meta = {
        "kind": type(arch).__name__,
        "config": dataclasses.asdict(arch),
        "input_size": input_size(arch),
        "keys": [[k, list(s)] for k, s in shapes.items()],
    }
    return meta, out.numpy().astype(np.float32)


def conch_case(trident_src: Path) -> tuple[dict, np.ndarray]:
    """TRIDENT's CONCH v1.5 tower code at a small size: trunk built for 32 px (4 × 4 grid of
    8 px patches), checkpoint position embedding made for 64 px (8 × 8), fed 64 px."""
    path = trident_src / "trident/patch_encoder_models/model_zoo/conchv1_5/conchv1_5.py"
    spec = importlib.util.spec_from_file_location("trident_conchv1_5", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    small = small_architecture("conch_v15")
    t = small.trunk
    trunk_cfg = {"img_size": t.img_size, "patch_size": t.patch_size, "embed_dim": t.embed_dim,
                 "depth": t.depth, "num_heads": t.num_heads}  # fmt: skip
    pool = {"pool_dim": small.pool_dim, "pool_heads": small.pool_heads}

    class Tower(torch.nn.Module):  # CONCHVisionTower with vit_large → the small trunk
        def __init__(self) -> None:
            super().__init__()
            self.trunk = module.VisionTransformer(
                **trunk_cfg, mlp_ratio=4, qkv_bias=True, init_values=1.0
            )
            self.attn_pool_contrast = module.AttentionalPooler(
                d_model=pool["pool_dim"], context_dim=48, n_head=pool["pool_heads"], n_queries=1
            )
            self.ln_contrast = torch.nn.LayerNorm(pool["pool_dim"])

        forward = module.CONCHVisionTower.forward

    tower = Tower().eval()
    shapes = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    grid = small.input_size // t.patch_size
    shapes["trunk.pos_embed"] = (1, 1 + grid * grid, t.embed_dim)  # the file's grid: 8 × 8
    state = seeded_state_dict(shapes)
    loaded = dict(state)
    loaded["trunk.pos_embed"] = module.resize_pos_embed(
        tower.trunk, state["trunk.pos_embed"], False
    )
    tower.load_state_dict(loaded, strict=True)
    with torch.no_grad():
        out = tower(seeded_input(small.input_size, seed=11))
    meta = {
        "kind": "ConchConfig",
        "config": {
            "trunk": {**trunk_cfg, "init_values": 1.0},
            "input_size": small.input_size,
            **pool,
        },
        "input_size": small.input_size,
        "keys": [[k, list(s)] for k, s in shapes.items()],
    }
    return meta, out.numpy().astype(np.float32)


def trident_transform(name: str) -> transforms.Compose:
    """The eval transform TRIDENT's ``load.py`` composes for ``name`` (a91fa84)."""
    imagenet = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    bilinear, bicubic = transforms.InterpolationMode.BILINEAR, transforms.InterpolationMode.BICUBIC
    steps = {
        "resnet50_trunc": [
            transforms.Resize(224, bilinear, antialias=True),
            transforms.CenterCrop(224),
        ],
        "uni_v1": [transforms.Resize(224), transforms.CenterCrop(224)],
        "uni_v2": [transforms.Resize(224), transforms.CenterCrop(224)],
        "conch_v15": [transforms.Resize(448, bilinear), transforms.CenterCrop(448)],
        "virchow2": [transforms.Resize(224, bicubic)],
        "gigapath": [transforms.Resize(256, bicubic), transforms.CenterCrop(224)],
        "hoptimus0": [transforms.Resize(224)],
    }[name]
    norm = imagenet
    if name == "hoptimus0":
        norm = transforms.Normalize((0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517))
    return transforms.Compose([*steps, transforms.ToTensor(), norm])


def digest(x: torch.Tensor) -> dict:
    arr = x.contiguous().numpy().astype(np.float32)
    return {
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
        "sum": float(arr.astype(np.float64).sum()),
    }


def pre_cases() -> dict:
    patch = Image.fromarray(seeded_image(256, 256, seed=3))
    big = Image.fromarray(seeded_image(512, 512, seed=4))
    tiled = big.resize((256, 256))  # TRIDENT WSIPatcher: PIL default filter (bicubic)
    out = {}
    for spec in SPECS:
        transform = trident_transform(spec.name)
        out[spec.name] = {"patch256": digest(transform(patch)), "read512": digest(transform(tiled))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trident-src", type=Path, help="TRIDENT checkout (for conch_v15)")
    parser.add_argument("--out", type=Path, default=HERE / "golden.npz")
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {}
    nets: dict[str, dict] = {}
    for name, arch in small_architectures().items():
        nets[name], arrays[f"net/{name}"] = net_case(name, arch)
    if args.trident_src is not None:
        nets["conch_v15"], arrays["net/conch_v15"] = conch_case(args.trident_src)
    meta = {
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "torchvision": torchvision.__version__,
            "pillow": Image.__version__,
            "numpy": np.__version__,
        },
        "batch": BATCH,
        "input_seed": 11,
        "nets": nets,
        "pre": pre_cases(),
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(args.out, **arrays)
    print(f"{args.out}: {', '.join(nets)}; {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
