"""Encoder weights by name from the local Hugging Face cache (no network), laid out as
huggingface_hub lays it out: ``models--ORG--NAME/{refs/main, snapshots/<commit>/, blobs/}``."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch
from small_encoders import save_weights, small_encoder_class, small_state_dict

from hmil.errors import ConfigError
from hmil.slides import encoders
from hmil.slides.encoder_specs import CONCH_V15, RESNET50_TRUNC, UNI_V1
from hmil.slides.weights import hf_cache_dir, resolve_weights, sha256_of

COMMIT = "5a3b1c0e9d8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b"


def _hub_cache(cache: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """One model in a hub cache: content in ``blobs/<sha256>``, the snapshot's files as
    relative symlinks to them, ``refs/main`` holding the commit (no newline). Its snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (folder / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("resolving weights tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> Path:
    """An empty hub cache that HF_HUB_CACHE points at."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_the_cache_folder_follows_huggingface_hubs_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hf_cache_dir() == tmp_path / "elsewhere"


def test_hf_name_resolves_the_file_the_encoder_expects(hub: Path) -> None:
    snapshot = _hub_cache(hub, "MahmoodLab/UNI", {"pytorch_model.bin": b"uni", "README.md": b"#"})
    found = resolve_weights("hf:MahmoodLab/UNI", UNI_V1)
    assert found == snapshot / "pytorch_model.bin"
    assert found.read_bytes() == b"uni"  # through the symlink into blobs/
    # CONCH's repository holds the whole model too: the vision tower's file is the one taken
    conch = _hub_cache(
        hub, "MahmoodLab/conchv1_5", {"pytorch_model.bin": b"all", "pytorch_model_vision.bin": b"v"}
    )
    assert resolve_weights("hf:MahmoodLab/conchv1_5", CONCH_V15) == (
        conch / "pytorch_model_vision.bin"
    )
    # a file named after the repository wins over the spec's
    assert resolve_weights("hf:MahmoodLab/UNI/README.md", UNI_V1) == snapshot / "README.md"


def test_refs_main_chooses_among_snapshots(hub: Path) -> None:
    _hub_cache(hub, "Org/Model", {"model.safetensors": b"old"}, commit="1" * 40)
    newer = _hub_cache(hub, "Org/Model", {"model.safetensors": b"new"}, commit="2" * 40)
    assert resolve_weights("hf:Org/Model") == newer / "model.safetensors"
    (hub / "models--Org--Model" / "refs" / "main").write_text("1" * 40)
    assert resolve_weights("hf:Org/Model").read_bytes() == b"old"


def test_cache_folders_resolve_too(hub: Path) -> None:
    snapshot = _hub_cache(hub, "MahmoodLab/UNI", {"pytorch_model.bin": b"uni"})
    want = snapshot / "pytorch_model.bin"
    assert resolve_weights(hub / "models--MahmoodLab--UNI", UNI_V1) == want
    assert resolve_weights(snapshot, UNI_V1) == want
    assert resolve_weights(hub, UNI_V1) == want  # the spec names its repository
    with pytest.raises(ConfigError, match=r"a Hugging Face cache; name the model as hf:ORG/NAME"):
        resolve_weights(hub, RESNET50_TRUNC)  # several published sources: no single repository
    plain = hub.parent / "weights.pth"
    assert resolve_weights(plain, UNI_V1) == plain  # a file (or a missing one) is itself


def test_default_file_names_and_globs_without_a_spec(hub: Path) -> None:
    snapshot = _hub_cache(hub, "timm/resnet50.tv_in1k", {"model.safetensors": b"s", "x.bin": b"b"})
    assert resolve_weights("hf:timm/resnet50.tv_in1k") == snapshot / "model.safetensors"
    tv = _hub_cache(hub, "Org/tv", {"resnet50-11ad3fa6.pth": b"tv"})
    assert resolve_weights("hf:Org/tv", RESNET50_TRUNC) == tv / "resnet50-11ad3fa6.pth"


def test_absent_models_and_files_name_the_expected_folder(hub: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_weights("hf:MahmoodLab/UNI", UNI_V1)
    expected = hub / "models--MahmoodLab--UNI"
    assert str(exc.value) == (
        f"hf:MahmoodLab/UNI: not in the local Hugging Face cache (expected {expected}, with "
        "refs/main and its snapshot); download it there once, e.g. `hf download MahmoodLab/UNI`"
    )
    snapshot = _hub_cache(hub, "MahmoodLab/UNI", {"config.json": b"{}"})
    with pytest.raises(ConfigError, match=rf"no weights file \(pytorch_model\.bin\) in {snapshot}"):
        resolve_weights("hf:MahmoodLab/UNI", UNI_V1)
    _hub_cache(hub, "Org/two", {"a.bin": b"a", "b.bin": b"b"})
    with pytest.raises(ConfigError, match=r"2 files match \*\.bin .*\(a\.bin, b\.bin\)"):
        resolve_weights("hf:Org/two")
    for bad in ("hf:", "hf:UNI", "hf:Org//x"):
        with pytest.raises(ConfigError, match="expected hf:ORG/NAME"):
            resolve_weights(bad)
    with pytest.raises(ConfigError, match="not a model name"):
        resolve_weights("hf:bad name/x!")


def test_an_encoder_built_from_an_hf_name_records_the_cached_file(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = small_encoder_class("uni_v1")  # the real spec's file name, a small architecture
    monkeypatch.setitem(encoders.ENCODERS, "uni_v1", small)
    weights = save_weights(tmp_path / "w.bin", small_state_dict("uni_v1"))
    snapshot = _hub_cache(hub, "MahmoodLab/UNI", {"pytorch_model.bin": weights.read_bytes()})
    enc = encoders.create_encoder("uni_v1", weights="hf:MahmoodLab/UNI", device="cpu")
    record = enc.provenance()
    assert record["encoder_weights"] == "pytorch_model.bin"
    assert record["encoder_weights_sha256"] == sha256_of(snapshot / "pytorch_model.bin")
    patch = torch.zeros(1, enc.input_size, enc.input_size, 3, dtype=torch.uint8)
    assert enc(patch).shape == (1, enc.dim)
    with pytest.raises(ConfigError, match=r"^hf:MahmoodLab/UNI2-h: not in the local"):
        encoders.create_encoder("uni_v2", weights="hf:MahmoodLab/UNI2-h", device="cpu")
