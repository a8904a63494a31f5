"""``hmil view``: argument checks, the command it runs, and a clean process life."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hmil.cli import main
from hmil.cli.view import app_path, streamlit_command


def test_dry_run_binds_to_localhost_and_passes_the_run(
    viewer_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["view", str(viewer_run), "--data-root", str(tmp_path), "--dry-run"])
    assert code == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert f"HMIL_VIEW_RUN={viewer_run.resolve()}" in lines
    assert f"HMIL_VIEW_DATA_ROOTS={tmp_path.resolve()}" in lines
    assert "HMIL_VIEW_MAX_UPLOAD_MB=512" in lines
    command = lines[-1]
    assert "--server.address 127.0.0.1" in command and "--server.port 8501" in command
    assert "--server.maxUploadSize 512" in command and str(app_path()) in command
    assert "open http://127.0.0.1:8501" in err and "warning" not in err


def test_sharing_on_all_interfaces_warns(
    viewer_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["view", str(viewer_run), "--host", "0.0.0.0", "--port", "9000", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "warning: bound to 0.0.0.0" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["/etc"], "not a run directory"),
        (["{run}", "--data-root", "/no/such/dir"], "--data-root is not a folder"),
        (["{run}", "--checkpoint", "/no/such.pt"], "checkpoint not found"),
        (["{run}", "--port", "0"], "must be within 1..65535"),
        (["{run}", "--max-upload-mb", "0"], "must be ≥ 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    viewer_run: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = [a.format(run=viewer_run) for a in extra]
    assert main(["view", *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_without_run_or_demo_it_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from viewer import state

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(state, "REPO_ROOT", tmp_path / "checkout")
    assert main(["view", "--dry-run"]) == 2
    assert "run `hmil demo`" in capsys.readouterr().err


def test_streamlit_command_shape() -> None:
    command = streamlit_command("127.0.0.1", 8765, 64)
    assert command[1:4] == ["-m", "streamlit", "run"] and os.path.isfile(command[4])
    assert command[4].endswith("viewer/server.py")  # the st.App with the tile routes
    assert command[command.index("--server.fileWatcherType") + 1] == "none"
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_sigterm_stops_the_server_and_leaves_nothing_running(
    viewer_run: Path, tmp_path: Path
) -> None:
    """``hmil view`` becomes the server (exec): one process serves pages and tiles on one port,
    and a SIGTERM to the pid that was started stops it all."""
    port = _free_port()
    log = tmp_path / "view.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hmil", "view", str(viewer_run), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _status(f"{url}/_stcore/health") == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"streamlit" in cmdline and any(a.endswith(b"server.py") for a in cmdline)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children == []  # no wrapper, no child server
        assert _status(f"{url}/hmil/static/openseadragon/openseadragon.min.js") == 200
        assert _status(f"{url}/hmil/dz/{'0' * 20}.dzi") == 404  # tile routes on the same port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing of its session is left
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
