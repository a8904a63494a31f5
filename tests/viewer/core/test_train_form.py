"""The Training form's fold field (viewer/core/train_form.py)."""

from __future__ import annotations

import pytest

from hmil.errors import ConfigError
from viewer.core.train_form import parse_folds


def test_folds_all_or_a_list() -> None:
    assert parse_folds("") == [] and parse_folds(" All ") == []
    assert parse_folds("2, 0,2,") == [0, 2]


@pytest.mark.parametrize(("text", "problem"), [("0,x", "comma-separated"), ("-1", "≥ 0")])
def test_folds_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_folds(text)
