"""The review report: the reviewer's page and CSV, the thumbnails (attention on the relative scale,
legend, region outlines, the blank canvas without a slide file) and the disagreements table."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shapely.geometry import box
from viewer_fixtures import NO_SLIDE_ID

from hmil import regions, reviews
from hmil.errors import ReviewError
from hmil.geojson import colour_for_class
from hmil.hierarchy import Hierarchy
from hmil.overlay import blend, colormap_code_lut
from hmil.review_report import (
    CSV_COLUMNS,
    DISAGREEMENT_COLUMNS,
    THUMB_SIDE,
    ReportSource,
    attention_picture,
    build_report,
    safe_name,
    write_reports,
)
from hmil.reviews import make_review

TOP = tuple(int(c) for c in colormap_code_lut("viridis")[255])  # the colour of ≥ ×10
BOTTOM = tuple(int(c) for c in colormap_code_lut("viridis")[1])  # the colour of ×1


def _on_white(colour: tuple[int, ...]) -> tuple[int, ...]:
    """``colour`` at the default opacity (0.5) over a white canvas, as the engine blends it."""
    over = np.asarray([[[*colour, round(0.5 * 255)]]], dtype=np.uint8)
    return tuple(int(c) for c in blend(np.full((1, 1, 3), 255, dtype=np.uint8), over)[0, 0])


def _count(image: np.ndarray, colour: tuple[int, ...]) -> int:
    return int((image[..., :3] == np.asarray(colour, dtype=np.uint8)).all(axis=-1).sum())


def _pngs(page: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    out = []
    for data in found:
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
    return out


# --------------------------------------------------------------------------- names


def test_safe_name_is_a_plain_file_stem() -> None:
    assert safe_name("Dr. Ana Costa") == "Dr._Ana_Costa"
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("José Ñúñez") == "José_Ñúñez"
    clash = safe_name("ana b", taken=["Ana_B"])
    assert re.fullmatch(r"ana_b-[0-9a-f]{8}", clash)
    assert safe_name("disagreements").startswith("disagreements-")  # never the shared table
    assert safe_name("...") == "reviewer"


# --------------------------------------------------------------------------- one picture


def test_attention_picture_scale_legend_and_outline() -> None:
    # a 10 × 10 grid of 100-px patches; 4 patches hold 96 % of label a's attention
    gx, gy = np.meshgrid(np.arange(10) * 100, np.arange(10) * 100)
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    hot = np.zeros(100)
    hot[[0, 1, 10, 11]] = 0.24
    hot += 0.04 / 100
    matrix = np.stack([hot / hot.sum(), np.full(100, 0.01)])
    ring = [[[500.0, 500.0], [900.0, 500.0], [900.0, 900.0], [500.0, 900.0], [500.0, 500.0]]]
    colour = (255, 0, 255)
    image = attention_picture(matrix, ["a", "b"], "a", coords, 100, outlines=[(ring, colour)])
    h, w = image.shape[:2]
    assert max(h, w) <= THUMB_SIDE and w == THUMB_SIDE
    # the hot patches (top-left 200 × 200 of the 1000-px extent) take the top colour (× 24),
    # nowhere else above the legend strip
    hot_colour = np.asarray(_on_white(TOP), dtype=np.uint8)
    ys, xs = np.nonzero((image[:-100] == hot_colour).all(axis=-1))
    assert ys.size > 100 and ys.max() < 0.25 * h and xs.max() < w / 2
    # the legend's bar runs from the ×1 colour to the top colour in the strip under the picture
    strip = image[-60:]
    assert _count(strip, BOTTOM) >= 5 and _count(strip, TOP) >= 5
    # the outline: a 2-px square ring of side ≈ 0.4 of the picture
    assert _count(image, colour) > 4 * 0.35 * (h - 60) * 2
    # label b: every patch at exactly its uniform share → ×1, the bottom colour; nothing at top
    flat = attention_picture(matrix, ["a", "b"], "b", coords, 100)
    above = flat[:-100]
    assert _count(above, _on_white(TOP)) == 0 and _count(above, _on_white(BOTTOM)) > 10000


# --------------------------------------------------------------------------- whole reports


@pytest.fixture(scope="module")
def reviewed(viewer_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the viewer run with 3 verdicts by ana, 1 by bob (disagreeing on a slide),
    and a DCIS region on one slide."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(viewer_run, run)
    held = pd.concat(
        [
            pd.read_csv(p, dtype={"slide_id": str}).assign(fold=int(p.parent.name[-1]))
            for p in sorted(run.glob("fold_*/predictions.csv"))
        ]
    ).set_index("slide_id")
    slides = [s for s in held.index if s != NO_SLIDE_ID][:2]
    assert NO_SLIDE_ID in held.index
    first, second = slides
    fine = list(held.columns[held.columns.str.startswith("p_fine_")].str.removeprefix("p_fine_"))
    new = next(c for c in fine if c != held.at[first, "true_fine"])
    add = reviews.append_review
    add(
        run,
        make_review(
            first,
            "label_error",
            "ana",
            label=new,
            comment="<script>alert(1)</script>",
            checkpoint="fold_0/checkpoint.pt",
        ),
    )
    add(run, make_review(second, "model_error", "ana", comment='missed "it" & more'))
    add(run, make_review(NO_SLIDE_ID, "agree", "ana"))
    add(run, make_review(first, "agree", "bob"))
    coords_max = 1000.0
    regions.save_regions(
        run, first, [regions.Region("lesion 1", "DCIS", box(128, 128, coords_max, coords_max))]
    )
    return run, {"held": held, "first": first, "second": second, "new": new}


def test_reports_files_rows_counts_and_escaping(
    reviewed: tuple[Path, dict], tmp_path: Path
) -> None:
    run, facts = reviewed
    held, first, second = facts["held"], facts["first"], facts["second"]
    files = write_reports(
        ReportSource(run, device="cpu"), tmp_path / "out", written="2026-01-31T12:00:00+00:00"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ana.csv",
        "ana.html",
        "bob.csv",
        "bob.html",
        "disagreements.csv",
    ]
    assert files.disagreements == tmp_path / "out" / "disagreements.csv"
    rows = list(csv.DictReader(io.StringIO(files.reports["ana"][1].read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["slide_id"] for r in rows] == sorted([first, second, NO_SLIDE_ID])
    for row in rows:
        expected = held.loc[row["slide_id"]]
        assert row["fold"] == str(expected["fold"])
        assert row["true_fine"] == expected["true_fine"]
        assert row["pred_fine"] == expected["pred_fine"]
        assert float(row["confidence"]) == pytest.approx(expected["confidence"], abs=1e-6)
    by_id = {r["slide_id"]: r for r in rows}
    assert by_id[first]["verdict"] == "label_error"
    assert by_id[first]["corrected_label"] == facts["new"]
    assert by_id[first]["comment"] == "<script>alert(1)</script>"  # the CSV keeps the text
    assert by_id[first]["checkpoint"] == "fold_0/checkpoint.pt"
    assert by_id[second]["comment"] == 'missed "it" & more'
    disputed = list(
        csv.DictReader(io.StringIO(Path(str(files.disagreements)).read_text(encoding="utf-8")))
    )
    assert tuple(disputed[0]) == DISAGREEMENT_COLUMNS
    assert [(r["slide_id"], r["reviewer"], r["verdict"]) for r in disputed] == [
        (first, "ana", "label_error"),
        (first, "bob", "agree"),
    ]

    page = files.reports["ana"][0].read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "missed &quot;it&quot; &amp; more" in page
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "http" not in page
    assert "<td>slides reviewed</td><td>3</td>" in page
    for verdict, n in (("agree", 1), ("label_error", 1), ("model_error", 1), ("ambiguous", 0)):
        assert f"<td>{verdict} ({reviews.VERDICT_TEXT[verdict]})</td><td>{n}</td>" in page
    original = held.at[first, "true_fine"]
    assert f"<td>{first}</td><td>{original} → {facts['new']}</td>" in page
    assert "2026-01-31T12:00:00+00:00" in page
    bob = files.reports["bob"][0].read_text(encoding="utf-8")
    assert "<td>slides reviewed</td><td>1</td>" in bob and "No label corrected." in bob


def test_thumbnails_held_out_fold_legend_regions_and_blank_canvas(
    reviewed: tuple[Path, dict],
) -> None:
    run, facts = reviewed
    held, first = facts["held"], facts["first"]
    report = build_report(ReportSource(run, device="cpu"), "ana")
    entries = {s.review.slide_id: s for s in report.slides}
    for slide_id, entry in entries.items():
        # the attention comes from the fold whose test set held the slide out
        assert entry.attention_checkpoint == f"fold_{held.at[slide_id, 'fold']}/checkpoint.pt"
        roles = [p.role for p in entry.pictures]
        same = held.at[slide_id, "true_fine"] == held.at[slide_id, "pred_fine"]
        assert roles == (["predicted"] if same else ["predicted", "true"])
        assert entry.pictures[0].label == held.at[slide_id, "pred_fine"]
    page = report.html()
    images = _pngs(page)
    assert len(images) == sum(len(e.pictures) for e in entries.values())
    sizes = re.findall(r'<img src="data:[^"]+" width="(\d+)" height="(\d+)"', page)
    for image, (w, h) in zip(images, sizes, strict=True):
        assert (image.shape[1], image.shape[0]) == (int(w), int(h))
        assert max(image.shape[:2]) <= THUMB_SIDE
        strip = image[-60:]  # the legend: the bar's end colours under the picture
        assert _count(strip, BOTTOM) >= 5 and _count(strip, TOP) >= 5
    dcis = colour_for_class("DCIS", Hierarchy.resolve("bracs"))  # the run's class colour
    with_region = _pngs(page.split(f'id="slide-{first}"')[1].split("</section>")[0])
    assert _count(with_region[0], dcis) > 200  # the region's outline in its class colour
    others = [
        i
        for s, e in entries.items()
        if s != first
        for i in _pngs(page.split(f'id="slide-{s}"')[1].split("</section>")[0])
    ]
    assert all(_count(i, dcis) == 0 for i in others)
    assert "DCIS" in page and "lesion 1 (DCIS)" in page
    # no slide file: drawn on a white canvas of the bag's extent, and said so
    blank = entries[NO_SLIDE_ID]
    assert blank.note.startswith("slide file not found")
    assert "slide file not found: attention drawn on a blank canvas" in page
    assert not entries[first].note


def test_no_reviews_or_unknown_reviewer_is_a_review_error(
    reviewed: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = reviewed
    with pytest.raises(ReviewError, match="no reviews by 'cy' \\(reviewers: ana, bob\\)"):
        build_report(ReportSource(run, pictures=False), "cy")
    empty = tmp_path / "run"
    shutil.copytree(run, empty, ignore=shutil.ignore_patterns("reviews.jsonl", "*.pt"))
    with pytest.raises(ReviewError, match="no reviews in this run"):
        write_reports(ReportSource(empty, pictures=False), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_files_outside_the_readable_folders_are_not_read(reviewed: tuple[Path, dict]) -> None:
    run, facts = reviewed
    asked: list[Path] = []

    def nothing(path: Path) -> bool:
        asked.append(path)
        return False

    report = build_report(ReportSource(run, readable=nothing, device="cpu"), "bob")
    (entry,) = report.slides
    assert entry.pictures == () and entry.attention_checkpoint == ""
    assert entry.note == "the slide's bag lies outside the readable folders: no attention drawn"
    assert [p.name for p in asked] == [f"{facts['first']}.h5"]
    assert entry.pred_fine == facts["held"].at[facts["first"], "pred_fine"]  # the tables still
