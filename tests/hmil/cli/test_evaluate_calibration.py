"""``hmil evaluate`` reports calibration and the call per fold, and draws the folds'
reliability diagrams into ``RUN/reliability.html`` (SYNTHETIC cohort)."""

from __future__ import annotations

import errno
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from hmil.checkpoint import load_checkpoint_file, save_checkpoint
from hmil.cli import evaluate as evaluate_cli
from hmil.cli import main
from hmil.reliability_figure import CALIBRATION_LEVELS


def test_evaluate_prints_ece_and_the_call_and_writes_them(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    argv = ["evaluate", "--run", str(run), "--device", "cpu", "--coverage", "0.8"]
    assert main(argv) == 0
    line = capsys.readouterr().out.splitlines()[1]
    pattern = (
        r"fold 0: T coarse \d+\.\d{3} fine \d+\.\d{3} \| fine ECE \d\.\d{3} -> \d\.\d{3} \| "
        r"coarse ECE \d\.\d{3} -> \d\.\d{3} \| call coverage \d\.\d{3} \(target 0\.8\)"
    )
    assert re.match(pattern, line), line
    report = json.loads((run / "fold_0" / "test_metrics.json").read_text())
    assert report["calibration"]["call"]["coverage_target"] == 0.8
    table = pd.read_csv(run / "fold_0" / "reliability.csv")
    assert list(table.columns) == ["level", "calibration", "bin", "confidence", "accuracy", "count"]
    fine_after = table[(table.level == "fine") & (table.calibration == "after")]
    assert fine_after["count"].sum() == report["n"]
    assert (
        fine_after["count"].tolist()
        == report["calibration"]["fine"]["after"]["reliability"]["count"]
    )
    trained = json.loads((tiny_run / "fold_0" / "test_metrics.json").read_text())
    for when in ("before", "after"):  # the same numbers as the fold's own test
        ours, theirs = report["calibration"]["fine"][when], trained["calibration"]["fine"][when]
        assert (ours["ece"], ours["nll"]) == pytest.approx((theirs["ece"], theirs["nll"]))


def _layout(page: str) -> dict:
    """The layout a Plotly HTML page passes to ``Plotly.newPlot(id, data, layout, config)``."""
    decoder = json.JSONDecoder()
    start = page.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    _, end = decoder.raw_decode(page, page.index('"', start))
    _, end = decoder.raw_decode(page, page.index("[", end))
    layout, _ = decoder.raw_decode(page, page.index("{", end))
    return layout


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _copy(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_evaluate_writes_the_reliability_diagrams_of_every_fold_with_data(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "fold_1").mkdir(exist_ok=True)  # a fold not evaluated now, with reliability data
    shutil.copy(run / "fold_0" / "reliability.csv", run / "fold_1" / "reliability.csv")
    assert main(["evaluate", "--run", str(run), "--device", "cpu", "--fold", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"reliability diagrams: {run / 'reliability.html'}"
    page = (run / "reliability.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    assert {"html", "head", "title", "body", "script"} <= set(parser.tags)
    assert "Plotly.newPlot" in page and "<script src" not in page  # plotly.js inline
    layout = _layout(page)
    assert "fold(s) 0, 1: before (raw) and after calibration" in layout["title"]["text"]
    report = json.loads((run / "fold_0" / "test_metrics.json").read_text())["calibration"]
    titles = [a["text"] for a in layout["annotations"]]
    assert len(titles) == len(CALIBRATION_LEVELS)  # the small model has a coarse classifier
    for title, (level, name) in zip(titles, CALIBRATION_LEVELS, strict=True):
        found = re.fullmatch(rf"{re.escape(name)} · ECE (\d\.\d{{3}}) → (\d\.\d{{3}})", title)
        assert found, title
        # fold 1 holds fold 0's numbers from training: the mean is fold 0's ECE
        expected = (report[level]["before"]["ece"], report[level]["after"]["ece"])
        assert tuple(map(float, found.groups())) == pytest.approx(expected, abs=1.5e-3)
    assert not list(run.glob(".*.tmp"))


def test_a_failed_write_leaves_the_old_page_and_no_partial_file(
    tiny_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "reliability.html").write_text("old page", encoding="utf-8")
    real_write = Path.write_text

    def disk_full(
        self: Path, data: str, encoding: str | None = None, errors: str | None = None
    ) -> int:
        if not self.name.startswith(".reliability.html."):  # every other file as usual
            return real_write(self, data, encoding=encoding, errors=errors)
        real_write(self, data[: len(data) // 2], encoding="utf-8")  # half of it, then full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no space left" in err[0], err
    assert (run / "reliability.html").read_text(encoding="utf-8") == "old page"
    assert not list(run.glob(".*.tmp"))


def test_a_checkpoint_without_calibration_gets_diagrams_that_say_so(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(tiny_run, tmp_path)
    model, info = load_checkpoint_file(run / "fold_0" / "checkpoint.pt")
    info.calibration = {}
    save_checkpoint(run / "fold_0" / "checkpoint.pt", model, info)
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("reliability diagrams: ")
    layout = _layout((run / "reliability.html").read_text(encoding="utf-8"))
    assert "checkpoint without calibration (T = 1): before = after" in layout["title"]["text"]
    for title in (a["text"] for a in layout["annotations"]):
        before, after = re.findall(r"\d\.\d{3}", title)
        assert before == after, title


def test_no_reliability_data_writes_nothing_and_says_so(tiny_run: Path, tmp_path: Path) -> None:
    run = _copy(tiny_run, tmp_path)
    (run / "fold_0" / "reliability.csv").unlink()  # as a run of an older version left it
    line = evaluate_cli.write_reliability(run)
    assert line == "reliability diagrams: none written (no fold has a reliability.csv)"
    assert not (run / "reliability.html").exists() and not list(run.glob(".*.tmp"))
