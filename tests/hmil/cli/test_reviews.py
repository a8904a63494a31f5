"""``hmil reviews list|export``: latest verdicts, disagreements, the corrected label table (and
training on it with the run's splits), one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hmil import reviews
from hmil.cli import main
from hmil.cli import reviews as reviews_cli
from hmil.reviews import make_review


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run (its config names the cohort's labels, splits and features)."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def _slides(run: Path) -> pd.DataFrame:
    return pd.read_csv(_config(run)["data"]["labels"], dtype=str)


def _add(run: Path, slide: str, verdict: str, who: str, label: str | None = None) -> None:
    reviews.append_review(run, make_review(slide, verdict, who, label=label))


def test_list_prints_latest_verdicts_and_disagreements(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _slides(run)["slide_id"].tolist()
    _add(run, s[0], "agree", "ana")
    _add(run, s[0], "model_error", "ana")
    _add(run, s[1], "agree", "ana")
    _add(run, s[1], "label_error", "bob", "IC")
    reviews.append_review(run, make_review(s[2], "ambiguous", "cy", comment="\x1b[2Jwiped\nx"))
    with open(run / "reviews.jsonl", "a") as handle:
        handle.write("garbage\n")
    assert main(["reviews", "list", str(run)]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"warning: {run}/reviews.jsonl line 6: not JSON (Expecting value)\n"
    out = captured.out.splitlines()
    assert out[0] == "4 latest verdict(s) on 3 slide(s)"
    assert "\x1b" not in captured.out
    assert out[-3].endswith("  [2Jwiped x")  # the escape character is a space
    assert out[1].split() == ["slide_id", "reviewer", "verdict", "label", "time", "comment"]
    assert out[2].split()[:4] == [s[0], "ana", "model_error", "-"]
    assert "1 slide(s) where reviewers disagree" in out
    assert out[-1] == f"  {s[1]}: ana: agree; bob: label_error → IC"


def test_export_corrects_labels_and_training_uses_them(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(run)
    original = Path(config["data"]["labels"])
    before = original.read_bytes()
    table = _slides(run)
    first, second = table["slide_id"][0], table["slide_id"][1]
    new = "IC" if table["label"][0] != "IC" else "N"
    _add(run, first, "label_error", "ana", new)
    _add(run, second, "label_error", "ana", "DCIS")
    _add(run, second, "agree", "bob")  # bob keeps the table's label: a disagreement
    out = tmp_path / "corrected.csv"
    assert main(["reviews", "export", str(run), "--labels", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run}/reviews.jsonl: reviewers disagree on the label of 1 ")
    assert "--reviewer NAME" in err and f"{second}: ana: label_error → DCIS; bob: agree" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["reviews", "export", str(run), "--labels", str(out), "--reviewer", "bob"]) == 0
    assert f"{out}: 1 label(s) corrected" in capsys.readouterr().out
    assert original.read_bytes() == before
    corrected = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert corrected["slide_id"].tolist() == table["slide_id"].tolist()
    changed = corrected[corrected["corrected_by"] != ""]
    assert changed["slide_id"].tolist() == [first]
    assert (changed["label"].item(), changed["original_label"].item()) == (new, table["label"][0])
    # the corrected table trains with the run's own splits
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"model": config["model"], "train": {"device": "cpu"}}))
    args = ["train", "--config", str(small), "--labels", str(out)]
    args += ["--splits", config["data"]["splits"], "--features", config["data"]["features"]]
    args += ["--hierarchy", "bracs", "--out", str(tmp_path / "again"), "--folds", "0"]
    assert main([*args, "--epochs", "1", "--quiet"]) == 0
    predictions = pd.read_csv(tmp_path / "again" / "fold_0" / "predictions.csv", dtype=str)
    truth = dict(zip(corrected["slide_id"], corrected["label"], strict=True))
    pairs = zip(predictions["slide_id"], predictions["true_fine"], strict=True)
    assert all(truth[s] == t for s, t in pairs)


def test_errors_are_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reviews", "list", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a run directory (no config.yaml)\n"
    source = tmp_path / "nope.csv"
    out = tmp_path / "o.csv"
    assert main(["reviews", "export", str(run), "--labels", str(out), "--from", str(source)]) == 2
    assert capsys.readouterr().err == f"error: {source}: label table not found\n"
    labels = _config(run)["data"]["labels"]
    assert main(["reviews", "export", str(run), "--labels", labels]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {labels}: is the original label table; write the corrections elsewhere\n"


def test_help_names_both_actions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["reviews", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert reviews_cli.HELP in " ".join(out.split())
    assert "list" in out and "export" in out
    with pytest.raises(SystemExit):
        main(["reviews", "export", "run"])  # --labels is required
    assert "--labels" in capsys.readouterr().err
