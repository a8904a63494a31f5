"""Named encoders from local weights: file formats, key checks, preprocessing, precision.

All weights are SEEDED RANDOM in each encoder's real key layout, at SMALL sizes of the same
architectures (``small_encoders.py``); full ViT-L/H/g sizes are never built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from seeded_weights import seeded_image
from small_encoders import save_weights, small_encoder_class, small_spec, small_state_dict

from hmil.cli import main
from hmil.errors import ConfigError
from hmil.slides.encoders import ENCODERS, PretrainedEncoder, create_encoder
from hmil.slides.preprocess import to_tile_size
from hmil.slides.weights import match_state_dict, sha256_of

CPU = torch.device("cpu")
NAMES = ["resnet50_trunc", "uni_v1", "uni_v2", "conch_v15", "virchow2", "gigapath", "hoptimus0"]


def _patches(n: int = 3, size: int = 80) -> torch.Tensor:
    return torch.from_numpy(np.stack([seeded_image(size, size, seed=i) for i in range(n)]))


def _encode(enc: PretrainedEncoder, patches: torch.Tensor, tile: int = 80) -> torch.Tensor:
    prepared = np.stack([enc.prepare(p, tile) for p in patches.numpy()])
    return enc(torch.from_numpy(prepared))


@pytest.mark.parametrize("name", NAMES)
def test_every_named_encoder_loads_its_layout_and_gives_its_dimension(
    name: str, tmp_path: Path
) -> None:
    cls = small_encoder_class(name)
    weights = save_weights(tmp_path / "pytorch_model.bin", small_state_dict(name))
    enc = cls(weights=weights, device=CPU, backend="hmil")
    spec = small_spec(name)
    out = _encode(enc, _patches())
    assert out.shape == (3, spec.dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.std() > 0
    record = enc.provenance()
    assert record["encoder"] == spec.trident_name
    assert record["encoder_weights_sha256"] == sha256_of(weights)
    assert record["encoder_weights"] == "pytorch_model.bin" and record["encoder_backend"] == "hmil"


def test_state_dict_formats_and_torchscript_give_identical_features(tmp_path: Path) -> None:
    name = "uni_v2"
    cls = small_encoder_class(name)
    state = small_state_dict(name)
    files = {
        "bin": save_weights(tmp_path / "pytorch_model.bin", state),
        "safetensors": save_weights(tmp_path / "model.safetensors", state),
        "wrapped": save_weights(tmp_path / "ckpt.pth", {"state_dict": state}),  # type: ignore[dict-item]
        "dataparallel": save_weights(
            tmp_path / "dp.pth", {f"module.{k}": v for k, v in state.items()}
        ),
    }
    patches = _patches()
    feats = {
        k: _encode(cls(weights=p, device=CPU, backend="hmil"), patches) for k, p in files.items()
    }
    reference = feats["bin"]
    for key, value in feats.items():
        assert torch.equal(value, reference), key
    # a TorchScript export of the same network: the named encoder's preprocessing, same numbers
    net = cls(weights=files["bin"], device=CPU, backend="hmil")._net
    size = small_spec(name).input_size
    scripted = tmp_path / "uni2_traced.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, size, size)), str(scripted))
    enc = cls(weights=scripted, device=CPU)
    assert enc.backend == "torchscript"
    torch.testing.assert_close(_encode(enc, patches), reference, rtol=1e-5, atol=1e-5)


def test_resnet50_takes_torchvision_and_clam_files(tmp_path: Path) -> None:
    cls = small_encoder_class("resnet50_trunc")
    state = small_state_dict("resnet50_trunc")
    plain = _encode(cls(weights=save_weights(tmp_path / "a.pth", state), device=CPU), _patches())
    # torchvision's resnet50-*.pth also holds layer4 and fc: ignored (the trunk ends at layer3)
    torchvision = {**state, "layer4.0.conv1.weight": torch.zeros(512, 1024, 1, 1),
                   "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}  # fmt: skip
    without_counters = {k: v for k, v in torchvision.items() if "num_batches" not in k}
    clam = {f"model.{k}": v for k, v in state.items()}  # CLAM's TimmCNNEncoder state_dict()
    for i, variant in enumerate((without_counters, clam)):
        path = save_weights(tmp_path / f"v{i}.pth", variant)
        assert torch.equal(_encode(cls(weights=path, device=CPU), _patches()), plain)
    assert "resnet50" in ENCODERS and ENCODERS["resnet50"] is ENCODERS["resnet50_trunc"]


def test_wrong_weights_name_the_keys(tmp_path: Path) -> None:
    cls = small_encoder_class("uni_v1")
    state = small_state_dict("uni_v1")
    broken = {k: v for k, v in state.items() if k != "norm.weight"}
    broken["head.weight"] = torch.zeros(2, 48)
    broken["pos_embed"] = torch.zeros(1, 5, 48)
    with pytest.raises(ConfigError, match="not uni_v1 weights") as info:
        cls(weights=save_weights(tmp_path / "bad.bin", broken), device=CPU)
    problem = info.value.problem
    assert "1 missing key(s): norm.weight" in problem
    assert "1 unexpected key(s): head.weight" in problem
    assert "pos_embed (1, 5, 48) (expected (1, 17, 48))" in problem
    # another encoder's weights: refused before any copy, naming what differs
    other = save_weights(tmp_path / "uni2.bin", small_state_dict("uni_v2"))
    with pytest.raises(ConfigError, match="reg_token"):
        cls(weights=other, device=CPU)


def test_weights_that_need_code_or_are_not_weights_are_refused(tmp_path: Path) -> None:
    cls = small_encoder_class("resnet50_trunc")

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, evil)
    with pytest.raises(
        ConfigError, match=r"refused: .*Unsupported global: GLOBAL print was not an allowed global"
    ):
        cls(weights=evil, device=CPU)
    module = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled module (needs its class): refused
    with pytest.raises(ConfigError, match="refused"):
        cls(weights=module, device=CPU)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ConfigError, match="not a readable safetensors"):
        cls(weights=junk, device=CPU)
    tensor = save_weights(tmp_path / "tensor.pt", {})  # empty dict
    with pytest.raises(ConfigError, match="not a state dict"):
        cls(weights=tensor, device=CPU)
    with pytest.raises(ConfigError, match=r"^weights: 'uni_v1' needs a weights file \("):
        create_encoder("uni_v1", device="cpu")
    with pytest.raises(ConfigError, match="weights file not found"):
        create_encoder("uni_v1", weights=tmp_path / "missing.bin", device="cpu")


def test_torchscript_encoder_points_state_dicts_to_named_encoders(tmp_path: Path) -> None:
    weights = save_weights(tmp_path / "resnet.pth", small_state_dict("resnet50_trunc"))
    with pytest.raises(ConfigError, match=r"a named encoder, e\.g\. resnet50_trunc"):
        create_encoder("torchscript", weights=weights, device="cpu")


def test_preprocessing_follows_trident_reading(tmp_path: Path) -> None:
    """A 2× read is first resized to the tile size (bicubic), then to the encoder's input."""
    cls = small_encoder_class("gigapath")  # resize 73 px bicubic, centre crop 64 px
    enc = cls(weights=save_weights(tmp_path / "g.bin", small_state_dict("gigapath")), device=CPU)
    spec = small_spec("gigapath")
    read = seeded_image(160, 160, seed=2)
    prepared = enc.prepare(read, 80)
    assert prepared.shape == (64, 64, 3)
    np.testing.assert_array_equal(prepared, spec.preprocess.resize(to_tile_size(read, 80)))
    assert spec.preprocess.resize_size == 73 and spec.preprocess.interpolation == "bicubic"


