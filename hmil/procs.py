"""Is a process still running? One answer for fold locks, job records and the viewer."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: object, cmd_hint: str = "") -> bool:
    """True while process ``pid`` of this machine runs.

    A zombie (exited, not yet reaped by its parent) counts as ended. ``cmd_hint`` guards
    against pid reuse: when ``/proc`` is readable, the process's command line must contain it.
    A process we may not signal (another user's) counts as running.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if cmd_hint:
            return cmd_hint in (proc / "cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill already said it exists
    return True
