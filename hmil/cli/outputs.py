"""Where a command writes: checked before it starts, and OS errors as one line.

A command declares its output arguments in ``OUTPUTS`` (argument name → :data:`FOLDER` or
:data:`FILE`); the dispatcher calls :func:`check_outputs` before running it, so an ``--out``
that is an existing file (for a folder), a folder (for a file), or lies under a file fails at
once with one ``error:`` line — before any work, and before any other output was written (a
heatmap PNG is not left behind by a bad ``--geojson``). :func:`os_error_problem` words the
errors only the OS can report mid-run (disk full, permission denied, read-only file system).
:func:`sweep_outputs` removes the temporary files a killed earlier run left in the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
from pathlib import Path

from hmil.errors import HMILError
from hmil.io import sweep_stale_temps, temp_target

FOLDER = "folder"
FILE = "file"
KINDS = (FOLDER, FILE)

#: errno → the words of the ``error:`` line (what to do about it)
_ERRNO_PROBLEMS = {
    errno.ENOSPC: "no space left on the device (free some space and rerun)",
    errno.EDQUOT: "disk quota exceeded (free some space and rerun)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "exists and is not a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
}
#: how HDF5 (through h5py) words an OS error in its messages
_HDF5_ERRNO = re.compile(r"errno = (\d+)")
#: how torch.save words a failed write (it gives no errno)
_TORCH_WRITE = re.compile(r"PytorchStreamWriter failed writing|file write failed")


class OutputError(HMILError):
    """An output path that cannot be written (checked before the command starts)."""


def check_output(path: str | Path, kind: str) -> None:
    """Raise :class:`OutputError` when ``path`` cannot become a ``kind`` (:data:`KINDS`).

    A folder may exist (it is filled) but not as a file; a file may exist (it is replaced) but
    not as a folder. The nearest existing ancestor must be a writable folder.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    p = Path(path)
    if "\x00" in str(p):
        raise OutputError(str(p).replace("\x00", "\\0"), "the path contains a NUL byte")
    if p.exists() or p.is_symlink():
        if kind == FOLDER and not p.is_dir():
            raise OutputError(p, "exists and is a file, not a folder")
        if kind == FILE and p.is_dir():
            raise OutputError(p, "is a folder; give a file name")
        if not os.access(p if kind == FOLDER else p.parent, os.W_OK):
            raise OutputError(p, "permission denied")
        return
    parent = p.absolute().parent
    while not parent.exists():
        if parent.is_symlink():
            raise OutputError(p, f"{parent} is a broken symlink")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(p, f"cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(p, f"cannot be created: permission denied in {parent}")


def check_outputs(args: argparse.Namespace, outputs: dict[str, str]) -> None:
    """:func:`check_output` for each declared output argument that was given."""
    for name, kind in outputs.items():
        value = getattr(args, name, None)
        if value:
            check_output(value, kind)


def sweep_outputs(args: argparse.Namespace, outputs: dict[str, str]) -> list[Path]:
    """Remove what killed runs left in the declared outputs (see
    :func:`hmil.io.sweep_stale_temps`): in each output folder and its direct subfolders
    (``patches/``, ``masks/``, ``fold_<k>/``), and beside each output file."""
    removed: list[Path] = []
    for name, kind in outputs.items():
        value = getattr(args, name, None)
        if not value:
            continue
        folder = Path(value) if kind == FOLDER else Path(value).parent
        if not folder.is_dir():
            continue
        removed += sweep_stale_temps(folder)
        if kind == FOLDER:
            with contextlib.suppress(OSError):
                for sub in folder.iterdir():
                    if sub.is_dir() and not sub.is_symlink():
                        removed += sweep_stale_temps(sub)
    return removed


def os_error_problem(exc: BaseException) -> tuple[str, str] | None:
    """``(where, problem)`` for an OS-level failure, or None when ``exc`` is not one.

    Covers ``OSError`` and HDF5's ``RuntimeError``/``OSError`` texts that carry an errno
    (h5py reports a failed write during close as ``RuntimeError: ... errno = 28``).
    """
    code = exc.errno if isinstance(exc, OSError) else None
    text = str(exc)
    if code is None and isinstance(exc, OSError | RuntimeError):
        match = _HDF5_ERRNO.search(text)
        code = int(match.group(1)) if match else None
    if code is None and isinstance(exc, RuntimeError) and _TORCH_WRITE.search(text):
        return "", "could not write the file (disk full, or the folder removed?)"
    if code is None and not isinstance(exc, OSError):
        return None
    where = getattr(exc, "filename", None)
    if where is None:
        match = re.search(r"filename = '([^']+)'", text)
        where = match.group(1) if match else ""
    problem = _ERRNO_PROBLEMS.get(code or -1)
    if problem is None:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        problem = os.strerror(code) if code else first[:200]
    return _visible_name(str(where)), problem


def _visible_name(where: str) -> str:
    """An atomic write's hidden temporary name → the file it was going to become."""
    path = Path(where)
    target = temp_target(path.name)
    return str(path.with_name(target)) if target else where
