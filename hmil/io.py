"""Crash-safe file writing: every output goes to a temporary sibling, then ``os.replace``.

A reader (or a rerun after ``kill -9``) therefore sees either the old complete file or the new
complete file, never a half-written one. The temporary name starts with ``.`` and ends with
``.tmp`` so that globbing for outputs (``*.h5``) never picks it up; it also names the writer
(``.<name>.<host hash>-<pid>.<random>.tmp``), so :func:`sweep_stale_temps` can remove the
leftovers of a killed writer when a command runs again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: read once at import (os.umask can only be read by setting it)
_UMASK = _current_umask()
#: this machine in temporary names (a pid means nothing on another host of a shared disk)
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
#: ``.<target>.[<host>-<pid>.]<random>.tmp`` (names without a writer come from older versions)
_TEMP = re.compile(r"\.(?P<target>.+?)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp")
#: a temporary file of another host, or of an older version, is stale after this long
STALE_TEMP_AGE_S = 24 * 3600


@contextlib.contextmanager
def atomic_path(path: str | Path, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Use for libraries that want a filename (h5py, PIL, torch.save). On an exception the
    temporary file is removed and ``path`` is left untouched. With ``expected_bytes``, a
    disk without that much free space is refused (``OSError(ENOSPC)``) before anything is
    written: some writers (HDF5) fail badly when the disk fills up under them.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if expected_bytes:
        require_free_space(target.parent, expected_bytes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def require_free_space(folder: str | Path, nbytes: int) -> None:
    """``OSError(ENOSPC)`` naming ``folder`` when its file system has less than ``nbytes``
    free for this user (plus 1 MiB for metadata)."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < nbytes + (1 << 20):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))


def temp_target(name: str) -> str | None:
    """The output name a temporary file of :func:`atomic_path` stands for, else None."""
    match = _TEMP.fullmatch(name)
    return match.group("target") if match else None


def sweep_stale_temps(folder: str | Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``; return them.

    A temporary file is stale when its writer (this host, its pid) no longer runs, or — for
    another host's or an older version's — when it is older than ``max_age_s``. Live writers'
    files are kept, so two commands writing into one folder do not disturb each other.
    """
    from hmil.procs import pid_alive

    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        mine = match.group("host") == _HOST
        dead = mine and not pid_alive(int(match.group("pid")))
        if dead or (not mine and age > max_age_s):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically; NaN is written as ``null`` so any JSON reader parses it."""
    write_text_atomic(path, json.dumps(_nan_to_none(obj), indent=indent) + "\n")


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line and fsync, so a finished epoch's record survives a crash."""
    line = json.dumps(_nan_to_none(obj)) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, ignoring a torn last line left by a crash mid-write."""
    records: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return records
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def _nan_to_none(obj: Any) -> Any:
    """NaN and ±Inf → None: strict JSON has no such numbers (jq, JavaScript would choke)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj
