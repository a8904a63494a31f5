"""The demo cohort: a balanced, case-grouped, resumable, self-describing folder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import openslide
import pytest

from hmil.data.labels import read_labels
from hmil.demo.classes import DEMO_CLASSES, demo_hierarchy
from hmil.demo.cohort import CohortConfig, build_cohort, load_cohort, plan_cohort
from hmil.errors import HMILError
from hmil.hierarchy import Hierarchy

TINY = CohortConfig(n_slides=7, seed=4, min_size=768, max_size=1024)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "cohort"
    build_cohort(root, TINY, workers=1, progress=False)
    return root


def test_plan_is_balanced_grouped_and_deterministic() -> None:
    config = CohortConfig(n_slides=40, seed=2)
    plan = plan_cohort(config)
    assert [p.spec for p in plan] == [p.spec for p in plan_cohort(config)]
    assert len(plan) == 40
    counts = Counter(p.spec.label for p in plan)
    assert set(counts) == {c.name for c in DEMO_CLASSES}
    assert max(counts.values()) - min(counts.values()) <= 1
    case_labels: dict[str, set[str]] = {}
    for p in plan:
        case_labels.setdefault(p.case_id, set()).add(p.spec.label)
        assert p.spec.slide_id.startswith("synth-") and p.case_id.startswith("synth-")
        assert 3072 <= p.spec.width <= 4096 and p.spec.width % 256 == 0
        assert (p.spec.lesion_fraction == 0) == (p.spec.label == "normal")
    assert all(len(labels) == 1 for labels in case_labels.values())
    assert len(case_labels) < 40  # some cases have two slides
    assert plan_cohort(CohortConfig(n_slides=40, seed=3))[0].spec != plan[0].spec


def test_cohort_files_are_valid_and_marked_synthetic(cohort_dir: Path) -> None:
    hierarchy = Hierarchy.from_file(cohort_dir / "hierarchy.yaml")
    assert hierarchy.same_as(demo_hierarchy())
    labels = read_labels(cohort_dir / "labels.csv", hierarchy)
    assert len(labels) == 7
    assert set(labels["label"]) == {c.name for c in DEMO_CLASSES}
    readme = (cohort_dir / "README_SYNTHETIC.txt").read_text()
    assert readme.startswith("SYNTHETIC DATA")
    cohort = load_cohort(cohort_dir)
    assert cohort.config == TINY
    manifest = json.loads((cohort_dir / "cohort.json").read_text())
    assert manifest["synthetic"] is True
    for entry, row in zip(cohort.slides, labels.itertuples(), strict=True):
        assert entry.slide_id == row.slide_id
        assert (entry.case_id, entry.label) == (row.case_id, row.label)
        assert entry.coarse == hierarchy.parent_of(entry.label)
        for rel in (entry.slide, entry.tissue_mask, entry.lesion_mask, entry.lesion_geojson):
            assert (cohort_dir / rel).is_file()
        if entry.label == "normal":
            assert entry.lesion_share == 0
        else:
            assert TINY.lesion_fraction[0] - 0.01 <= entry.lesion_share <= 0.15
        with openslide.OpenSlide(str(cohort_dir / entry.slide)) as osr:
            assert osr.level_count >= 2
            assert osr.dimensions == (entry.width, entry.height)
            assert "SYNTHETIC" in osr.properties["aperio.Synthetic"]


def test_rerun_reuses_finished_slides(cohort_dir: Path) -> None:
    slide = cohort_dir / "slides" / "synth-000.tiff"
    before = slide.stat().st_mtime_ns
    missing = cohort_dir / "slides" / "synth-003.tiff"
    missing.unlink()
    build_cohort(cohort_dir, TINY, workers=1, progress=False)
    assert slide.stat().st_mtime_ns == before
    assert missing.is_file()


def test_rerun_with_other_settings_is_refused(cohort_dir: Path) -> None:
    with pytest.raises(HMILError, match=r"different settings \(n_slides\)"):
        build_cohort(cohort_dir, CohortConfig(n_slides=8, seed=4, min_size=768, max_size=1024))


def test_too_few_slides_is_a_usage_error() -> None:
    with pytest.raises(HMILError, match="at least 6"):
        CohortConfig(n_slides=3)
