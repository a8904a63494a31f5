"""The one CSV reader of the cohort's tables: string cells, one error naming the file."""

from __future__ import annotations

import pytest

from hmil.data.tables import read_text_table
from hmil.errors import LabelError, SplitError


def test_cells_stay_strings_and_empty_cells_stay_empty(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("slide_id,label\n007,\n010,IC\n", encoding="utf-8")
    table = read_text_table(path, LabelError, "label table")
    assert table["slide_id"].tolist() == ["007", "010"]
    assert table["label"].tolist() == ["", "IC"]


def test_missing_and_unparsable_files_raise_the_callers_error(tmp_path):
    with pytest.raises(SplitError, match="split file not found") as missing:
        read_text_table(tmp_path / "none.csv", SplitError, "split file")
    assert missing.value.where == str(tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(LabelError, match=r"cannot parse CSV \(No columns to parse"):
        read_text_table(empty, LabelError, "label table")


def test_read_csv_options_pass_through(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    raw = read_text_table(path, LabelError, "label table", header=None)
    assert raw.values.tolist() == [["a", "b"], ["1", "2"]]
