"""Sections of the training page: the launch form and the live fold monitor.

Widget keys: ``tr_out``, ``tr_labels``, ``tr_features``, ``tr_splits``, ``tr_hierarchy``,
``tr_mk_splits``, ``tr_k``, ``tr_val``, ``tr_test``, ``tr_split_seed``, ``tr_folds``,
``tr_epochs``, ``tr_lr``, ``tr_bps``, ``tr_seed``, ``tr_device``, ``tr_select``, ``tr_early``,
``tr_maxinst``, ``tr_launcher``, ``tr_workers``, ``tr_extra``, ``tr_submit`` (the form);
``tr_monitor``, ``tr_stop_<fold>``, ``tr_continue`` (the monitor). Non-widget: ``tr_message``,
``tr_continue_message``.

Each widget's default is set once, in the session state (:func:`_form_defaults`), never also in
the widget call: the page's values are written back to the session state on every run (kept
across pages, ``shell_ui.restore``), and Streamlit logs a warning with a stack trace for a widget
given a value both ways.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from hmil.config import SELECT_METRICS
from hmil.errors import ConfigError, HMILError, RunError, SplitError
from viewer.components import cached_ui, shell_ui
from viewer.core import charts, fold_table, launches, train_form
from viewer.core.train_form import TrainForm
from viewer.state import ViewerSettings

if TYPE_CHECKING:
    import pandas as pd
    from streamlit.delta_generator import DeltaGenerator

PERSISTENT_KEYS = (
    "tr_out", "tr_labels", "tr_features", "tr_splits", "tr_hierarchy", "tr_mk_splits", "tr_k",
    "tr_val", "tr_test", "tr_split_seed", "tr_folds", "tr_epochs", "tr_lr", "tr_bps", "tr_seed",
    "tr_device", "tr_select", "tr_early", "tr_maxinst", "tr_launcher", "tr_workers", "tr_extra",
    "tr_monitor",
)  # fmt: skip
REFRESH_S = 2.0
#: defaults of the fields that keep their value when another run is chosen
STICKY_DEFAULTS: dict[str, object] = {
    "tr_mk_splits": False,
    "tr_k": 5,
    "tr_val": 0.1,
    "tr_test": 0.0,
    "tr_split_seed": 0,
    "tr_launcher": "inline",
    "tr_workers": 1,
    "tr_extra": "",
}


def default_out(cfg: ViewerSettings) -> str:
    """Where a new run goes by default: ``<first data root or demo folder>/runs/run-<time>``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    bases = list(cfg.data_roots)
    bases += [r for r in cfg.roots if r.name == "hmil-demo" and r.is_dir()]
    if bases:
        return str(bases[0] / "runs" / f"run-{stamp}")
    if cfg.run is not None:
        return str(cfg.run.parent / f"{cfg.run.name}-{stamp}")
    return f"runs/run-{stamp}"


def _form_defaults(cfg: ViewerSettings, run: Path | None) -> None:
    """The form's defaults, set in the session state only (see the module docstring): the
    run-dependent fields again whenever another run is chosen, the others once."""
    state = st.session_state
    for key, value in STICKY_DEFAULTS.items():
        if key not in state:
            state[key] = value
    if state.get("tr_defaults_for") == str(run) and "tr_out" in state:
        return
    state["tr_defaults_for"] = str(run)
    data, train = {}, {}
    if run is not None:
        try:
            info, _, _ = cached_ui.run_tables(run, cfg.roots)
            data, train = info.config.get("data", {}), info.config.get("train", {})
        except HMILError:
            pass
    state["tr_out"] = default_out(cfg)
    state["tr_labels"] = data.get("labels", "")
    state["tr_features"] = data.get("features", "")
    state["tr_splits"] = data.get("splits", "")
    state["tr_hierarchy"] = data.get("hierarchy", "bracs")
    state["tr_folds"] = "all"
    state["tr_epochs"] = int(train.get("epochs", 20))
    state["tr_lr"] = float(train.get("lr", 1e-4))
    state["tr_bps"] = int(train.get("bags_per_step", 64))
    state["tr_seed"] = int(train.get("seed", 0))
    state["tr_device"] = str(train.get("device", "auto"))
    state["tr_select"] = str(train.get("select_metric", "fine_auc"))
    state["tr_early"] = int(train.get("early_stop_patience", 0))
    state["tr_maxinst"] = int(train.get("max_instances", 0))


