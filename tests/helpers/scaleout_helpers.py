"""Helpers shared by the training and launcher tests (a plain module, imported by name)."""

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
