"""benchmarks/timing.py: the cost split and one quick end-to-end run (no speed is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.accuracy import HMIL_PAPER, VARIANTS
from benchmarks.timing import TIMED_ROWS, own_budget, split_cost

REPO = Path(__file__).resolve().parents[2]


def test_split_cost_separates_fixed_and_per_epoch_time():
    assert split_cost(12.0, 30.0, 1, 4) == (6.0, 6.0)
    # a long run measured faster than the short one (noise) costs nothing per epoch
    assert split_cost(5.0, 4.5, 1, 3) == (5.0, 0.0)


def test_timed_rows_are_the_compared_ones():
    names = set(TIMED_ROWS)
    peers = [v for v in VARIANTS if v.kind == "peer" and v.peer != "flat_gated"]
    assert {v.recipe for v in peers} == {"plain", "hmil"}
    assert all(v.name in names for v in peers)
    assert len(TIMED_ROWS) == 3 + len(peers)
    paper = next(v for v in VARIANTS if v.name == HMIL_PAPER)
    assert own_budget(paper) == 200


@pytest.mark.slow
def test_quick_run_writes_one_table_per_cohort(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.timing", "--quick", "--cohorts", "gen-small",
         "--short", "1", "--long", "2", "--out", str(tmp_path), "--work", str(tmp_path / "w"),
         "--load-note", "test"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "timing.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == [TIMED_ROWS[0], TIMED_ROWS[3]]
    for r in rows:
        assert r["budget_epochs"] == 20 and r["long_s"] > 0 and r["fixed_s"] >= 0
        assert r["budget_s"] == pytest.approx(r["fixed_s"] + 20 * r["per_epoch_s"], abs=0.2)
    text = (tmp_path / "timing.md").read_text()
    assert "## gen-small" in text and "Load: test." in text and TIMED_ROWS[3] in text
    assert text.endswith("|\n")  # one newline at the end, as the repository's hooks want


def test_unknown_cohort_is_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.timing", "--cohorts", "nope", "--work", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(
        "error: --cohorts:"
    )
