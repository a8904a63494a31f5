"""The Training page and its launches: what a fold reads as once its process is gone, one launch
per run at a time, resuming what was interrupted, and widgets set only once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.elements.lib import policies
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP
from viewer_fixtures import APP_TIMEOUT as TIMEOUT

from hmil.config import Config
from hmil.errors import HMILError, RunError
from hmil.io import write_json_atomic
from hmil.procs import pid_alive, process_start
from hmil.train.runs import fold_paths, load_run_config
from viewer.components import cached_ui
from viewer.core import fold_table, launches

# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def sleeper(tmp_path: Path) -> Path:
    """A stand-in for ``python``: the launched "training" just sleeps (until killed)."""
    path = tmp_path / "fake-python"
    path.write_text("#!/bin/sh\nexec sleep 120\n")
    path.chmod(0o755)
    return path


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _records(run: Path) -> list[dict[str, object]]:
    path = run / launches.LAUNCHES
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _interrupted_copy(viewer_run: Path, target: Path) -> Path:
    """The fixture run with fold 0 killed after its last epoch, before its test evaluation."""
    shutil.copytree(viewer_run, target)
    paths = fold_paths(target, 0)
    paths.test_metrics.unlink()
    status = json.loads(paths.status.read_text())
    write_json_atomic(paths.status, {**status, "state": "running", "pid": 1})
    return target


def _wait_finished(run: Path, folds: tuple[int, ...], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(fold_paths(run, f).finished() for f in folds):
            return
        time.sleep(1)
    logs = "\n".join(launches.log_tail(r["log"]) for r in launches.read_launches(run))
    raise AssertionError(f"folds {folds} of {run} did not finish:\n{logs}")


# ---------------------------------------------------------------------------- launch records


def test_a_launch_record_whose_pid_runs_another_process_is_not_running(tmp_path: Path) -> None:
    """Before: any live process with the record's pid made the run read "still running"."""
    run = tmp_path / "run"
    run.mkdir()
    me = os.getpid()
    start = process_start(me)
    assert start is not None
    records = [
        {"pid": me, "started": "new, reused pid", "folds": "0", "pid_start": start - 1},
        {"pid": me, "started": "old, not a training", "folds": "0"},
        {"pid": me, "started": "new, alive", "folds": "0", "pid_start": start},
    ]
    (run / launches.LAUNCHES).write_text("".join(json.dumps(r) + "\n" for r in records))
    shown = {r["started"]: r["alive"] for r in launches.read_launches(run)}
    assert shown == {"new, reused pid": False, "old, not a training": False, "new, alive": True}
    assert [r["started"] for r in launches.running_launches(run)] == ["new, alive"]


# ---------------------------------------------------------------------------- one launch at a time


def test_concurrent_launches_of_one_run_start_exactly_one(tmp_path: Path, sleeper: Path) -> None:
    """Before: four sessions submitting at once each started a training."""
    run = tmp_path / "run"
    config = Config().override({"data.folds": "0"})
    barrier = threading.Barrier(4)
    started: list[launches.Launch] = []
    refused: list[str] = []

    def submit() -> None:
        barrier.wait()
        try:
            started.append(launches.start_training_process(run, config, python=str(sleeper)))
        except RunError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert len(started) == 1 and len(refused) == 3, (started, refused)
        assert all("already running" in text for text in refused), refused
        assert f"pid {started[0].pid}" in refused[0]
        assert [r["pid"] for r in _records(run)] == [started[0].pid]
        assert _records(run)[0]["pid_start"] == process_start(started[0].pid)
    finally:
        for launch in started:
            _kill(launch.pid)
    again = launches.start_training_process(
        run, config, python=str(sleeper)
    )  # its record is stale now
    _kill(again.pid)
    assert [r["pid"] for r in _records(run)] == [started[0].pid, again.pid]


def test_concurrent_launches_from_separate_processes_start_exactly_one(
    tmp_path: Path, sleeper: Path
) -> None:
    """Two viewers (processes) on one machine, one run: the claim is the kernel's, not a lock
    in memory."""
    import subprocess

    run = tmp_path / "run"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from hmil.config import Config\n"
        "from hmil.errors import RunError\n"
        "from viewer.core import launches\n"
        "while time.time() < float(sys.argv[1]): time.sleep(0.001)\n"
        "try:\n"
        "    launch = launches.start_training_process(Path(sys.argv[2]),"
        " Config().override({'data.folds': '0'}), python=sys.argv[3])\n"
        "    print('started', launch.pid)\n"
        "except RunError as exc:\n"
        "    print('refused', exc)\n"
    )
    go = str(time.time() + 8)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, go, str(run), str(sleeper)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[3],
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    pids = [int(o.split()[1]) for o in outputs if o.startswith("started")]
    for pid in pids:
        _kill(pid)
    assert len(pids) == 1, outputs
    assert sum("already running" in o for o in outputs) == 2, outputs


# ---------------------------------------------------------------------------- resume


