"""Training page logic: form → config, splits, detached launches, fold monitoring, stop.

A launch runs ``python -I -u -m hmil train --config RUN/launches/<stamp>.yaml --out RUN ...``
as a detached process (own session, output in ``RUN/launches/<stamp>.log``) so the page stays
responsive and the training survives a page reload or the viewer itself. What is running is
read back from disk only (``RUN/launches.jsonl``, each fold's ``status.json``, lock and
``metrics.jsonl``), so a fold started from the command line shows up the same way. The
``launcher`` section of the config (inline / local / slurm) is honoured by ``hmil train``.

Whoever reaches the page may start training, so it runs nobody's code: the "More config" text
may set only the model, loss and train sections and the launcher's resource fields
(:data:`FORM_KEYS`) — never ``launcher.extra``, whose values go into the SLURM job script as
they are (``setup`` entries are shell lines) — and ``hmil`` starts isolated (``-I``: no
``PYTHON*`` variables, neither the working directory nor the user's site-packages on
``sys.path``) in :data:`SAFE_CWD`, so a ``yaml.py`` planted in a run folder is never imported.
Every file the page reads goes through :mod:`viewer.components.paths`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hmil import yamlsafe
from hmil.config import Config
from hmil.errors import ConfigError
from hmil.hierarchy import PRESETS
from hmil.io import append_jsonl, read_jsonl, write_text_atomic
from hmil.procs import pid_alive
from hmil.train.runs import fold_paths, list_folds, read_status
from viewer.components.paths import check_hierarchy, check_under_roots, run_file

LAUNCHES = "launches.jsonl"
LAUNCH_DIR = "launches"
#: working directory of launched trainings: nothing anyone could plant files in
SAFE_CWD = Path(os.path.abspath(os.sep))
#: largest "More config" text accepted
MAX_EXTRA_BYTES = 16 * 1024
#: what "More config" may set: section → allowed keys (None: every key of the section, which
#: :class:`hmil.config.Config` validates). The form's own fields set ``data``.
FORM_LAUNCHER_KEYS = frozenset(
    {"kind", "workers", "threads", "partition", "gpus_per_job", "cpus_per_job", "mem_gb",
     "time_min", "account", "qos"}
)  # fmt: skip
FORM_KEYS: dict[str, frozenset[str] | None] = {
    "model": None,
    "loss": None,
    "train": None,
    "launcher": FORM_LAUNCHER_KEYS,
}


@dataclass
class TrainForm:
    """The training form's values (paths as typed; checked by :func:`checked_paths`).

    Attributes:
        out: run directory to create or continue.
        labels, features, splits: cohort paths.
        hierarchy: preset name or YAML/JSON file.
        folds: fold indices to train (empty = all split files).
        overrides: dotted config keys → values (``train.epochs``, ``train.lr``, ...).
        extra_yaml: further config as YAML text (the keys of :data:`FORM_KEYS`), applied
            before ``overrides``.
    """

    out: str
    labels: str
    features: str
    splits: str
    hierarchy: str
    folds: list[int] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    extra_yaml: str = ""


def checked_paths(form: TrainForm, roots: tuple[Path, ...]) -> dict[str, Path]:
    """Resolve the form's paths, refusing any outside the data roots (PathRefused).

    ``hierarchy`` is in the result when it names a file: anything but a preset name is a file,
    whatever its suffix, and is checked like the other paths.
    """
    out = {
        "out": check_under_roots(form.out, roots),
        "labels": check_under_roots(form.labels, roots),
        "features": check_under_roots(form.features, roots),
        "splits": check_under_roots(form.splits, roots),
    }
    hierarchy = check_hierarchy(form.hierarchy, roots)
    if hierarchy.lower() not in PRESETS:
        out["hierarchy"] = Path(hierarchy)
    return out


def hierarchy_spec(form: TrainForm, paths: dict[str, Path]) -> str:
    """The hierarchy to use: the checked file of :func:`checked_paths`, else the preset name."""
    return str(paths["hierarchy"]) if "hierarchy" in paths else form.hierarchy.strip()


def parse_extra(text: str) -> dict[str, Any]:
    """The "More config" text as a mapping, limited to :data:`FORM_KEYS` (ConfigError)."""
    if not text.strip():
        return {}
    try:
        data = yamlsafe.load(text, max_bytes=MAX_EXTRA_BYTES)
    except yamlsafe.YAMLRefused as exc:
        raise ConfigError("extra config", f"cannot parse YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("extra config", "must be a mapping of sections")
    for section, value in data.items():
        if section not in FORM_KEYS:
            allowed = ", ".join(FORM_KEYS)
            raise ConfigError(
                "extra config",
                f"section '{section}' cannot be set here (allowed: {allowed}; the form's fields "
                "set the data paths)",
            )
        keys = FORM_KEYS[section]
        if keys is not None and isinstance(value, dict):
            refused = sorted(str(k) for k in value if k not in keys)
            if refused:
                raise ConfigError(
                    "extra config",
                    f"'{section}.{refused[0]}' cannot be set from the viewer (allowed in "
                    f"'{section}': {', '.join(sorted(keys))})",
                )
    return data


def build_config(form: TrainForm, paths: dict[str, Path]) -> Config:
    """The run config: defaults ← ``extra_yaml`` ← form fields (raises ConfigError)."""
    base = Config.from_dict(parse_extra(form.extra_yaml), source="extra config")
    hierarchy = hierarchy_spec(form, paths)
    dotted: dict[str, Any] = {
        "data.labels": str(paths["labels"]),
        "data.features": str(paths["features"]),
        "data.splits": str(paths["splits"]),
        "data.hierarchy": hierarchy,
        "data.folds": ",".join(str(f) for f in sorted(form.folds)) if form.folds else "all",
    }
    dotted.update(form.overrides)
    config = base.override(dotted)
    if config.launcher.kind == "slurm":  # partition, account, QOS become #SBATCH lines
        from hmil.train.launch.executors import slurm_parameters

        slurm_parameters(config.launcher, "hmil-check")
    return config


def create_splits(
    labels: Path,
    hierarchy: str,
    out: Path,
    k: int,
    seed: int,
    val_frac: float,
    test_frac: float | None,
) -> list[Path]:
    """Write ``splits_<i>.csv`` for ``k`` folds into ``out`` (same as ``hmil split``)."""
    from hmil.data.labels import read_labels
    from hmil.data.splits import make_splits, write_splits
    from hmil.hierarchy import Hierarchy

    table = read_labels(labels, Hierarchy.resolve(hierarchy))
    return write_splits(make_splits(table, k, seed, val_frac, test_frac), out)


def available_folds(splits_dir: str | Path) -> list[int]:
    """Fold indices that have a ``splits_<k>.csv``."""
    from hmil.data.splits import list_split_files

    try:
        return sorted(list_split_files(splits_dir))
    except Exception:  # a missing or unreadable folder simply has no folds
        return []


def check_split_files(splits_dir: Path, folds: list[int], roots: tuple[Path, ...]) -> None:
    """Refuse (PathRefused) a ``splits_<k>.csv`` of ``folds`` that resolves outside the roots
    (a symlink in the splits folder): the training would read it."""
    from hmil.data.splits import list_split_files

    files = list_split_files(splits_dir)
    for fold in folds:
        if fold in files:
            check_under_roots(files[fold], roots)


@dataclass(frozen=True)
class Launch:
    """One detached ``hmil train`` process started by the viewer."""

    run: Path
    pid: int
    started: str
    folds: str
    log: Path
    config: Path
    command: tuple[str, ...]


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def launch_training(
    run: Path, config: Config, python: str = sys.executable, extra_args: tuple[str, ...] = ()
) -> Launch:
    """Start ``hmil train`` for ``config`` in a new session, detached from the viewer.

    The process runs isolated (``python -I``) in :data:`SAFE_CWD` (see the module docstring);
    its output goes to ``RUN/launches/<stamp>.log``; the launch is recorded in
    ``RUN/launches.jsonl``. A thread reaps the process when it ends (no zombie while the viewer
    lives; after the viewer exits, init reaps it).
    """
    run.mkdir(parents=True, exist_ok=True)
    folder = run / LAUNCH_DIR
    folder.mkdir(exist_ok=True)
    stamp = _stamp()
    config_path = folder / f"{stamp}.yaml"
    log_path = folder / f"{stamp}.log"
    write_text_atomic(config_path, config.to_yaml())
    command = (
        python, "-I", "-u", "-m", "hmil", "train", "--config", str(config_path), "--out",
        str(run), "--folds", config.data.folds, *extra_args,
    )  # fmt: skip
    env = dict(os.environ)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(SAFE_CWD),
            env=env,
        )
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    launch = Launch(
        run=run,
        pid=proc.pid,
        started=_dt.datetime.now().isoformat(timespec="seconds"),
        folds=config.data.folds,
        log=log_path,
        config=config_path,
        command=command,
    )
    append_jsonl(
        run / LAUNCHES,
        {
            "pid": launch.pid,
            "started": launch.started,
            "folds": launch.folds,
            "log": str(log_path),
            "config": str(config_path),
            "command": list(command),
        },
    )
    return launch


def read_launches(run: Path) -> list[dict[str, Any]]:
    """Launch records of ``run`` (newest first): ``pid``, ``started``, ``folds``, ``alive``
    (process still running) and ``log`` — the log file, or None when the record names none
    inside the run (a record pointing elsewhere is not followed)."""
    path = run_file(run, run / LAUNCHES)
    records = []
    for raw in read_jsonl(path) if path is not None else []:
        if not isinstance(raw, dict):
            continue
        log = raw.get("log")
        records.append(
            {
                "pid": raw.get("pid"),
                "started": str(raw.get("started", "")),
                "folds": str(raw.get("folds", "")),
                "alive": pid_alive(raw.get("pid")),
                "log": run_file(run, log) if isinstance(log, str) and log else None,
            }
        )
    return records[::-1]


def log_tail(path: Path | None, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a launch log (progress bars' carriage returns as newlines);
    '' for None or an unreadable file."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-30:])


def fold_overview(run: Path) -> pd.DataFrame:
    """One row per fold: ``fold, state, epoch`` (epochs done / total), ``best_epoch``,
    ``best_value``, ``select_metric``, ``eta``, ``launcher``, ``job``, ``updated``,
    ``stop_requested``, ``error``.

    Uses the launcher-aware view of ``hmil status`` (:mod:`hmil.train.launch.status`: local and
    SLURM jobs, queued folds) when it is available, else the folds' own status files.
    """
    try:
        from hmil.train.launch.status import fold_views
    except ImportError:
        return _fold_overview_plain(run)
    rows = []
    for view in fold_views(run):
        paths = fold_paths(run, view.fold)
        rows.append(
            {
                "fold": view.fold,
                "state": view.state,
                "epoch": f"{view.epochs_done}/{view.epochs}"
                if view.epochs
                else str(view.epochs_done),
                "best_epoch": view.best_epoch,
                "best_value": _finite(view.best_value),
                "select_metric": view.select_metric,
                "eta": format_eta(view.eta_s) if view.state == "running" else "",
                "launcher": view.launcher,
                "job": view.job_id,
                "updated": view.updated,
                "stop_requested": paths.stop_request.is_file(),
                "error": view.error,
            }
        )
    return pd.DataFrame(rows)


def _fold_overview_plain(run: Path) -> pd.DataFrame:
    rows = []
    for fold in list_folds(run):
        paths = fold_paths(run, fold)
        status = read_status(paths)
        done = int(status.get("epochs_done") or 0)
        total = status.get("epochs")
        eta = status.get("eta_s")
        state = str(status.get("state", "pending"))
        rows.append(
            {
                "fold": fold,
                "state": state,
                "epoch": f"{done}/{total}" if total else str(done),
                "best_epoch": status.get("best_epoch"),
                "best_value": _finite(status.get("best_value")),
                "select_metric": status.get("select_metric", ""),
                "eta": format_eta(eta) if state == "running" else "",
                "updated": status.get("updated", ""),
                "stop_requested": paths.stop_request.is_file(),
            }
        )
    return pd.DataFrame(rows)


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return round(out, 4) if out == out and abs(out) != float("inf") else None


def format_eta(seconds: Any) -> str:
    """``"3 min 20 s"`` / ``"45 s"`` / ``""`` when unknown."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return ""
    if s != s or s < 0 or s == float("inf"):
        return ""
    minutes, sec = divmod(int(round(s)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {sec} s"
    return f"{sec} s"


def training_curves(run: Path, folds: list[int] | None = None) -> pd.DataFrame:
    """Long table of per-epoch curves from ``metrics.jsonl``: columns ``fold, epoch, series,
    value, kind``; series ``train loss``, ``val loss`` (kind loss) and ``val fine bal. acc``,
    ``val fine AUC``, ``val coarse bal. acc`` (kind metric)."""
    rows: list[dict[str, Any]] = []
    for fold in folds if folds is not None else list_folds(run):
        metrics = run_file(run, fold_paths(run, fold).metrics)
        for record in read_jsonl(metrics) if metrics is not None else []:
            epoch = record.get("epoch")
            val = record.get("val") or {}
            series = {
                ("train loss", "loss"): (record.get("train") or {}).get("loss"),
                ("val loss", "loss"): val.get("loss"),
                ("val fine bal. acc", "metric"): (val.get("fine") or {}).get("balanced_accuracy"),
                ("val fine AUC", "metric"): (val.get("fine") or {}).get("macro_auc"),
                ("val coarse bal. acc", "metric"): (val.get("coarse") or {}).get(
                    "balanced_accuracy"
                ),
            }
            for (name, kind), value in series.items():
                v = _finite(value)
                if v is not None:
                    rows.append(
                        {"fold": fold, "epoch": epoch, "series": name, "value": v, "kind": kind}
                    )
    return pd.DataFrame(rows, columns=["fold", "epoch", "series", "value", "kind"])


def request_stop(run: Path, fold: int) -> Path:
    """Touch ``RUN/fold_<k>/STOP``; the trainer stops after its current epoch and evaluates."""
    path = fold_paths(run, fold).stop_request
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"requested": _dt.datetime.now().isoformat()}) + "\n")
    return path
