"""Fixtures for the scale-out tests: a split SYNTHETIC cohort and fake SLURM commands.

The fake ``sbatch``/``srun``/``sacct`` let the real submitit ``SlurmExecutor`` submit through
its public path (it writes the sbatch script and runs ``sbatch <script>``) without a cluster:
``sbatch`` keeps a copy of each script and answers like SLURM does
(``Submitted batch job <id>``, ids from 4242 up); ``sacct`` prints ``fake_slurm/sacct.txt``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hmil.cli import main

FAKE_SBATCH = """#!/bin/sh
d="$FAKE_SLURM_DIR"
n=$(cat "$d/next_id" 2>/dev/null || echo 4242)
echo $((n + 1)) > "$d/next_id"
cp "$1" "$d/sbatch_$n.sh"
echo "$@" > "$d/sbatch_$n.args"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM_DIR/sacct.calls"
cat "$FAKE_SLURM_DIR/sacct.txt" 2>/dev/null
"""
FAKE_SRUN = "#!/bin/sh\nexit 0\n"


@pytest.fixture(scope="session")
def split_cohort(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_cohort`` (42 SYNTHETIC bags, D = 16) with 3 CLAM splits in ``<dir>/splits``."""
    out = tmp_path_factory.mktemp("splits")
    args = [
        "split",
        "--labels",
        str(small_cohort / "labels.csv"),
        "--k",
        "3",
        "--out",
        str(out / "splits"),
        "--hierarchy",
        "bracs",
        "--seed",
        "0",
    ]
    assert main(args) == 0
    return out / "splits"


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder whose fake SLURM commands come first on PATH; returns the folder."""
    folder = tmp_path / "fake_slurm"
    folder.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", FAKE_SRUN)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(folder))
    return folder