def test_a_launch_resumes_when_its_folds_already_have_state(tmp_path: Path, sleeper: Path) -> None:
    """Before: ``--resume`` was never passed, so hmil refused the interrupted fold."""
    run = tmp_path / "run"
    fresh = launches.start_training_process(
        run, Config().override({"data.folds": "0"}), str(sleeper)
    )
    _kill(fresh.pid)
    assert "--resume" not in fresh.command and not fresh.resume
    fold_paths(run, 1).root.mkdir(parents=True)
    fold_paths(run, 1).state.write_bytes(b"x")  # fold 1 was interrupted
    for folds in ("1", "0,1", "all"):
        launch = launches.start_training_process(
            run, Config().override({"data.folds": folds}), python=str(sleeper)
        )
        _kill(launch.pid)
        assert launch.command.count("--resume") == 1 and launch.resume, folds
    assert _records(run)[-1]["resume"] is True
    fresh = launches.start_training_process(
        run, Config().override({"data.folds": "0"}), str(sleeper)
    )
    _kill(fresh.pid)
    assert "--resume" not in fresh.command


@pytest.mark.slow
def test_continuing_an_interrupted_run_finishes_it(viewer_run: Path, viewer_root: Path) -> None:
    run = _interrupted_copy(viewer_run, viewer_root / "runs" / "continue-direct")
    assert fold_table.fold_overview(run)["state"].tolist() == ["interrupted", "finished"]
    launch = launches.continue_run(run, (viewer_root.resolve(),))
    assert launch.resume and "--resume" in launch.command
    _wait_finished(run, (0,))
    assert "error:" not in launches.log_tail(launch.log)


def test_continuing_refuses_what_the_page_may_not_run(viewer_run: Path, tmp_path: Path) -> None:
    run = _interrupted_copy(viewer_run, tmp_path / "root" / "run")
    roots = ((tmp_path / "root").resolve(),)
    with pytest.raises(HMILError, match="refused"):  # its cohort lies outside these roots
        launches.continue_run(run, roots)
    config = load_run_config(run).override({"launcher.extra": {"setup": ["touch /tmp/x"]}})
    (run / "config.yaml").write_text(config.to_yaml())
    with pytest.raises(RunError, match=r"launcher\.extra"):
        launches.continue_run(run, (viewer_run.parent.resolve(), *roots))
    assert not (run / launches.LAUNCHES).exists() or not launches.running_launches(run)


# ---------------------------------------------------------------------------- the page


def _start(page: str = "views/train.py") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def widget_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Streamlit's "created with a default value but also had its value set via the Session
    State API" warnings (logged with a stack trace, once per process unless re-armed)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())
            policies._shown_default_value_warning = False  # re-arm: report every widget

    handler = Collect(level=logging.WARNING)
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    policies._LOGGER.addHandler(handler)
    yield seen
    policies._LOGGER.removeHandler(handler)


@pytest.mark.usefixtures("app_env")
def test_training_widgets_are_set_once(widget_warnings: list[str]) -> None:
    """Before: ``tr_k`` (and the other split and launcher fields) had a default both in the
    widget call and in the session state, and Streamlit logged a warning with a stack trace."""
    at = _start()
    at.run()
    at.switch_page("views/cohort.py").run()
    at.switch_page("views/train.py").run()
    at.number_input(key="tr_k").set_value(3)
    at.text_input(key="tr_labels").set_value("/etc/passwd")  # refused: nothing is launched
    at.button(key="tr_submit").click().run()
    assert any("/etc/passwd: refused" in e.value.replace("\\", "") for e in at.error)
    at.switch_page("views/cohort.py").run()
    at.switch_page("views/train.py").run()
    assert widget_warnings == []
    assert at.number_input(key="tr_k").value == 3
    assert at.number_input(key="tr_val").value == pytest.approx(0.1)
    assert at.number_input(key="tr_workers").value == 1
    assert at.selectbox(key="tr_launcher").value == "inline"


@pytest.mark.slow
@pytest.mark.usefixtures("app_env")
def test_an_interrupted_fold_reads_interrupted_and_can_be_continued(
    viewer_run: Path, viewer_root: Path
) -> None:
    """Before: no word on what the fold reached and no way to continue it from the page."""
    run = _interrupted_copy(viewer_run, viewer_root / "runs" / "continue-page")
    cached_ui.discover_runs.clear()  # the run picker lists runs found under the roots
    at = _start()
    at.selectbox(key="tr_monitor").set_value(str(run)).run()
    frame = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert frame["state"].tolist() == ["interrupted", "finished"]
    assert frame["status"].tolist() == [
        "interrupted after epoch 2/2: continue it (resume)",
        "finished, epoch 2/2",
    ]
    button = at.button(key="tr_continue")
    assert "fold(s) 0" in button.label
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("resum" in s.value for s in at.success), [e.value for e in at.error]
    _wait_finished(run, (0,))


@pytest.mark.slow
@pytest.mark.usefixtures("app_env")
def test_the_form_relaunched_on_an_interrupted_run_resumes_it(
    viewer_run: Path, viewer_root: Path
) -> None:
    """Before: the form launched without ``--resume`` and hmil refused the started fold."""
    run = _interrupted_copy(viewer_run, viewer_root / "runs" / "continue-form")
    at = _start()
    at.text_input(key="tr_out").set_value(str(run))
    at.text_input(key="tr_folds").set_value("0,1")
    at.text_area(key="tr_extra").set_value((viewer_root / "small.yaml").read_text())
    at.button(key="tr_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Started training of fold(s) 0,1" in s.value for s in at.success), [
        e.value for e in at.error
    ]
    assert any("resum" in s.value for s in at.success)
    _wait_finished(run, (0, 1))
    (record,) = _records(run)
    assert "--resume" in record["command"]  # type: ignore[operator]
