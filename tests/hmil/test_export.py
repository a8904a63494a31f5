"""Exports of a checkpoint (ONNX, ExportedProgram) give the checkpoint's own predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hmil import __version__
from hmil.checkpoint import CheckpointInfo, content_hash, save_checkpoint
from hmil.config import ModelConfig
from hmil.errors import CheckpointError, ConfigError
from hmil.export import (
    INPUT_NAME,
    OUTPUT_NAMES,
    Temperatures,
    export_checkpoint,
    read_metadata,
    read_temperatures,
)
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.predict import Prediction, load_checkpoint

D = 16
SIZES = (1, 7, 300, 5000)  # 5000: hmil predict pools it in blocks
TOLERANCE = 1e-5


def _tiny_checkpoint(
    path: Path, hierarchy: Hierarchy, head: str = "per_class", dropout: float = 0.0, **extra: object
) -> Path:
    """A small seeded HMIL checkpoint (D = 16); ``extra`` entries are added to its dict."""
    torch.manual_seed(0)
    config = ModelConfig(
        hidden_dim=32, coarse_dim=48, fine_dim=24, coarse_attention_dim=16, fine_attention_dim=8,
        head=head, dropout=dropout,
    )  # fmt: skip
    model = HMIL(D, hierarchy.n_coarse, hierarchy.n_fine, config)
    info = CheckpointInfo(hierarchy=hierarchy, in_dim=D, model_config=config, encoder="hed-texture")
    save_checkpoint(path, model, info)
    if extra:
        payload = torch.load(path, weights_only=True)
        payload.update(extra)
        payload["content_sha256"] = content_hash(payload)
        torch.save(payload, path)
    return path


def _bags() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(n, D, generator=g) for n in SIZES]


def _expected(pred: Prediction) -> list[np.ndarray]:
    assert pred.attention is not None
    return [
        pred.coarse_probs,
        pred.coarse_head_probs,
        pred.fine_probs,
        pred.attention["coarse"],
        pred.attention["fine"],
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, bracs: Hierarchy) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt", bracs)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_checkpoint(checkpoint, out, "onnx")
    return out


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("pt2") / "model.pt2"
    export_checkpoint(checkpoint, out, "exported-program")
    return out


def test_onnx_gives_the_checkpoints_predictions(onnx_file: Path, checkpoint: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert session.get_inputs()[0].shape == ["N", D]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    predictor = load_checkpoint(checkpoint, device="cpu")
    for bag in _bags():
        outputs = session.run(None, {INPUT_NAME: bag.numpy()})
        expected = _expected(predictor.predict(bag, attention=True))
        n = bag.shape[0]
        assert [o.shape for o in outputs] == [(3,), (3,), (7,), (3, n), (7, n)]
        for name, got, want in zip(OUTPUT_NAMES, outputs, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE, err_msg=f"{name} N={n}")


def test_exported_program_gives_the_checkpoints_predictions(
    pt2_file: Path, checkpoint: Path
) -> None:
    program = torch.export.load(pt2_file).module()
    predictor = load_checkpoint(checkpoint, device="cpu")
    for bag in _bags():
        outputs = [t.numpy() for t in program(bag)]
        expected = _expected(predictor.predict(bag, attention=True))
        n = bag.shape[0]
        assert [o.shape for o in outputs] == [(3,), (3,), (7,), (3, n), (7, n)]
        for name, got, want in zip(OUTPUT_NAMES, outputs, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE, err_msg=f"{name} N={n}")


def test_the_shared_head_and_dropout_export_too(tmp_path: Path, bracs: Hierarchy) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "shared.pt", bracs, head="shared", dropout=0.25)
    out = export_checkpoint(ckpt, tmp_path / "shared.pt2", "exported-program").path
    program = torch.export.load(out).module()
    predictor = load_checkpoint(ckpt, device="cpu")
    for bag in _bags()[:3]:
        with torch.no_grad():
            outputs = [t.numpy() for t in program(bag)]
        expected = _expected(predictor.predict(bag, attention=True))
        for name, got, want in zip(OUTPUT_NAMES, outputs, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE, err_msg=name)


def test_both_formats_carry_labels_encoder_and_version(
    onnx_file: Path, pt2_file: Path, bracs: Hierarchy
) -> None:
    for path in (onnx_file, pt2_file):
        meta = read_metadata(path)
        assert meta["format"] == "hmil-export"
        assert meta["coarse_labels"] == list(bracs.coarse)
        assert meta["fine_labels"] == list(bracs.fine)
        assert meta["hierarchy"] == bracs.to_dict()
        assert (meta["encoder"], meta["in_dim"], meta["hmil_version"]) == (
            "hed-texture", D, __version__
        )  # fmt: skip
        assert meta["temperatures"] == {"coarse": 1.0, "fine": 1.0}
        assert meta["outputs"]["fine_attention"] == [7, "N"]
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert props["hmil_version"] == __version__ and props["in_dim"] == str(D)
    assert json.loads(props["fine_labels"]) == list(bracs.fine)


def test_temperatures_divide_the_logits(tmp_path: Path, bracs: Hierarchy) -> None:
    ckpt = _tiny_checkpoint(
        tmp_path / "calibrated.pt",
        bracs,
        calibration={"temperature": {"coarse": 2.0, "fine": 0.5}},
    )
    out = export_checkpoint(ckpt, tmp_path / "calibrated.pt2", "exported-program").path
    assert read_metadata(out)["temperatures"] == {"coarse": 2.0, "fine": 0.5}
    program = torch.export.load(out).module()
    model = load_checkpoint(ckpt, device="cpu").model
    bag = _bags()[1]
    with torch.no_grad():
        raw = model(bag)
        coarse, coarse_head, fine, _, _ = program(bag)
    want_fine = torch.softmax(raw.fine_logits / 0.5, -1)
    torch.testing.assert_close(fine, want_fine, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(
        coarse_head, torch.softmax(raw.coarse_logits / 2.0, -1), rtol=0, atol=TOLERANCE
    )
    mapping = torch.as_tensor(bracs.mapping, dtype=torch.float32)
    torch.testing.assert_close(coarse, want_fine @ mapping, rtol=0, atol=TOLERANCE)
    assert not torch.allclose(fine, torch.softmax(raw.fine_logits, -1), atol=1e-3)


def test_temperatures_default_to_one_and_refuse_nonsense() -> None:
    assert read_temperatures({}, "c.pt") == Temperatures(1.0, 1.0)
    assert read_temperatures({"temperatures": {"fine": 1.5}}, "c.pt") == Temperatures(1.0, 1.5)
    for bad in ({"coarse": 0}, {"fine": -1.0}, {"fine": float("inf")}, {"coarse": "hot"}, 3.0):
        with pytest.raises(CheckpointError, match=r"^c\.pt: calibration\.temperature"):
            read_temperatures({"calibration": {"temperature": bad}}, "c.pt")


def test_a_bad_checkpoint_writes_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for fmt in ("onnx", "exported-program"):
        with pytest.raises(CheckpointError, match=r"garbage\.pt"):
            export_checkpoint(garbage, tmp_path / f"out.{fmt}", fmt)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "out.pt2", "exported-program")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt"]


def test_onnx_without_its_packages_is_one_clear_error(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name)
    )
    out = tmp_path / "model.onnx"
    with pytest.raises(ConfigError, match=r"needs the package\(s\) onnxscript.*\[export\]"):
        export_checkpoint(checkpoint, out, "onnx")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_unreadable_exports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown export format"):
        export_checkpoint(tmp_path / "c.pt", tmp_path / "x", "tflite")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not protobuf")
    with pytest.raises(ConfigError, match=r"junk\.onnx"):
        read_metadata(junk)
