"""The contributor's checks are CI's checks: pre-commit runs the tools CI runs, with one config.

``./run.sh lint`` (which CI runs) is ``pre-commit run --all-files``; these tests keep the hooks
local and offline, and keep the per-module "strict" of mypy equal to what ``--strict`` means
for the installed mypy.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: --strict flags that mypy only accepts in the global section
GLOBAL_ONLY = {"warn_redundant_casts", "warn_unused_configs"}
STRICT_MODULES = {"hmil.model.*", "hmil.data.*", "hmil.config", "hmil.predict"}


def _hooks() -> dict[str, dict]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def test_hooks_are_local_tools_from_the_venv():
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]  # nothing to download
    hooks = _hooks()
    assert set(hooks) == {"ruff", "ruff-format", "mypy", "end-of-file-fixer", "trailing-whitespace"}
    for hook in hooks.values():
        assert hook["language"] == "system"
        assert hook["entry"].startswith(".venv/bin/"), hook["id"]
        assert (REPO / hook["entry"].split()[0]).is_file(), hook["entry"]


def test_hooks_give_the_ci_verdicts():
    hooks = _hooks()
    assert hooks["ruff"]["entry"].split()[1:2] == ["check"]
    assert "--fix" not in hooks["ruff"]["entry"]
    assert hooks["ruff-format"]["entry"].split()[1:3] == ["format", "--check"]
    # mypy takes its files and flags from pyproject.toml alone, as in CI
    assert hooks["mypy"]["entry"] == ".venv/bin/mypy" and hooks["mypy"]["pass_filenames"] is False
    run_sh = (REPO / "run.sh").read_text()
    assert re.search(r'"\$VENV/bin/pre-commit" run --all-files', run_sh)
    assert (REPO / ".ci" / "run").read_text().strip().endswith("exec ./run.sh test")


def _strict_flags() -> set[str]:
    """The flags ``--strict`` enables for the installed mypy, as config keys."""
    text = subprocess.run(
        [sys.executable, "-m", "mypy", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    block = text.split("--strict", 1)[1].split("--disable-error-code", 1)[0]
    block = block.split("following flags:", 1)[1]
    flags = re.findall(r"--([a-z-]+)", re.sub(r"-\n\s*", "-", block))
    return {f.replace("-", "_") for f in flags}


def test_strict_modules_get_every_strict_flag_of_this_mypy():
    mypy = PYPROJECT["tool"]["mypy"]
    (strict,) = [o for o in mypy["overrides"] if set(o["module"]) == STRICT_MODULES]
    flags = _strict_flags()
    assert len(flags) >= 10
    for flag in flags:
        if flag.startswith("no_"):  # --no-implicit-reexport → implicit_reexport = false
            assert strict.get(flag[3:]) is False, flag
        elif flag in GLOBAL_ONLY:
            assert mypy.get(flag) is True, flag
        else:
            assert strict.get(flag) is True, flag


def test_mypy_checks_hmil_and_viewer_and_ignores_say_why():
    assert PYPROJECT["tool"]["mypy"]["files"] == ["hmil", "viewer"]
    ignores = []
    for path in [*REPO.glob("hmil/**/*.py"), *REPO.glob("viewer/**/*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "type: ignore" in line:
                ignores.append((path.relative_to(REPO), n, line))
    for path, n, line in ignores:
        # an error code, and a reason after it
        assert re.search(r"type: ignore\[[a-z-, ]+\]\s+#\s*\S", line), f"{path}:{n}: {line}"
