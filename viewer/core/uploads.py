"""Uploaded files: size limit and a private per-session folder, named by content hash.

A name derived from the content (not the user's file name alone) lets the cached prediction of an
upload be reused across reruns, and keeps a crafted file name from escaping the folder. The name
the user's browser sent is shown only through :func:`display_name` / :func:`display_stem`: plain
text (:func:`viewer.core.text.plain`), so a right-to-left override or a line break in it
cannot reverse or break what the page says about the file.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

from hmil.errors import UploadError
from viewer.core.text import plain

MB = 1024 * 1024
UPLOAD_PREFIX = "hmil-view-upload-"
#: upload folders of sessions idle this long are removed when a new session starts uploading
UPLOAD_MAX_AGE_S = 24 * 3600
#: suffixes kept whole when a name is split into stem and suffix
DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif")


def split_suffix(base: str) -> tuple[str, str]:
    """``(stem, suffix)`` of a file name, :data:`DOUBLE_SUFFIXES` as one suffix."""
    lower = base.lower()
    suffix = next((s for s in DOUBLE_SUFFIXES if lower.endswith(s)), Path(base).suffix)
    return base[: len(base) - len(suffix)], base[len(base) - len(suffix) :]


def display_name(name: str) -> str:
    """The uploaded file's name as the page shows it: the last path part the browser sent
    (some send a whole Windows path), as :func:`~viewer.core.text.plain` text. Put it
    into Markdown through :func:`~viewer.core.text.markdown`."""
    base = plain(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip()
    return base or "upload"


def display_stem(name: str) -> str:
    """:func:`display_name` without its suffix (``.ome.tiff`` as one): the slide id of an
    uploaded bag or slide."""
    shown = display_name(name)
    return split_suffix(shown)[0] or shown


def upload_name(name: str, data: bytes) -> str:
    """``<stem>-<sha1[:16]><suffix>`` with only safe characters (``.ome.tiff`` kept whole)."""
    stem, suffix = split_suffix(Path(name.replace("\\", "/")).name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "upload"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "", suffix.lower())
    return f"{stem}-{hashlib.sha1(data).hexdigest()[:16]}{suffix}"


def save_upload(data: bytes, name: str, folder: Path, limit_mb: int) -> Path:
    """Write ``data`` into ``folder`` (once per content); HMILError over ``limit_mb``."""
    shown = display_name(name)
    if len(data) > limit_mb * MB:
        raise UploadError(
            shown, f"upload of {len(data) / MB:.1f} MB exceeds the {limit_mb} MB limit"
        )
    if not data:
        raise UploadError(shown, "empty upload")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / upload_name(name, data)
    if not path.is_file():
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def remove_stale_uploads(tmp_root: Path, max_age_s: float) -> list[Path]:
    """Delete upload folders (ours, by prefix) not modified for ``max_age_s``; return them.

    Sessions have no end hook in Streamlit, so a long-running viewer would otherwise keep
    every uploaded bag and slide in the temp folder forever.
    """
    removed = []
    now = time.time()
    for folder in tmp_root.glob(f"{UPLOAD_PREFIX}*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:
            continue
    return removed
