"""Slide lists: TRIDENT's ``--custom_list_of_wsis`` and CLAM's process list CSVs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hmil.errors import TilingError
from hmil.slides.tissue import check_mpp


@dataclass(frozen=True)
class SlideEntry:
    """A slide to tile, with an optional microns-per-pixel override (slide-list CSV ``mpp``)."""

    path: Path
    mpp: float | None = None


def read_slide_list(path: str | Path, slides_dir: str | Path | None = None) -> list[SlideEntry]:
    """Slides from a CSV: TRIDENT's ``--custom_list_of_wsis`` (``wsi`` [, ``mpp``]) or CLAM's
    process list (``slide_id`` with the file name [, ``process`` 0/1]).

    File names are resolved against ``slides_dir`` (default: the CSV's folder); rows whose
    ``process`` is 0 are left out.

    Raises:
        HMILError: naming the CSV for a missing file, no slide column, or a bad ``mpp``.
    """
    p = Path(path)
    if not p.is_file():
        raise TilingError(p, "slide list not found")
    try:
        with open(p, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TilingError(p, f"not a readable CSV ({str(exc).splitlines()[0][:160]})") from None
    column = next((c for c in ("wsi", "slide_id", "slide", "path") if c in columns), None)
    if column is None:
        raise TilingError(p, f"no slide column (expected wsi or slide_id; found {columns})")
    base = Path(slides_dir) if slides_dir is not None else p.parent
    entries: list[SlideEntry] = []
    for row_number, raw in enumerate(rows, start=2):
        row = {str(k).strip(): (v or "") for k, v in raw.items() if k is not None}
        name = str(row[column]).strip()
        if not name or str(row.get("process", "1")).strip() in ("0", "0.0"):
            continue
        mpp_text = str(row.get("mpp", "")).strip()
        try:
            mpp = check_mpp(float(mpp_text), f"{p}: row {row_number}") if mpp_text else None
        except ValueError:
            raise TilingError(p, f"row {row_number}: mpp '{mpp_text}' is not a number") from None
        entries.append(SlideEntry(base / name, mpp))
    return entries
