"""Uploaded files: size limit and a private per-session folder, named by content hash.

A name derived from the content (not the user's file name alone) lets the cached prediction of an
upload be reused across reruns, and keeps a crafted file name from escaping the folder.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

from hmil.errors import HMILError

MB = 1024 * 1024
UPLOAD_PREFIX = "hmil-view-upload-"
#: upload folders of sessions idle this long are removed when a new session starts uploading
UPLOAD_MAX_AGE_S = 24 * 3600


def upload_name(name: str, data: bytes) -> str:
    """``<stem>-<sha1[:16]><suffix>`` with only safe characters (``.ome.tiff`` kept whole)."""
    base = Path(name.replace("\\", "/")).name
    lower = base.lower()
    suffix = next((s for s in (".ome.tiff", ".ome.tif") if lower.endswith(s)), Path(base).suffix)
    stem = base[: len(base) - len(suffix)] if suffix else base
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "upload"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "", suffix.lower())
    return f"{stem}-{hashlib.sha1(data).hexdigest()[:16]}{suffix}"


def save_upload(data: bytes, name: str, folder: Path, limit_mb: int) -> Path:
    """Write ``data`` into ``folder`` (once per content); HMILError over ``limit_mb``."""
    if len(data) > limit_mb * MB:
        raise HMILError(name, f"upload of {len(data) / MB:.1f} MB exceeds the {limit_mb} MB limit")
    if not data:
        raise HMILError(name, "empty upload")
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
