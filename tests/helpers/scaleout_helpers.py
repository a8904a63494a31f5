"""Helpers shared by the scale-out tests (a plain module: ``conftest`` names collide)."""

from __future__ import annotations

from pathlib import Path


def train_args(cohort: Path, splits: Path, run: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--labels",
        str(cohort / "labels.csv"),
        "--features",
        str(cohort / "features"),
        "--splits",
        str(splits),
        "--hierarchy",
        "bracs",
        "--out",
        str(run),
        *extra,
    ]