def launch_form(cfg: ViewerSettings, run: Path | None) -> None:
    """The form; on submit: check paths, make splits if asked, launch, remember the run."""
    _form_defaults(cfg, run)
    state = st.session_state
    if not cfg.data_roots and not any(r.name == "hmil-demo" and r.is_dir() for r in cfg.roots):
        st.info(
            "New runs must be written below a data root. Start the viewer with "
            "`hmil view --data-root DIR` to choose where."
        )
    with st.form("train_form"):
        st.text_input("Run directory (created or continued)", key="tr_out")
        cols: Sequence[DeltaGenerator] = st.columns(2)
        cols[0].text_input("Label table (labels.csv)", key="tr_labels")
        cols[1].text_input("Features folder (bags)", key="tr_features")
        cols = st.columns(2)
        cols[0].text_input("Splits folder (splits_<k>.csv)", key="tr_splits")
        cols[1].text_input(
            "Hierarchy", key="tr_hierarchy", help="preset (bracs, panda, ccc) or a YAML/JSON file"
        )
        with st.expander("Create splits in the splits folder", expanded=False):
            st.checkbox("Create new splits before training", key="tr_mk_splits")
            cols = st.columns(4)
            cols[0].number_input("Folds k", 1, 50, key="tr_k")
            cols[1].number_input("Validation fraction", 0.0, 0.9, step=0.05, key="tr_val")
            cols[2].number_input("Test fraction (0 = k-fold)", 0.0, 0.9, step=0.05, key="tr_test")
            cols[3].number_input("Split seed", 0, 2**31 - 1, key="tr_split_seed")
        cols = st.columns(4)
        cols[0].text_input("Folds", key="tr_folds", help="'all' or e.g. 0,1")
        cols[1].number_input("Epochs", 1, 10000, key="tr_epochs")
        cols[2].number_input("Learning rate", 1e-7, 1.0, key="tr_lr", format="%.2e")
        cols[3].number_input("Bags per step", 1, 4096, key="tr_bps")
        cols = st.columns(4)
        cols[0].number_input("Seed", 0, 2**31 - 1, key="tr_seed")
        cols[1].selectbox("Device", ["auto", "cpu", "cuda"], key="tr_device")
        cols[2].selectbox("Select best epoch by", list(SELECT_METRICS), key="tr_select")
        cols[3].number_input("Early-stop patience (0 = off)", 0, 10000, key="tr_early")
        cols = st.columns(4)
        cols[0].number_input("Max instances per bag (0 = all)", 0, 10**8, key="tr_maxinst")
        cols[1].selectbox(
            "Launcher",
            ["inline", "local", "slurm"],
            key="tr_launcher",
            help="inline: one background process trains the folds in turn; local: one process "
            "per fold; slurm: one SLURM job per fold (launcher section of the config)",
        )
        cols[2].number_input("Local workers", 1, 64, key="tr_workers")
        st.text_area(
            "More config (YAML: model, loss, train, launcher resources)",
            key="tr_extra",
            height=100,
            max_chars=train_form.MAX_EXTRA_BYTES,
            placeholder="model:\n  hidden_dim: 128\nloss:\n  schedule: quadratic",
            help="Sections model, loss and train, and the launcher's "
            f"{', '.join(sorted(train_form.FORM_LAUNCHER_KEYS))}. launcher.extra (raw SLURM "
            "parameters and setup lines) and the data paths cannot be set here.",
        )
        submitted = st.form_submit_button("Launch training", key="tr_submit", type="primary")
    if submitted:
        state["tr_message"] = _submit(cfg)
        if state["tr_message"][0] == "ok":
            st.rerun()  # redraw the monitor (above the form) on the new run
    message = state.get("tr_message")
    if message:
        kind, text = message
        (st.success if kind == "ok" else st.error)(text)


def _submit(cfg: ViewerSettings) -> tuple[str, str]:
    state = st.session_state
    try:
        folds = train_form.parse_folds(str(state["tr_folds"]))
        form = TrainForm(
            out=str(state["tr_out"]),
            labels=str(state["tr_labels"]),
            features=str(state["tr_features"]),
            splits=str(state["tr_splits"]),
            hierarchy=str(state["tr_hierarchy"]),
            folds=folds,
            overrides={
                "train.epochs": int(state["tr_epochs"]),
                "train.lr": float(state["tr_lr"]),
                "train.bags_per_step": int(state["tr_bps"]),
                "train.seed": int(state["tr_seed"]),
                "train.device": str(state["tr_device"]),
                "train.select_metric": str(state["tr_select"]),
                "train.early_stop_patience": int(state["tr_early"]),
                "train.max_instances": int(state["tr_maxinst"]),
                "launcher.kind": str(state["tr_launcher"]),
                "launcher.workers": int(state["tr_workers"]),
            },
            extra_yaml=str(state.get("tr_extra", "")),
        )
        paths = train_form.checked_paths(form, cfg.roots)
        busy = launches.running_launches(paths["out"])
        if (
            busy
        ):  # before any split is written; start_training_process checks again, under its claim
            raise RunError(paths["out"], launches.already_running(busy[0]))
        if state.get("tr_mk_splits"):
            if train_form.available_folds(paths["splits"]):
                raise SplitError(
                    paths["splits"],
                    "already holds splits; untick 'create new splits' to use them, or give "
                    "another folder",
                )
            test = float(state["tr_test"]) or None
            train_form.create_splits(
                paths["labels"], train_form.hierarchy_spec(form, paths), paths["splits"],
                int(state["tr_k"]), int(state["tr_split_seed"]), float(state["tr_val"]), test,
            )  # fmt: skip
        available = train_form.available_folds(paths["splits"])
        if not available:
            raise SplitError(paths["splits"], "no splits_<k>.csv here (tick 'create new splits')")
        missing = [f for f in folds if f not in available]
        if missing:
            raise ConfigError("folds", f"no split for fold(s) {missing} (available: {available})")
        train_form.check_split_files(paths["splits"], folds or available, cfg.roots)
        config = train_form.build_config(form, paths)
        launches.check_launch(paths["out"], config)
        launch = launches.start_training_process(paths["out"], config)
    except HMILError as exc:
        return "error", str(exc)
    cached_ui.discover_runs.clear()
    state["tr_monitor_next"] = str(launch.run)
    return "ok", f"Started training of fold(s) {launch.folds} in {_started(launch)}"


