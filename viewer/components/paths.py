"""Data roots: the viewer reads (and writes) files only below the roots its operator configured.

The viewer may be served to other people on a workstation, and several widgets take paths typed
by the user (checkpoint, training data, run directory). Every such path goes through
:func:`check_under_roots`, which resolves symlinks and ``..`` first, so neither a typed path nor a
symlink inside a root can reach a file elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hmil.errors import HMILError


class PathRefused(HMILError):
    """A path outside every configured data root."""


def resolve(path: str | Path) -> Path:
    """Absolute path with ``~``, ``..`` and symlinks resolved (the file need not exist)."""
    return Path(path).expanduser().resolve(strict=False)


def is_under(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """True when resolved ``path`` equals or lies below one of the resolved ``roots``."""
    target = resolve(path)
    return any(target.is_relative_to(resolve(root)) for root in roots)


def check_under_roots(path: str | Path, roots: Iterable[str | Path]) -> Path:
    """The resolved ``path`` if it lies under a data root, else :class:`PathRefused`.

    Raises:
        PathRefused: with a message that names the path and the roots (what the operator can
            pass with ``hmil view --data-root DIR`` to allow it).
    """
    root_list = [resolve(r) for r in roots]
    text = str(path).strip()
    if not text:
        raise PathRefused("path", "no path given")
    target = resolve(text)
    if any(target.is_relative_to(root) for root in root_list):
        return target
    shown = ", ".join(str(r) for r in root_list) or "(none)"
    raise PathRefused(
        text,
        f"refused: outside the viewer's data roots ({shown}); start the viewer with "
        "`hmil view --data-root DIR` to allow another folder",
    )
