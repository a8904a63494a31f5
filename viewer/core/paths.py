"""Data roots: the viewer reads (and writes) files only below the roots its operator configured.

The viewer may be served to other people on a workstation, and several widgets take paths typed
by the user (checkpoint, training data, run directory), while run folders hold files whose
names come from disk (``launches.jsonl`` names log files, ``fold_k/checkpoint.pt`` may be a
symlink). Every file the viewer opens goes through one gate, :func:`check_under_roots`: it
resolves ``~``, ``..`` and every symlink first (a link inside a root whose target lies outside
is refused like the target itself) and turns what the OS cannot look up — a NUL byte, a
symlink loop, a name too long — into :class:`PathRefused` instead of an exception on the page.
:func:`is_under` is the same gate as a yes/no answer, for files found by scanning, which are
skipped rather than reported. Files inside a run directory are checked against the run itself
(:func:`run_file`): a run's own files never lead elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hmil.errors import HMILError
from hmil.hierarchy import PRESETS


class PathRefused(HMILError):
    """A path outside every configured data root, or one that cannot be looked up."""


def resolve(path: str | Path) -> Path:
    """Absolute path with ``~``, ``..`` and symlinks resolved (the file need not exist).

    Raises:
        PathRefused: a NUL byte, a symlink loop, an unknown ``~user``, or a name the OS
            cannot look up (too long, not encodable).
    """
    text = str(path)
    if "\x00" in text:
        raise PathRefused(_shown(text), "refused: the path contains a NUL byte")
    try:
        os.fsencode(text)
        target = Path(text).expanduser().resolve(strict=False)
    except RuntimeError as exc:  # "Symlink loop from ...", "Could not determine home directory"
        raise PathRefused(
            _shown(text), f"refused: {_lower_first(str(exc).split(' from ')[0])}"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise PathRefused(
            _shown(text), f"refused: cannot look this path up ({_reason(exc)})"
        ) from None
    try:
        os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        pass  # a path that does not exist yet (an output) is fine
    except OSError as exc:  # too long, a loop the resolver did not see, permissions, ...
        raise PathRefused(
            _shown(text), f"refused: cannot look this path up ({_reason(exc)})"
        ) from None
    return target


def check_under_roots(path: str | Path, roots: Iterable[str | Path]) -> Path:
    """The resolved ``path`` if it lies under a data root, else :class:`PathRefused`.

    This is the viewer's one gate for every file it opens (see the module docstring).

    Raises:
        PathRefused: with a message that names the path and the roots (what the operator can
            pass with ``hmil view --data-root DIR`` to allow it), or says why the path cannot
            be looked up.
    """
    text = str(path).strip()
    if not text:
        raise PathRefused("path", "no path given")
    root_list = [resolve(r) for r in roots]
    target = resolve(text)
    if any(target.is_relative_to(root) for root in root_list):
        return target
    shown = ", ".join(str(r) for r in root_list) or "(none)"
    raise PathRefused(
        _shown(text),
        f"refused: outside the viewer's data roots ({shown}); start the viewer with "
        "`hmil view --data-root DIR` to allow another folder",
    )


def is_under(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """True when :func:`check_under_roots` accepts ``path`` (never raises)."""
    try:
        check_under_roots(path, roots)
    except PathRefused:
        return False
    return True


def run_file(run: str | Path, path: str | Path) -> Path | None:
    """``path`` resolved, if it is a regular file inside the run directory ``run``, else None.

    For the files a run holds (predictions, metrics, checkpoints, launch logs): a symlink
    or a recorded path that leads out of the run is not followed.
    """
    try:
        target = check_under_roots(path, [run])
    except PathRefused:
        return None
    return target if target.is_file() else None


def check_hierarchy(spec: str, roots: Iterable[str | Path]) -> str:
    """A hierarchy preset name as is, or the resolved path of a hierarchy file under the roots.

    Anything that is not a preset name is a file to be read, whatever its suffix, so it goes
    through the gate (a file named ``tree`` without ``.yaml`` is read like ``tree.yaml``).
    """
    text = str(spec).strip()
    if text.lower() in PRESETS:
        return text
    try:
        return str(check_under_roots(text, roots))
    except PathRefused as exc:
        presets = ", ".join(sorted(PRESETS))
        raise PathRefused(exc.where, f"not a preset ({presets}); {exc.problem}") from None


def _shown(text: str) -> str:
    """``text`` printable anywhere: NUL as ``\\0``, unencodable characters escaped."""
    return text.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
