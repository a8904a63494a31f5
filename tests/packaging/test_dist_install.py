"""Release artefacts: the sdist and the wheel build, carry what the package needs, and the wheel
installed into a fresh virtual environment runs ``hmil --help`` and ``hmil demo --help``.

Offline: ``python -m build --no-isolation`` uses the setuptools/setuptools-scm of this
environment, and the fresh environment gets only the wheel (``--no-index --no-deps``); its
runtime dependencies are made importable from this environment through a path entry, and
``pip check`` confirms they satisfy the wheel's metadata.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO], REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    (path,) = dist.glob("hmil_studio-*-py3-none-any.whl")
    return path


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", venv], root).returncode == 0
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    proc = _run([*pip, wheel], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root)
    deps = Path(sysconfig.get_path("purelib"))
    (Path(purelib.stdout.strip()) / "_hmil_deps.pth").write_text(f"{deps}\n")
    return venv


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def test_sdist_and_wheel_have_one_version_from_git(dist, wheel):
    version = _version(wheel)
    (sdist,) = dist.glob("hmil_studio-*.tar.gz")
    assert sdist.name == f"hmil_studio-{version}.tar.gz"
    if (REPO / ".git").exists():  # what setuptools-scm says of this checkout, pyproject's config
        scm = _run([sys.executable, "-m", "setuptools_scm"], REPO)
        assert scm.stdout.strip().splitlines()[-1] == version


def test_wheel_carries_the_packages_data_and_entry_point(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "hmil/__init__.py",
        "hmil/presets/paper.yaml",
        "hmil/presets/released.yaml",
        "hmil/cli/demo.py",
        "hmil/launch/folds.py",
        "viewer/app.py",
        "viewer/views/slide.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "hmil = hmil.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_sdist_builds_the_same_files(dist, wheel):
    (sdist,) = dist.glob("hmil_studio-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("pyproject.toml", "README.md", "CHANGELOG.md", "hmil/presets/paper.yaml"):
        assert needed in names, needed
    wheel_py = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    assert wheel_py <= names  # the wheel was built from this sdist: nothing came from elsewhere


def test_installed_wheel_runs_help_and_reports_its_version(fresh_venv, wheel, tmp_path):
    hmil = fresh_venv / "bin" / "hmil"
    top = _run([hmil, "--help"], tmp_path)
    assert top.returncode == 0, top.stderr[-2000:]
    assert "usage: hmil" in top.stdout and "demo" in top.stdout
    demo = _run([hmil, "demo", "--help"], tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "usage: hmil demo" in demo.stdout
    version = _run([hmil, "--version"], tmp_path)
    assert version.stdout.strip() == f"hmil {_version(wheel)}"
    where = _run(
        [fresh_venv / "bin" / "python", "-c", "import hmil; print(hmil.__file__)"], tmp_path
    )
    assert Path(where.stdout.strip()).is_relative_to(fresh_venv)  # not the source checkout


def test_installed_wheel_dependencies_are_satisfied(fresh_venv, tmp_path):
    proc = _run([fresh_venv / "bin" / "python", "-m", "pip", "check"], tmp_path)
    # pip is importable through the path entry; its verdict covers the wheel's Requires-Dist
    assert proc.returncode == 0, proc.stdout + proc.stderr
