"""Coverage per package, from the ``.coverage`` data that ``pytest --cov`` just wrote.

coverage.py reports per file; this rolls the same statement counts up to each package
(``hmil``, ``hmil.data``, ``hmil.model``, …, ``viewer.components``) and lists the modules under
70 %, so a CI log says at a glance which part of the code the tests leave dark.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
LOW = 70.0


def main() -> int:
    """Print the per-package table and the modules below :data:`LOW` percent."""
    data_file = ROOT / ".coverage"
    if not data_file.is_file():
        print(f"error: {data_file}: no coverage data (run pytest --cov first)", file=sys.stderr)
        return 2
    cov = coverage.Coverage(data_file=str(data_file), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    packages: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    low: list[tuple[float, str, int]] = []
    for filename in sorted(cov.get_data().measured_files()):
        path = Path(filename)
        try:
            rel = path.resolve().relative_to(ROOT)
        except ValueError:
            continue
        _, statements, _, missing, _ = cov.analysis2(filename)
        if not statements:
            continue
        package = ".".join(rel.parent.parts)
        packages[package][0] += len(statements)
        packages[package][1] += len(missing)
        percent = 100.0 * (len(statements) - len(missing)) / len(statements)
        if percent < LOW:
            low.append((percent, rel.as_posix(), len(statements)))
    total_n = sum(n for n, _ in packages.values())
    total_miss = sum(m for _, m in packages.values())
    print(f"\ncoverage per package (statements; {ROOT.name})")
    print(f"{'package':<24} {'stmts':>7} {'miss':>6} {'cover':>7}")
    for package, (n, miss) in [*sorted(packages.items()), ("total", [total_n, total_miss])]:
        print(f"{package:<24} {n:>7} {miss:>6} {100.0 * (n - miss) / n:>6.1f}%")
    if low:
        print(f"\nmodules under {LOW:.0f} %:")
        for percent, name, n in sorted(low):
            print(f"  {percent:5.1f}%  {name} ({n} statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
