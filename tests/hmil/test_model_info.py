"""A model's provenance as plain facts (hmil.model_info): display name, SYNTHETIC, encoder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hmil.checkpoint import CheckpointInfo, load_checkpoint_file
from hmil.config import ModelConfig
from hmil.hierarchy import Hierarchy
from hmil.model_info import (
    card_title,
    model_display_name,
    model_provenance,
    synthetic_cohort_reason,
    synthetic_reason,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "checkpoints" / "demo" / "checkpoint.pt"
DEMO_TITLE = "HMIL demo checkpoint — trained on SYNTHETIC slides"


def _info(config: Mapping[str, Any] | None = None, encoder: str = "hed-texture") -> CheckpointInfo:
    return CheckpointInfo(
        hierarchy=Hierarchy.preset("bracs"),
        in_dim=104,
        model_config=ModelConfig(),
        encoder=encoder,
        config=dict(config or {}),
    )


def test_the_demo_checkpoint_is_named_by_its_card_and_synthetic() -> None:
    _, info = load_checkpoint_file(DEMO)
    facts = model_provenance(DEMO, info, {"encoder": "hed-texture"})
    assert facts.display_name == DEMO_TITLE
    assert facts.synthetic and facts.card == DEMO.parent / "MODEL_CARD.md"
    assert facts.synthetic_reason == f"its model card says so (MODEL_CARD.md: '{DEMO_TITLE}')"
    assert facts.encoder_mismatch is None
    mismatch = model_provenance(DEMO, info, {"encoder": "uni_v1"}).encoder_mismatch
    assert mismatch is not None and "hed-texture" in mismatch and "uni_v1" in mismatch
    assert model_provenance(DEMO, info).encoder_mismatch is None  # no bag: nothing to compare


def test_a_run_fold_is_named_by_run_and_fold_and_synthetic_by_its_cohort(
    small_cohort: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "bracs-gen" / "fold_2" / "checkpoint.pt"  # nothing read from the file
    config = {"data": {"labels": str(small_cohort / "labels.csv"), "encoder": "hed-texture",
                       "features": str(small_cohort / "features")}}  # fmt: skip
    facts = model_provenance(ckpt, _info(config))
    assert facts.display_name == "bracs-gen · fold 2" and facts.card is None
    assert facts.synthetic
    assert facts.synthetic_reason == (
        f"its cohort is marked SYNTHETIC ({small_cohort / 'README_SYNTHETIC.txt'})"
    )
    # only the features folder's parent marked (the label table elsewhere) still counts
    elsewhere = {"data": {"labels": str(tmp_path / "labels.csv"),
                          "features": str(small_cohort / "features")}}  # fmt: skip
    assert synthetic_cohort_reason(elsewhere) is not None


def test_real_and_old_checkpoints_read_as_not_synthetic(tmp_path: Path) -> None:
    real = {"data": {"labels": str(tmp_path / "labels.csv"), "encoder": "uni_v1",
                     "features": str(tmp_path / "features")}}  # fmt: skip
    run = tmp_path / "real-run" / "fold_0" / "checkpoint.pt"
    facts = model_provenance(run, _info(real, encoder="uni_v1"))
    assert (facts.synthetic, facts.synthetic_reason) == (False, None)
    old = model_provenance(tmp_path / "old.pt", _info({}, encoder=""))
    assert (old.display_name, old.synthetic) == ("old", False)
    for config in (None, {"data": "x"}, {"data": {"labels": 3, "features": ["a"]}}):
        assert synthetic_cohort_reason(config) is None


def test_the_synthetic_encoder_marks_a_model_synthetic(tmp_path: Path) -> None:
    config = {"data": {"encoder": "synthetic"}}
    assert (
        synthetic_cohort_reason(config) == "it was trained on features of the 'synthetic' encoder"
    )
    assert synthetic_reason(tmp_path / "m.pt", {}, encoder="synthetic") is not None


def test_a_model_card_names_the_model_and_only_a_synthetic_heading_marks_it(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "run" / "fold_1" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    card = ckpt.parent / "MODEL_CARD.md"
    card.write_text(
        "\n<!-- made by hand -->\n## BRACS ABMIL v3 ##\n\nNot trained on synthetic data.\n"
    )
    assert card_title(card) == "BRACS ABMIL v3"
    assert model_display_name(ckpt) == "BRACS ABMIL v3"
    assert synthetic_reason(ckpt, {}) is None  # the body's lower-case word is no marker
    card.write_text("no heading at all\n")
    assert (
        model_display_name(ckpt) == f"{ckpt.parents[2].name}/run · fold 1"
    )  # "run" alone is no name
    assert card_title(tmp_path / "missing.md") is None


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("runs/x/fold_0/checkpoint.pt", "x · fold 0"),
        ("hmil-demo/run/fold_2/checkpoint.pt", "hmil-demo/run · fold 2"),
        ("models/best.pt", "best"),
        ("runs/x/fold_a/checkpoint.pt", "checkpoint"),
    ],
)
def test_display_name_without_a_card(path: str, name: str, tmp_path: Path) -> None:
    assert model_display_name(tmp_path / path) == name
