"""What the slide page looks up before it draws anything (pure functions of paths and arrays).

Where a slide's file and lesion mask are, whether the bag's coordinates fit the slide, which
fold checkpoint to show first, which label to colour, which slides a search matches. The
widgets in :mod:`viewer.components.slide_pick_ui` and :mod:`viewer.components.deepzoom_ui` only
call these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from viewer.core import runs
from viewer.core.inference import SlideResult
from viewer.core.paths import is_under

#: slide files listed for "a slide file alone", at most this many (found under the data roots)
MAX_SLIDE_FILES = 500
#: folders below a data root searched for slide files
SLIDE_SEARCH_DEPTH = 3


def locate_slide(
    slide_id: str, folders: Sequence[Path], roots: Iterable[Path]
) -> tuple[Path | None, str]:
    """The slide file of ``slide_id`` beside the cohort, or None with the reason."""
    found = runs.find_slide_file(slide_id, list(folders))
    if found is None:
        return None, "no slide file found beside the cohort (slides/<id>.*)"
    if not is_under(found, roots):
        return None, f"slide file {found} is outside the data roots"
    return found, ""


def locate_mask(slide_id: str, folders: Sequence[Path], roots: Iterable[Path]) -> Path | None:
    """The ground-truth lesion mask of ``slide_id`` when one exists under the roots."""
    mask = runs.find_lesion_mask(slide_id, list(folders))
    return mask if mask is not None and is_under(mask, roots) else None


def coords_problem(coords: np.ndarray | None, dimensions: tuple[int, int]) -> str:
    """Why the bag's ``(N, 2)`` coordinates cannot be drawn on a ``(w, h)`` slide ('' if
    they fit)."""
    if coords is None or len(coords) == 0:
        return ""
    w, h = dimensions
    cmax = coords.max(axis=0)
    if cmax[0] >= w or cmax[1] >= h or coords.min() < 0:
        return f"the bag's coordinates reach {tuple(int(v) for v in cmax)} beyond the {w}×{h} slide"
    return ""


def default_fold(test_fold: int, folds: Sequence[int]) -> int:
    """The fold whose test set held the slide (an out-of-sample prediction), else the first."""
    return test_fold if test_fold in folds else folds[0]


def default_label(result: SlideResult, level: str) -> str:
    """The predicted class of ``level``: what a pathologist looks at first."""
    return result.coarse_pred if level == "coarse" else result.fine_pred


def matching_slides(labels: Mapping[str, str], search: str) -> list[str]:
    """Slide ids whose option text contains ``search`` (case-insensitive); all when none do."""
    needle = search.strip().lower()
    hits = [sid for sid, text in labels.items() if needle in text.lower()]
    return hits or list(labels)


def inspect_options(top: Sequence[int], current: int | None, n: int) -> list[int | None]:
    """Choices of the "Inspect patch" box: none, the top-k, and a patch clicked on the view."""
    options: list[int | None] = [None, *top]
    if current is not None and 0 <= int(current) < n and int(current) not in options:
        options.append(int(current))
    return options


#: the slide lists the slide page steps through (next / previous), by name
BROWSE_LISTS = {
    "all": "all slides",
    "wrong_fine": "misclassified (fine)",
    "wrong_coarse": "misclassified (coarse)",
    "cohort": "from the cohort page",
}


def browse_ids(table: pd.DataFrame, which: str, cohort_ids: Sequence[str] = ()) -> list[str]:
    """Slide ids of one browse list, in stepping order.

    ``all``: the run's slides in table order; ``wrong_fine`` / ``wrong_coarse``: the slides a
    finished fold got wrong at that level, most confident first (the cohort page's order);
    ``cohort``: the ids the cohort page listed, those the run knows.
    """
    if table.empty:
        return []
    if which in ("wrong_fine", "wrong_coarse"):
        level = which.removeprefix("wrong_")
        correct, confidence = f"correct_{level}", f"confidence_{level}"
        if correct not in table or "pred_fine" not in table:
            return []
        tested = table[table["pred_fine"].map(lambda v: isinstance(v, str))]
        wrong = tested[~tested[correct].astype(bool)]
        wrong = wrong.sort_values(confidence, ascending=False, kind="stable")
        return [str(s) for s in wrong["slide_id"]]
    ids = [str(s) for s in table["slide_id"]]
    if which == "cohort":
        known = set(ids)
        return [s for s in dict.fromkeys(cohort_ids) if s in known]
    return ids


def neighbour(ids: Sequence[str], current: str | None, step: int) -> str | None:
    """The id ``step`` places from ``current`` in ``ids`` (None past either end); a current id
    that is not in the list steps to the list's first (or last) slide."""
    if not ids:
        return None
    if current is None or current not in ids:
        return ids[0] if step > 0 else ids[-1]
    index = list(ids).index(current) + step
    return ids[index] if 0 <= index < len(ids) else None


def model_labels(paths: Sequence[str], roots: Sequence[Path]) -> dict[str, str]:
    """Each checkpoint's name for people (its model card's title, or ``<run> · fold k``);
    names that two checkpoints share get the checkpoint's place under its data root, so no
    two options read the same."""
    from hmil.model_info import model_display_name

    names = {p: model_display_name(p) for p in paths}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        p: name if counts[name] == 1 else f"{name} ({short_path(str(Path(p).parent), roots)})"
        for p, name in names.items()
    }


def slide_files(roots: Sequence[Path]) -> list[Path]:
    """Slide files under the data roots (a few folders deep), at most
    :data:`MAX_SLIDE_FILES`, sorted."""
    suffixes = {*runs.SLIDE_SUFFIXES, ".png", ".jpg", ".jpeg"}
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack and len(found) < MAX_SLIDE_FILES:
            folder, depth = stack.pop()
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir() and depth < SLIDE_SEARCH_DEPTH:
                    stack.append((entry, depth + 1))
                elif entry.suffix.lower() in suffixes and entry.is_file():
                    found.add(entry)
    return sorted(p for p in found if is_under(p, roots))[:MAX_SLIDE_FILES]


def short_path(path: str, roots: Sequence[Path]) -> str:
    """``path`` for people: ``<root name>/<path under it>`` for the first data root it lies
    under, else its file name."""
    p = Path(path)
    for root in roots:
        if p != root and p.is_relative_to(root):
            return f"{root.name}/{p.relative_to(root)}"
    return p.name
