"""``hmil export``: the demo checkpoint to a .pt2 program; bad input is one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hmil.cli import COMMANDS, build_parser, main
from hmil.cli import export as export_command
from hmil.export import read_metadata
from hmil.predict import load_checkpoint

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "checkpoints" / "demo" / "checkpoint.pt"


def test_export_is_registered_with_its_output_file() -> None:
    assert COMMANDS[export_command.NAME] == export_command.__name__
    assert export_command.OUTPUTS == {"out": "file"}
    args = build_parser().parse_args(
        ["export", "--checkpoint", "c.pt", "--format", "onnx", "--out", "m.onnx"]
    )
    assert (args.checkpoint, args.format, args.out) == ("c.pt", "onnx", "m.onnx")


def test_export_writes_a_program_that_predicts_like_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.pt2"
    code = main(["export", "--checkpoint", str(DEMO), "--format", "exported-program",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert err.startswith(f"{out}: exported-program, input features (N, 104) float32")
    assert "3 coarse and 6 fine labels" in err
    meta = read_metadata(out)
    assert meta["in_dim"] == 104 and meta["fine_labels"][0] == "normal"
    program = torch.export.load(out).module()
    predictor = load_checkpoint(DEMO, device="cpu")
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 300):
        bag = torch.rand(n, 104, generator=g)
        pred = predictor.predict(bag, attention=True)
        coarse, head, fine, _, fine_attention = (t.numpy() for t in program(bag))
        assert pred.attention is not None
        np.testing.assert_allclose(fine, pred.fine_probs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(coarse, pred.coarse_probs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(head, pred.coarse_head_probs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(fine_attention, pred.attention["fine"], rtol=0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.pt2"]


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.pt", "checkpoint file not found"),
        (lambda d: _write(d / "garbage.pt", b"PK\x03\x04 broken"), "not a readable checkpoint"),
        (lambda d: _write(d / "empty.pt", b""), "not a readable checkpoint"),
    ],
)
def test_a_bad_checkpoint_is_one_error_line_and_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, problem: str
) -> None:
    checkpoint = make(tmp_path)
    out = tmp_path / "model.onnx"
    code = main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {checkpoint}: {problem}")
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_output_that_is_a_folder_is_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "--checkpoint", str(DEMO), "--format", "onnx", "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: is a folder; give a file name\n"


def test_an_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--checkpoint", str(DEMO), "--format", "tflite", "--out", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
