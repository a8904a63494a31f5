"""``hmil reviews report RUN --out DIR [--reviewer NAME]``: one page and CSV per reviewer, the
disagreements table, one-line errors."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hmil import reviews
from hmil.cli import main
from hmil.reviews import make_review


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run (no slide files: thumbnails on a blank canvas)."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _held_out(run: Path) -> list[str]:
    return pd.read_csv(run / "fold_0" / "predictions.csv", dtype=str)["slide_id"].tolist()


def test_report_of_one_reviewer(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _held_out(run)
    reviews.append_review(run, make_review(s[0], "agree", "Dr. Ana Costa", comment="<b>ok</b>"))
    reviews.append_review(run, make_review(s[1], "ambiguous", "Dr. Ana Costa"))
    reviews.append_review(run, make_review(s[1], "agree", "bob"))
    out = tmp_path / "reports"
    assert (
        main(["reviews", "report", str(run), "--out", str(out), "--reviewer", "Dr. Ana Costa"]) == 0
    )
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"{out}/Dr._Ana_Costa.html, Dr._Ana_Costa.csv: report of Dr. Ana Costa",
        f"{out}/disagreements.csv: slides where reviewers disagree",
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "Dr._Ana_Costa.csv",
        "Dr._Ana_Costa.html",
        "disagreements.csv",
    ]
    rows = list(
        csv.DictReader(io.StringIO((out / "Dr._Ana_Costa.csv").read_text(encoding="utf-8")))
    )
    assert [(r["slide_id"], r["fold"], r["verdict"]) for r in rows] == sorted(
        [(s[0], "0", "agree"), (s[1], "0", "ambiguous")]
    )
    page = (out / "Dr._Ana_Costa.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;ok&lt;/b&gt;" in page and "<b>ok</b>" not in page
    assert page.count("data:image/png;base64,") >= 2
    assert page.count("slide file not found: attention drawn on a blank canvas") == 2


def test_every_reviewer_and_no_disagreements_file_when_they_agree(
    run: Path, tmp_path: Path
) -> None:
    s = _held_out(run)
    reviews.append_review(run, make_review(s[0], "agree", "ana"))
    reviews.append_review(run, make_review(s[0], "agree", "bob"))
    out = tmp_path / "reports"
    assert main(["reviews", "report", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ana.csv", "ana.html", "bob.csv", "bob.html"]


def test_report_errors_are_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports"
    assert main(["reviews", "report", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run}/reviews.jsonl: no reviews in this run\n"
    assert not out.exists()
    reviews.append_review(run, make_review(_held_out(run)[0], "agree", "ana"))
    assert main(["reviews", "report", str(run), "--out", str(out), "--reviewer", "bob"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run}/reviews.jsonl: no reviews by 'bob' (reviewers: ana)\n"
    assert main(["reviews", "report", str(run), "--out", str(out), "--reviewer", "../x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --reviewer: letters, digits") and err.count("\n") == 1
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["reviews", "report", str(run), "--out", str(a_file)]) == 2
    assert capsys.readouterr().err == f"error: {a_file}: exists and is a file, not a folder\n"
    assert not out.exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert Path(config["data"]["labels"]).is_file()  # the run's inputs untouched
