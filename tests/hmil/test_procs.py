import os
import subprocess
import sys
import time

from hmil.procs import pid_alive


def test_pid_alive_running_invalid_and_zombie():
    assert pid_alive(os.getpid())
    assert pid_alive(os.getpid(), cmd_hint="python")
    assert not pid_alive(os.getpid(), cmd_hint="no-such-command-line")
    assert not pid_alive(0) and not pid_alive(-5) and not pid_alive("12") and not pid_alive(True)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # exited but not reaped yet: a zombie counts as ended
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
