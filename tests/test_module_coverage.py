"""Every module of ``hmil`` and ``viewer`` is imported by at least one test file.

A module that no test imports can break without a test noticing (an end-to-end run through
the CLI reaches a module only by name). The imports are read from the test files' source
(``import`` and ``from … import`` statements, function-level ones included), so
``from hmil.cli import split`` counts for ``hmil.cli.split``. Package ``__init__.py`` and
``__main__.py`` files are exempt.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hmil", "viewer")
EXEMPT = frozenset({"__init__.py", "__main__.py"})


def package_files() -> list[Path]:
    """The packages' ``.py`` files: tracked ones in a git checkout (work in progress that is
    not yet added does not count), else every file on disk."""
    if (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *PACKAGES], cwd=REPO, capture_output=True, check=True
        ).stdout.decode()
        files = [REPO / name for name in listed.split("\0") if name.endswith(".py")]
        return sorted(path for path in files if path.is_file())
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def product_modules() -> dict[str, Path]:
    """Dotted name → file of every module of the packages (vendored static files excluded)."""
    out = {}
    for path in package_files():
        rel = path.relative_to(REPO)
        if path.name in EXEMPT or "__pycache__" in rel.parts or "static" in rel.parts:
            continue
        out[".".join(rel.with_suffix("").parts)] = path
    return out


def imported_names(source: str) -> set[str]:
    """Every dotted name an import statement of ``source`` may refer to."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_imported_by_tests() -> set[str]:
    names: set[str] = set()
    for path in sorted((REPO / "tests").rglob("*.py")):
        names |= imported_names(path.read_text(encoding="utf-8"))
    return names


def untested() -> list[str]:
    tested = modules_imported_by_tests()
    return sorted(name for name in product_modules() if name not in tested)


def test_imports_are_read_from_the_source() -> None:
    source = "import hmil.io\nfrom hmil.cli import split, main\ndef f():\n    import viewer.app\n"
    names = imported_names(source)
    assert {"hmil.io", "hmil.cli", "hmil.cli.split", "hmil.cli.main", "viewer.app"} <= names
    assert "hmil.cli.train" not in names
    modules = product_modules()
    assert "hmil.cli.split" in modules and "hmil.cli" not in modules  # __init__ exempt
    assert len(modules) > 80


def test_every_module_is_imported_by_a_test() -> None:
    missing = untested()
    assert not missing, "modules no test imports (add tests/<package path>/test_<module>.py):\n" + (
        "\n".join(missing)
    )
