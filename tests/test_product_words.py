"""The product speaks of itself only: no development-history words, no pointers outside the repo.

Code, comments, docs and published results describe HMIL Studio as it is. Words that only make
sense to whoever built it (numbered checkpoints of the work, review passes, tracker numbers,
the agents that wrote it) and pointers to reference files that sit outside the repository (a
reader of the installed package or the site cannot follow them) are flagged, naming
``file:line``. Docstrings point at pages of ``docs/`` instead.

Every tracked text file is read (``git ls-files``), the vendored third-party code under
``viewer/static/`` excepted. A few code uses of the outside reference folder are allowed and
listed in :data:`ALLOWED` with the reason.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: rule name → pattern; a match anywhere in a line flags the line
RULES: dict[str, re.Pattern[str]] = {
    "numbered stop": re.compile(r"\bstops? #?\d+\b", re.IGNORECASE),
    "numbered round": re.compile(r"\brounds? #?\d+\b", re.IGNORECASE),
    "tracker number": re.compile(
        r"\b(issues?|tickets?|PR|pull request)[- _#]*\d+\b", re.IGNORECASE
    ),
    "numbered wave or phase": re.compile(r"\b(waves?|phases?|sprints?) #?\d+\b", re.IGNORECASE),
    "agent": re.compile(r"\b(helper|lead|sub|coding|AI) ?agents?\b|\bsubagents?\b", re.IGNORECASE),
    "work session": re.compile(
        r"\b(development|coding|working|work|review|previous|earlier|last) sessions?\b",
        re.IGNORECASE,
    ),
    "brief": re.compile(r"\b(the|my|your|this) brief( says|[.,:;)]|$)", re.IGNORECASE),
    "reference folder outside the repository": re.compile(
        r"\.\./shared\b|(?<![\w/])shared/(method|CONTRACT|DESIGN|research|data)\b"
    ),
    "reference file outside the repository": re.compile(r"\b(CONTRACT|DESIGN|HMIL|anchors)\.md\b"),
}

OUTSIDE = ("reference folder outside the repository", "reference file outside the repository")

#: (path prefix, rule) → why that code may name the outside reference folder
ALLOWED: dict[tuple[str, str], str] = {
    **{
        ("tests/", rule): "tests read the real test slides and compare docs/formats.md with "
        "the contract it copies"
        for rule in OUTSIDE
    },
    **{
        ("docs/hooks.py", rule): "the site build copies the contract into docs/formats.md and "
        "warns when they differ"
        for rule in OUTSIDE
    },
}

#: exact lines allowed anywhere: the marker the site build looks for (``docs/hooks.py``)
ALLOWED_LINES = frozenset(
    {"<!-- contract: everything below is ../shared/CONTRACT.md, verbatim -->"}
)

#: vendored third-party code, not ours to word; this file, which spells out the words it looks for
SKIPPED = ("viewer/static/", "tests/test_product_words.py")


def tracked_text_files() -> list[Path]:
    """Tracked files that exist and are text (no NUL byte in the first 8 KiB)."""
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    out = []
    for name in filter(None, names.split("\0")):
        path = REPO / name
        if name.startswith(SKIPPED) or not path.is_file():
            continue
        with path.open("rb") as fh:
            if b"\0" in fh.read(8192):
                continue
        out.append(path)
    return out


def allowed(name: str, rule: str, line: str) -> bool:
    if line.strip() in ALLOWED_LINES:
        return True
    return any(name.startswith(prefix) and rule == r for prefix, r in ALLOWED)


def offending_lines(path: Path) -> list[str]:
    """``file:line: rule: text`` for every flagged line of ``path``."""
    name = path.relative_to(REPO).as_posix()
    text = path.read_text(encoding="utf-8", errors="replace")
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule, pattern in RULES.items():
            if pattern.search(line) and not allowed(name, rule, line):
                found.append(f"{name}:{number}: {rule}: {line.strip()[:120]}")
    return found


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_no_process_words_or_outside_pointers() -> None:
    files = tracked_text_files()
    assert len(files) > 100  # the whole tree was read, not an empty listing
    found = [hit for path in files for hit in offending_lines(path)]
    assert not found, "words about the work, not the product:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("fixed at stop 22 of the plan", "numbered stop"),
        ("as agreed in round 2", "numbered round"),
        ("see issue-3 for the numbers", "tracker number"),
        ("closes issue 16", "tracker number"),
        ("the helper agent wrote this", "agent"),
        ("measured in an earlier session", "work session"),
        ("as the brief says", "brief"),
        ("formula: ../shared/method/HMIL.md", "reference folder outside the repository"),
        ("Layout (``shared/CONTRACT.md``)", "reference folder outside the repository"),
        ("see DESIGN.md", "reference file outside the repository"),
    ],
)
def test_rules_flag_process_words(line: str, rule: str) -> None:
    assert RULES[rule].search(line)


@pytest.mark.parametrize(
    "line",
    [
        "scores are rounded to 2 decimals",
        "``fill(view, start, stop)`` writes rows ``start..stop-1``",
        "st.session_state['run'] = path",
        "@pytest.fixture(scope='session')",
        "a SameSite=Strict cookie for the browser session",
        "hmil status /shared/runs/panda",
        "tissue patches of 256 px",
        "the User-Agent header",
        "a brief summary of the run",
        "[API reference](api/hmil.md)",
    ],
)
def test_rules_leave_product_words_alone(line: str) -> None:
    assert not [rule for rule, pattern in RULES.items() if pattern.search(line)]


def test_allowed_uses_are_narrow() -> None:
    """Tests and the site build may name the reference folder; library code and docs may not."""
    line = "real slides of ../shared/data/slides"
    assert allowed("tests/conftest.py", "reference folder outside the repository", line)
    assert not allowed("hmil/config.py", "reference folder outside the repository", line)
    assert not allowed("docs/index.md", "reference folder outside the repository", line)
    assert not allowed("tests/test_x.py", "numbered stop", "stop 3")
