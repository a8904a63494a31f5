"""Encoder registry, the weight-free hed-texture descriptor, and TorchScript loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed
from slide_helpers import GLASS, TISSUE

from hmil.errors import ConfigError
from hmil.slides.encoders import (
    ENCODERS,
    HED_TEXTURE_DIM,
    HED_TEXTURE_FEATURES,
    HedTextureEncoder,
    PatchEncoder,
    available_encoders,
    create_encoder,
    register_encoder,
)


def _patches(n: int = 6, size: int = 128, seed: int = 0) -> torch.Tensor:
    """SYNTHETIC patches: glass, flat tissue, and tissue with random dark 'nuclei'."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = TISSUE if i % 2 else GLASS
        if i >= 2:
            for _ in range(20 * i):
                y, x = rng.integers(0, size - 6, 2)
                out[i, y : y + 6, x : x + 6] = (60, 40, 120)
    return torch.from_numpy(out)


def test_registry() -> None:
    assert {"hed-texture", "torchscript"} <= set(available_encoders())
    with pytest.raises(ConfigError, match="unknown encoder 'resnet'"):
        create_encoder("resnet")
    with pytest.raises(ConfigError, match="takes no weights"):
        create_encoder("hed-texture", weights="w.pt")

    class Dummy(PatchEncoder):
        name = "hed-texture"

        def encode(self, patches: torch.Tensor) -> torch.Tensor:
            return patches

    with pytest.raises(ValueError, match="already registered"):
        register_encoder(Dummy)
    assert ENCODERS["hed-texture"] is HedTextureEncoder


@pytest.fixture(scope="module")
def enc() -> PatchEncoder:
    return create_encoder("hed-texture", device="cpu")


def test_hed_texture_shape_determinism_and_range(enc: PatchEncoder) -> None:
    assert enc.dim == HED_TEXTURE_DIM == len(HED_TEXTURE_FEATURES) == 104
    assert len(set(HED_TEXTURE_FEATURES)) == HED_TEXTURE_DIM
    x = _patches()
    a, b = enc(x), enc(x)
    assert a.shape == (6, HED_TEXTURE_DIM) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.isfinite(a).all()
    # batching does not change a patch's features
    assert torch.allclose(enc(x[3:4])[0], a[3], atol=1e-5)
    names = list(HED_TEXTURE_FEATURES)
    groups = [[f"{c}_hist{i}" for i in range(8)] for c in "hed"]
    groups += [[f"grad_hist{i}_s{s}" for i in range(8)] for s in (1, 2)]
    groups += [[f"lbp{i}_s{s}" for i in range(10)] for s in (1, 2)]
    groups += [[f"h_lbp{i}" for i in range(10)]]
    for group in groups:  # every histogram is normalised
        sums = a[:, [names.index(n) for n in group]].sum(1)
        assert torch.allclose(sums, torch.ones(6), atol=1e-4), group[0]


def test_hed_channel_statistics_match_skimage(enc: PatchEncoder) -> None:
    x = _patches()
    feats = enc(x).numpy()
    names = list(HED_TEXTURE_FEATURES)
    # the colour statistics are computed on the 2 × 2 average-pooled patch
    pooled = x.float().reshape(6, 64, 2, 64, 2, 3).mean((2, 4)).numpy() / 255.0
    hed = rgb2hed(pooled.reshape(-1, 64, 3)).reshape(6, 64 * 64, 3)
    for c, channel in enumerate("hed"):
        np.testing.assert_allclose(feats[:, names.index(f"{channel}_mean")], hed[..., c].mean(1),
                                   rtol=1e-4, atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(feats[:, names.index(f"{channel}_std")], hed[..., c].std(1),
                                   rtol=1e-3, atol=1e-5)  # fmt: skip
    # stain correlations are Pearson correlations between the stain channels (found wrong
    # once: they indexed pixels instead of channels and reached values of ±60)
    corr = feats[:, [names.index(n) for n in ("corr_h_e", "corr_h_d", "corr_e_d")]]
    assert np.abs(corr).max() <= 1.0
    for i in range(6):
        stds = hed[i].std(0)
        for k, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
            if stds[a] > 1e-3 and stds[b] > 1e-3:
                expected = np.corrcoef(hed[i, :, a], hed[i, :, b])[0, 1]
                assert corr[i, k] == pytest.approx(expected, abs=2e-3)


def test_hed_texture_separates_glass_tissue_and_nuclei(enc: PatchEncoder) -> None:
    f = enc(_patches()).numpy()
    names = list(HED_TEXTURE_FEATURES)
    tissue, nuclear = names.index("frac_tissue"), names.index("frac_nuclear")
    grad = names.index("grad_mean_s1")
    assert f[0, tissue] == 0.0 and f[1, tissue] == 1.0  # glass vs flat tissue
    assert f[5, nuclear] > f[3, nuclear] > f[1, nuclear]  # more dark blobs, more nuclear pixels
    assert f[5, grad] > f[1, grad]  # texture


def test_hed_texture_is_size_invariant(enc: PatchEncoder) -> None:
    small = _patches(4, 128)
    big = small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # same content, 256 px
    assert torch.allclose(enc(big), enc(small), atol=1e-4)


class _Net(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)  # (B, 6)


def test_torchscript_encoder_loads_a_traced_model(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(_Net(), torch.zeros(1, 3, 224, 224)), str(path))
    enc = create_encoder("torchscript", weights=path, device="cpu")
    assert enc.dim == 6 and enc.input_size == 224
    assert enc.label.startswith("torchscript:net.pt:")
    out = enc(_patches(3, 256))
    assert out.shape == (3, 6)
    # glass: every channel near 1 after [0, 1] scaling, then ImageNet-normalised
    expected = (np.array(GLASS) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(out[0, :3].numpy(), expected, atol=1e-3)


def test_torchscript_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^weights: the 'torchscript' encoder needs weights"):
        create_encoder("torchscript")
    with pytest.raises(ConfigError, match="weights file not found"):
        create_encoder("torchscript", weights=tmp_path / "missing.pt")
    state = tmp_path / "state_dict.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state)
    with pytest.raises(ConfigError, match="not a TorchScript model") as info:
        create_encoder("torchscript", weights=state)
    assert info.value.where == str(state)

    class Spatial(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x  # (B, 3, H, W), not (B, D)

    bad = tmp_path / "spatial.pt"
    torch.jit.save(torch.jit.script(Spatial()), str(bad))
    with pytest.raises(ConfigError, match=r"must be a \(B, D\) tensor"):
        create_encoder("torchscript", weights=bad)
