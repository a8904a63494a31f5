"""Checkpoint format versions: older and current files load, a newer one is refused clearly."""

from __future__ import annotations

import torch

import hmil
from hmil.checkpoint import (
    FORMAT_VERSION,
    HASH_KEY,
    CheckpointInfo,
    content_hash,
    load_checkpoint_file,
    save_checkpoint,
)
from hmil.cli import main
from hmil.config import ModelConfig
from hmil.data.bags import save_bag
from hmil.errors import CheckpointError
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL

BRACS = Hierarchy.preset("bracs")
SMALL = ModelConfig(
    hidden_dim=8, coarse_dim=16, fine_dim=8, coarse_attention_dim=4, fine_attention_dim=4
)


def _checkpoint(path, format_version=None):
    torch.manual_seed(0)
    info = CheckpointInfo(hierarchy=BRACS, in_dim=6, model_config=SMALL)
    save_checkpoint(path, HMIL(6, 3, 7, SMALL), info)
    if format_version is not None:
        payload = torch.load(path, weights_only=True)
        if format_version == "absent":
            del payload["format_version"]
        else:
            payload["format_version"] = format_version
        if format_version in ("absent", 0):
            del payload[HASH_KEY]  # older files predate the content hash
        else:
            payload[HASH_KEY] = content_hash(payload)  # as a writer of that version would
        torch.save(payload, path)
    return path


def test_current_checkpoint_records_format_and_version(tmp_path):
    path = _checkpoint(tmp_path / "c.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 1
    assert payload["hmil_version"] == hmil.__version__
    _, info = load_checkpoint_file(path)
    assert info.hmil_version == hmil.__version__


def test_older_checkpoints_load(tmp_path):
    for version in ("absent", 0, FORMAT_VERSION):
        model, info = load_checkpoint_file(_checkpoint(tmp_path / f"{version}.pt", version))
        assert info.hierarchy.fine == BRACS.fine
        assert sum(p.numel() for p in model.parameters()) > 0


def test_newer_format_is_refused_naming_the_file_and_both_versions(tmp_path):
    path = _checkpoint(tmp_path / "future.pt", FORMAT_VERSION + 1)
    try:
        load_checkpoint_file(path)
    except CheckpointError as exc:
        message = str(exc)
    else:
        raise AssertionError("a newer checkpoint format loaded")
    assert message.startswith(f"{path}: ")
    assert f"checkpoint format {FORMAT_VERSION + 1} is newer" in message
    assert f"(format {FORMAT_VERSION})" in message and hmil.__version__ in message
    assert "upgrade hmil-studio" in message


def test_cli_reports_a_newer_checkpoint_in_one_line(tmp_path, capsys):
    path = _checkpoint(tmp_path / "future.pt", FORMAT_VERSION + 1)
    bag = save_bag(tmp_path / "s1.pt", torch.randn(5, 6))
    assert main(["predict", "--checkpoint", str(path), str(bag), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {path}: checkpoint format {FORMAT_VERSION + 1} is newer")
