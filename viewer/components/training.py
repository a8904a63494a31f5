"""Training page logic: form → config, splits, detached launches, fold monitoring, stop.

A launch runs ``python -I -u -m hmil train --config RUN/launches/<stamp>.yaml --out RUN ...``
as a detached process (own session, output in ``RUN/launches/<stamp>.log``) so the page stays
responsive and the training survives a page reload or the viewer itself. What is running is
read back from disk only (``RUN/launches.jsonl``, each fold's ``status.json``, lock and
``metrics.jsonl``), so a fold started from the command line shows up the same way. The
``launcher`` section of the config (inline / local / slurm) is honoured by ``hmil train``.

One launch per run at a time: deciding and starting one happens under a claim on the run
(:func:`launch_claim`), so of several sessions submitting at once one starts and the others
are told it is already running. A launch record names its process by pid and start time
(:func:`hmil.procs.record_alive`), so a record of a training that ended never blocks the next,
even once its pid belongs to another process. A launch over folds that already have files
passes ``--resume`` (interrupted folds go on from their last epoch, finished ones are skipped).

Whoever reaches the page may start training, so it runs nobody's code: the "More config" text
may set only the model, loss and train sections and the launcher's resource fields
(:data:`FORM_KEYS`) — never ``launcher.extra``, whose values go into the SLURM job script as
they are (``setup`` entries are shell lines) — and ``hmil`` starts isolated (``-I``: no
``PYTHON*`` variables, neither the working directory nor the user's site-packages on
``sys.path``) in :data:`SAFE_CWD`, so a ``yaml.py`` planted in a run folder is never imported.
Every file the page reads goes through :mod:`viewer.components.paths`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hmil import yamlsafe
from hmil.config import Config
from hmil.errors import ConfigError, RunError
from hmil.hierarchy import PRESETS
from hmil.io import append_jsonl, read_jsonl, write_text_atomic
from hmil.procs import process_record, record_alive
from hmil.train.runs import CONFIG_NAME, fold_paths, list_folds, load_run_config, read_status
from viewer.components.paths import check_hierarchy, check_under_roots, run_file

LAUNCHES = "launches.jsonl"
LAUNCH_DIR = "launches"
#: the claim file (in ``LAUNCH_DIR``) that one launch decision at a time holds
CLAIM = ".claim"
#: how long a launch waits for another one of the same run to be started
CLAIM_WAIT_S = 30.0
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
    """One detached ``hmil train`` process started by the viewer (``resume``: it was given
    ``--resume``, some of its folds already had files)."""

    run: Path
    pid: int
    started: str
    folds: str
    log: Path
    config: Path
    command: tuple[str, ...]
    resume: bool = False


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def launch_training(
    run: Path, config: Config, python: str = sys.executable, extra_args: tuple[str, ...] = ()
) -> Launch:
    """Start ``hmil train`` for ``config`` in a new session, detached from the viewer.

    Under the run's claim (:func:`launch_claim`): refused while a launch of this run is still
    running; ``--resume`` is passed when a fold to train already has files
    (:func:`resume_needed`). The process runs isolated (``python -I``) in :data:`SAFE_CWD`
    (see the module docstring); its output goes to ``RUN/launches/<stamp>.log``; the launch is
    recorded in ``RUN/launches.jsonl`` before the claim is released.

    Raises:
        RunError: a launch of this run is still running, or another one is being started
            and does not finish within :data:`CLAIM_WAIT_S`.
    """
    run.mkdir(parents=True, exist_ok=True)
    with launch_claim(run):
        running = running_launches(run)
        if running:
            raise RunError(run, already_running(running[0]))
        resume = resume_needed(run, config.data.folds)
        if resume and "--resume" not in extra_args:
            extra_args = (*extra_args, "--resume")
        return _start(run, config, python, extra_args, resume)


def _start(
    run: Path, config: Config, python: str, extra_args: tuple[str, ...], resume: bool
) -> Launch:
    """Spawn the process and record it (pid with its start time, read before the reaper
    thread may reap it, and host). A thread reaps the process when it ends (no zombie while
    the viewer lives; after the viewer exits, init reaps it)."""
    folder = run / LAUNCH_DIR
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
    identity = process_record(proc.pid)
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    launch = Launch(
        run=run,
        pid=proc.pid,
        started=_dt.datetime.now().isoformat(timespec="seconds"),
        folds=config.data.folds,
        log=log_path,
        config=config_path,
        command=command,
        resume=resume,
    )
    append_jsonl(
        run / LAUNCHES,
        {
            **identity,
            "host": socket.gethostname(),
            "started": launch.started,
            "folds": launch.folds,
            "resume": resume,
            "log": str(log_path),
            "config": str(config_path),
            "command": list(command),
        },
    )
    return launch


@contextlib.contextmanager
def launch_claim(run: Path, wait_s: float = CLAIM_WAIT_S) -> Iterator[None]:
    """Hold the run's launch claim (``RUN/launches/.claim``) for the block.

    Deciding whether to launch and recording the launch happen under it, so concurrent
    submits (sessions of one server, or several viewers of this machine) see each other's
    launches instead of all starting one. It is an ``flock``: the kernel releases it when the
    descriptor closes, however the holder ends, so a claim is never left stale; separate opens
    exclude each other even between the threads of one process (a server's sessions).

    Raises:
        RunError: the claim file cannot be opened (a symlink is refused), or another launch
            holds the claim for more than ``wait_s``.
    """
    path = run / LAUNCH_DIR / CLAIM
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise RunError(path, f"cannot be opened ({exc.strerror})") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunError(run, "another launch is being started here; try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the claim


def resume_needed(run: Path, folds: str) -> bool:
    """Whether ``hmil train`` must get ``--resume`` for ``folds`` (``"all"`` or ``"0,2"``) of
    ``run``: one of them already has files. Without the flag hmil refuses such a fold; with it
    an interrupted fold goes on from its last finished epoch and a finished one is skipped."""
    try:
        wanted = [int(part) for part in folds.split(",") if part.strip()]
    except ValueError:
        wanted = []
    if not wanted:  # "all": every fold the run has a directory for
        wanted = list_folds(run)
    return any(fold_paths(run, f).started() or fold_paths(run, f).finished() for f in wanted)


def check_launch(run: Path, config: Config) -> None:
    """hmil's own checks of a launch, nothing written (:func:`hmil.train.api.check_run`), so
    the page reports a refusal at once instead of starting a process that exits with it in
    its log: missing splits, a resumed run whose config differs, a fold already running.

    Raises:
        HMILError: what ``hmil train`` would refuse.
    """
    from hmil.train.api import check_run

    check_run(config, run, resume_needed(run, config.data.folds))


def resume_config(run: Path, roots: tuple[Path, ...]) -> Config:
    """The run's own config (``RUN/config.yaml``), to continue its interrupted folds from the
    page: its data paths are checked like the form's (absolute, under the data roots, split
    files included), and a config with ``launcher.extra`` is refused (raw SLURM parameters and
    ``setup`` shell lines: the page runs nobody's code, see the module docstring).

    Raises:
        HMILError: not a run, a path refused, or ``launcher.extra`` set.
    """
    config = load_run_config(run)
    data = config.data
    for key in ("labels", "features", "splits"):
        value = str(getattr(data, key))
        if not Path(value).is_absolute():
            raise RunError(
                run / CONFIG_NAME, f"data.{key} is a relative path; continue it with hmil train"
            )
        check_under_roots(value, roots)
    check_hierarchy(data.hierarchy, roots)
    check_split_files(Path(data.splits), available_folds(data.splits), roots)
    if config.launcher.extra:
        raise RunError(
            run / CONFIG_NAME,
            "sets launcher.extra (SLURM parameters or setup lines), which the viewer never "
            f"runs; continue it with: hmil train --resume --out {run}",
        )
    return config


def continue_run(run: Path, roots: tuple[Path, ...]) -> Launch:
    """Relaunch ``run`` with its own config and ``--resume``: interrupted folds go on from
    their last finished epoch, finished ones are skipped (raises HMILError, see
    :func:`resume_config` and :func:`check_launch`)."""
    config = resume_config(run, roots)
    check_launch(run, config)
    return launch_training(run, config)


def read_launches(run: Path) -> list[dict[str, Any]]:
    """Launch records of ``run`` (newest first): ``pid``, ``started``, ``folds``, ``alive``
    (True/False: whether the launched process still runs; None: launched on another host) and
    ``log`` — the log file, or None when the record names none inside the run (a record
    pointing elsewhere is not followed)."""
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
                "alive": _launch_alive(raw),
                "log": run_file(run, log) if isinstance(log, str) and log else None,
            }
        )
    return records[::-1]


def running_launches(run: Path) -> list[dict[str, Any]]:
    """The launch records of ``run`` whose process still runs on this host (newest first)."""
    return [record for record in read_launches(run) if record["alive"]]


def already_running(record: dict[str, Any]) -> str:
    """The refusal of a launch while ``record``'s training runs."""
    return (
        f"a training is already running here (pid {record['pid']}, launched "
        f"{record['started']}); wait for it to end or stop its folds"
    )


def _launch_alive(raw: dict[str, Any]) -> bool | None:
    """Whether a launch record's process runs: pid and start time on this host (an older
    record without them: the pid runs an ``hmil train``); None for another host's record."""
    host = raw.get("host")
    if host is not None and host != socket.gethostname():
        return None
    return record_alive(raw)


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
    """One row per fold: ``fold, state, status`` (the state in words with the epoch reached:
    why a fold ended before its planned epochs, that an interrupted one can be continued),
    ``epoch`` (epochs done / total), ``best_epoch``, ``best_value``, ``select_metric``, ``eta``,
    ``launcher``, ``job``, ``updated``, ``stop_requested``, ``error``.

    Uses the launcher-aware view of ``hmil status`` (:mod:`hmil.train.launch.status`: local and
    SLURM jobs, queued folds) when it is available, else the folds' own status files.
    """
    try:
        from hmil.train.launch.status import fold_views
    except ImportError:
        return _fold_overview_plain(run)
    rows = []
    for view in fold_views(run):
        rows.append(
            {
                "fold": view.fold,
                "state": view.state,
                "status": view.describe(),
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
                "stop_requested": view.stop_requested,
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
                "status": state,
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
