"""Slide reviews: the record, the append-only writer, the tolerant reader, latest verdicts,
disagreements and the corrected label table."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pandas as pd
import pytest

from hmil import reviews
from hmil.errors import LabelError, ReviewError
from hmil.reviews import Review, make_review

FINE = ("N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC")


def _review(slide: str, verdict: str, who: str, label: str | None = None, **kw: str) -> Review:
    return make_review(slide, verdict, who, label=label, fine_labels=FINE, **kw)


def test_record_round_trip(tmp_path: Path) -> None:
    review = _review("s1", "label_error", "Dr. Ana", "IC", comment="<b>x</b>\nsecond line",
                     checkpoint="fold_0/checkpoint.pt", checkpoint_sha256="ab" * 32)  # fmt: skip
    path = reviews.append_review(tmp_path, review)
    assert path == tmp_path / "reviews.jsonl"
    (line,) = path.read_text(encoding="utf-8").splitlines()
    raw = json.loads(line)
    assert set(reviews.FIELDS) <= set(raw)
    assert raw["verdict"] == "label_error" and raw["label"] == "IC"
    assert raw["time"].endswith("+00:00")  # ISO 8601 UTC
    log = reviews.read_reviews(tmp_path, FINE)
    assert log.reviews == (review,) and log.problems == ()


def test_a_label_only_with_label_error() -> None:
    assert _review("s1", "agree", "ana").label is None
    with pytest.raises(ReviewError, match="needs the corrected fine label"):
        _review("s1", "label_error", "ana")
    with pytest.raises(ReviewError, match="not a fine class"):
        _review("s1", "label_error", "ana", "XYZ")
    with pytest.raises(ReviewError, match="verdict must be one of"):
        _review("s1", "maybe", "ana")
    with pytest.raises(ReviewError, match="only a label_error"):
        make_review("s1", "agree", "ana", label="IC")


@pytest.mark.parametrize(
    "name", ["", " ", "a" * 41, "<script>", "ana\nbob", "-ana", "_ana", "a/b", "a\x1b[31m"]
)
def test_reviewer_names_are_limited(name: str) -> None:
    with pytest.raises(ReviewError):
        reviews.check_reviewer(name)


def test_reviewer_names_of_any_script() -> None:
    assert reviews.check_reviewer("  José O'Neil-Ng Jr. ") == "José O'Neil-Ng Jr."
    assert reviews.check_reviewer("山田 太郎") == "山田 太郎"


def _append_many(run: str, who: str, n: int) -> None:
    for i in range(n):
        reviews.append_review(run, make_review(f"s{i}", "agree", who, comment="x" * 300))


def test_concurrent_appends_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), who, 200)) for who in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    log = reviews.read_reviews(tmp_path)
    assert log.problems == ()
    assert len(log.reviews) == 400
    for who in "ab":
        assert [r.slide_id for r in log.reviews if r.reviewer == who] == [
            f"s{i}" for i in range(200)
        ]


def test_nonsense_lines_are_skipped_with_their_line_numbers(tmp_path: Path) -> None:
    good = _review("s1", "agree", "ana")
    reviews.append_review(tmp_path, good)
    path = tmp_path / "reviews.jsonl"
    ok = path.read_text()
    record = json.loads(ok)
    lines = [
        ok.strip(),  # 1
        "this is not json",  # 2
        "",  # 3 (blank: ignored)
        "[1, 2]",  # 4
        json.dumps({**record, "verdict": "perhaps"}),  # 5
        json.dumps({k: v for k, v in record.items() if k != "reviewer"}),  # 6
        json.dumps({**record, "verdict": "label_error", "label": "Z"}),  # 7
        json.dumps({**record, "time": "yesterday"}),  # 8
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")  # 9: not UTF-8
    reviews.append_review(tmp_path, _review("s2", "model_error", "bob"))  # 10
    log = reviews.read_reviews(tmp_path, FINE)
    assert [r.slide_id for r in log.reviews] == ["s1", "s2"]
    assert [p.split(":")[0] for p in log.problems] == [
        f"reviews.jsonl line {n}" for n in (2, 4, 5, 6, 7, 8, 9)
    ]
    assert "not JSON" in log.problems[0] and "missing reviewer" in log.problems[3]
    assert "'Z' is not a fine class" in log.problems[4]


def test_an_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "reviews.jsonl").write_text('{"slide_id": "s1", "verd')
    reviews.append_review(tmp_path, _review("s2", "agree", "ana"))
    log = reviews.read_reviews(tmp_path)
    assert [r.slide_id for r in log.reviews] == ["s2"]
    assert len(log.problems) == 1 and log.problems[0].startswith("reviews.jsonl line 1:")


def test_writer_refuses_a_link_and_a_missing_run(tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match="not a run directory"):
        reviews.append_review(tmp_path / "nope", _review("s1", "agree", "ana"))
    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    run = tmp_path / "run"
    run.mkdir()
    (run / "reviews.jsonl").symlink_to(outside)
    with pytest.raises(ReviewError, match="is a link"):
        reviews.append_review(run, _review("s1", "agree", "ana"))
    assert outside.read_text() == ""


def test_latest_per_slide_and_reviewer_and_disagreements() -> None:
    items = [
        _review("s1", "agree", "ana"),
        _review("s1", "label_error", "ana", "IC"),  # ana changes her mind
        _review("s1", "label_error", "bob", "IC"),
        _review("s2", "agree", "ana"),
        _review("s2", "model_error", "bob"),
        _review("s3", "label_error", "ana", "N"),
        _review("s3", "label_error", "bob", "PB"),
    ]
    current = reviews.latest(items)
    assert len(current) == 6
    assert current[("s1", "ana")].verdict == "label_error"
    assert sorted(reviews.disagreements(current)) == ["s2", "s3"]
    status = reviews.slide_status(current)
    assert status == {"s1": "label_error", "s2": "disputed", "s3": "disputed"}
    fixed, conflicts = reviews.corrections(current)
    assert fixed == {"s1": ("IC", ["ana", "bob"])}
    assert sorted(conflicts) == ["s3"]  # s2: neither asks for another label
    fixed, conflicts = reviews.corrections(current, reviewer="bob")
    assert fixed == {"s1": ("IC", ["ana", "bob"]), "s3": ("PB", ["bob"])}
    assert conflicts == {}


def _labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("slide_id,label,case_id,site\ns1,N,c1,x\ns2,IC,c2,y\ns3,PB,c2,z\n")
    return path


def test_export_applies_the_corrections_and_keeps_the_original(tmp_path: Path) -> None:
    source = _labels(tmp_path)
    before = source.read_bytes()
    out = tmp_path / "out" / "corrected.csv"
    fixed = {"s1": ("DCIS", ["ana"]), "s3": ("PB", ["bob"]), "zz": ("N", ["ana"])}
    result = reviews.export_labels(source, fixed, out, FINE)
    assert result.changed == ("s1",)  # s3 already PB: unchanged
    assert result.unknown == ("zz",)
    assert source.read_bytes() == before
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["slide_id", "label", "case_id", "site", *reviews.EXPORT_COLUMNS]
    assert table["label"].tolist() == ["DCIS", "IC", "PB"]
    assert table["original_label"].tolist() == ["N", "", ""]
    assert table["corrected_by"].tolist() == ["ana", "", ""]
    assert table["site"].tolist() == ["x", "y", "z"]


def test_export_refuses_bad_input(tmp_path: Path) -> None:
    source = _labels(tmp_path)
    with pytest.raises(ReviewError, match="original label table"):
        reviews.export_labels(source, {}, source, FINE)
    with pytest.raises(LabelError, match="not a fine class"):
        reviews.export_labels(source, {"s1": ("Q", ["ana"])}, tmp_path / "o.csv", FINE)
    assert not (tmp_path / "o.csv").exists()
    (tmp_path / "bad.csv").write_text("slide,lab\n1,2\n")
    with pytest.raises(LabelError, match="missing column slide_id"):
        reviews.export_labels(tmp_path / "bad.csv", {}, tmp_path / "o.csv", FINE)
