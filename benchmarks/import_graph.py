"""Import graph of ``hmil.*``: which modules import which, read from the source (AST), and the
import cycles in it, between modules and between packages.

Every ``import`` / ``from … import`` statement counts wherever it stands — module level, inside a
function (a "local" import run on first call) or a method — except under ``if TYPE_CHECKING:``,
which never runs. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of
``hmil``, else to ``pkg``; relative imports are resolved against the importing module.

* module level: one node per module (``hmil.train.api``; a package's ``__init__`` is the node
  ``hmil.train``);
* package level: each module of a sub-package is folded into the package that holds it
  (``hmil.train.api`` → ``hmil.train``; a package's ``__init__`` belongs to the package itself),
  edges inside one package dropped. The modules directly under ``hmil/`` stay one node each: the
  root holds both the foundations every package imports (``hmil.errors``, ``hmil.hierarchy``)
  and the entry points that import packages (``hmil.__main__``, ``hmil.predict``), so folding
  them into one node would report that layering as a cycle (``hmil`` → ``hmil.cli`` → ``hmil``).

A cycle is reported as a strongly connected component of more than one node (plus any node that
imports itself) with one shortest cycle through it as an example.

Usage::

    python -m benchmarks.import_graph            # summary and the cycles, exit 1 if any
    python -m benchmarks.import_graph --json     # the same as JSON
    python -m benchmarks.import_graph --root DIR # another tree (e.g. ``git archive`` of a commit)
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
Graph = dict[str, set[str]]


def module_names(root: Path, package: str = "hmil") -> dict[str, Path]:
    """Every module of ``package`` under ``root`` → its file (``__init__.py`` names the package)."""
    names: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """All import statements under ``node`` at any depth, minus ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _imported(name: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """Absolute names one statement imports (modules or ``module.attribute``)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        parts = name.split(".") if is_package else name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, base] if base else parts)
    for alias in node.names:
        yield f"{base}.{alias.name}"
        yield base


def build_graph(root: Path = REPO, package: str = "hmil") -> Graph:
    """Module-level import graph of ``package``: module → the package's modules it imports."""
    modules = module_names(root, package)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _import_nodes(tree):
            targets = list(_imported(name, is_package, node))
            if isinstance(node, ast.ImportFrom):
                # ``from a import b``: ``a.b`` when it is a module, else ``a``
                pairs = zip(targets[::2], targets[1::2], strict=True)
                targets = [full if full in modules else base for full, base in pairs]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def package_of(module: str, packages: set[str], root: str = "hmil") -> str:
    """The package holding ``module`` (a package is its own; a module of the root is its own)."""
    if module in packages:
        return module
    parent = module.rsplit(".", 1)[0]
    return module if parent == root else parent


def package_graph(graph: Graph, root: Path = REPO, package: str = "hmil") -> Graph:
    """``graph`` folded onto packages (see the module docstring), edges inside one dropped."""
    modules = module_names(root, package)
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    folded: Graph = {}
    for source, targets in graph.items():
        here = package_of(source, packages, package)
        folded.setdefault(here, set()).update(package_of(t, packages, package) for t in targets)
        folded[here].discard(here)
    for targets in list(folded.values()):
        for target in targets:
            folded.setdefault(target, set())
    return folded


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(components, key=lambda c: (-len(c), c))


def shortest_cycle(graph: Graph, members: Iterable[str]) -> list[str]:
    """One shortest cycle inside a strongly connected component, as ``[a, b, …, a]``."""
    inside = set(members)
    best: list[str] = []
    for start in sorted(inside):
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                cycle = [*reversed(path), start]
                if not best or len(cycle) < len(best):
                    best = cycle
                break
            for child in sorted(graph[node] & inside):
                if child not in parent and child != start:
                    parent[child] = node
                    queue.append(child)
    return best


@dataclass
class CycleReport:
    """The cycles of one graph: its strongly connected components with an example each."""

    level: str
    nodes: int
    edges: int
    components: list[list[str]] = field(default_factory=list)
    examples: list[list[str]] = field(default_factory=list)

    @property
    def in_cycles(self) -> int:
        return sum(len(c) for c in self.components)


def cycles(graph: Graph, level: str) -> CycleReport:
    """Components of ``graph`` that hold a cycle (more than one node, or a self-import)."""
    report = CycleReport(level, len(graph), sum(len(t) for t in graph.values()))
    for component in strongly_connected(graph):
        if len(component) > 1 or component[0] in graph[component[0]]:
            report.components.append(component)
            report.examples.append(shortest_cycle(graph, component))
    return report


def reports(root: Path = REPO, package: str = "hmil") -> list[CycleReport]:
    graph = build_graph(root, package)
    return [cycles(graph, "module"), cycles(package_graph(graph, root, package), "package")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the folder holding hmil/ (default: this checkout)"
    )
    args = parser.parse_args(argv)
    found = reports(args.root)
    if args.json:
        print(json.dumps([vars(r) | {"in_cycles": r.in_cycles} for r in found], indent=2))
    else:
        for r in found:
            print(
                f"{r.level} level: {r.nodes} nodes, {r.edges} edges, {len(r.components)} "
                f"cycle components holding {r.in_cycles} nodes"
            )
            for component, example in zip(r.components, r.examples, strict=True):
                print(f"  {len(component)} nodes: {' -> '.join(example)}")
    return 1 if any(r.components for r in found) else 0


if __name__ == "__main__":
    sys.exit(main())
