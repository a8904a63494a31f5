"""OS-level failures through the CLI: a full disk, a failed second output, the
temporary files a SIGKILL leaves behind, a failed single-bag ``predict --out``.

The full-disk tests mount a 64 KB tmpfs (skipped where that is not allowed, e.g. without root);
the others always run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from hmil import heatmap as heatmap_module
from hmil.checkpoint import CheckpointInfo, save_checkpoint
from hmil.cli import main
from hmil.cli import predict as predict_cli
from hmil.cli.outputs import os_error_problem
from hmil.config import ModelConfig
from hmil.hierarchy import Hierarchy
from hmil.io import _HOST
from hmil.model import HMIL

SVS = "cmu-1-small-region.svs"


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint for D = 16 (the small cohort's bags)."""
    torch.manual_seed(0)
    h = Hierarchy.preset("bracs")
    config = ModelConfig(hidden_dim=8, coarse_dim=8, fine_dim=8, coarse_attention_dim=4,
                         fine_attention_dim=4)  # fmt: skip
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, HMIL(16, 3, 7, config), CheckpointInfo(h, 16, config))
    return path


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``make(free_kb)``: a 64 KB tmpfs filled up to ``free_kb`` KB of free space."""
    mounts: list[Path] = []

    def make(free_kb: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounts.append(folder)
        try:
            with open(folder / "fill", "wb", buffering=0) as fill:
                fill.write(b"\0" * (64 - free_kb) * 1024)
        except OSError:
            pass  # full
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_extract_on_a_nearly_full_disk_is_one_line_not_a_crash(
    slides_dir: Path, tmp_path: Path, tiny_disk: Callable[[int], Path]
) -> None:
    """Before: a RuntimeError traceback from HDF5, then a segmentation fault (exit 139)."""
    slide = str(slides_dir / SVS)
    assert main(["tile", slide, "--out", str(tmp_path / "tiles"), "--quiet"]) == 0
    for free_kb in (8, 0):
        out = tiny_disk(free_kb) / "bags"
        cmd = [sys.executable, "-m", "hmil", "extract", slide, "--patches", str(tmp_path / "tiles"),
               "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        errors = _errors(done.stderr)
        assert done.returncode == 2, done.stderr[-2000:]
        assert len(errors) == 1 and "no space left on the device" in errors[0], done.stderr
        assert "Traceback" not in done.stderr
        assert not out.exists() or not any(out.iterdir())  # nothing half-written


@pytest.mark.parametrize("command", ["tile", "train", "predict", "heatmap", "split"])
def test_commands_on_a_full_disk_give_one_line(
    command: str,
    slides_dir: Path,
    small_cohort: Path,
    ckpt: Path,
    tmp_path: Path,
    tiny_disk: Callable[[int], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    splits = tmp_path / "splits"
    labels = str(small_cohort / "labels.csv")
    assert main(["split", "--labels", labels, "--k", "3", "--out", str(splits)]) == 0
    disk = tiny_disk(0)
    bag = str(small_cohort / "features" / "synth-0000.h5")
    argv = {
        "tile": ["tile", str(slides_dir / SVS), "--out", str(disk / "t"), "--quiet"],
        "train": ["train", "--labels", labels, "--features", str(small_cohort / "features"),
                  "--splits", str(splits), "--hierarchy", "bracs", "--out", str(disk / "run"),
                  "--folds", "0", "--epochs", "1", "--quiet"],
        "predict": ["predict", "--checkpoint", str(ckpt), bag, "--out", str(disk / "p.jsonl")],
        "heatmap": ["heatmap", "--checkpoint", str(ckpt), "--bag", bag, "--level", "fine",
                    "--label", "IC", "--out", str(disk / "h.png"), "--device", "cpu"],
        "split": ["split", "--labels", labels, "--k", "3", "--out", str(disk / "s")],
    }[command]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and "no space left on the device" in errors[0], errors
    assert str(disk) in errors[0]
    leftovers = [p for p in disk.rglob("*") if p.is_file() and p.name != "fill"]
    assert leftovers in ([], [disk / "run" / "config.yaml"]), leftovers


def test_os_errors_are_worded_and_bugs_keep_their_traceback() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", f"/d/.x.h5.{_HOST}-12.abcd1234.tmp")
    assert os_error_problem(full) == (
        "/d/x.h5",
        "no space left on the device (free some space and rerun)",
    )
    hdf5 = RuntimeError(
        "Can't decrement id ref count (file write failed: time = x\n, filename = "
        "'/d/.b.h5.k1ll3dxx.tmp', file descriptor = 3, errno = 28, error message)"
    )
    assert os_error_problem(hdf5) == (
        "/d/b.h5",
        "no space left on the device (free some space and rerun)",
    )
    denied = PermissionError(errno.EACCES, "Permission denied", "/root/x")
    assert os_error_problem(denied) == ("/root/x", "permission denied")
    assert os_error_problem(RuntimeError("shapes do not match")) is None  # a bug, not the OS


def test_a_disk_full_while_writing_predictions_is_one_line(
    small_cohort: Path, ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "p.jsonl"

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict_cli, "atomic_path", no_space)
    bag = str(small_cohort / "features" / "synth-0000.h5")
    assert main(["predict", "--checkpoint", str(ckpt), bag, "--out", str(out)]) == 2
    errors = _errors(capsys.readouterr().err)
    assert errors == [f"error: {out}: no space left on the device (free some space and rerun)"]


def test_a_failed_geojson_leaves_no_png(
    small_cohort: Path, ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Before: the PNG was renamed into place, then the GeoJSON failed."""
    png, geo = tmp_path / "h.png", tmp_path / "h.geojson"

    def fails(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(heatmap_module, "write_detections", fails)
    argv = ["heatmap", "--checkpoint", str(ckpt), "--bag", str(small_cohort / "features" /
            "synth-0000.h5"), "--level", "fine", "--label", "IC", "--out", str(png), "--geojson",
            str(geo), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: {geo}: no space left on the device (free some space and rerun)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_single_bag_predict_writes_no_file(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a 0-byte ``--out`` was left behind."""
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"")
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--checkpoint", str(ckpt), str(bad), "--out", str(out)]) == 2
    assert not out.exists()
    out.write_text("old\n")
    assert main(["predict", "--checkpoint", str(ckpt), str(bad), "--out", str(out)]) == 2
    assert out.read_text() == "old\n"  # an earlier result is kept
    assert len(_errors(capsys.readouterr().err)) == 2


WRITER = """
import sys, time
from hmil.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print(tmp, flush=True)
    time.sleep(600)
"""


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_run(
    small_cohort: Path, tmp_path: Path
) -> None:
    """SIGKILL a process inside ``atomic_path``: its hidden ``.tmp`` stays behind; the next
    command writing into that folder removes it (before: never cleaned), and leaves the
    temporary file of a writer that still runs alone."""
    out = tmp_path / "splits"
    out.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(out / name)], stdout=subprocess.PIPE, text=True
        )
        for name in ("splits_0.csv", "other.csv")
    ]
    temps = [Path(p.stdout.readline().strip()) for p in procs]  # type: ignore[union-attr]
    assert all(t.is_file() and t.name.startswith(".") for t in temps)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    try:
        labels = str(small_cohort / "labels.csv")
        assert main(["split", "--labels", labels, "--k", "3", "--out", str(out)]) == 0
        assert not temps[0].exists()  # the killed writer's leftover is gone
        assert temps[1].exists()  # a live writer's is kept
    finally:
        procs[1].kill()
        procs[1].wait()
    old = out / ".legacy.csv.k1ll3dxx.tmp"  # written by an older version: removed after 24 h
    old.write_text("x")
    os.utime(old, (time.time() - 25 * 3600,) * 2)
    assert main(["split", "--labels", labels, "--k", "3", "--out", str(out)]) == 0
    assert not old.exists()
