"""The label table (``labels.csv``): one row per slide, fine label names of a hierarchy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hmil.data.tables import read_text_table
from hmil.errors import LabelError
from hmil.hierarchy import Hierarchy

REQUIRED_COLUMNS = ("slide_id", "label")


def read_labels(path: str | Path, hierarchy: Hierarchy | None) -> pd.DataFrame:
    """Read and validate a label table.

    With ``hierarchy=None`` (enough for splitting) labels are only checked to be non-empty,
    ``fine_idx`` indexes the sorted distinct labels and no coarse columns are added.

    Returns:
        A DataFrame indexed 0..S-1 with the file's columns plus ``case_id`` (defaults to
        ``slide_id``), ``fine_idx``, ``coarse_idx`` and ``coarse`` (the derived coarse name).
        Ids are read as strings so zero-padded ids keep their padding.

    Raises:
        LabelError: naming the file (and the row, 1-based as in a spreadsheet with its header on
            row 1) for a missing file or column, an empty or unknown label, an empty slide id, or
            a duplicate slide id.
    """
    p = Path(path)
    # header=None: the first line is read as data, so a row longer than the header is a parser
    # error instead of silently becoming pandas' row index
    raw = read_text_table(p, LabelError, "label table", header=None, index_col=False)
    # unnamed columns (a spreadsheet's trailing commas) get unique names, as pandas gives them
    header = [str(c).strip() or f"Unnamed: {i}" for i, c in enumerate(raw.iloc[0])]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise LabelError(p, f"duplicate column(s) {', '.join(repr(c) for c in duplicated)}")
    df = raw.iloc[1:].reset_index(drop=True)
    df.columns = header
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise LabelError(
            p, f"missing column(s) {', '.join(missing)} (have: {', '.join(df.columns)})"
        )
    if df.empty:
        raise LabelError(p, "label table has no rows")
    df["slide_id"] = df["slide_id"].str.strip()
    df["label"] = df["label"].str.strip()
    if "case_id" not in df.columns:
        df["case_id"] = df["slide_id"]
    df["case_id"] = df["case_id"].str.strip()
    df.loc[df["case_id"] == "", "case_id"] = df["slide_id"]
    fine_idx: list[int] = []
    names = hierarchy.fine if hierarchy is not None else tuple(sorted(set(df["label"]) - {""}))
    for row, (slide_id, label) in enumerate(zip(df["slide_id"], df["label"], strict=True), start=2):
        if not slide_id:
            raise LabelError(p, f"row {row}: empty slide_id")
        if not label:
            raise LabelError(p, f"row {row}: slide '{slide_id}' has an empty label")
        if hierarchy is not None and label not in hierarchy.fine:
            raise LabelError(
                p,
                f"row {row}: label '{label}' of slide '{slide_id}' is not a fine class of "
                f"hierarchy '{hierarchy.name}' ({', '.join(hierarchy.fine)})",
            )
        fine_idx.append(names.index(label))
    dup = df["slide_id"][df["slide_id"].duplicated()].tolist()
    if dup:
        raise LabelError(p, f"duplicate slide_id(s): {', '.join(sorted(set(dup))[:5])}")
    df["fine_idx"] = fine_idx
    if hierarchy is None:
        return df.reset_index(drop=True)
    df["coarse_idx"] = [hierarchy.parent[j] for j in fine_idx]
    df["coarse"] = [hierarchy.coarse[c] for c in df["coarse_idx"]]
    return df.reset_index(drop=True)