def test_precision_bf16_on_cpu_and_refusals(tmp_path: Path) -> None:
    cls = small_encoder_class("uni_v1")
    enc = cls(weights=save_weights(tmp_path / "u.bin", small_state_dict("uni_v1")), device=CPU)
    patches = _patches(4)
    fp32 = _encode(enc, patches)
    with enc.autocast("bf16"):
        bf16 = _encode(enc, patches)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32, dim=1)
    assert cosine.min() > 0.99  # measured ≈ 0.9999 on these SEEDED RANDOM weights
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        enc.check_precision("fp16")
    with pytest.raises(ConfigError, match="computes in fp32 only"):
        create_encoder("hed-texture", device="cpu").check_precision("bf16")


def test_list_encoders_prints_every_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["extract", "--list-encoders"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in [*NAMES, "hed-texture", "torchscript"]:
        assert name in out
    assert "resnet50_trunc | resnet50" in out
    assert "D = 768; input: bilinear 448px" in out  # CONCH v1.5
    assert "D = 2560; input: bicubic 224px" in out  # Virchow 2
    assert "bicubic 256px, centre crop 224px" in out  # GigaPath
    assert "mean (0.707223,0.578729,0.703617)" in out  # H-optimus-0
    assert "MahmoodLab/UNI pytorch_model.bin" in out


def test_match_state_dict_allows_declared_optional_keys() -> None:
    expected = {"a": (2,), "b.num_batches_tracked": ()}
    got = match_state_dict(
        {"a": torch.zeros(2), "skip.me": torch.zeros(1)}, expected, "f", "x",
        ignore_prefixes=("skip.",), optional=["b.num_batches_tracked"],
    )  # fmt: skip
    assert list(got) == ["a"]
