"""Reading run directories for the viewer: discovery, per-slide tables, where files are.

Pure functions of paths (no Streamlit), so they are unit-tested directly; the pages call them
through the cached wrappers in :mod:`viewer.components.cached_ui`, keyed by file signatures so that
a fold finishing on disk shows up on the next rerun.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hmil.config import Config
from hmil.errors import HMILError, RunError
from hmil.hierarchy import Hierarchy
from hmil.train.runs import fold_paths, list_folds
from viewer.core.paths import check_hierarchy, is_under, run_file

#: slide file suffixes looked for beside a cohort (lower case; ``.ome.tiff`` handled apart)
SLIDE_SUFFIXES = (".tiff", ".tif", ".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide")
#: the demo's ground-truth lesion mask name
LESION_MASK = "{slide_id}_lesion.png"


def file_signature(paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """``(path, mtime_ns, size)`` per existing file: a cache key that changes with the files."""
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def discover_runs(roots: Iterable[Path], max_depth: int = 3, limit: int = 200) -> list[Path]:
    """Run directories (folders holding ``config.yaml``) at most ``max_depth`` below a root.

    Only folders are walked (``os.scandir``), and nothing below a run is searched, so a
    features folder with thousands of bags costs one listing.
    """
    found: dict[Path, None] = {}
    for root in roots:
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack and len(found) < limit:
            folder, depth = stack.pop()
            if is_run_dir(folder):
                found.setdefault(folder, None)
                continue
            if depth >= max_depth:
                continue
            try:
                entries = sorted(
                    (e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)),
                    key=lambda e: e.name,
                    reverse=True,
                )
            except OSError:
                continue
            stack += [(Path(e.path), depth + 1) for e in entries if not e.name.startswith(".")]
    return sorted(found)


@dataclass(frozen=True)
class RunInfo:
    """What the pages need to know about a run (all paths absolute).

    Attributes:
        run: the run directory.
        hierarchy: the label tree of the run.
        labels: label table path ('' if the config names none).
        features: bag folder.
        splits: splits folder.
        folds: fold indices with a ``fold_<k>`` folder.
        config: the resolved config as a plain dict.
    """

    run: Path
    hierarchy: Hierarchy
    labels: str
    features: str
    splits: str
    folds: tuple[int, ...]
    config: dict[str, Any]


def read_run_config(run: Path) -> Config:
    """``RUN/config.yaml`` (like :func:`hmil.train.api.load_run_config`, without importing the
    training stack, which costs seconds on first use).

    Raises:
        RunError: no config.yaml; ConfigError: a malformed one.
    """
    path = run_file(run, Path(run) / "config.yaml")
    if path is None:  # missing, or a symlink leading out of the run
        raise RunError(run, "not a run directory (no config.yaml)")
    return Config.from_file(path)


def load_run_info(run: Path, roots: Iterable[Path] | None = None) -> RunInfo:
    """Read ``RUN/config.yaml`` and the fold list.

    With ``roots``, a hierarchy that is not a preset name is a file and must lie under them,
    whatever its suffix.

    Raises:
        HMILError: not a run directory, a malformed config, an unknown hierarchy, or
            (:class:`PathRefused`) a hierarchy file outside the roots.
    """
    config = read_run_config(run)
    spec = config.data.hierarchy
    if roots is not None:
        spec = check_hierarchy(spec, roots)
    hierarchy = Hierarchy.resolve(spec)
    return RunInfo(
        run=run,
        hierarchy=hierarchy,
        labels=config.data.labels,
        features=config.data.features,
        splits=config.data.splits,
        folds=tuple(list_folds(run)),
        config=config.to_dict(),
    )


def run_files(run: Path) -> list[Path]:
    """Files whose change means the run's tables must be re-read."""
    files = [run / "config.yaml", run / "summary.json"]
    for fold in list_folds(run):
        paths = fold_paths(run, fold)
        files += [paths.predictions, paths.test_metrics, paths.checkpoint]
    return files


def load_predictions(run: Path) -> pd.DataFrame:
    """All folds' ``predictions.csv`` stacked, with a ``fold`` column (empty frame if none).

    Adds ``confidence_coarse`` (probability of the predicted coarse class, Mᵀ p_f) beside the
    file's ``confidence`` (probability of the predicted fine class), renamed
    ``confidence_fine``, so filters can work on either level.
    """
    frames = []
    for fold in list_folds(run):
        path = run_file(run, fold_paths(run, fold).predictions)
        if path is not None:
            frame = pd.read_csv(path, dtype={"slide_id": str})
            frame.insert(1, "fold", fold)
            frames.append(frame)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df = df.rename(columns={"confidence": "confidence_fine"})
    df["confidence_coarse"] = [
        float(row[f"p_coarse_{row['pred_coarse']}"]) for _, row in df.iterrows()
    ]
    for col in ("consistent", "correct_fine", "correct_coarse"):
        if col in df:
            df[col] = df[col].astype(str).str.lower().isin(("true", "1"))
    return df


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when missing or unreadable; NaN/Infinity accepted)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def fold_test_metrics(run: Path) -> dict[int, dict[str, Any]]:
    """``fold -> test_metrics.json`` for every finished fold."""
    out = {}
    for fold in list_folds(run):
        path = run_file(run, fold_paths(run, fold).test_metrics)
        if path is not None:
            out[fold] = load_json(path)
    return out


def run_summary(run: Path) -> dict[str, Any]:
    """``RUN/summary.json`` ({} when missing, unreadable or leading out of the run)."""
    path = run_file(run, Path(run) / "summary.json")
    return load_json(path) if path is not None else {}


