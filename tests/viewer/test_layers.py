"""The viewer's layers: Streamlit only in ``*_ui`` modules, the pages and the entry scripts; no
import cycle among the viewer's packages.

The import graph is read from the source (every ``import`` statement, function-level ones
included), so a lazy import that closes a cycle is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Container, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: modules allowed to import streamlit besides the ``*_ui`` ones (relative to the checkout): the
#: entry scripts, the server's start-up step that runs the page once (its test harness), the pages
STREAMLIT_ALLOWED = ("viewer/app.py", "viewer/server.py", "viewer/warmup.py", "viewer/views/")


def module_name(path: Path) -> str:
    """``viewer/components/shell_ui.py`` → ``viewer.components.shell_ui`` (a package's
    ``__init__.py`` → the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*packages: str) -> dict[str, Path]:
    """Module name → file, for every ``.py`` file of ``packages``."""
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path, name: str, known: Container[str] = ()) -> Iterator[str]:
    """Every dotted name ``path`` imports; relative imports are resolved against ``name``.

    ``from a import b`` gives ``a.b`` when that is one of the ``known`` modules, else ``a``.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in known else base


def node_of(module: str) -> str:
    """The package a module belongs to: its parent package, except that a module directly in
    a top-level package (``viewer.state``, ``hmil.config``) stands for itself."""
    parts = module.split(".")
    return module if len(parts) <= 2 else ".".join(parts[:-1])


def package_graph(*packages: str) -> dict[str, set[str]]:
    """Package → the packages it imports (self-imports left out)."""
    files = source_files(*packages)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        src = name if path.name == "__init__.py" else node_of(name)
        edges = graph.setdefault(src, set())
        for target in imported_names(path, name, files):
            if target not in files:
                continue
            dst = target if files[target].name == "__init__.py" else node_of(target)
            if dst != src:
                edges.add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order), or None when it has none."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def imports_streamlit(path: Path) -> bool:
    return any(
        n == "streamlit" or n.startswith("streamlit.")
        for n in imported_names(path, module_name(path))
    )


def streamlit_allowed(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return path.stem.endswith("_ui") or any(
        rel == allowed or rel.startswith(allowed) for allowed in STREAMLIT_ALLOWED
    )


def test_streamlit_only_in_ui_modules_pages_and_entry_scripts() -> None:
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in source_files("viewer", "hmil").values()
        if imports_streamlit(path) and not streamlit_allowed(path)
    ]
    assert offenders == []


def test_the_rule_sees_a_streamlit_import() -> None:
    # the checker itself: a function-level import counts, and only the allowed places pass
    assert imports_streamlit(ROOT / "viewer" / "app.py")
    assert streamlit_allowed(ROOT / "viewer" / "views" / "slide.py")
    assert not streamlit_allowed(ROOT / "viewer" / "core" / "runs.py")


def test_no_import_cycle_among_viewer_packages() -> None:
    graph = package_graph("viewer")
    assert {"viewer.core", "viewer.tiles", "viewer.components", "viewer.state"} <= set(graph)
    assert find_cycle(graph) is None


def test_cycle_finder_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert node_of("viewer.components.shell_ui") == "viewer.components"
    assert node_of("viewer.state") == "viewer.state"
