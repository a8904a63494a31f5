"""CSV tables of the cohort (labels, splits, exported corrections) read the one way: every cell a
string (zero-padded ids keep their padding, an empty cell stays ``""``), and a missing or
unparsable file is one error naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hmil.errors import HMILError


def read_text_table(
    path: str | Path, error: type[HMILError], what: str, **read_csv: Any
) -> pd.DataFrame:
    """The CSV at ``path`` with string cells (``read_csv``: more :func:`pandas.read_csv` options).

    Raises:
        HMILError: of class ``error``, naming the file: ``"<what> not found"`` or
            ``"cannot parse CSV (...)"``.
    """
    p = Path(path)
    if not p.is_file():
        raise error(p, f"{what} not found")
    try:
        table: pd.DataFrame = pd.read_csv(p, dtype=str, keep_default_na=False, **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise error(p, f"cannot parse CSV ({str(exc).splitlines()[0]})") from None
    return table