def slide_table(
    info: RunInfo, predictions: pd.DataFrame, roots: Iterable[Path] | None = None
) -> pd.DataFrame:
    """One row per labelled slide of the run: truth, the fold that tested it and its prediction.

    Columns: ``slide_id, true_fine, true_coarse, fold`` (-1 when no finished fold tested it),
    ``pred_fine, pred_coarse, confidence_fine, correct_fine, confidence_coarse,
    correct_coarse, consistent``. A slide tested by
    several folds (Monte-Carlo splits) keeps its first fold. The label table is read only when
    it lies under ``roots`` (if given); otherwise the table lists the tested slides only.
    """
    from hmil.data.labels import read_labels

    h = info.hierarchy
    readable = roots is None or (bool(info.labels) and is_under(info.labels, roots))
    if readable and info.labels and Path(info.labels).is_file():
        try:
            labels = read_labels(info.labels, h)
        except HMILError:
            labels = pd.DataFrame(columns=["slide_id", "label"])
        base = pd.DataFrame(
            {
                "slide_id": labels["slide_id"].astype(str),
                "true_fine": labels["label"].astype(str),
            }
        )
        base["true_coarse"] = [h.parent_of(f) if f in h.fine else "" for f in base["true_fine"]]
    elif not predictions.empty:
        base = predictions[["slide_id", "true_fine", "true_coarse"]].drop_duplicates("slide_id")
    else:
        base = pd.DataFrame(columns=["slide_id", "true_fine", "true_coarse"])
    keep = ["slide_id", "fold", "pred_fine", "pred_coarse", "confidence_fine", "correct_fine"]
    keep += ["confidence_coarse", "correct_coarse", "consistent"]
    keep = [c for c in keep if predictions.empty or c in predictions.columns]
    if not predictions.empty:
        preds = predictions[keep].drop_duplicates("slide_id")
        table = base.merge(preds, on="slide_id", how="left")
    else:
        table = base.assign(**{c: None for c in keep[1:]})
    table["fold"] = table["fold"].fillna(-1).astype(int)
    return table.reset_index(drop=True)


def slide_option_label(row: pd.Series) -> str:
    """``id — true N (benign) → pred UDH 0.42 ✗`` for the slide picker (searchable text)."""
    text = f"{row['slide_id']} — true {row['true_fine']} ({row['true_coarse']})"
    if isinstance(row.get("pred_fine"), str):
        mark = "✓" if bool(row.get("correct_fine")) else "✗"
        text += f" → pred {row['pred_fine']} {float(row['confidence_fine']):.2f} {mark}"
        if row.get("consistent") is False:
            text += " ⚠ inconsistent"
    else:
        text += " (not in a finished test fold)"
    return text


def cohort_dirs(info: RunInfo, data_roots: Iterable[Path] = ()) -> list[Path]:
    """Folders that may hold ``slides/`` and ``masks/`` of the run's cohort: beside the label
    table, beside the features folder, and the operator's ``--data-root`` folders."""
    out: list[Path] = []
    if info.labels:
        out.append(Path(info.labels).parent)
    if info.features:
        out.append(Path(info.features).parent)
    out += list(data_roots)
    seen: dict[Path, None] = {}
    for p in out:
        seen.setdefault(p, None)
    return list(seen)


def find_slide_file(slide_id: str, folders: Iterable[Path]) -> Path | None:
    """``<folder>/slides/<id>.<ext>`` or ``<folder>/<id>.<ext>`` (first match), or None."""
    for folder in folders:
        for sub in (folder / "slides", folder):
            if not sub.is_dir():
                continue
            for suffix in (*SLIDE_SUFFIXES, ".ome.tiff", ".ome.tif"):
                candidate = sub / f"{slide_id}{suffix}"
                if candidate.is_file():
                    return candidate
    return None


def find_lesion_mask(slide_id: str, folders: Iterable[Path]) -> Path | None:
    """The demo's ground-truth ``masks/<id>_lesion.png`` when one exists."""
    for folder in folders:
        candidate = folder / "masks" / LESION_MASK.format(slide_id=slide_id)
        if candidate.is_file():
            return candidate
    return None


def find_bag_file(info: RunInfo, slide_id: str) -> Path | None:
    from hmil.data.bags import find_bag

    if not info.features:
        return None
    return find_bag(info.features, slide_id)


def is_synthetic(info: RunInfo) -> bool:
    """True when the run's cohort says it is SYNTHETIC (a ``README_SYNTHETIC.txt`` beside the
    labels or features, a demo ``cohort.json``, or the ``synthetic`` encoder)."""
    if str(info.config.get("data", {}).get("encoder", "")).lower().startswith("synthetic"):
        return True
    return any((folder / "README_SYNTHETIC.txt").is_file() for folder in cohort_dirs(info))


def run_checkpoints(run: Path) -> dict[int, Path]:
    """``fold -> checkpoint.pt`` for folds that have one inside the run (not a link out)."""
    out = {}
    for fold in list_folds(run):
        ckpt = fold_paths(run, fold).checkpoint
        if run_file(run, ckpt) is not None:
            out[fold] = ckpt
    return out


def list_checkpoints(runs: Iterable[Path], extra: Iterable[Path] = ()) -> list[Path]:
    """Checkpoints the upload mode can use: every fold of ``runs`` plus ``extra`` files and the
    ``*.pt`` files in ``extra`` folders (one level, e.g. ``checkpoints/demo``)."""
    found: dict[Path, None] = {}
    for run in runs:
        for ckpt in run_checkpoints(run).values():
            found.setdefault(ckpt, None)
    for item in extra:
        if item.is_file() and item.suffix == ".pt":
            found.setdefault(item, None)
        elif item.is_dir():
            for sub in sorted(item.glob("*/checkpoint.pt")) + sorted(item.glob("*.pt")):
                if run_file(item, sub) is not None:  # no link out of the folder
                    found.setdefault(sub, None)
    return list(found)