def _started(launch: launches.Launch) -> str:
    """The rest of a started launch's message: where, its pid and log, and whether it resumes."""
    resumed = (
        " It resumes the run: interrupted folds go on from their last epoch, finished ones are "
        "skipped."
        if launch.resume
        else ""
    )
    return (
        f"{launch.run} (pid {launch.pid}); log: {launch.log}.{resumed} It keeps running if you "
        "close or reload the page."
    )


def monitor_run_picker(cfg: ViewerSettings, run: Path | None) -> Path | None:
    options = [str(r) for r in shell_ui.known_runs(cfg)]
    state = st.session_state
    if state.get("tr_monitor_next"):
        state["tr_monitor"] = state.pop("tr_monitor_next")
    wanted = state.get("tr_monitor") or (str(run) if run else None)
    if wanted and wanted not in options:
        options.insert(0, wanted)
    if not options:
        st.info("No run found under the data roots yet.")
        return None
    if state.get("tr_monitor") not in options:
        state["tr_monitor"] = wanted if wanted in options else options[0]
    chosen = st.selectbox("Run to follow", options, key="tr_monitor")
    return Path(chosen) if chosen else None


def monitor(run: Path, roots: tuple[Path, ...]) -> None:
    """Fold states, ETA, stop and continue buttons, curves and launch logs of ``run`` (read
    from disk); ``roots``: the data roots a continued run's paths must lie under."""
    overview = fold_table.fold_overview(run)
    if overview.empty:
        st.info(f"{run}: no fold has started yet.")
    else:
        st.dataframe(overview, hide_index=True, key="tr_overview")
        running = overview[overview["state"].isin(["running", "queued"])]
        if not running.empty:
            cols = st.columns(min(6, len(running)))
            for col, fold in zip(cols, running["fold"], strict=False):
                stopping = bool(overview.loc[overview["fold"] == fold, "stop_requested"].iloc[0])
                col.button(
                    f"Stop fold {fold}" if not stopping else f"fold {fold}: stopping…",
                    key=f"tr_stop_{fold}",
                    on_click=_request_stop,
                    args=(run, int(fold)),
                    disabled=stopping,
                    help="Stops after the current epoch and evaluates the best checkpoint.",
                )
        _continue_button(run, roots, overview)
        curves = fold_table.training_curves(run)
        if not curves.empty:
            st.plotly_chart(
                charts.curves_figure(curves, "loss and validation curves per fold"),
                key="tr_curves",
            )
    for record in launches.read_launches(run)[:5]:
        state = {True: "running", False: "ended", None: "on another host"}[record["alive"]]
        with st.expander(f"launch {record['started']} · folds {record['folds']} · pid "
                         f"{record['pid']} · {state}"):  # fmt: skip
            if record["log"] is None:
                st.text("(the record names no log file inside this run)")
            else:
                st.text(launches.log_tail(record["log"]) or "(no output yet)")


def _continue_button(run: Path, roots: tuple[Path, ...], overview: pd.DataFrame) -> None:
    """Offer to resume the run when a fold is interrupted, with the outcome of the last try."""
    interrupted = [str(f) for f in overview.loc[overview["state"] == "interrupted", "fold"]]
    if interrupted:
        st.button(
            f"Continue the run: resume fold(s) {', '.join(interrupted)}",
            key="tr_continue",
            on_click=_continue,
            args=(run, roots),
            help="Starts hmil train --resume with the run's own config: interrupted folds go "
            "on from their last finished epoch, finished ones are skipped, folds of the run not "
            "started yet begin.",
        )
    shown = st.session_state.get("tr_continue_message")
    if shown and shown[0] == str(run):
        (st.success if shown[1] == "ok" else st.error)(shown[2])


def _continue(run: Path, roots: tuple[Path, ...]) -> None:
    """Continue-button callback: relaunch the run with ``--resume``; the outcome is shown
    under the button."""
    try:
        launch = launches.continue_run(run, roots)
    except HMILError as exc:
        st.session_state["tr_continue_message"] = (str(run), "error", str(exc))
        return
    text = f"Continued training of fold(s) {launch.folds} in {_started(launch)}"
    st.session_state["tr_continue_message"] = (str(run), "ok", text)


def _request_stop(run: Path, fold: int) -> None:
    """Stop-button callback (streamlit callbacks return nothing; request_stop returns the path)."""
    launches.request_stop(run, fold)
