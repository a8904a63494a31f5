"""No import cycles in ``hmil.*``, between modules or between packages, function-level imports
included (the graph is read from the source by ``benchmarks/import_graph.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "import_graph", REPO / "benchmarks" / "import_graph.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


graph_tool = _load()


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_hmil_has_no_module_cycles() -> None:
    module_report, _ = graph_tool.reports(REPO)
    assert module_report.nodes > 50  # the whole package was read
    assert module_report.components == [], module_report.examples


def test_hmil_has_no_package_cycles() -> None:
    _, package_report = graph_tool.reports(REPO)
    assert {"hmil.train", "hmil.launch", "hmil.slides"} <= set(
        graph_tool.package_graph(graph_tool.build_graph(REPO), REPO)
    )
    assert package_report.components == [], package_report.examples


def test_a_function_level_cycle_is_found(tmp_path: Path) -> None:
    # a -> b at module level, b -> a inside a function (relative import): one cycle
    _write(tmp_path, {
        "hmil/__init__.py": "",
        "hmil/pkg/__init__.py": "",
        "hmil/pkg/a.py": "from hmil.pkg import b\n",
        "hmil/pkg/b.py": "def f():\n    from .a import x\n    return x\n",
        "hmil/other/__init__.py": "",
        "hmil/other/c.py": "import hmil.pkg.a\n",
    })  # fmt: skip
    module_report, package_report = graph_tool.reports(tmp_path)
    assert module_report.components == [["hmil.pkg.a", "hmil.pkg.b"]]
    assert module_report.examples == [["hmil.pkg.a", "hmil.pkg.b", "hmil.pkg.a"]]
    assert package_report.components == []


def test_a_package_cycle_is_found_and_type_checking_imports_are_not(tmp_path: Path) -> None:
    _write(tmp_path, {
        "hmil/__init__.py": "",
        "hmil/one/__init__.py": "",
        "hmil/one/a.py": "from hmil.two.c import y\n",
        "hmil/one/b.py": "",
        "hmil/two/__init__.py": "",
        "hmil/two/c.py": "def g():\n    import hmil.one.b\n",
        "hmil/two/d.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hmil.one import a\n"
        ),
    })  # fmt: skip
    graph = graph_tool.build_graph(tmp_path)
    assert graph["hmil.two.d"] == set()  # never imported at run time
    module_report, package_report = graph_tool.reports(tmp_path)
    assert module_report.components == []
    assert package_report.components == [["hmil.one", "hmil.two"]]


def test_script_exit_status(capsys) -> None:
    assert graph_tool.main(["--root", str(REPO)]) == 0
    assert "module level:" in capsys.readouterr().out
